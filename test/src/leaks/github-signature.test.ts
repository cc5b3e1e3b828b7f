import t, { type Test } from 'tap'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto'
import { GitHubKeyStore, signatureHeaders, type GitHubKeyStoreOptions } from '#src/leaks/github-signature.ts'

interface SigningKey {
  id: string
  privateKey: KeyObject
  pem: string
}

function newSigningKey (id: string, namedCurve = 'P-256'): SigningKey {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve })
  return { id, privateKey, pem: publicKey.export({ type: 'spki', format: 'pem' }) as string }
}

/** What GitHub sends: base64 of the DER signature of the raw body. */
function signBody (body: Buffer, key: SigningKey): string {
  return sign('sha256', body, { key: key.privateKey, dsaEncoding: 'der' }).toString('base64')
}

function keysDocument (...keys: SigningKey[]): string {
  return JSON.stringify({
    public_keys: keys.map((key, index) => ({ key_identifier: key.id, key: key.pem, is_current: index === keys.length - 1 }))
  })
}

/** A stand-in for api.github.com/meta/public_keys/secret_scanning that counts the requests it gets. */
interface KeysServer {
  url: string
  requests: number
  /** Status and body of the next answers. */
  answer: { status: number, body: string, etag?: string }
  close: () => Promise<void>
}

async function startKeysServer (body: string): Promise<KeysServer> {
  const state = { requests: 0, answer: { status: 200, body } as KeysServer['answer'] }
  const server: Server = createServer((request, response) => {
    state.requests++
    const { status, body, etag } = state.answer
    if (etag !== undefined && request.headers['if-none-match'] === etag) {
      response.writeHead(304).end()
      return
    }
    response.writeHead(status, { 'content-type': 'application/json', ...(etag !== undefined ? { etag } : {}) }).end(body)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/meta/public_keys/secret_scanning`,
    get requests () { return state.requests },
    get answer () { return state.answer },
    set answer (value) { state.answer = value },
    close: () => new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

function fakeClock (start = 1_750_000_000_000): { now: () => number, advance: (ms: number) => void } {
  let time = start
  return { now: () => time, advance: (ms) => { time += ms } }
}

const body = Buffer.from('[{"token":"battra_example","type":"battra_api_key","url":"https://github.com/o/r/blob/abc/.env","source":"content"}]')

async function setup (t: Test, keys: SigningKey[], options: Partial<GitHubKeyStoreOptions> = {}) {
  const server = await startKeysServer(keysDocument(...keys))
  t.teardown(server.close)
  const clock = fakeClock()
  const store = new GitHubKeyStore({ url: server.url, now: clock.now, ...options })
  return { server, clock, store }
}

t.test('a correctly signed body verifies', async (t) => {
  const key = newSigningKey('a'.repeat(64))
  const { server, store } = await setup(t, [key])
  t.same(await store.verify(body, key.id, signBody(body, key)), { ok: true })
  t.same(await store.verify(body, key.id, signBody(body, key)), { ok: true }, 'again, from the cache')
  t.equal(server.requests, 1, 'the keys were fetched once')
  t.match(store.stats(), { fetches: 1, fetchFailures: 0, knownKeys: 1, lastFetchError: null })
  t.type(store.stats().lastFetchAt, 'number')
})

t.test('one flipped byte in the body fails', async (t) => {
  const key = newSigningKey('key-1')
  const { store } = await setup(t, [key])
  const signature = signBody(body, key)
  for (const position of [0, 40, body.length - 1]) {
    const tampered = Buffer.from(body)
    tampered[position] ^= 0x01
    t.same(await store.verify(tampered, key.id, signature), { ok: false, reason: 'bad-signature' }, `byte ${position}`)
  }
  const withNewline = Buffer.concat([body, Buffer.from('\n')])
  t.same(await store.verify(withNewline, key.id, signature), { ok: false, reason: 'bad-signature' }, 'a trailing newline counts')
})

t.test("a signature by another key under a known key's identifier fails", async (t) => {
  const key = newSigningKey('key-1')
  const impostor = newSigningKey('key-1')
  const { store } = await setup(t, [key])
  t.same(await store.verify(body, key.id, signBody(body, impostor)), { ok: false, reason: 'bad-signature' })
})

t.test('a signature made for another listed key fails', async (t) => {
  const first = newSigningKey('key-1')
  const second = newSigningKey('key-2')
  const { store } = await setup(t, [first, second])
  t.same(await store.verify(body, first.id, signBody(body, second)), { ok: false, reason: 'bad-signature' })
  t.same(await store.verify(body, second.id, signBody(body, second)), { ok: true })
})

t.test('missing headers are refused without fetching keys', async (t) => {
  const key = newSigningKey('key-1')
  const { server, store } = await setup(t, [key])
  const signature = signBody(body, key)
  for (const [id, sig] of [[undefined, signature], [key.id, undefined], [undefined, undefined], ['', signature], [key.id, '']] as const) {
    t.same(await store.verify(body, id, sig), { ok: false, reason: 'missing-headers' }, `${String(id)} / ${String(sig)}`)
  }
  t.equal(server.requests, 0)
})

t.test('malformed signatures are refused without throwing or fetching keys', async (t) => {
  const key = newSigningKey('key-1')
  const { server, store } = await setup(t, [key])
  const valid = signBody(body, key)
  const cases: Record<string, string> = {
    'not base64': 'not base64 at all!',
    'base64url alphabet': valid.replace(/\+/g, '-').replace(/\//g, '_') + (valid.includes('+') || valid.includes('/') ? '' : '-'),
    'embedded space': valid.slice(0, 10) + ' ' + valid.slice(10),
    'absurdly long': 'A'.repeat(100_000),
    'one character': 'A',
    'random 64 bytes (raw r||s, not DER)': randomBytes(64).toString('base64'),
    'DER with trailing garbage': Buffer.concat([Buffer.from(valid, 'base64'), Buffer.from([0])]).toString('base64'),
    'truncated DER': Buffer.from(valid, 'base64').subarray(0, 20).toString('base64'),
    'padding in the middle': valid.slice(0, 8) + '==' + valid.slice(8)
  }
  for (const [name, signature] of Object.entries(cases)) {
    t.same(await store.verify(body, key.id, signature), { ok: false, reason: 'malformed-signature' }, name)
  }
  t.equal(server.requests, 0)
})

t.test('a well-formed DER signature that does not match is a bad signature', async (t) => {
  const key = newSigningKey('key-1')
  const { store } = await setup(t, [key])
  // SEQUENCE { INTEGER 1, INTEGER 1 }
  const trivial = Buffer.from([0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]).toString('base64')
  t.same(await store.verify(body, key.id, trivial), { ok: false, reason: 'bad-signature' })
})

t.test('an unknown identifier triggers one refetch; a flood within the interval triggers none', async (t) => {
  const key = newSigningKey('key-1')
  const { server, clock, store } = await setup(t, [key])
  t.same(await store.verify(body, key.id, signBody(body, key)), { ok: true })
  t.equal(server.requests, 1)

  clock.advance(61_000)
  const stranger = newSigningKey('key-unknown')
  t.same(await store.verify(body, stranger.id, signBody(body, stranger)), { ok: false, reason: 'unknown-key' })
  t.equal(server.requests, 2, 'exactly one refetch')

  const signature = signBody(body, stranger)
  const results = await Promise.all(Array.from({ length: 100 }, (_, i) => store.verify(body, `unknown-${i}`, signature)))
  // No refetch is due: they might be keys GitHub rotated to meanwhile, so a 503 GitHub retries, not a 401.
  t.ok(results.every((result) => !result.ok && result.reason === 'keys-unavailable'))
  for (let i = 0; i < 100; i++) {
    clock.advance(500) // still within the minute
    await store.verify(body, `sequential-${i}`, signature)
  }
  t.equal(server.requests, 2, '100 concurrent and 100 sequential unknown identifiers: no further fetch')
  t.same(await store.verify(body, key.id, signBody(body, key)), { ok: true }, 'the known key still verifies')

  clock.advance(11_000)
  await store.verify(body, 'unknown-after-the-interval', signature)
  t.equal(server.requests, 3, 'one more once the interval has passed')
})

t.test('concurrent first callers share one fetch', async (t) => {
  const key = newSigningKey('key-1')
  const { server, store } = await setup(t, [key])
  const signature = signBody(body, key)
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => store.verify(body, i % 2 === 0 ? key.id : `unknown-${i}`, signature)))
  t.equal(server.requests, 1)
  t.equal(results.filter((result) => result.ok).length, 25)
})

t.test('key rotation on the server is picked up through the refetch', async (t) => {
  const oldKey = newSigningKey('old')
  const newKey = newSigningKey('new')
  const { server, clock, store } = await setup(t, [oldKey])
  t.same(await store.verify(body, oldKey.id, signBody(body, oldKey)), { ok: true })

  server.answer = { status: 200, body: keysDocument(oldKey, newKey) }
  clock.advance(10_000)
  t.same(await store.verify(body, newKey.id, signBody(body, newKey)), { ok: false, reason: 'keys-unavailable' },
    'within a minute of the last fetch, the new key waits for the interval: a 503 GitHub retries, never a 401 that drops the report')
  t.equal(store.retryAfterSeconds(), 50, 'retry once the refetch is due')
  t.equal(server.requests, 1)

  clock.advance(51_000)
  t.same(await store.verify(body, newKey.id, signBody(body, newKey)), { ok: true })
  t.same(await store.verify(body, oldKey.id, signBody(body, oldKey)), { ok: true }, 'the key that is no longer current still verifies while listed')
  t.equal(server.requests, 2)

  server.answer = { status: 200, body: keysDocument(newKey) }
  clock.advance(60 * 60 * 1000)
  t.same(await store.verify(body, oldKey.id, signBody(body, oldKey)), { ok: false, reason: 'unknown-key' }, 'a withdrawn key is dropped at the next fetch')
  t.equal(store.stats().knownKeys, 1)
})

t.test('the keys are refetched once their time to live has passed', async (t) => {
  const key = newSigningKey('key-1')
  const { server, clock, store } = await setup(t, [key], { ttlMs: 10 * 60 * 1000 })
  await store.verify(body, key.id, signBody(body, key))
  clock.advance(9 * 60 * 1000)
  await store.verify(body, key.id, signBody(body, key))
  t.equal(server.requests, 1)
  clock.advance(60 * 1000)
  t.same(await store.verify(body, key.id, signBody(body, key)), { ok: true })
  t.equal(server.requests, 2)
})

t.test('conditional requests: a 304 keeps the keys', async (t) => {
  const key = newSigningKey('key-1')
  const { server, clock, store } = await setup(t, [key])
  server.answer = { status: 200, body: keysDocument(key), etag: '"v1"' }
  await store.verify(body, key.id, signBody(body, key))
  clock.advance(60 * 60 * 1000)
  t.same(await store.verify(body, key.id, signBody(body, key)), { ok: true })
  t.equal(server.requests, 2)
  t.match(store.stats(), { fetches: 2, fetchFailures: 0, knownKeys: 1 })
})

t.test('keys server down: keys unavailable (not unknown), no throw', async (t) => {
  const key = newSigningKey('key-1')
  const server = await startKeysServer(keysDocument(key))
  const url = server.url
  await server.close()
  const clock = fakeClock()
  const store = new GitHubKeyStore({ url, now: clock.now })
  t.same(await store.verify(body, key.id, signBody(body, key)), { ok: false, reason: 'keys-unavailable' })
  t.match(store.stats(), { fetches: 1, fetchFailures: 1, knownKeys: 0, lastFetchAt: null })
  t.type(store.stats().lastFetchError, 'string')
  t.same(await store.verify(body, key.id, signBody(body, key)), { ok: false, reason: 'keys-unavailable' })
  t.equal(store.stats().fetches, 1, 'a failed fetch is not retried within the interval')
})

t.test('an injected fetch that throws or rejects is a failed fetch, not a crash', async (t) => {
  const key = newSigningKey('key-1')
  const throwing = (() => { throw new Error('synchronous') }) as unknown as typeof fetch
  const rejecting = (async () => { throw new Error('asynchronous') }) as unknown as typeof fetch
  for (const fetch of [throwing, rejecting]) {
    const store = new GitHubKeyStore({ url: 'http://127.0.0.1:9/', fetch, now: fakeClock().now })
    t.same(await store.verify(body, key.id, signBody(body, key)), { ok: false, reason: 'keys-unavailable' })
    t.equal(store.stats().fetchFailures, 1)
  }
})

t.test('garbage from the keys server: keys unavailable, no throw', async (t) => {
  const key = newSigningKey('key-1')
  const p384 = newSigningKey('p384', 'P-384')
  const ed25519 = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }) as string
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }) as string
  const answers: Record<string, { status: number, body: string }> = {
    'HTTP 500': { status: 500, body: keysDocument(key) },
    'not JSON': { status: 200, body: '<html>rate limited</html>' },
    'JSON null': { status: 200, body: 'null' },
    'no public_keys': { status: 200, body: JSON.stringify({ keys: [] }) },
    'public_keys not an array': { status: 200, body: JSON.stringify({ public_keys: { key_identifier: key.id, key: key.pem } }) },
    'empty list': { status: 200, body: JSON.stringify({ public_keys: [] }) },
    'entries of the wrong shape': { status: 200, body: JSON.stringify({ public_keys: [null, 42, { key_identifier: key.id }, { key_identifier: 7, key: key.pem }, { key_identifier: key.id, key: 'not a PEM' }] }) },
    'only non-P-256 keys': {
      status: 200,
      body: JSON.stringify({ public_keys: [{ key_identifier: key.id, key: p384.pem }, { key_identifier: 'ed', key: ed25519 }, { key_identifier: 'rsa', key: rsa }] })
    },
    'larger than a megabyte': { status: 200, body: JSON.stringify({ public_keys: [], padding: 'x'.repeat(2 * 1024 * 1024) }) }
  }
  for (const [name, answer] of Object.entries(answers)) {
    const { server, store } = await setup(t, [key])
    server.answer = answer
    t.same(await store.verify(body, key.id, signBody(body, key)), { ok: false, reason: 'keys-unavailable' }, name)
    t.match(store.stats(), { fetches: 1, fetchFailures: 1, knownKeys: 0 }, name)
  }
})

t.test('malformed and non-P-256 entries are skipped, good ones kept', async (t) => {
  const key = newSigningKey('good')
  const p384 = newSigningKey('p384', 'P-384')
  const { server, store } = await setup(t, [key])
  server.answer = {
    status: 200,
    body: JSON.stringify({
      public_keys: [
        { key_identifier: p384.id, key: p384.pem, is_current: false },
        null,
        { key_identifier: 'bad pem', key: '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----' },
        { key_identifier: key.id, key: key.pem, is_current: true, added_later: 'tolerated' }
      ]
    })
  }
  t.same(await store.verify(body, key.id, signBody(body, key)), { ok: true })
  // A P-384 signature does not even fit P-256's DER size, so ask with a P-256 signature under the refused identifier.
  // Refused as not held (503 until a refetch is due, which would not bring it either).
  t.match(await store.verify(body, p384.id, signBody(body, key)), { ok: false, reason: /^(unknown-key|keys-unavailable)$/ }, 'the P-384 key was refused')
  t.equal(store.stats().knownKeys, 1)
})

t.test('a failed refresh keeps the keys already held', async (t) => {
  const key = newSigningKey('key-1')
  const { server, clock, store } = await setup(t, [key])
  t.same(await store.verify(body, key.id, signBody(body, key)), { ok: true })
  server.answer = { status: 200, body: 'garbage' }
  clock.advance(2 * 60 * 60 * 1000)
  t.same(await store.verify(body, key.id, signBody(body, key)), { ok: true })
  t.match(store.stats(), { fetches: 2, fetchFailures: 1, knownKeys: 1 })
})

t.test('an unknown identifier after a failed refetch is unavailable (503), after a good one unknown (401); Retry-After follows the interval', async (t) => {
  const key = newSigningKey('key-1')
  const stranger = newSigningKey('stranger')
  const { server, clock, store } = await setup(t, [key])
  t.same(await store.verify(body, key.id, signBody(body, key)), { ok: true })
  clock.advance(61_000)
  server.answer = { status: 500, body: 'down' }
  t.same(await store.verify(body, stranger.id, signBody(body, stranger)), { ok: false, reason: 'keys-unavailable' }, 'the refetch failed: cannot tell')
  t.equal(store.retryAfterSeconds(), 60)
  clock.advance(20_500)
  t.equal(store.retryAfterSeconds(), 40)
  t.same(await store.verify(body, key.id, signBody(body, key)), { ok: true }, 'the keys held still verify meanwhile')
  clock.advance(40_000)
  server.answer = { status: 200, body: keysDocument(key) }
  t.same(await store.verify(body, stranger.id, signBody(body, stranger)), { ok: false, reason: 'unknown-key' }, 'the refetch succeeded: the identifier is not GitHub\'s')
  t.equal(server.requests, 3)
})

t.test('a keys server that never answers times out', async (t) => {
  const key = newSigningKey('key-1')
  const server = createServer(() => { /* never answers */ })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const { port } = server.address() as AddressInfo
  const store = new GitHubKeyStore({ url: `http://127.0.0.1:${port}/`, now: fakeClock().now, timeoutMs: 100 })
  t.same(await store.verify(body, key.id, signBody(body, key)), { ok: false, reason: 'keys-unavailable' })
  t.equal(store.stats().fetchFailures, 1)
})

t.test('a body of 1000 tokens (about 200 KB) verifies', async (t) => {
  const key = newSigningKey('key-1')
  const { store } = await setup(t, [key])
  const items = Array.from({ length: 1000 }, (_, i) => ({
    token: `battra_${randomBytes(29).toString('base64url').slice(0, 38)}`,
    type: 'battra_api_key',
    url: `https://github.com/octocat/repository-${i}/blob/${randomBytes(20).toString('hex')}/config/settings.env`,
    source: 'content'
  }))
  const large = Buffer.from(JSON.stringify(items, null, 1))
  t.ok(large.length > 180_000 && large.length < 260_000, `${large.length} bytes`)
  const signature = signBody(large, key)
  t.same(await store.verify(large, key.id, signature), { ok: true })
  const tampered = Buffer.from(large)
  tampered[large.length >> 1] ^= 0x20
  t.same(await store.verify(tampered, key.id, signature), { ok: false, reason: 'bad-signature' })
})

t.test("GitHub's documented sample verifies against its documented key", async (t) => {
  // From GitHub's secret scanning partner program docs (Python validation sample).
  const pem = [
    '-----BEGIN PUBLIC KEY-----',
    'MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9MJJHnMfn2+H4xL4YaPDA4RpJqUq',
    'kCmRCBnYERxZanmcpzQSXs1X/AljlKkbJ8qpVIW4clayyef9gWhFbNHWAA==',
    '-----END PUBLIC KEY-----'
  ].join('\n')
  const id = '90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a'
  const server = await startKeysServer(JSON.stringify({ public_keys: [{ key_identifier: id, key: pem, is_current: true }] }))
  t.teardown(server.close)
  const store = new GitHubKeyStore({ url: server.url, now: fakeClock().now })
  const payload = Buffer.from('[{"token":"some_token","type":"some_type","url":"some_url"}]')
  const signature = 'MEUCIQDKZokqnCjrRtw0tni+2Ltvl/uiMJ1EGumEsp1BsNr32AIgQY1YXD2nlj+XNfGK4rBfkMJ1JDOQcYXxa2sY8FNkrKc='
  t.same(await store.verify(payload, id, signature), { ok: true })
})

t.test('signatureHeaders reads single header values and refuses duplicates', async (t) => {
  t.same(signatureHeaders({ 'github-public-key-identifier': 'id', 'github-public-key-signature': 'sig' }), { keyIdentifier: 'id', signature: 'sig' })
  t.same(signatureHeaders({ 'github-public-key-identifier': ['a', 'b'], 'github-public-key-signature': 'sig' }), { keyIdentifier: undefined, signature: 'sig' })
  t.same(signatureHeaders({}), { keyIdentifier: undefined, signature: undefined })
})
