import fc from 'fast-check'
import t from 'tap'
import { KEY_LENGTH, KEY_PREFIX, TokenHasher, characterCodes, checksumOf, equalInConstantTime, generateApiKey, hashApiKey, hintFor, isPlausibleKey } from '#src/auth/api-key.ts'
import { extractApiKey } from '#src/auth/key-headers.ts'
import { withOneCharacterChanged } from '#test/helpers/fixtures.ts'

t.test('generated keys: battra_ + 32 base62 + 6-character CRC32 checksum', async (t) => {
  const keys = new Set(Array.from({ length: 500 }, generateApiKey))
  t.equal(keys.size, 500, 'no repeats')
  for (const key of keys) {
    t.equal(key.length, KEY_LENGTH)
    t.match(key, /^battra_[0-9A-Za-z]{38}$/)
    t.equal(key.slice(-6), checksumOf(key.slice(0, -6)))
    t.ok(isPlausibleKey(key))
  }
  // Every base62 character appears in the random part: the alphabet is used whole.
  const seen = new Set([...keys].flatMap((key) => [...key.slice(KEY_PREFIX.length, -6)]))
  t.equal(seen.size, 62)
})

t.test('the checksum rejects a changed character', async (t) => {
  const key = generateApiKey()
  for (const position of [KEY_PREFIX.length, 20, KEY_LENGTH - 1]) {
    const changed = key.slice(0, position) + (key[position] === 'a' ? 'b' : 'a') + key.slice(position + 1)
    t.notOk(isPlausibleKey(changed), `position ${position}`)
  }
})

t.test('legacy keys pass the format check; impossible keys do not', async (t) => {
  t.ok(isPlausibleKey('battra-dev-key-1'))
  t.ok(isPlausibleKey('x'.repeat(256)))
  t.notOk(isPlausibleKey('x'.repeat(257)))
  for (const bad of ['a b', 'a\tb', 'caf\u00e9', 'nul\u0000', 'new\nline', '\u007f']) t.notOk(isPlausibleKey(bad), JSON.stringify(bad))
})

t.test('hash and hint', async (t) => {
  t.equal(hashApiKey('battra-dev-key-1'), hashApiKey('battra-dev-key-1'))
  t.match(hashApiKey('battra-dev-key-1'), /^[0-9a-f]{64}$/)
  t.equal(hintFor('battra-dev-key-1'), 'battra-d…ey-1')
  const key = generateApiKey()
  const hint = hintFor(key)
  t.ok(hint.startsWith('battra_') && hint.length < 20, hint)
  t.notOk(key.includes(hint.replace('…', '')), 'far too little of the key to use it')
})

t.test('header extraction', async (t) => {
  const raw = (...pairs: string[]) => pairs
  const cases: Array<[string[], ReturnType<typeof extractApiKey>]> = [
    [raw(), { outcome: 'missing' }],
    [raw('Host', 'x'), { outcome: 'missing' }],
    [raw('X-API-Key', 'k1'), { outcome: 'key', key: 'k1' }],
    [raw('x-api-key', 'ApiKey k1'), { outcome: 'key', key: 'k1' }],
    [raw('X-Api-Key', '  apikey   k1 '), { outcome: 'key', key: 'k1' }],
    [raw('Authorization', 'ApiKey k1'), { outcome: 'key', key: 'k1' }],
    [raw('AUTHORIZATION', 'APIKEY k1'), { outcome: 'key', key: 'k1' }],
    [raw('Authorization', 'Bearer k1'), { outcome: 'missing' }],
    [raw('Authorization', 'ApiKeyk1'), { outcome: 'missing' }],
    [raw('Authorization', 'Bearer k1', 'X-API-Key', 'k1'), { outcome: 'key', key: 'k1' }],
    [raw('X-API-Key', ''), { outcome: 'missing' }],
    [raw('X-API-Key', ' \t '), { outcome: 'missing' }],
    [raw('X-API-Key', 'ApiKey'), { outcome: 'missing' }],
    [raw('X-API-Key', 'k1', 'Authorization', 'ApiKey k1'), { outcome: 'key', key: 'k1' }],
    [raw('X-API-Key', 'k1', 'Authorization', 'ApiKey k2'), { outcome: 'conflict' }],
    [raw('X-API-Key', 'k1', 'X-API-Key', 'k1'), { outcome: 'conflict' }],
    [raw('Authorization', 'ApiKey k1', 'authorization', 'ApiKey k1'), { outcome: 'conflict' }],
    // Read as they are; the token hasher refuses them (below).
    [raw('X-API-Key', 'ApiKey ApiKey k1'), { outcome: 'key', key: 'ApiKey k1' }],
    [raw('X-API-Key', 'k\u00e91'), { outcome: 'key', key: 'k\u00e91' }],
    [raw('X-API-Key', '\u000bk1'), { outcome: 'key', key: '\u000bk1' }],
    [raw('X-API-Key', 'k1\u000c'), { outcome: 'key', key: 'k1\u000c' }],
    [raw('X-API-Key', '\u00a0k1'), { outcome: 'key', key: '\u00a0k1' }]
  ]
  for (const [headers, expected] of cases) t.same(extractApiKey(headers), expected, JSON.stringify(headers))
})

t.test('token hashes: what cannot be a key has none', async (t) => {
  const hasher = new TokenHasher()
  const connection = {}
  const key = generateApiKey()
  t.equal(hasher.tokenHashOf(key, connection), hashApiKey(key))
  t.equal(hasher.tokenHashOf('battra-dev-key-1', connection), hashApiKey('battra-dev-key-1'))
  for (const impossible of ['ApiKey k1', 'k\u00e91', 'k'.repeat(300), '\u000bk1', 'k1\u000c', '\u00a0k1', withOneCharacterChanged(key)]) {
    t.equal(hasher.tokenHashOf(impossible, connection), undefined, JSON.stringify(impossible.slice(0, 20)))
    t.equal(hasher.tokenHashOf(impossible, undefined), undefined, 'without a connection too')
  }
})

t.test('token hashes: a connection remembers only its last key, and never answers for another', async (t) => {
  const hasher = new TokenHasher()
  const [first, second] = [{}, {}]
  const key = generateApiKey()
  const other = generateApiKey()
  t.equal(hasher.tokenHashOf(key, first), hashApiKey(key))
  t.equal(hasher.tokenHashOf(key, first), hashApiKey(key), 'the same key again')
  // Near misses of the remembered key: its prefix, a longer key, one character changed.
  for (const near of [key.slice(0, -1), key + 'x', withOneCharacterChanged(key, 10), other, 'battra-dev-key-1']) {
    t.equal(hasher.tokenHashOf(near, first), isPlausibleKey(near) ? hashApiKey(near) : undefined, near)
    t.equal(hasher.tokenHashOf(key, first), hashApiKey(key), 'and back')
  }
  t.equal(hasher.tokenHashOf(other, second), hashApiKey(other), 'each connection its own')
  t.equal(hasher.tokenHashOf(key, first), hashApiKey(key))
})

t.test('constant-time equality', async (t) => {
  t.ok(equalInConstantTime(characterCodes('abc'), 'abc'))
  t.ok(equalInConstantTime(characterCodes(''), ''))
  t.ok(equalInConstantTime(characterCodes('a\u0101'), 'a\u0101'), 'a character above 255 is one code, not its low byte')
  for (const [known, candidate] of [['abc', 'abd'], ['abc', 'ab'], ['ab', 'abc'], ['abc', ''], ['', 'a'], ['abc', 'ABC'], ['abc', 'ab\u0163'], ['ab\u0163', 'abc']]) {
    t.notOk(equalInConstantTime(characterCodes(known), candidate), `${known} ≠ ${candidate}`)
  }
  // Any two strings, of any characters (UTF-16 code units included), and near copies of each other.
  const text = fc.string({ unit: 'binary', maxLength: 60 })
  const pair = fc.oneof(fc.tuple(text, text), text.map((s) => [s, s] as const), fc.tuple(text, fc.nat(), fc.integer({ min: 1, max: 0xffff })).map(([s, at, delta]) => {
    if (s.length === 0) return [s, s] as const
    const i = at % s.length
    return [s, s.slice(0, i) + String.fromCharCode((s.charCodeAt(i) + delta) % 0x10000) + s.slice(i + 1)] as const
  }))
  fc.assert(fc.property(pair, ([known, candidate]) => equalInConstantTime(characterCodes(known), candidate) === (known === candidate)))
})
