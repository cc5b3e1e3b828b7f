import t from 'tap'
import fc from 'fast-check'
import ipaddr from 'ipaddr.js'
import { CidrError, MAX_ALLOWED_CIDRS, compileAllowList, firstCidrOutside, parseAllowedCidrs, parseIPv4, parseIPv6 } from '#src/policy/cidr.ts'

function refusal (entries: unknown): CidrError {
  try {
    parseAllowedCidrs(entries)
  } catch (error) {
    if (error instanceof CidrError) return error
    throw error
  }
  throw new Error(`accepted: ${JSON.stringify(entries)}`)
}

t.test('entries are normalised, deduplicated and kept in the order first written', async (t) => {
  t.same(parseAllowedCidrs([
    '10.0.0.0/8', '1.2.3.4', '2001:DB8:0:0::/32', '10.0.0.0/8', '::FFFF:a00:0/104', '::ffff:10.0.0.0/104',
    '::1', '0.0.0.0/0', '::/0', '2001:db8:0:0:1:0:0:1', 'fe80::/10', '0000:0000::1/128'
  ]), [
    '10.0.0.0/8', '1.2.3.4/32', '2001:db8::/32', '::ffff:10.0.0.0/104', '::1/128', '0.0.0.0/0', '::/0',
    '2001:db8::1:0:0:1/128', 'fe80::/10'
  ])
  t.same(parseAllowedCidrs([]), [])
})

t.test('a bad entry is refused with its position and text', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    ['1.2.3', /not a valid IPv4 address/],
    ['010.0.0.1', /not a valid IPv4 address/],
    ['10.0.0.01', /not a valid IPv4 address/],
    ['0x0a.0.0.1', /not a valid IPv4 address/],
    ['256.0.0.1', /not a valid IPv4 address/],
    ['1.2.3.4.5', /not a valid IPv4 address/],
    ['1.2.3.4/33', /IPv4 prefix length is at most 32/],
    ['1.2.3.4/08', /prefix length must be a decimal number/],
    ['1.2.3.4/+8', /prefix length must be a decimal number/],
    ['1.2.3.4/', /prefix length must be a decimal number/],
    ['1.2.3.4/8/8', /prefix length must be a decimal number/],
    ['10.0.0.1/8', /host bits set beyond \/8: the network is 10\.0\.0\.0\/8, or write 10\.0\.0\.1\/32/],
    ['::1/129', /IPv6 prefix length is at most 128/],
    ['2001:db8::1/32', /host bits set beyond \/32: the network is 2001:db8::\/32/],
    ['1::2::3', /not a valid IPv6 address/],
    ['12345::1', /not a valid IPv6 address/],
    ['::g', /not a valid IPv6 address/],
    ['fe80::1%eth0', /zone ids/],
    ['fe80::1%eth0/64', /zone ids/],
    ['::ffff:010.0.0.1', /embedded IPv4 address must be four decimal numbers/],
    ['::1.2.3.4', /deprecated IPv4-compatible form/],
    [' 10.0.0.0/8', /whitespace/],
    ['10.0.0.0/8\n', /whitespace/],
    ['10.0.0.0 /8', /whitespace/],
    ['', /is empty/],
    ['1'.repeat(100), /too long/],
    [10, /must be a string, got number/],
    [null, /must be a string, got null/],
    [{ cidr: '10.0.0.0/8' }, /must be a string, got object/]
  ]
  for (const [entry, message] of cases) {
    const error = refusal(['192.168.0.0/16', entry])
    t.equal(error.index, 1, String(entry))
    t.equal(error.entry, entry)
    t.match(error.message, /^allowedCidrs\[1\] /)
    t.match(error.message, message, String(entry))
    if (typeof entry === 'string' && entry.length < 64) t.ok(error.message.includes(JSON.stringify(entry)), 'the entry is quoted')
  }
})

t.test('at most 100 entries; the list itself must be a list', async (t) => {
  const hundred = Array.from({ length: MAX_ALLOWED_CIDRS }, (_, i) => `10.0.${i}.0/24`)
  t.equal(parseAllowedCidrs(hundred).length, 100)
  const tooMany = refusal([...hundred, '10.0.100.0/24'])
  t.equal(tooMany.index, 100)
  t.equal(tooMany.entry, '10.0.100.0/24')
  t.match(tooMany.message, /at most 100 entries, got 101/)
  t.match(refusal(Array.from({ length: 100_000 }, () => 'x')).message, /at most 100/, 'counted before any parse')
  for (const notAList of ['10.0.0.0/8', undefined, null, { 0: '10.0.0.0/8' }]) {
    const error = refusal(notAList)
    t.equal(error.index, null)
    t.match(error.message, /must be a list/)
  }
})

t.test('IPv4: first and last address of a range match, one outside on each side does not', async (t) => {
  const matches = compileAllowList(['10.0.0.0/8', '192.168.1.128/25', '203.0.113.7/32'])
  const expectations: Array<[string, boolean]> = [
    ['9.255.255.255', false], ['10.0.0.0', true], ['10.123.45.6', true], ['10.255.255.255', true], ['11.0.0.0', false],
    ['192.168.1.127', false], ['192.168.1.128', true], ['192.168.1.255', true], ['192.168.2.0', false],
    ['203.0.113.6', false], ['203.0.113.7', true], ['203.0.113.8', false]
  ]
  for (const [address, expected] of expectations) t.equal(matches(address), expected, address)
})

t.test('/0 and /32: every IPv4 address, or exactly one', async (t) => {
  const everyIPv4 = compileAllowList(['0.0.0.0/0'])
  for (const address of ['0.0.0.0', '127.0.0.1', '255.255.255.255', '::ffff:1.2.3.4']) t.ok(everyIPv4(address), address)
  for (const address of ['::1', '2001:db8::1', '::']) t.notOk(everyIPv4(address), `${address}: an IPv4 network admits no IPv6 client`)
  const one = compileAllowList(['255.255.255.255/32', '0.0.0.0/32'])
  t.ok(one('255.255.255.255'))
  t.ok(one('0.0.0.0'))
  t.notOk(one('255.255.255.254'))
  t.notOk(one('0.0.0.1'))
})

t.test('IPv6: edges of a range, /128, /0', async (t) => {
  const matches = compileAllowList(['2001:db8::/32', '::1/128', 'fe80::/10'])
  const expectations: Array<[string, boolean]> = [
    ['2001:db7:ffff:ffff:ffff:ffff:ffff:ffff', false], ['2001:db8::', true], ['2001:DB8:1234::5', true],
    ['2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', true], ['2001:db9::', false],
    ['::1', true], ['0:0:0:0:0:0:0:1', true], ['::2', false], ['::', false],
    ['fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff', false], ['fe80::1', true], ['febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff', true], ['fec0::', false],
    ['10.0.0.1', false]
  ]
  for (const [address, expected] of expectations) t.equal(matches(address), expected, address)

  const everyIPv6 = compileAllowList(['::/0'])
  for (const address of ['::', '::1', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', '2001:db8::1']) t.ok(everyIPv6(address), address)
  for (const address of ['10.0.0.1', '::ffff:10.0.0.1']) t.notOk(everyIPv6(address), `${address}: IPv4 clients are not IPv6 clients`)
})

t.test('IPv4-mapped addresses match IPv4 networks; mapped networks match both spellings', async (t) => {
  const ipv4Network = compileAllowList(['10.0.0.0/8'])
  for (const address of ['::ffff:10.0.0.1', '::FFFF:10.0.0.1', '::ffff:a00:1', '0:0:0:0:0:ffff:10.255.255.255', '0:0:0:0:0:FFFF:0A00:0001']) t.ok(ipv4Network(address), address)
  for (const address of ['::ffff:11.0.0.0', '::ffff:9.255.255.255', '::10.0.0.1', '64:ff9b::10.0.0.1', '::fffe:10.0.0.1']) t.notOk(ipv4Network(address), address)

  const mappedNetwork = compileAllowList(['::ffff:10.0.0.0/104'])
  for (const address of ['10.0.0.0', '10.255.255.255', '::ffff:10.0.0.1', '::ffff:a00:1']) t.ok(mappedNetwork(address), address)
  for (const address of ['11.0.0.0', '9.255.255.255', '::ffff:b00:0']) t.notOk(mappedNetwork(address), address)

  const everyMapped = compileAllowList(['::ffff:0.0.0.0/96'])
  t.ok(everyMapped('1.2.3.4'))
  t.notOk(everyMapped('::1'))
  t.ok(compileAllowList(['::ffff:1.2.3.4/128'])('1.2.3.4'))
})

t.test('an empty list admits everyone; unparseable addresses match nothing', async (t) => {
  const everyone = compileAllowList([])
  for (const address of ['1.2.3.4', '::1', 'not an address']) t.ok(everyone(address), address)

  const matches = compileAllowList(['0.0.0.0/0', '::/0'])
  const unparseable = [
    '', 'localhost', '1.2.3', '1.2.3.4.5', '010.0.0.1', '1.2.3.04', '256.1.1.1', '1.2.3.-1', ' 1.2.3.4', '1.2.3.4 ', '1.2.3.4/32',
    '::1%lo', 'fe80::1%eth0', '[::1]', ':::', '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', '::ffff:010.0.0.1', '::ffff:1.2.3',
    '1:2:3:4:5:6:7:1.2.3.4', ':1::', '1:', 'g::1', '::1:', '1.2.3.4:80', '1:2:3:4::5:6:7:8', '1:2:3:4:5:6:7:8::',
    '::1:2:3:4:5:6:7:8', '1:2:3:4:5::6:1.2.3.4'
  ]
  for (const address of unparseable) t.notOk(matches(address), JSON.stringify(address))
})

t.test('the remembered last address does not leak between addresses', async (t) => {
  const matches = compileAllowList(['10.0.0.0/8'])
  for (let i = 0; i < 3; i++) {
    t.ok(matches('10.0.0.1'))
    t.ok(matches('10.0.0.1'))
    t.notOk(matches('11.0.0.1'))
    t.notOk(matches('junk'))
    t.ok(matches('::ffff:10.0.0.1'))
  }
})

t.test('overlapping and adjacent networks merge without changing the answers', async (t) => {
  const matches = compileAllowList(['10.0.0.0/24', '10.0.1.0/24', '10.0.0.128/25', '10.0.0.0/16', '2001:db8::/33', '2001:db8:8000::/33', '2001:db8::/48'])
  for (const [address, expected] of [['10.0.255.255', true], ['10.1.0.0', false], ['9.255.255.255', false], ['2001:db8:ffff::', true], ['2001:db9::', false]] as const) {
    t.equal(matches(address), expected, address)
  }
})

t.test('compiling an invalid list throws', async (t) => {
  t.throws(() => compileAllowList(['10.0.0.1/8']), CidrError)
  t.throws(() => compileAllowList(['nonsense']), CidrError)
})

t.test('containment: the first network one list admits beyond another', async (t) => {
  const office = ['10.0.0.0/16', '10.1.0.0/16', '2001:db8::/32']
  t.equal(firstCidrOutside(['10.0.4.0/24', '10.1.255.255/32', '2001:db8:1::/48'], office), undefined, 'subnets of the networks')
  t.equal(firstCidrOutside(['10.0.0.0/15'], office), undefined, 'a network covered by two adjacent ones (merged)')
  t.equal(firstCidrOutside(['10.0.0.0/16', '10.2.0.0/24', '10.3.0.0/24'], office), '10.2.0.0/24', 'the first one outside')
  t.equal(firstCidrOutside(['10.0.0.0/14'], office), '10.0.0.0/14', 'wider than the union')
  t.equal(firstCidrOutside(['2001:db9::/32'], office), '2001:db9::/32')
  t.equal(firstCidrOutside(['::ffff:10.0.1.0/120'], office), undefined, 'an IPv4-mapped network is its IPv4 network')
  t.equal(firstCidrOutside(['10.0.1.0/24'], ['::ffff:10.0.0.0/112']), undefined, 'and the other way round')
  t.equal(firstCidrOutside(['::/0'], ['0.0.0.0/0']), '::/0', 'IPv6 clients are not IPv4 clients')
  t.equal(firstCidrOutside(['192.168.0.0/16'], []), undefined, 'an empty list admits everyone')
  t.equal(firstCidrOutside([], office), undefined, 'an empty list has no entry to name (the caller decides what "any" means)')
})

// ---------------------------------------------------------------------------------------------------------
// Properties: the hand-written parsers and the range matcher against ipaddr.js.

const u32 = fc.integer({ min: 0, max: 0xffffffff })
const toIPv4 = (value: number): string => `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`
const groupsOf = (value: bigint): number[] => Array.from({ length: 8 }, (_, i) => Number((value >> BigInt(112 - 16 * i)) & 0xffffn))
const toIPv6 = (value: bigint): string => new ipaddr.IPv6(groupsOf(value)).toRFC5952String()
const ALL_ONES = (1n << 128n) - 1n
const MAPPED = 0xffffn << 32n

interface TestNetwork { family: 4 | 6, first: bigint, last: bigint, text: string }

function ipv4Network (address: number, prefix: number): TestNetwork {
  const size = 2n ** BigInt(32 - prefix)
  const first = (BigInt(address) / size) * size
  return { family: 4, first, last: first + size - 1n, text: `${toIPv4(Number(first))}/${prefix}` }
}

function ipv6Network (address: bigint, prefix: number): TestNetwork {
  const size = 1n << BigInt(128 - prefix)
  const first = (address / size) * size
  return { family: 6, first, last: first + size - 1n, text: `${toIPv6(first)}/${prefix}` }
}

const anyNetwork: fc.Arbitrary<TestNetwork> = fc.oneof(
  fc.tuple(u32, fc.integer({ min: 0, max: 32 })).map(([address, prefix]) => ipv4Network(address, prefix)),
  fc.tuple(fc.bigInt({ min: 0n, max: ALL_ONES }), fc.integer({ min: 0, max: 128 })).map(([address, prefix]) => ipv6Network(address, prefix)),
  // IPv4-mapped networks, written the way users would
  fc.tuple(u32, fc.integer({ min: 0, max: 32 })).map(([address, prefix]) => {
    const network = ipv4Network(address, prefix)
    return { family: 6 as const, first: MAPPED | network.first, last: MAPPED | network.last, text: `::ffff:${toIPv4(Number(network.first))}/${96 + prefix}` }
  })
)

/** Addresses near the networks' edges, inside them, and anywhere, in every spelling a client may send. */
function addressesAround (networks: TestNetwork[]): fc.Arbitrary<string> {
  const anywhere = fc.oneof(fc.ipV4(), fc.ipV6().filter((text) => !/^::\d+\.\d+\.\d+\.\d+$/.test(text)), fc.ipV4().map((text) => `::ffff:${text}`))
  if (networks.length === 0) return anywhere
  const near = fc.tuple(fc.constantFrom(...networks), fc.constantFrom('first-1', 'first', 'last', 'last+1', 'inside'), fc.bigInt({ min: 0n, max: ALL_ONES }), fc.boolean())
    .map(([network, where, random, mappedSpelling]) => {
      const span = network.last - network.first + 1n
      const value = where === 'first-1' ? network.first - 1n : where === 'first' ? network.first : where === 'last' ? network.last : where === 'last+1' ? network.last + 1n : network.first + (random % span)
      const top = network.family === 4 ? 0xffffffffn : ALL_ONES
      const clamped = value < 0n ? top : value > top ? 0n : value
      if (network.family === 4) return mappedSpelling ? `::ffff:${toIPv4(Number(clamped))}` : toIPv4(Number(clamped))
      return toIPv6(clamped)
    })
  return fc.oneof(near, near, anywhere)
}

function referenceMatch (cidrs: readonly string[], address: string): boolean {
  let client: ipaddr.IPv4 | ipaddr.IPv6 = ipaddr.parse(address)
  if (client instanceof ipaddr.IPv6 && client.isIPv4MappedAddress()) client = client.toIPv4Address()
  return cidrs.some((cidr) => {
    let [network, bits] = ipaddr.parseCIDR(cidr)
    if (network instanceof ipaddr.IPv6 && bits >= 96 && network.isIPv4MappedAddress()) {
      network = network.toIPv4Address()
      bits -= 96
    }
    return network.kind() === client.kind() && client.match(network, bits)
  })
}

t.test('property: the compiled matcher agrees with a plain ipaddr.js loop', async () => {
  fc.assert(fc.property(
    fc.array(anyNetwork, { minLength: 1, maxLength: 12 }).chain((networks) => fc.tuple(fc.constant(networks), fc.array(addressesAround(networks), { minLength: 1, maxLength: 20 }))),
    ([networks, addresses]) => {
      const cidrs = parseAllowedCidrs(networks.map((network) => network.text))
      const matches = compileAllowList(cidrs)
      for (const address of addresses) {
        if (matches(address) !== referenceMatch(cidrs, address)) throw new Error(`${address} against ${cidrs.join(', ')}`)
      }
    }
  ), { numRuns: 2000 })
})

t.test('property: a list within another admits only addresses the other admits; subnets are within', async () => {
  fc.assert(fc.property(
    fc.tuple(fc.array(anyNetwork, { minLength: 1, maxLength: 6 }), fc.array(anyNetwork, { minLength: 1, maxLength: 6 }))
      .chain(([inner, outer]) => fc.tuple(fc.constant(inner), fc.constant(outer), fc.array(addressesAround([...inner, ...outer]), { minLength: 1, maxLength: 30 }))),
    ([innerNetworks, outerNetworks, addresses]) => {
      const inner = parseAllowedCidrs(innerNetworks.map((network) => network.text))
      const outer = parseAllowedCidrs(outerNetworks.map((network) => network.text))
      const within = firstCidrOutside(inner, outer) === undefined
      const innerMatches = compileAllowList(inner)
      const outerMatches = compileAllowList(outer)
      for (const address of addresses) {
        if (within && innerMatches(address) && !outerMatches(address)) throw new Error(`${address}: admitted by ${inner.join(', ')}, not by ${outer.join(', ')}`)
      }
      const outside = firstCidrOutside(inner, outer)
      if (outside !== undefined && !inner.includes(outside)) throw new Error(`${outside} is not an entry`)
    }
  ), { numRuns: 1000 })
  fc.assert(fc.property(fc.array(anyNetwork, { minLength: 1, maxLength: 6 }), fc.array(fc.integer({ min: 0, max: 32 }), { minLength: 1, maxLength: 6 }), (networks, extraBits) => {
    // Subnets of each network (longer prefixes) are always within the list.
    const outer = parseAllowedCidrs(networks.map((network) => network.text))
    const subnets = networks.map((network, i) => {
      const prefix = Math.min(network.family === 4 ? 32 : 128, Number(network.text.split('/')[1]) + extraBits[i % extraBits.length])
      return (network.family === 4 ? ipv4Network(Number(network.first), prefix) : ipv6Network(network.first, prefix)).text
    })
    return firstCidrOutside(parseAllowedCidrs(subnets), outer) === undefined
  }), { numRuns: 1000 })
})

t.test('property: normalised entries parse to themselves and name the same network', async () => {
  fc.assert(fc.property(anyNetwork, fc.boolean(), (network, upperCase) => {
    const written = upperCase ? network.text.toUpperCase() : network.text
    const [normalised] = parseAllowedCidrs([written])
    if (parseAllowedCidrs([normalised])[0] !== normalised) throw new Error(`not stable: ${normalised}`)
    const [address, bits] = ipaddr.parseCIDR(normalised)
    const [expectedAddress, expectedBits] = ipaddr.parseCIDR(network.text)
    return bits === expectedBits && address.toNormalizedString() === expectedAddress.toNormalizedString()
  }), { numRuns: 2000 })
})

t.test('property: the IPv6 parser reads every RFC 4291 spelling as ipaddr.js does', async () => {
  const words = new Uint32Array(4)
  const spellings = fc.bigInt({ min: 0n, max: ALL_ONES }).chain((value) => {
    const groups = groupsOf(value)
    return fc.constantFrom(
      toIPv6(value),
      groups.map((group) => group.toString(16)).join(':'),
      groups.map((group) => group.toString(16).padStart(4, '0').toUpperCase()).join(':'),
      `${groups.slice(0, 6).map((group) => group.toString(16)).join(':')}:${toIPv4(Number(value & 0xffffffffn))}`
    )
  })
  fc.assert(fc.property(fc.oneof(spellings, fc.ipV6()), (text) => {
    if (/^::\d+\.\d+\.\d+\.\d+$/.test(text)) return true // ipaddr.js reads the deprecated form as IPv4-mapped
    if (!parseIPv6(text, words)) throw new Error(`refused ${text}`)
    const expected = ipaddr.IPv6.parse(text).parts
    const actual = Array.from(words).flatMap((word) => [word >>> 16, word & 0xffff])
    return actual.every((group, i) => group === expected[i])
  }), { numRuns: 5000 })
})

t.test('property: the parsers refuse what the strict forms refuse', async () => {
  const words = new Uint32Array(4)
  const noise = fc.string({ unit: fc.constantFrom('0', '1', '9', '2', '5', '.', ':', 'a', 'F', 'x', '%', ' ', '/'), maxLength: 24 })
  // Almost-addresses: 0-10 groups of 0-5 hex digits, separated by one or two colons, perhaps a dotted tail.
  const nearlyIPv6 = fc.tuple(
    fc.array(fc.tuple(fc.string({ unit: fc.constantFrom('0', '7', 'a', 'F', 'f'), maxLength: 5 }), fc.constantFrom(':', ':', ':', '::')), { maxLength: 10 }),
    fc.option(fc.ipV4(), { freq: 3 })
  ).map(([groups, tail]) => groups.map(([digits, colons]) => digits + colons).join('') + (tail ?? ''))
  fc.assert(fc.property(fc.oneof(noise, nearlyIPv6), (text) => {
    const ipv4 = parseIPv4(text, 0)
    if ((ipv4 >= 0) !== ipaddr.IPv4.isValidFourPartDecimal(text)) throw new Error(`IPv4 ${JSON.stringify(text)}`)
    if (ipv4 >= 0 && toIPv4(ipv4) !== text) throw new Error(`IPv4 value ${text}`)
    const dotted = text.includes('.') ? text.slice(text.lastIndexOf(':') + 1) : undefined
    const strictIPv6 = ipaddr.IPv6.isValid(text) && !text.includes('%') && (dotted === undefined || ipaddr.IPv4.isValidFourPartDecimal(dotted))
    if (parseIPv6(text, words) !== strictIPv6) throw new Error(`IPv6 ${JSON.stringify(text)}`)
  }), { numRuns: 20_000 })
  t.equal(parseIPv4('::ffff:1.2.3.4', 7), 0x01020304, 'from an offset')
})
