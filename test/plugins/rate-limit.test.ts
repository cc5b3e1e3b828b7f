// Rate limits counted in Redis (REDIS_URL): shared by instances, nothing asked for keys without a limit,
// and a Redis outage answered at once from in-process counters, never with a 5xx. Needs Redis at
// redis://127.0.0.1:6379 (REDIS_URL to change it); the app reaches it through a TCP proxy the test can cut.
import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { build, statementsDuring, type TestClock } from '#test/helpers/app.ts'
import { databaseKind, createTestDatabase } from '#test/helpers/database.ts'
import { insertUserWithKey, testOrgId } from '#test/helpers/fixtures.ts'
import { TcpProxy } from '#test/helpers/proxy.ts'
import { until } from '#test/helpers/wait.ts'

t.comment(`database: ${databaseKind}`)
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const redisTarget = new URL(REDIS_URL)
const redis = new Redis(REDIS_URL)
t.teardown(() => redis.disconnect())

const db = await createTestDatabase(t)
const orgId = await testOrgId(db)

/** A proxy to Redis of its own, closed when the test ends. */
async function redisProxy (t: Test): Promise<TcpProxy> {
  const proxy = new TcpProxy({ host: redisTarget.hostname, port: Number(redisTarget.port || 6379) })
  await proxy.start()
  t.teardown(() => proxy.cut())
  return proxy
}

/** The app on the shared test database, counting in Redis through `proxy`. A 2 s timeout: a loaded machine must not turn a counting test into a fallback test. */
async function appWithRedis (t: Test, proxy: TcpProxy, options: { mode?: 'exact' | 'batched', captureLogs?: boolean, url?: string } = {}) {
  return build(t, {
    db,
    captureLogs: options.captureLogs,
    config: { rateLimit: { redisUrl: options.url ?? `redis://127.0.0.1:${proxy.port}`, mode: options.mode ?? 'exact', redisTimeoutMs: 2000 } }
  })
}

function toNextWindow (clock: TestClock, windowSeconds: number): number {
  const windowMs = windowSeconds * 1000
  clock.advance(windowMs - (clock.now() % windowMs))
  return Math.floor(clock.now() / windowMs)
}

const me = (app: Awaited<ReturnType<typeof build>>['app'], key: string) => app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })
const linesMatching = (logs: string[], pattern: RegExp) => logs.filter((line) => pattern.test(line))

t.test('counters live in Redis: two instances share one limit', async (t) => {
  const proxy = await redisProxy(t)
  const first = await appWithRedis(t, proxy)
  const second = await appWithRedis(t, proxy)
  t.match(first.app.keyRateLimits.stats(), { store: 'redis', backend: 'redis', mode: 'exact', fallbacks: 0 })
  const { key, keyId } = await insertUserWithKey(db, { organizationId: orgId, key: { rateLimit: { requests: 4, windowSeconds: 60 } } })
  const index = toNextWindow(first.clock, 60)
  t.equal(toNextWindow(second.clock, 60), index, 'both clocks in the same window')

  const statuses = []
  for (const app of [first.app, second.app, first.app, second.app, first.app, second.app]) statuses.push((await me(app, key)).statusCode)
  t.same(statuses, [200, 200, 200, 200, 429, 429], 'four admitted across both instances, then refused on both')
  t.equal(await redis.get(`battra:rl:{key:${keyId}:60}:${index}`), '4', 'one counter per key and window, counting what was admitted')
  const ttl = await redis.pttl(`battra:rl:{key:${keyId}:60}:${index}`)
  t.ok(ttl > 60_000 && ttl <= 65_000, `the counter expires with its window (plus 5 s of grace): ${ttl} ms`)
})

t.test('a key without a policy costs no Redis call and no statement on its cached path; networks alone cost no Redis call either', async (t) => {
  const proxy = await redisProxy(t)
  const { app } = await appWithRedis(t, proxy)
  const free = await insertUserWithKey(db, { organizationId: orgId })
  const networksOnly = await insertUserWithKey(db, { organizationId: orgId, key: { allowedCidrs: ['127.0.0.0/8'] } })
  const limited = await insertUserWithKey(db, { organizationId: orgId, key: { rateLimit: { requests: 1_000_000, windowSeconds: 60 } } })
  for (const { key } of [free, networksOnly, limited]) t.equal((await me(app, key)).statusCode, 200, 'cached')

  for (const [name, key] of [['no policy', free.key], ['networks only', networksOnly.key]] as const) {
    const bytesBefore = proxy.bytesFromClients
    const statements = await statementsDuring(app, async () => {
      for (let i = 0; i < 50; i++) {
        const response = await me(app, key)
        if (response.statusCode !== 200 || response.headers['ratelimit-limit'] !== undefined) t.fail(`${name}: ${response.statusCode}`)
      }
    })
    t.equal(statements, 0, `${name}: zero database statements over 50 requests`)
    t.equal(proxy.bytesFromClients - bytesBefore, 0, `${name}: zero bytes sent to Redis over 50 requests`)
  }
  // The counter above would have seen them: a limited key's requests do reach Redis.
  const bytesBefore = proxy.bytesFromClients
  const statements = await statementsDuring(app, async () => {
    for (let i = 0; i < 5; i++) t.equal((await me(app, limited.key)).headers['ratelimit-limit'], '1000000')
  })
  t.ok(proxy.bytesFromClients - bytesBefore > 5 * 20, `a limited key: ${proxy.bytesFromClients - bytesBefore} bytes to Redis for 5 requests`)
  t.equal(statements, 0, 'and still no database statement')
})

t.test('Redis lost: counted in process at once, no 5xx, logged once, shown everywhere; back when Redis returns', async (t) => {
  const proxy = await redisProxy(t)
  const { app, clock, logs } = await appWithRedis(t, proxy, { captureLogs: true })
  const limit = 5
  const { key } = await insertUserWithKey(db, { organizationId: orgId, key: { rateLimit: { requests: limit, windowSeconds: 3600 } } })
  toNextWindow(clock, 3600)
  for (let i = 0; i < 2; i++) t.equal((await me(app, key)).statusCode, 200, 'counted in Redis')

  await proxy.cut()
  const statuses: number[] = []
  for (let i = 0; i < 3 * limit; i++) statuses.push((await me(app, key)).statusCode)
  t.same([...new Set(statuses)].sort(), [200, 429], 'only admissions and refusals: never a 5xx')
  const admitted = 2 + statuses.filter((status) => status === 200).length
  t.ok(admitted <= 2 * limit, `${admitted} admitted in the window: at most the limit in Redis plus the limit in process (N + k·N, k = 1)`)
  t.equal(statuses.filter((status) => status === 200).length, limit, 'in process, this instance admits up to the limit on its own')
  t.match(app.keyRateLimits.stats(), { store: 'redis', backend: 'local', fallbacks: 1 })

  // Reconnection attempts fail meanwhile; the log says it once.
  await until(() => app.keyRateLimits.stats().redisErrors >= 3, 10_000, 'reconnection attempts')
  t.equal(linesMatching(logs, /Redis unreachable/).length, 1, 'one warning for the outage')
  t.match(linesMatching(logs, /Redis unreachable/)[0], /"level":40/)
  t.notMatch(logs.join('\n'), new RegExp(`redis://127\\.0\\.0\\.1:${proxy.port}\\b[^"]`), 'the URL (which may hold a password) is not logged, only where it points')

  const ready = await app.inject({ url: '/ready' })
  t.same([ready.statusCode, ready.body], [200, 'READY'], '/ready stays 200 READY: the service answers')
  const detail = await app.inject({ url: '/ready', headers: { accept: 'application/json' } })
  t.equal(detail.statusCode, 200)
  t.match(detail.headers['content-type'], /^application\/json/)
  t.match(detail.json(), { status: 'READY', database: 'up', rateLimit: { store: 'redis', backend: 'local', fallbacks: 1 } })
  const stats = await app.inject({ url: '/api/v1/admin/auth-cache', headers: { 'x-api-key': 'battra-admin-key-1' } })
  t.match(stats.json().rateLimit, { store: 'redis', backend: 'local', mode: 'exact', fallbacks: 1, redisErrors: Number, limited: { key: 2 * limit, organization: 0 } })
  const metrics = (await app.inject({ url: '/metrics' })).body
  t.match(metrics, /battra_auth_rate_limit_backend\{backend="local"\} 1/)
  t.match(metrics, /battra_auth_rate_limit_backend\{backend="redis"\} 0/)
  t.match(metrics, /battra_auth_rate_limit_fallbacks_total 1/)
  t.match(metrics, /battra_auth_rate_limit_redis_errors_total [1-9]/)

  await proxy.restore()
  await until(() => app.keyRateLimits.stats().backend === 'redis', 10_000, 'back on Redis')
  t.equal(linesMatching(logs, /Redis answers again/).length, 1, 'its return is logged once too')
  const back = await me(app, key)
  t.equal(back.statusCode, 200, 'Redis held 2 for this window: 3 more')
  t.equal(back.headers['ratelimit-remaining'], String(limit - 3))
})

t.test('Redis unreachable at start: the service starts, counts in process and says so once', async (t) => {
  const proxy = await redisProxy(t)
  await proxy.cut()
  const { app, clock, logs } = await appWithRedis(t, proxy, { captureLogs: true })
  t.match(app.keyRateLimits.stats(), { store: 'redis', backend: 'local' })
  const { key } = await insertUserWithKey(db, { organizationId: orgId, key: { rateLimit: { requests: 2, windowSeconds: 60 } } })
  toNextWindow(clock, 60)
  const statuses = []
  for (let i = 0; i < 3; i++) statuses.push((await me(app, key)).statusCode)
  t.same(statuses, [200, 200, 429])
  t.equal(linesMatching(logs, /Redis unreachable/).length, 1)
})

t.test('batched mode: an instance takes part of the limit at once, and the fleet never more than the limit', async (t) => {
  const proxy = await redisProxy(t)
  const first = await appWithRedis(t, proxy, { mode: 'batched' })
  const second = await appWithRedis(t, proxy, { mode: 'batched' })
  const { key, keyId } = await insertUserWithKey(db, { organizationId: orgId, key: { rateLimit: { requests: 50, windowSeconds: 3600 } } })
  const index = toNextWindow(first.clock, 3600)
  toNextWindow(second.clock, 3600)
  let admitted = 0
  const bytesBefore = proxy.bytesFromClients
  for (let i = 0; i < 60; i++) {
    const response = await me(i % 2 === 0 ? first.app : second.app, key)
    if (response.statusCode === 200) admitted++
    else t.equal(response.json().code, 'RATE_LIMITED')
  }
  t.ok(admitted <= 50, `${admitted} admitted: never more than the limit`)
  // Each instance holds at most one batch (10% of 50) unused: at most (instances − 1) × (batch − 1) refused early.
  t.ok(admitted >= 50 - (2 - 1) * (5 - 1), `${admitted} admitted: at most (instances − 1) × (batch − 1) held back`)
  t.ok(Number(await redis.get(`battra:rl:{key:${keyId}:3600}:${index}`)) <= 50)
  t.ok(proxy.bytesFromClients - bytesBefore < 60 * 100, 'fewer Redis calls than requests')
})
