// Micro-benchmark of compileAllowList: ns per match for 1, 10 and 100 networks, IPv4 and IPv6, against a
// plain ipaddr.js loop and node:net's BlockList. Run: node --import tsx scripts/bench-cidr.ts
import { BlockList } from 'node:net'
import ipaddr from 'ipaddr.js'
import { compileAllowList, parseAllowedCidrs } from '#src/policy/cidr.ts'

const POOL = 1024
const ITERATIONS = 2_000_000

// A seeded generator, so that runs compare.
let seed = 42
function random (): number {
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed / 2147483648
}
const randomWord = (): number => Math.floor(random() * 0x10000)
const ipv4Text = (value: number): string => `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`

function ipv4Networks (count: number): string[] {
  return Array.from({ length: count }, () => {
    const prefix = 8 + Math.floor(random() * 21)
    const address = Math.floor(random() * 2 ** 32)
    return `${ipv4Text(prefix === 0 ? 0 : (address & (0xffffffff << (32 - prefix))) >>> 0)}/${prefix}`
  })
}

function ipv6Networks (count: number): string[] {
  return Array.from({ length: count }, () => {
    const prefix = 32 + Math.floor(random() * 33)
    const parts = Array.from({ length: 8 }, (_, i) => (i * 16 < prefix ? randomWord() : 0))
    const groupIndex = Math.floor(prefix / 16)
    if (groupIndex < 8 && prefix % 16 !== 0) parts[groupIndex] &= 0xffff << (16 - (prefix % 16))
    return `${new ipaddr.IPv6(parts).toRFC5952String()}/${prefix}`
  })
}

/** Half the addresses inside one of the networks, half anywhere: both answers are exercised. */
function addressesFor (cidrs: string[], family: 'ipv4' | 'ipv6' | 'mapped'): string[] {
  return Array.from({ length: POOL }, (_, i) => {
    const [network, bits] = ipaddr.parseCIDR(cidrs[i % cidrs.length])
    const bytes = network.toByteArray()
    const inside = i % 2 === 0
    const hostBytes = bytes.map((byte, index) => {
      const keep = Math.max(0, Math.min(8, bits - index * 8))
      const host = Math.floor(random() * 256) & (0xff >> keep)
      return inside ? byte | host : Math.floor(random() * 256)
    })
    const address = ipaddr.fromByteArray(hostBytes)
    if (family === 'mapped') return `::ffff:${address.toString()}`
    return family === 'ipv6' ? (address as ipaddr.IPv6).toRFC5952String() : address.toString()
  })
}

// Two copies of one loop, so that the compiled matchers' call site never sees the baselines' functions (a
// call site seeing several functions stops inlining them); the auth hook's call site sees matchers only.
function nsPerMatch (match: (address: string) => boolean, addresses: string[], iterations = ITERATIONS): number {
  let hits = 0
  for (let i = 0; i < 100_000; i++) if (match(addresses[i & (POOL - 1)])) hits++
  const started = process.hrtime.bigint()
  for (let i = 0; i < iterations; i++) if (match(addresses[i & (POOL - 1)])) hits++
  const elapsed = Number(process.hrtime.bigint() - started)
  if (hits < 0) console.log(hits) // keeps the loop from being optimised away
  return elapsed / iterations
}

function nsPerBaselineMatch (match: (address: string) => boolean, addresses: string[], iterations: number): number {
  let hits = 0
  for (let i = 0; i < 10_000; i++) if (match(addresses[i & (POOL - 1)])) hits++
  const started = process.hrtime.bigint()
  for (let i = 0; i < iterations; i++) if (match(addresses[i & (POOL - 1)])) hits++
  const elapsed = Number(process.hrtime.bigint() - started)
  if (hits < 0) console.log(hits)
  return elapsed / iterations
}

function naiveMatcher (cidrs: string[]): (address: string) => boolean {
  const networks = cidrs.map((cidr) => ipaddr.parseCIDR(cidr))
  return (address) => {
    if (!ipaddr.isValid(address)) return false
    let client = ipaddr.parse(address)
    if (client instanceof ipaddr.IPv6 && client.isIPv4MappedAddress()) client = client.toIPv4Address()
    return networks.some(([network, bits]) => network.kind() === client.kind() && client.match(network, bits))
  }
}

function blockListMatcher (cidrs: string[]): (address: string) => boolean {
  const list = new BlockList()
  for (const cidr of cidrs) {
    const [network, bits] = ipaddr.parseCIDR(cidr)
    list.addSubnet(network.toString(), bits, network.kind())
  }
  return (address) => list.check(address, address.includes(':') ? 'ipv6' : 'ipv4')
}

const rows: Array<Record<string, string | number>> = []
for (const family of ['ipv4', 'ipv6'] as const) {
  for (const count of [1, 10, 100]) {
    const cidrs = parseAllowedCidrs(family === 'ipv4' ? ipv4Networks(count) : ipv6Networks(count))
    const matches = compileAllowList(cidrs)
    const addresses = addressesFor(cidrs, family)
    const mapped = family === 'ipv4' ? addressesFor(cidrs, 'mapped') : undefined
    // Distinct string objects with the same contents, as a header parsed per request would give.
    const copies = (texts: string[]): string[] => Array.from({ length: POOL }, (_, i) => [...texts[i % texts.length]].join(''))
    const row: Record<string, string | number> = {
      networks: `${count} ${family === 'ipv4' ? 'IPv4' : 'IPv6'}`,
      'one client (ns)': nsPerMatch(matches, copies(addresses.slice(0, 1))).toFixed(1),
      '4 clients in turn (ns)': nsPerMatch(matches, copies(addresses.slice(0, 4))).toFixed(1),
      '4 ::ffff: clients in turn (ns)': mapped === undefined ? '-' : nsPerMatch(matches, copies(mapped.slice(0, 4))).toFixed(1),
      '1024 clients (ns)': nsPerMatch(matches, addresses).toFixed(1),
      '1024 ::ffff: clients (ns)': mapped === undefined ? '-' : nsPerMatch(matches, mapped).toFixed(1)
    }
    row['ipaddr.js loop, 1024 (ns)'] = nsPerBaselineMatch(naiveMatcher(cidrs), addresses, ITERATIONS / 20).toFixed(0)
    row['net.BlockList, 1024 (ns)'] = nsPerBaselineMatch(blockListMatcher(cidrs), addresses, ITERATIONS / 10).toFixed(0)
    rows.push(row)
  }
}
console.log(`Node ${process.version}, ${ITERATIONS} matches per figure (the baselines fewer)`)
console.table(rows)
