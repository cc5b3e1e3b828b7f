import t from 'tap'
import { build } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertUserWithKey, keyOf, testOrgId } from '#test/helpers/fixtures.ts'
import { eventually } from '#test/helpers/wait.ts'

t.comment(`database: ${databaseKind}`)

const me = (app: Awaited<ReturnType<typeof build>>['app'], key: string) =>
  app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })

t.test('database down: stale-if-error within the window, 503 otherwise, recovery after', async (t) => {
  const { app, db, clock } = await build(t, { proxy: true, config: { cache: { ttlMs: 100, staleIfErrorMs: 60_000 } } })
  const cachedKey = keyOf('dev+clerk_test@mock.com')
  const { key: uncachedKey } = await insertUserWithKey(db, { organizationId: await testOrgId(db) })
  t.equal((await me(app, cachedKey)).statusCode, 200)
  clock.advance(150) // the entry is now past its TTL: only stale-if-error may serve it

  await db.proxy!.cut()
  const stale = await me(app, cachedKey)
  t.equal(stale.statusCode, 200, 'a recently cached key is still served')
  t.equal(stale.json().email, 'dev+clerk_test@mock.com')

  const unavailable = await me(app, uncachedKey)
  t.equal(unavailable.statusCode, 503, 'never 401, never 500')
  t.equal(unavailable.json().code, 'AUTH_UNAVAILABLE')
  t.ok(Number(unavailable.headers['retry-after']) > 0, 'Retry-After')
  t.notOk(unavailable.headers['www-authenticate'])

  const ready = await app.inject({ url: '/ready' })
  t.equal(ready.statusCode, 503)
  t.equal(ready.body, 'NOT READY')
  t.ok(Number(ready.headers['retry-after']) > 0, 'Retry-After, as every answer to a database failure (found by an outside probe)')
  const detail = await app.inject({ url: '/ready', headers: { accept: 'application/json' } })
  t.equal(detail.statusCode, 503)
  t.same(detail.json(), { statusCode: 503, code: 'NOT_READY', error: 'Service Unavailable', message: 'The database does not answer' }, 'asked for JSON: the error body, nothing more')
  t.equal((await app.inject({ url: '/health' })).statusCode, 200, 'health never depends on the database')
  t.ok(app.authCache.stats().staleServed >= 1, 'counted in the statistics')

  await db.proxy!.restore()
  t.ok(await eventually(async () => (await me(app, uncachedKey)).statusCode === 200, 5000), 'recovers once the database returns')
  t.equal((await app.inject({ url: '/ready' })).body, 'READY')
})

t.test('database down past the stale window: 503 even for a once-cached key', async (t) => {
  const { app, db, clock, logs } = await build(t, { proxy: true, captureLogs: true, config: { cache: { ttlMs: 50, staleIfErrorMs: 50 } } })
  const key = keyOf('qa+clerk_test@mock.com')
  t.equal((await me(app, key)).statusCode, 200)
  clock.advance(150)
  await db.proxy!.cut()
  const response = await me(app, key)
  t.equal(response.statusCode, 503)
  t.equal(response.json().code, 'AUTH_UNAVAILABLE')
  t.same(Object.keys(response.json()).sort(), ['code', 'error', 'message', 'statusCode'], 'the answer tells nothing of the cause')
  // The log line says why (found by an outside probe: it said only "temporarily unavailable").
  const failure = logs.map((line) => JSON.parse(line) as { level: number, msg: string, err?: { message: string } }).find((line) => line.level === 50 && line.msg === 'request failed')
  t.match(failure?.err?.message, /Authentication is temporarily unavailable.*key lookup failed.*: \S/s, 'the lookup failure and its driver error are in the log')
  // Back before shutdown, so that close writes the pending usage instead of retrying until its deadline.
  await db.proxy!.restore()
})

t.test('an unreachable database at start does not stop the service from starting', async (t) => {
  const { app, db } = await build(t, { proxy: true })
  await db.proxy!.cut()
  const { app: second } = await build(t, { db })
  t.equal((await second.inject({ url: '/health' })).statusCode, 200)
  t.equal((await me(second, keyOf('po+clerk_test@mock.com'))).statusCode, 503)
  await app.close()
})

t.test('a database that accepts connections but never answers: after one failed lookup, cached keys are answered at once', async (t) => {
  const { app, db, clock } = await build(t, { proxy: true, config: { cache: { ttlMs: 1000, staleIfErrorMs: 60_000 }, databaseConnectTimeoutMs: 500, databaseStatementTimeoutMs: 500 } })
  const keys = [keyOf('dev+clerk_test@mock.com'), keyOf('qa+clerk_test@mock.com')]
  for (const key of keys) t.equal((await me(app, key)).statusCode, 200)
  clock.advance(1500) // past the TTL: only stale-if-error may serve them now
  await db.proxy!.stall()
  t.equal((await me(app, keys[0])).statusCode, 200, 'the first request meets the failure, then gets the stale answer')
  t.match(app.authCache.stats(), { databaseFailingSince: String }, 'the circuit is open')
  for (const key of keys) {
    const started = performance.now()
    t.equal((await me(app, key)).statusCode, 200)
    t.ok(performance.now() - started < 200, `answered from the cache at once (${Math.round(performance.now() - started)} ms), refreshed in the background`)
  }
  const { key: uncached } = await insertUserWithKey(db, { organizationId: await testOrgId(db) }).catch(() => ({ key: 'battra-never-seen-1' }))
  t.equal((await me(app, uncached)).statusCode, 503, 'a key never cached still gets its 503')
  await db.proxy!.restore()
  t.ok(await eventually(async () => (await me(app, uncached)).statusCode === 200, 10_000), 'recovers')
  t.equal(app.authCache.stats().databaseFailingSince, null, 'the circuit closed on the first successful lookup')
})
