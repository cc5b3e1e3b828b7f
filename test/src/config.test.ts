import t from 'tap'
import Fastify from 'fastify'
import { ConfigError, embeddedDatabaseUrl, loadConfig } from '#src/config.ts'

t.test('defaults', async (t) => {
  const config = loadConfig({})
  t.match(config, { host: '127.0.0.1', port: 8000, logLevel: 'info', databaseUrl: undefined, usageFlushIntervalMs: 5000, trustProxy: false })
  t.match(config.cache, { ttlMs: 60_000, negativeTtlMs: 5000 })
  t.ok(config.embedded.dataDir.endsWith('.data/pglite'))
})

t.test('values are read and converted', async (t) => {
  const config = loadConfig({ PORT: '9001', HOST: '0.0.0.0', LOG_LEVEL: 'warn', DATABASE_URL: 'postgresql://u:p@db:5432/battra', AUTH_CACHE_TTL_MS: '1000', TRUST_PROXY: '10.0.0.0/8, 127.0.0.1', EMBEDDED_DATA_DIR: 'memory://' })
  t.match(config, { port: 9001, host: '0.0.0.0', logLevel: 'warn', databaseUrl: 'postgresql://u:p@db:5432/battra', trustProxy: ['10.0.0.0/8', '127.0.0.1'] })
  t.equal(config.cache.ttlMs, 1000)
  t.equal(config.embedded.dataDir, 'memory://')
  t.equal(loadConfig({ TRUST_PROXY: 'true' }).trustProxy, true)
})

t.test('bad values are refused together, each named, no secret echoed', async (t) => {
  const error = t.throws(() => loadConfig({
    PORT: 'eighty',
    LOG_LEVEL: 'loud',
    AUTH_CACHE_TTL_MS: '-1',
    USAGE_FLUSH_INTERVAL_MS: '1.5',
    DATABASE_URL: 'mysql://root:hunter2@db/x',
    TRUST_PROXY: 'everyone'
  })) as ConfigError
  t.ok(error instanceof ConfigError)
  t.equal(error.problems.length, 6)
  for (const name of ['PORT', 'LOG_LEVEL', 'AUTH_CACHE_TTL_MS', 'USAGE_FLUSH_INTERVAL_MS', 'DATABASE_URL', 'TRUST_PROXY']) t.match(error.message, name)
  t.notMatch(error.message, 'hunter2')
  t.match(error.message, /PORT must be an integer from 0 to 65535 \(got "eighty"\)/)
})

t.test('rate limits: in process by default; Redis when REDIS_URL is set, whose value is never echoed', async (t) => {
  t.same(loadConfig({}).rateLimit, { redisUrl: undefined, mode: 'exact', redisTimeoutMs: 50 })
  t.same(loadConfig({ REDIS_URL: 'rediss://:s3cret@cache:6380/2', REDIS_RATE_LIMIT_MODE: 'batched', REDIS_TIMEOUT_MS: '200' }).rateLimit,
    { redisUrl: 'rediss://:s3cret@cache:6380/2', mode: 'batched', redisTimeoutMs: 200 })
  const error = t.throws(() => loadConfig({ REDIS_URL: 'http://:s3cret@cache', REDIS_RATE_LIMIT_MODE: 'roughly', REDIS_TIMEOUT_MS: '0' })) as ConfigError
  t.equal(error.problems.length, 3)
  t.match(error.message, /REDIS_URL must be a redis:\/\/ or rediss:\/\/ URL/)
  t.match(error.message, /REDIS_RATE_LIMIT_MODE must be one of exact, batched \(got "roughly"\)/)
  t.match(error.message, /REDIS_TIMEOUT_MS must be an integer from 5 to 60000/)
  t.notMatch(error.message, 's3cret')
})

t.test("leaked keys: GitHub's keys URL by default, none to turn it off, the token never echoed", async (t) => {
  t.same(loadConfig({}).leaks, {
    keysUrl: 'https://api.github.com/meta/public_keys/secret_scanning',
    keysToken: undefined,
    reportRateLimit: { requests: 10, windowSeconds: 60 }
  })
  t.equal(loadConfig({ SECRET_SCANNING_KEYS_URL: 'none' }).leaks.keysUrl, undefined)
  t.same(loadConfig({ SECRET_SCANNING_KEYS_URL: 'http://127.0.0.1:9999/keys', SECRET_SCANNING_KEYS_TOKEN: 'ghp_s3cret', LEAK_REPORT_RATE_LIMIT: '3', LEAK_REPORT_RATE_WINDOW_S: '3600' }).leaks,
    { keysUrl: 'http://127.0.0.1:9999/keys', keysToken: 'ghp_s3cret', reportRateLimit: { requests: 3, windowSeconds: 3600 } })
  const error = t.throws(() => loadConfig({ SECRET_SCANNING_KEYS_URL: 'ftp://example.com/keys', SECRET_SCANNING_KEYS_TOKEN: 'ghp s3cret', LEAK_REPORT_RATE_LIMIT: '0' })) as ConfigError
  t.equal(error.problems.length, 3)
  t.match(error.message, /SECRET_SCANNING_KEYS_URL must be an http:\/\/ or https:\/\/ URL/)
  t.match(error.message, /SECRET_SCANNING_KEYS_TOKEN must be a GitHub token/)
  t.notMatch(error.message, 's3cret')
})

t.test('TRUST_PROXY: what Fastify would refuse at start, or ignore, is a configuration error, named; what is accepted Fastify takes (found by outside probes)', async (t) => {
  // A hop count too: Fastify 5 ignores it (it cannot tell the gateway from a client that connects directly).
  for (const bad of ['10.0.0.0/33', '256.1.1.1', '::1/200', '::ffff:1.2.3.4/129', '10.0.0.0/0', '127.0.0.1, 10.0.0.0/8/8', '1', '2', '1.5', '01', '127.0.0.1/8', '0177.0.0.1', '127.1', '127.0.0.1/032']) {
    const error = t.throws(() => loadConfig({ TRUST_PROXY: bad }), `${bad} refused`) as ConfigError
    t.ok(error instanceof ConfigError && /TRUST_PROXY/.test(error.message), `${bad}: a configuration error naming TRUST_PROXY`)
  }
  for (const good of ['10.0.0.0/8, 127.0.0.1', '::1/128', '::ffff:1.2.3.4', '2001:db8::/32', 'loopback, uniquelocal', '192.0.2.1/32']) {
    const trustProxy = loadConfig({ TRUST_PROXY: good }).trustProxy as string[]
    const app = Fastify({ trustProxy })
    await t.resolves(async () => { await app.ready() }, `${good}: Fastify starts with it`)
    await app.close()
  }
})

t.test('a first step above its cap is refused, naming both', async (t) => {
  const error = t.throws(() => loadConfig({ AUTH_LISTENER_RECONNECT_MIN_MS: '5000', AUTH_LISTENER_RECONNECT_MAX_MS: '100', WEBHOOK_BACKOFF_BASE_MS: '3600000', WEBHOOK_BACKOFF_MAX_MS: '10' })) as ConfigError
  t.match(error.message, /AUTH_LISTENER_RECONNECT_MIN_MS must not exceed AUTH_LISTENER_RECONNECT_MAX_MS \(got 5000 > 100\)/)
  t.match(error.message, /WEBHOOK_BACKOFF_BASE_MS must not exceed WEBHOOK_BACKOFF_MAX_MS/)
  t.equal(loadConfig({ AUTH_LISTENER_RECONNECT_MIN_MS: '200', AUTH_LISTENER_RECONNECT_MAX_MS: '200' }).listener.reconnectMaxMs, 200, 'equal is fine')
})

t.test('the embedded database URL brackets an IPv6 host (found by an outside probe: EMBEDDED_DB_HOST=:: failed the start)', async (t) => {
  t.equal(embeddedDatabaseUrl({ host: '::', port: 54329 }), 'postgresql://postgres:postgres@[::]:54329/postgres?sslmode=disable')
  t.equal(embeddedDatabaseUrl({ host: '127.0.0.1', port: 54329 }), 'postgresql://postgres:postgres@127.0.0.1:54329/postgres?sslmode=disable')
  t.equal(new URL(embeddedDatabaseUrl({ host: '::1', port: 5 })).hostname, '[::1]')
})
