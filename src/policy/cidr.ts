// Network allow-lists for API keys: strict parsing of what users submit (a CidrError names the first bad
// entry) and a matcher compiled once per key and run on every request of that key.
//
// Parsing rules (parseAllowedCidrs):
// - an entry is an IPv4 or IPv6 CIDR, or a bare address meaning /32 or /128;
// - refused: anything ipaddr.js would read in a lenient way that a reader may not expect: IPv4 with fewer
//   than four parts, octal-looking or hex parts (`010.0.0.1` is 8.0.0.1 to inet_aton but 10.0.0.1 to a
//   human), a prefix length with a sign or a leading zero, zone ids (`fe80::1%eth0`), whitespace, and the
//   deprecated `::a.b.c.d` form (ipaddr.js reads it as IPv4-mapped, RFC 4291 as IPv4-compatible);
// - refused too: host bits set beyond the prefix (`10.0.0.1/8`), like PostgreSQL's `cidr` type and
//   Python's strict mode. Silently masking it to 10.0.0.0/8 would widen an allow-list that was perhaps
//   meant as 10.0.0.1/32; the message proposes both readings;
// - normalised text: IPv4 dotted decimal, IPv6 in RFC 5952 form (lower case, longest zero run
//   compressed), IPv4-mapped networks as `::ffff:a.b.c.d/n`, always with an explicit prefix length;
// - deduplicated on that text, in the order of first appearance (what the user wrote, stably).
//
// Matching rules (compileAllowList):
// - an IPv4-mapped client address (`::ffff:10.0.0.1`, what a dual-stack listener reports for IPv4
//   clients) is matched as the IPv4 address it carries;
// - a network inside ::ffff:0:0/96 (`::ffff:10.0.0.0/104`) is matched as the IPv4 network it carries,
//   so it admits both spellings of its clients; a wider IPv6 network (`::/0`) admits IPv6 clients only;
// - `::a.b.c.d` addresses are read as RFC 4291 IPv4-compatible, hence never as IPv4 clients;
// - an empty list admits everyone; an address that is not strict dotted decimal or a valid IPv6 text
//   (a zone id, spaces, `010.0.0.1`) matches nothing.
import ipaddr from 'ipaddr.js'

export const MAX_ALLOWED_CIDRS = 100
/** The longest valid entry is 49 characters (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128`). */
const MAX_ENTRY_LENGTH = 64
/** IPv6 client addresses whose answers a matcher remembers. */
const RECENT_IPV6_ADDRESSES = 16

export class CidrError extends Error {
  /** The first entry refused (the whole input when it is not a list). */
  readonly entry: unknown
  /** Its position in the list, or null when the list itself is refused. */
  readonly index: number | null

  constructor (message: string, entry: unknown, index: number | null) {
    super(message)
    this.name = 'CidrError'
    this.entry = entry
    this.index = index
  }
}

/** A network: IPv4 as one unsigned 32-bit number, IPv6 as four unsigned 32-bit words, most significant first. */
type Network =
  | { family: 4, address: number, prefix: number }
  | { family: 6, words: readonly [number, number, number, number], prefix: number }

/**
 * Validates a list of CIDRs or bare addresses and returns them normalised and deduplicated (see the rules at
 * the top of this file). Throws a CidrError naming the first bad entry.
 */
export function parseAllowedCidrs (entries: unknown): string[] {
  if (!Array.isArray(entries)) throw new CidrError('allowedCidrs must be a list of CIDR strings', entries, null)
  if (entries.length > MAX_ALLOWED_CIDRS) {
    throw new CidrError(`allowedCidrs accepts at most ${MAX_ALLOWED_CIDRS} entries, got ${entries.length}`, entries[MAX_ALLOWED_CIDRS], MAX_ALLOWED_CIDRS)
  }
  const seen = new Set<string>()
  const normalised: string[] = []
  entries.forEach((entry: unknown, index: number) => {
    const text = formatNetwork(parseNetwork(entry, index))
    if (!seen.has(text)) {
      seen.add(text)
      normalised.push(text)
    }
  })
  return normalised
}

function parseNetwork (entry: unknown, index: number): Network {
  const refuse = (reason: string): never => {
    const shown = typeof entry === 'string' ? JSON.stringify(entry.length > MAX_ENTRY_LENGTH ? entry.slice(0, MAX_ENTRY_LENGTH) + '…' : entry) : String(entry)
    throw new CidrError(`allowedCidrs[${index}] ${shown}: ${reason}`, entry, index)
  }
  if (typeof entry !== 'string') return refuse(`must be a string, got ${entry === null ? 'null' : typeof entry}`)
  if (entry.length === 0) return refuse('is empty')
  if (entry.length > MAX_ENTRY_LENGTH) return refuse('is too long to be a CIDR')
  if (/\s/.test(entry)) return refuse('contains whitespace')
  if (entry.includes('%')) return refuse('zone ids (%…) are not allowed')

  const slash = entry.indexOf('/')
  const addressText = slash === -1 ? entry : entry.slice(0, slash)
  const prefixText = slash === -1 ? undefined : entry.slice(slash + 1)
  if (prefixText !== undefined && !/^(?:0|[1-9][0-9]{0,2})$/.test(prefixText)) {
    return refuse('the prefix length must be a decimal number without sign or leading zero')
  }

  if (addressText.includes(':')) {
    const dotted = addressText.includes('.') ? addressText.slice(addressText.lastIndexOf(':') + 1) : undefined
    if (dotted !== undefined && !ipaddr.IPv4.isValidFourPartDecimal(dotted)) {
      return refuse('the embedded IPv4 address must be four decimal numbers 0-255 without leading zeros')
    }
    if (dotted !== undefined && addressText === `::${dotted}`) {
      return refuse(`the deprecated IPv4-compatible form is ambiguous; write ::ffff:${dotted} for an IPv4-mapped address`)
    }
    if (!ipaddr.IPv6.isValid(addressText)) return refuse('is not a valid IPv6 address')
    const prefix = prefixText === undefined ? 128 : Number(prefixText)
    if (prefix > 128) return refuse('an IPv6 prefix length is at most 128')
    const words = wordsOf(ipaddr.IPv6.parse(addressText).parts)
    const network = maskWords(words, prefix)
    if (network.some((word, i) => word !== words[i])) {
      const networkText = formatNetwork({ family: 6, words: network, prefix })
      return refuse(`has host bits set beyond /${prefix}: the network is ${networkText}, or write ${formatNetwork({ family: 6, words, prefix: 128 })} for this address alone`)
    }
    return { family: 6, words, prefix }
  }

  if (!ipaddr.IPv4.isValidFourPartDecimal(addressText)) {
    return refuse('is not a valid IPv4 address (four decimal numbers 0-255 without leading zeros) nor an IPv6 address')
  }
  const prefix = prefixText === undefined ? 32 : Number(prefixText)
  if (prefix > 32) return refuse('an IPv4 prefix length is at most 32')
  const address = octetsToNumber(ipaddr.IPv4.parse(addressText).octets)
  const network = maskIPv4(address, prefix)
  if (network !== address) {
    return refuse(`has host bits set beyond /${prefix}: the network is ${formatIPv4(network)}/${prefix}, or write ${addressText}/32 for this address alone`)
  }
  return { family: 4, address, prefix }
}

function formatNetwork (network: Network): string {
  if (network.family === 4) return `${formatIPv4(network.address)}/${network.prefix}`
  const [w0, w1, w2, w3] = network.words
  // RFC 5952 §5: IPv4-mapped addresses are written with their IPv4 part in dotted decimal.
  if (w0 === 0 && w1 === 0 && w2 === 0xffff) return `::ffff:${formatIPv4(w3)}/${network.prefix}`
  const parts = [w0, w1, w2, w3].flatMap((word) => [Math.floor(word / 0x10000), word % 0x10000])
  return `${new ipaddr.IPv6(parts).toRFC5952String()}/${network.prefix}`
}

function octetsToNumber (octets: readonly number[]): number {
  return ((octets[0] * 256 + octets[1]) * 256 + octets[2]) * 256 + octets[3]
}

function formatIPv4 (address: number): string {
  return `${address >>> 24}.${(address >>> 16) & 255}.${(address >>> 8) & 255}.${address & 255}`
}

function wordsOf (parts: readonly number[]): [number, number, number, number] {
  return [parts[0] * 0x10000 + parts[1], parts[2] * 0x10000 + parts[3], parts[4] * 0x10000 + parts[5], parts[6] * 0x10000 + parts[7]]
}

/** The network address of `address`/`prefix` (IPv4), as an unsigned number. */
function maskIPv4 (address: number, prefix: number): number {
  return prefix === 0 ? 0 : (address & (0xffffffff << (32 - prefix))) >>> 0
}

function maskWords (words: readonly number[], prefix: number): [number, number, number, number] {
  const masked = words.map((word, i) => maskIPv4(word, Math.min(32, Math.max(0, prefix - 32 * i))))
  return [masked[0], masked[1], masked[2], masked[3]]
}

// ---------------------------------------------------------------------------------------------------------
// Matching. The networks are turned once into sorted, merged, disjoint ranges [first, last]; a client address
// is parsed by hand (ipaddr.js's regular expressions cost 2-4 µs per parse) and found by binary search.

/**
 * A predicate telling whether a client address (Fastify's `request.ip`) falls in one of the networks.
 * `cidrs` are entries as parseAllowedCidrs accepts them (it throws a CidrError otherwise).
 */
export function compileAllowList (cidrs: readonly string[]): (address: string) => boolean {
  if (cidrs.length === 0) return admitEveryone
  const { ipv4, ipv6 } = mergedRangesOf(cidrs)
  const ipv4Firsts = Float64Array.from(ipv4, ([first]) => first)
  const ipv4Lasts = Float64Array.from(ipv4, ([, last]) => last)
  // Each IPv6 range as 8 words: first (4), then last (4).
  const ipv6Bounds = new Uint32Array(ipv6.length * 8)
  ipv6.forEach(([first, last], i) => {
    for (let w = 0; w < 4; w++) {
      ipv6Bounds[i * 8 + w] = Number((first >> BigInt(96 - 32 * w)) & 0xffffffffn)
      ipv6Bounds[i * 8 + 4 + w] = Number((last >> BigInt(96 - 32 * w)) & 0xffffffffn)
    }
  })

  const words = new Uint32Array(4)
  const matchIPv4 = (address: number): boolean => {
    // The last range starting at or before the address is the only one that can hold it.
    let low = 0
    let high = ipv4Firsts.length - 1
    while (low <= high) {
      const middle = (low + high) >>> 1
      if (ipv4Firsts[middle] <= address) low = middle + 1
      else high = middle - 1
    }
    return high >= 0 && address <= ipv4Lasts[high]
  }
  const matchIPv6 = (): boolean => {
    let low = 0
    let high = ipv6.length - 1
    while (low <= high) {
      const middle = (low + high) >>> 1
      if (compareWords(ipv6Bounds, middle * 8, words) <= 0) low = middle + 1
      else high = middle - 1
    }
    return high >= 0 && compareWords(ipv6Bounds, high * 8 + 4, words) >= 0
  }

  // A client usually sends many requests in a row: remembering the last answer skips the parse. IPv6 text
  // costs 150-400 ns to parse where dotted decimal costs ~60: the answers for a few IPv6 clients taking
  // turns are remembered too, in a map emptied when full (bounded, and cheaper than keeping recency).
  let lastAddress = ''
  let lastAnswer = false
  const recentIPv6 = new Map<string, boolean>()
  return (address: string): boolean => {
    if (address === lastAddress) return lastAnswer
    let answer: boolean | undefined
    // Dual-stack listeners report IPv4 clients as ::ffff:a.b.c.d, always in this spelling.
    const ipv4Address = parseIPv4(address, address.startsWith('::ffff:') ? 7 : 0)
    if (ipv4Address >= 0) {
      answer = matchIPv4(ipv4Address)
    } else {
      answer = recentIPv6.get(address)
      if (answer === undefined) {
        answer = parseIPv6(address, words) && (words[0] === 0 && words[1] === 0 && words[2] === 0xffff ? matchIPv4(words[3]) : matchIPv6())
        if (recentIPv6.size >= RECENT_IPV6_ADDRESSES) recentIPv6.clear()
        recentIPv6.set(address, answer)
      }
    }
    lastAddress = address
    lastAnswer = answer
    return answer
  }
}

function admitEveryone (): boolean {
  return true
}

/**
 * The addresses a network admits, as one range: IPv4 networks and IPv6 networks inside ::ffff:0:0/96 in
 * the IPv4 space (they match the same clients, see the matching rules), other IPv6 networks in the IPv6 space.
 */
function rangeOf (network: Network): { family: 4, range: [number, number] } | { family: 6, range: [bigint, bigint] } {
  if (network.family === 4) return { family: 4, range: [network.address, network.address + 2 ** (32 - network.prefix) - 1] }
  if (network.prefix >= 96 && network.words[0] === 0 && network.words[1] === 0 && network.words[2] === 0xffff) {
    return { family: 4, range: [network.words[3], network.words[3] + 2 ** (128 - network.prefix) - 1] }
  }
  const first = network.words.reduce((value, word) => (value << 32n) | BigInt(word), 0n)
  return { family: 6, range: [first, first + (1n << BigInt(128 - network.prefix)) - 1n] }
}

/** The networks as sorted, merged, disjoint ranges per address space. Throws a CidrError for a bad entry. */
function mergedRangesOf (cidrs: readonly string[]): { ipv4: Array<[number, number]>, ipv6: Array<[bigint, bigint]> } {
  const ipv4Ranges: Array<[number, number]> = []
  const ipv6Ranges: Array<[bigint, bigint]> = []
  cidrs.forEach((cidr, index) => {
    const range = rangeOf(parseNetwork(cidr, index))
    if (range.family === 4) ipv4Ranges.push(range.range)
    else ipv6Ranges.push(range.range)
  })
  return {
    ipv4: mergeRanges(ipv4Ranges, (last, first) => last + 1 === first),
    ipv6: mergeRanges(ipv6Ranges, (last, first) => last + 1n === first)
  }
}

/**
 * The first entry of `cidrs` that admits an address `allowed` does not, or undefined when `allowed` admits
 * every address they admit (an empty `allowed` admits everyone). Both are lists parseAllowedCidrs accepts;
 * it decides whether a key's allow-list is no wider than another key's. An empty `cidrs` has no entry to
 * name: what an empty list means (any address) is the caller's to weigh. Merged ranges are disjoint and
 * never adjacent, so a network is covered exactly when one merged range holds it whole.
 */
export function firstCidrOutside (cidrs: readonly string[], allowed: readonly string[]): string | undefined {
  if (allowed.length === 0) return undefined
  const { ipv4, ipv6 } = mergedRangesOf(allowed)
  return cidrs.find((cidr, index) => {
    const { family, range: [first, last] } = rangeOf(parseNetwork(cidr, index))
    const ranges: Array<[number | bigint, number | bigint]> = family === 4 ? ipv4 : ipv6
    return !ranges.some(([low, high]) => low <= first && last <= high)
  })
}

/** Sorts ranges and merges the overlapping or adjacent ones, so that they are disjoint and ordered. */
function mergeRanges<T extends number | bigint> (ranges: Array<[T, T]>, isNextTo: (last: T, first: T) => boolean): Array<[T, T]> {
  const sorted = [...ranges].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  const merged: Array<[T, T]> = []
  for (const [first, last] of sorted) {
    const previous = merged.at(-1)
    if (previous !== undefined && (first <= previous[1] || isNextTo(previous[1], first))) {
      if (last > previous[1]) previous[1] = last
    } else {
      merged.push([first, last])
    }
  }
  return merged
}

/** Compares 4 words of `bounds` from `offset` with `words`, lexicographically (as 128-bit numbers). */
function compareWords (bounds: Uint32Array, offset: number, words: Uint32Array): number {
  for (let w = 0; w < 4; w++) {
    const difference = bounds[offset + w] - words[w]
    if (difference !== 0) return difference
  }
  return 0
}

/**
 * Strict dotted decimal (four numbers 0-255, no leading zero) from `start` to the end of `text`, as an
 * unsigned number; -1 when it is anything else.
 */
export function parseIPv4 (text: string, start: number): number {
  let value = 0
  let octet = 0
  let digits = 0
  let dots = 0
  for (let i = start; i < text.length; i++) {
    const code = text.charCodeAt(i)
    if (code >= 48 && code <= 57) {
      if (digits === 1 && octet === 0) return -1
      octet = octet * 10 + code - 48
      if (octet > 255) return -1
      digits++
    } else if (code === 46 && digits > 0 && dots < 3) {
      value = value * 256 + octet
      octet = 0
      digits = 0
      dots++
    } else {
      return -1
    }
  }
  return digits > 0 && dots === 3 ? value * 256 + octet : -1
}

const groups = new Uint16Array(8)
/** The value of each ASCII hex digit, -1 for other characters. */
const HEX_DIGITS = Int8Array.from({ length: 128 }, (_, code) => {
  const digit = Number.parseInt(String.fromCharCode(code), 16)
  return Number.isNaN(digit) ? -1 : digit
})

/**
 * An IPv6 address in any RFC 4291 text form (groups of 1-4 hex digits, one `::`, an optional dotted IPv4
 * tail in strict dotted decimal; no zone id) into four unsigned 32-bit words; false when it is not one.
 */
export function parseIPv6 (text: string, words: Uint32Array): boolean {
  const length = text.length
  if (length < 2 || length > 45) return false
  let count = 0
  let gap = -1
  let i = 0
  if (text.charCodeAt(0) === 58) {
    if (text.charCodeAt(1) !== 58) return false
    gap = 0
    i = 2
  }
  while (i < length) {
    const start = i
    let value = 0
    for (; i < length && i - start < 5; i++) {
      const code = text.charCodeAt(i)
      const digit = code < 128 ? HEX_DIGITS[code] : -1
      if (digit < 0) break
      value = value * 16 + digit
    }
    if (i < length && text.charCodeAt(i) === 46) {
      // A dotted IPv4 tail takes the last two groups and ends the text.
      if (count > 6) return false
      const ipv4 = parseIPv4(text, start)
      if (ipv4 < 0) return false
      groups[count++] = Math.floor(ipv4 / 0x10000)
      groups[count++] = ipv4 % 0x10000
      i = length
      break
    }
    const digits = i - start
    if (digits === 0 || digits > 4 || count === 8) return false
    groups[count++] = value
    if (i === length) break
    if (text.charCodeAt(i) !== 58) return false
    i++
    if (i < length && text.charCodeAt(i) === 58) {
      if (gap >= 0) return false
      gap = count
      i++
    } else if (i === length) {
      return false
    }
  }
  if (gap < 0 ? count !== 8 : count > 7) return false
  // Groups after the gap move to the end; the gap is zeros.
  const shift = 8 - count
  let high = 0
  for (let g = 0; g < 8; g++) {
    const source = gap < 0 || g < gap ? g : g - shift
    const group = gap >= 0 && g >= gap && g < gap + shift ? 0 : groups[source]
    if ((g & 1) === 0) high = group
    else words[g >> 1] = high * 0x10000 + group
  }
  return true
}
