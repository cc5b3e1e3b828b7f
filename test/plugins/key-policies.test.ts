// Key policies enforced by the auth hook: allowed networks (IPv4, IPv6, IPv4-mapped, edges of ranges,
// X-Forwarded-For only from trusted proxies) and rate limits (the key's own, its organization's, with
// their headers), counted in process here (test/plugins/rate-limit.test.ts covers Redis).
import t, { type Test } from 'tap'
import { build, type TestClock } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertKey, insertOrganization, insertUserWithKey, testOrgId } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)
const { app, db, clock } = await build(t)
const orgId = await testOrgId(db)

type Response = Awaited<ReturnType<typeof app.inject>>
const call = (key: string, options: { remoteAddress?: string, headers?: Record<string, string>, url?: string } = {}) =>
  app.inject({ url: options.url ?? '/api/v1/auth/me', remoteAddress: options.remoteAddress, headers: { 'x-api-key': key, ...options.headers } })

function expectIpRefused (t: Test, response: Response, address: string): void {
  t.equal(response.statusCode, 403, `${address}: 403`)
  const body = response.json()
  t.same(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'])
  t.match(body, { statusCode: 403, code: 'IP_NOT_ALLOWED', error: 'Forbidden' })
  t.equal(body.message, `This API key may not be used from ${address}`, 'names the address the service saw')
  t.notOk(response.headers['www-authenticate'], 'not a challenge: the key is fine, the place is not')
}

/** Moves the clock to the first millisecond of the next window of `windowSeconds` (windows are aligned on the epoch). */
function toNextWindow (clock: TestClock, windowSeconds: number): void {
  const windowMs = windowSeconds * 1000
  clock.advance(windowMs - (clock.now() % windowMs))
}

t.test('IPv4: the first and last address of a network are admitted, one outside either side is not', async (t) => {
  const { key } = await insertUserWithKey(db, { organizationId: orgId, key: { allowedCidrs: ['10.1.0.0/16', '192.168.1.7/32'] } })
  for (const address of ['10.1.0.0', '10.1.255.255', '10.1.42.1', '192.168.1.7']) {
    t.equal((await call(key, { remoteAddress: address })).statusCode, 200, `${address} admitted`)
  }
  for (const address of ['10.0.255.255', '10.2.0.0', '192.168.1.6', '192.168.1.8', '127.0.0.1']) {
    expectIpRefused(t, await call(key, { remoteAddress: address }), address)
  }
  expectIpRefused(t, await call(key, { remoteAddress: '::1' }), '::1')
})

t.test('IPv6: edges of a /32, a single address, and IPv4 clients refused', async (t) => {
  const { key } = await insertUserWithKey(db, { organizationId: orgId, key: { allowedCidrs: ['2001:db8::/32', 'fd00::1/128'] } })
  for (const address of ['2001:db8::', '2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', '2001:DB8:0:0:0:0:0:1', 'fd00::1']) {
    t.equal((await call(key, { remoteAddress: address })).statusCode, 200, `${address} admitted`)
  }
  for (const address of ['2001:db7:ffff:ffff:ffff:ffff:ffff:ffff', '2001:db9::', 'fd00::2', '10.0.0.1', '::ffff:10.0.0.1']) {
    expectIpRefused(t, await call(key, { remoteAddress: address }), address)
  }
})

t.test('IPv4-mapped IPv6 clients match their IPv4 networks; a mapped network admits both spellings', async (t) => {
  const ipv4 = await insertUserWithKey(db, { organizationId: orgId, key: { allowedCidrs: ['10.0.0.0/8'] } })
  t.equal((await call(ipv4.key, { remoteAddress: '::ffff:10.1.2.3' })).statusCode, 200, 'a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d')
  expectIpRefused(t, await call(ipv4.key, { remoteAddress: '::ffff:11.0.0.1' }), '::ffff:11.0.0.1')
  const mapped = await insertUserWithKey(db, { organizationId: orgId, key: { allowedCidrs: ['::ffff:10.0.0.0/104'] } })
  t.equal((await call(mapped.key, { remoteAddress: '10.200.0.1' })).statusCode, 200)
  t.equal((await call(mapped.key, { remoteAddress: '::ffff:10.200.0.1' })).statusCode, 200)
  expectIpRefused(t, await call(mapped.key, { remoteAddress: '11.0.0.0' }), '11.0.0.0')
})

t.test('without TRUST_PROXY, X-Forwarded-For is ignored: the socket address decides', async (t) => {
  const { key } = await insertUserWithKey(db, { organizationId: orgId, key: { allowedCidrs: ['10.0.0.0/8'] } })
  expectIpRefused(t, await call(key, { remoteAddress: '203.0.113.9', headers: { 'x-forwarded-for': '10.1.2.3' } }), '203.0.113.9')
  t.equal((await call(key, { remoteAddress: '10.1.2.3', headers: { 'x-forwarded-for': '203.0.113.9' } })).statusCode, 200)
})

t.test('with TRUST_PROXY, the client the trusted proxy names decides, on /auth/verify as everywhere', async (t) => {
  const { app: behindProxy } = await build(t, { db, config: { trustProxy: ['127.0.0.1'] } })
  const { key } = await insertUserWithKey(db, { organizationId: orgId, key: { allowedCidrs: ['10.0.0.0/8', '2001:db8::/32'] } })
  const verify = (remoteAddress: string, forwardedFor: string) =>
    behindProxy.inject({ url: '/api/v1/auth/verify', remoteAddress, headers: { 'x-api-key': key, 'x-forwarded-for': forwardedFor } })
  const admitted = await verify('127.0.0.1', '10.1.2.3')
  t.equal(admitted.statusCode, 200, 'the gateway forwards an address inside the networks')
  t.ok(admitted.headers['x-user-id'], 'with the identity headers')
  t.equal((await verify('127.0.0.1', '2001:db8::5')).statusCode, 200, 'an IPv6 client behind the gateway')
  expectIpRefused(t, await verify('127.0.0.1', '198.51.100.4'), '198.51.100.4')
  // nginx's $proxy_add_x_forwarded_for appends the real client to whatever the client sent: the rightmost
  // address not of a trusted proxy is the client, so a forged first entry gains nothing.
  expectIpRefused(t, await verify('127.0.0.1', '10.1.2.3, 198.51.100.4'), '198.51.100.4')
  // From a socket that is not a trusted proxy, the header is the client's own claim and is ignored.
  expectIpRefused(t, await verify('198.51.100.4', '10.1.2.3'), '198.51.100.4')
})

t.test('the address is checked before the route\'s scopes; no policy change without the right network', async (t) => {
  const { key } = await insertUserWithKey(db, { organizationId: orgId, key: { allowedCidrs: ['10.0.0.0/8'] } })
  expectIpRefused(t, await call(key, { url: '/api/v1/admin/auth-cache', remoteAddress: '192.0.2.1' }), '192.0.2.1')
  const forbidden = await call(key, { url: '/api/v1/admin/auth-cache', remoteAddress: '10.0.0.1' })
  t.equal(forbidden.json().code, 'FORBIDDEN', 'from inside: the scope decides')
})

t.test("a key's rate limit: RateLimit-* headers on success, 429 with Retry-After at the limit, admitted again in the next window", async (t) => {
  const { key } = await insertUserWithKey(db, { organizationId: orgId, key: { rateLimit: { requests: 3, windowSeconds: 60 } } })
  toNextWindow(clock, 60)
  for (const remaining of [2, 1, 0]) {
    const response = await call(key)
    t.equal(response.statusCode, 200)
    t.match(response.headers, { 'ratelimit-limit': '3', 'ratelimit-remaining': String(remaining), 'ratelimit-reset': '60' })
    t.notOk(response.headers['retry-after'], 'no Retry-After on success')
  }
  const refused = await call(key)
  t.equal(refused.statusCode, 429)
  t.same(refused.json(), { statusCode: 429, code: 'RATE_LIMITED', error: 'Too Many Requests', message: 'Rate limit exceeded: this API key allows 3 requests per 60 s; retry in 60 s' })
  t.match(refused.headers, { 'retry-after': '60', 'ratelimit-limit': '3', 'ratelimit-remaining': '0', 'ratelimit-reset': '60' })
  t.notOk(refused.headers['www-authenticate'])

  clock.advance(45_000)
  const later = await call(key, { url: '/api/v1/auth/verify' })
  t.equal(later.statusCode, 429, 'the whole window, on every route')
  t.equal(later.headers['retry-after'], '15', 'Retry-After counts down to the end of the window')

  clock.advance(15_000)
  const next = await call(key, { url: '/api/v1/auth/verify' })
  t.equal(next.statusCode, 200, 'a client that waited Retry-After out is admitted')
  t.match(next.headers, { 'ratelimit-limit': '3', 'ratelimit-remaining': '2', 'ratelimit-reset': '60' })
  t.ok(next.headers['x-user-id'], '/auth/verify: identity headers and RateLimit-* together, for the gateway')
})

t.test('requests refused for their address or scopes do not count against the limit', async (t) => {
  const { key } = await insertUserWithKey(db, { organizationId: orgId, key: { allowedCidrs: ['10.0.0.0/8'], rateLimit: { requests: 2, windowSeconds: 60 } } })
  toNextWindow(clock, 60)
  for (let i = 0; i < 5; i++) expectIpRefused(t, await call(key, { remoteAddress: '192.0.2.1' }), '192.0.2.1')
  for (let i = 0; i < 5; i++) t.equal((await call(key, { url: '/api/v1/admin/auth-cache', remoteAddress: '10.0.0.1' })).json().code, 'FORBIDDEN')
  const first = await call(key, { remoteAddress: '10.0.0.1' })
  t.equal(first.statusCode, 200)
  t.equal(first.headers['ratelimit-remaining'], '1', 'none of the ten refusals was counted')
})

t.test("an organization's limit is shared by its keys; a key's own limit is checked first", async (t) => {
  const org = await insertOrganization(db, 'Quota Org')
  await db.prisma.organization.update({ where: { id: org }, data: { rateLimitRequests: 5, rateLimitWindowSeconds: 60 } })
  const a = await insertUserWithKey(db, { organizationId: org })
  const b = await insertUserWithKey(db, { organizationId: org, key: { rateLimit: { requests: 3, windowSeconds: 60 } } })
  const personal = await insertKey(db, { userId: a.userId, organizationId: null })
  toNextWindow(clock, 60)

  const first = await call(a.key)
  t.match(first.headers, { 'ratelimit-limit': '5', 'ratelimit-remaining': '4' }, "a key without a limit of its own shows its organization's")
  const second = await call(b.key)
  t.match(second.headers, { 'ratelimit-limit': '3', 'ratelimit-remaining': '2' }, 'the limit closest to refusing: the key\'s own 2 left, not the organization\'s 3')
  for (const key of [a.key, b.key, a.key]) t.equal((await call(key)).statusCode, 200)
  const last = await call(a.key)
  t.equal(last.statusCode, 429, 'five requests of two keys used the organization\'s five')
  t.equal(last.json().message, "Rate limit exceeded: this API key's organization allows 5 requests per 60 s; retry in 60 s")
  t.match(last.headers, { 'ratelimit-limit': '5', 'ratelimit-remaining': '0', 'retry-after': '60' })
  t.equal((await call(b.key)).statusCode, 429, 'its sibling too')
  t.equal((await call(personal.key)).statusCode, 200, "a personal key of the same user is not the organization's")

  // Next window: b exhausts its own limit; its refused requests do not touch the organization's counter.
  toNextWindow(clock, 60)
  for (let i = 0; i < 3; i++) t.equal((await call(b.key)).statusCode, 200)
  for (let i = 0; i < 4; i++) t.equal((await call(b.key)).json().message, 'Rate limit exceeded: this API key allows 3 requests per 60 s; retry in 60 s')
  t.equal((await call(a.key)).headers['ratelimit-remaining'], '1', 'a still has 5 - 3 - 1')
  t.equal((await call(a.key)).statusCode, 200)
  t.equal((await call(a.key)).statusCode, 429)

  const metrics = (await app.inject({ url: '/metrics' })).body
  t.match(metrics, /battra_auth_rate_limited_total\{scope="organization"\} [1-9]/)
  t.match(metrics, /battra_auth_rate_limited_total\{scope="key"\} [1-9]/)
  t.match(metrics, /battra_auth_requests_total\{code="RATE_LIMITED"\} [1-9]/)
  t.match(metrics, /battra_auth_requests_total\{code="IP_NOT_ALLOWED"\} [1-9]/)
})

t.test('keys without a policy carry no RateLimit-* headers', async (t) => {
  const response = await call('battra-dev-key-1')
  t.equal(response.statusCode, 200)
  t.notOk(response.headers['ratelimit-limit'])
  t.notOk(response.headers['ratelimit-remaining'])
})

t.test('an allow-list that cannot be read (written with SQL around the service) admits nobody', async (t) => {
  const { key, keyId } = await insertUserWithKey(db, { organizationId: orgId })
  await db.pool.query("UPDATE api_keys SET allowed_cidrs = '{not-a-network}' WHERE id = $1", [keyId])
  await app.invalidation.publish({ keyId })
  expectIpRefused(t, await call(key, { remoteAddress: '10.0.0.1' }), '10.0.0.1')
})

t.test('the database refuses half a rate limit, a zero or negative one, and more than 100 networks', async (t) => {
  const { keyId } = await insertUserWithKey(db, { organizationId: orgId })
  for (const [sql, values] of [
    ['UPDATE api_keys SET rate_limit_requests = 10 WHERE id = $1', [keyId]],
    ['UPDATE api_keys SET rate_limit_requests = 0, rate_limit_window_seconds = 60 WHERE id = $1', [keyId]],
    ['UPDATE api_keys SET rate_limit_requests = 10, rate_limit_window_seconds = -1 WHERE id = $1', [keyId]],
    ['UPDATE organizations SET rate_limit_window_seconds = 60 WHERE id = $1', [orgId]],
    ['UPDATE api_keys SET allowed_cidrs = $2 WHERE id = $1', [keyId, Array.from({ length: 101 }, (_, i) => `10.0.${i}.0/24`)]]
  ] as const) {
    await t.rejects(db.pool.query(sql, [...values]), /check constraint/, sql)
  }
})
