import t from 'tap'
import { build, statementsDuring } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertUserWithKey, testOrgId } from '#test/helpers/fixtures.ts'
import { eventually } from '#test/helpers/wait.ts'

t.comment(`database: ${databaseKind}`)

async function lastUsedAt (db: Awaited<ReturnType<typeof build>>['db'], keyId: string): Promise<Date | null> {
  const row = await db.prisma.apiKey.findUniqueOrThrow({ where: { id: keyId }, select: { lastUsedAt: true } })
  return row.lastUsedAt
}

t.test('last_used_at is not written on the request path, then written by one statement per flush', async (t) => {
  const { app, db } = await build(t)
  const orgId = await testOrgId(db)
  const keys = await Promise.all(Array.from({ length: 10 }, () => insertUserWithKey(db, { organizationId: orgId })))

  const requestStatements = await statementsDuring(app, async () => {
    for (let round = 0; round < 20; round++) {
      await Promise.all(keys.map(({ key }) => app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })))
    }
  })
  const lastRequestAt = Date.now()
  t.equal(requestStatements, keys.length, 'one lookup per key, nothing else, for 200 requests')
  for (const { keyId } of keys) t.equal(await lastUsedAt(db, keyId), null, 'not yet written')

  const flushStatements = await statementsDuring(app, () => app.apiKeyAuth.flushUsage())
  t.equal(flushStatements, 1, 'ten keys, one statement')
  for (const { keyId } of keys) {
    const at = await lastUsedAt(db, keyId)
    t.ok(at !== null && at.getTime() <= lastRequestAt && at.getTime() > lastRequestAt - 10_000, 'written with the time of the last use')
  }
  t.equal(await statementsDuring(app, () => app.apiKeyAuth.flushUsage()), 0, 'nothing pending, nothing written')
})

t.test('last_used_at only moves forward', async (t) => {
  const { app, db } = await build(t)
  const { key, keyId } = await insertUserWithKey(db, { organizationId: await testOrgId(db) })
  const future = new Date(Date.now() + 3_600_000)
  await app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })
  await db.prisma.apiKey.update({ where: { id: keyId }, data: { lastUsedAt: future } })
  await app.apiKeyAuth.flushUsage()
  t.same(await lastUsedAt(db, keyId), future, 'a later time written by someone else stays')
})

t.test('the flush interval writes usage by itself', async (t) => {
  const { app, db } = await build(t, { config: { usageFlushIntervalMs: 200 } })
  const { key, keyId } = await insertUserWithKey(db, { organizationId: await testOrgId(db) })
  await app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })
  t.equal(await lastUsedAt(db, keyId), null)
  t.ok(await eventually(async () => await lastUsedAt(db, keyId) !== null, 5000), 'written within a few intervals, by the timer alone')
})

t.test('usage pending at shutdown is written by close, before the database goes', async (t) => {
  const { app, db } = await build(t)
  const { key, keyId } = await insertUserWithKey(db, { organizationId: await testOrgId(db) })
  await app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })
  await app.close()
  t.ok(await lastUsedAt(db, keyId), 'flushed on close')
})

t.test('a failed flush keeps the uses for the next one', async (t) => {
  const { app, db } = await build(t, { proxy: true })
  const { key, keyId } = await insertUserWithKey(db, { organizationId: await testOrgId(db) })
  await app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })
  await db.proxy!.cut()
  await t.rejects(app.apiKeyAuth.flushUsage(), 'the write fails while the database is away')
  t.equal(app.apiKeyAuth.stats().usagePendingKeys, 1, 'still pending')
  await db.proxy!.restore()
  await app.apiKeyAuth.flushUsage()
  t.ok(await lastUsedAt(db, keyId), 'written once the database is back')
})

t.test('close steps hung on the database (a webhook round, an audit sweep, the invalidation listener) do not take the usage write\'s share of SHUTDOWN_TIMEOUT_MS (a CI run found the line late)', async (t) => {
  const shutdownTimeoutMs = 3000
  const { app, db, logs } = await build(t, { proxy: true, captureLogs: true, config: { shutdownTimeoutMs, databaseConnectTimeoutMs: 2000, databaseStatementTimeoutMs: 1000 } })
  const { key } = await insertUserWithKey(db, { organizationId: await testOrgId(db) })
  t.equal((await app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })).statusCode, 200)
  db.proxy!.freeze()
  t.teardown(() => db.proxy!.restore())
  // Both close before the usage write does (plugins close in reverse order) and both wait on the database.
  const round = app.webhooks.deliverDue().catch(() => {})
  const sweep = app.audit.sweep().catch(() => {})
  const started = Date.now()
  await app.close()
  await Promise.all([round, sweep])
  const lines = logs.map((line) => JSON.parse(line) as { level: number, time: number, msg: string, unwrittenKeys?: number })
  const lost = lines.find((line) => line.level === 50 && line.msg.startsWith('could not write key usage before shutdown'))
  t.ok(lost !== undefined && lost.time - started < shutdownTimeoutMs, `logged ${lost === undefined ? 'never' : `after ${lost.time - started} ms`}, before the process would be made to exit`)
  t.equal(lost?.unwrittenKeys, 1)
})

t.test('a database that hangs at shutdown: the uses close could not write are logged before SHUTDOWN_TIMEOUT_MS (found by an outside probe)', async (t) => {
  // As the probe had it: each statement fails after a second, each new connection later still.
  const shutdownTimeoutMs = 3000
  const databaseConnectTimeoutMs = 2000
  const { app, db, logs } = await build(t, { proxy: true, captureLogs: true, config: { shutdownTimeoutMs, databaseConnectTimeoutMs, databaseStatementTimeoutMs: 1000 } })
  const { key, keyId } = await insertUserWithKey(db, { organizationId: await testOrgId(db) })
  t.equal((await app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })).statusCode, 200)
  const usedBy = Date.now()
  db.proxy!.freeze()
  t.teardown(() => db.proxy!.restore())
  const started = Date.now()
  await app.close()
  // Closing the database does not wait forever for a server that stopped answering (pg would).
  t.ok(Date.now() - started < shutdownTimeoutMs + databaseConnectTimeoutMs + 1000, `closed in ${Date.now() - started} ms`)
  const lines = logs.map((line) => JSON.parse(line) as { level: number, time: number, msg: string, unwrittenKeys?: number, lastUsedAt?: Record<string, string> })
  const lost = lines.find((line) => line.level === 50 && line.msg.startsWith('could not write key usage before shutdown'))
  t.ok(lost !== undefined && lost.time - started < shutdownTimeoutMs, `logged ${lost === undefined ? 'never' : `after ${lost.time - started} ms`}, before the process would be made to exit`)
  t.equal(lost?.unwrittenKeys, 1)
  const at = Date.parse(lost?.lastUsedAt?.[keyId] ?? '')
  t.ok(at <= usedBy && at > usedBy - 10_000, 'the key and the time of its last use are in the line, to be applied by hand')
})
