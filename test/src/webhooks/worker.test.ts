// Webhook delivery from the outbox to a local receiver: Standard Webhooks signatures that the library
// verifies, retries after 500s and timeouts with backoff, giving up after the retry window, nothing for a
// rolled-back change, no duplicates across two instances, and delivery resuming after a restart.
import t from 'tap'
import fc from 'fast-check'
import { Webhook } from 'standardwebhooks'
import type { WebhookConfig } from '#src/config.ts'
import { CUT_SHORT, WebhookWorker, backoffMs } from '#src/webhooks/worker.ts'
import { createEndpoint, removeEndpoint } from '#src/webhooks/endpoints.ts'
import { build } from '#test/helpers/app.ts'
import { createTestDatabase, databaseKind, type TestDatabase } from '#test/helpers/database.ts'
import { insertOrganization, insertUserWithKey, testOrgId } from '#test/helpers/fixtures.ts'
import { startReceiver } from '#test/helpers/receiver.ts'
import { until } from '#test/helpers/wait.ts'

t.comment(`database: ${databaseKind}`)

// A generous timeout: on a busy machine a slow answer would be a legitimate retry, not what most tests test.
const WEBHOOKS: WebhookConfig = { worker: false, pollIntervalMs: 20, timeoutMs: 10_000, retryForMs: 3_600_000, backoffBaseMs: 1000, backoffMaxMs: 60_000 }
const appOn = (t: Parameters<typeof build>[0], db: TestDatabase, webhooks: Partial<WebhookConfig> = {}) =>
  build(t, { db, config: { webhooks: { ...WEBHOOKS, ...webhooks }, audit: { sweepIntervalMs: 0, expiringDays: 7, idleDays: 0 } } })

const deliveries = async (db: TestDatabase) =>
  (await db.pool.query<{ id: string, status: string, attempts: number, event_type: string, last_error: string | null, last_status: number | null }>(
    'SELECT id, status, attempts, event_type, last_error, last_status FROM webhook_deliveries ORDER BY created_at, id')).rows

t.test('backoff: exponential, capped, jittered between half and all of the step', async (t) => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 60 }), fc.double({ min: 0, max: 0.999_999, noNaN: true }), (attempt, r) => {
    const delay = backoffMs(attempt, 1000, 3_600_000, () => r)
    const step = Math.min(3_600_000, 1000 * 2 ** (attempt - 1))
    return delay >= step / 2 && delay <= step
  }))
  t.equal(backoffMs(1, 1000, 60_000, () => 0), 500)
  t.equal(backoffMs(3, 1000, 60_000, () => 0.999_999), 4000)
  t.equal(backoffMs(30, 1000, 60_000, () => 0), 30_000)
})

t.test('a delivery stamped within the current millisecond is due (the database counts microseconds, the clock milliseconds)', async (t) => {
  const db = await createTestDatabase(t)
  const { app, clock } = await appOn(t, db)
  const receiver = await startReceiver(t)
  await createEndpoint(db.prisma, { url: receiver.url, events: ['key.created'] })
  await insertUserWithKey(db, { organizationId: await testOrgId(db) })
  // Half a millisecond into the millisecond the clock stands at: a CI run once skipped such a delivery.
  const stamped = (await db.pool.query<{ ms: string }>(
    "UPDATE webhook_deliveries SET next_attempt_at = date_trunc('milliseconds', now()) + interval '500 microseconds' RETURNING (extract(epoch from date_trunc('milliseconds', next_attempt_at)) * 1000)::bigint::text AS ms")).rows
  t.equal(stamped.length, 1)
  clock.set(Number(stamped[0].ms))
  t.equal((await app.webhooks.deliverDue()).length, 1, 'delivered in its own millisecond')
  t.equal(receiver.received.length, 1)
})

t.test('a delivery verifies with the standardwebhooks library; only subscribed events, of the endpoint\'s organization', async (t) => {
  const db = await createTestDatabase(t)
  const { app } = await appOn(t, db)
  const receiver = await startReceiver(t)
  const orgA = await testOrgId(db)
  const orgB = await insertOrganization(db, 'Other')
  const global = await createEndpoint(db.prisma, { url: receiver.url, events: ['key.created', 'key.revoked'] })
  const onlyB = await createEndpoint(db.prisma, { url: `${receiver.url}/b`, events: ['*'], organizationId: orgB })
  const { keyId } = await insertUserWithKey(db, { organizationId: orgA })
  await db.prisma.apiKey.update({ where: { id: keyId }, data: { scopes: ['x'] } }) // key.updated: not subscribed
  await db.prisma.apiKey.update({ where: { id: keyId }, data: { revokedAt: new Date() } })

  const outcomes = await app.webhooks.deliverDue()
  t.equal(outcomes.length, 2)
  t.ok(outcomes.every((o) => o.ok))
  t.equal(receiver.received.length, 2)
  const verifier = new Webhook(global.secret)
  const payloads = receiver.received.map((r) => verifier.verify(r.body, r.headers as Record<string, string>) as { type: string, timestamp: string, data: { keyId: string, id: string, actor: { type: string } } })
  t.same(payloads.map((p) => p.type).sort(), ['key.created', 'key.revoked'])
  t.ok(payloads.every((p) => p.data.keyId === keyId))
  const rows = await deliveries(db)
  t.same(receiver.received.map((r) => r.headers['webhook-id']).sort(), rows.map((r) => r.id).sort(), 'webhook-id is the delivery\'s idempotency id')
  t.ok(rows.every((r) => r.status === 'delivered' && r.attempts === 1))
  t.throws(() => new Webhook(onlyB.secret).verify(receiver.received[0].body, receiver.received[0].headers as Record<string, string>), 'another endpoint\'s secret does not verify')

  await insertUserWithKey(db, { organizationId: orgB })
  await insertUserWithKey(db, { organizationId: orgA })
  await app.webhooks.deliverDue()
  const toB = receiver.received.filter((r) => r.path.endsWith('/b'))
  t.same(toB.map((r) => JSON.parse(r.body).type).sort(), ['key.created', 'membership.changed'], "organization B's endpoint gets B's events, all of them")
  t.ok(toB.every((r) => JSON.parse(r.body).data.organizationId === orgB), "and never another organization's")
  const toGlobal = receiver.received.filter((r) => !r.path.endsWith('/b'))
  t.same(toGlobal.map((r) => JSON.parse(r.body).type).sort(), ['key.created', 'key.created', 'key.created', 'key.revoked'], 'the global endpoint: its event types, every organization')
})

t.test('retries after a 500 and a timeout, with backoff, then delivers; the same webhook-id each time', async (t) => {
  const db = await createTestDatabase(t)
  const { app, clock } = await appOn(t, db, { timeoutMs: 1000 })
  const receiver = await startReceiver(t)
  receiver.answer((_request, index) => index === 0 ? 500 : index === 1 ? 'hang' : 200)
  await createEndpoint(db.prisma, { url: receiver.url, events: ['key.created'] })
  await insertUserWithKey(db, { organizationId: await testOrgId(db) })

  const [first] = await app.webhooks.deliverDue()
  t.match(first, { ok: false, status: 500, final: false })
  t.same(await app.webhooks.deliverDue(), [], 'not due again before its backoff')
  clock.advance(WEBHOOKS.backoffBaseMs)
  const [second] = await app.webhooks.deliverDue()
  t.match(second, { ok: false, final: false })
  t.match(second.error, /no answer within 1000 ms/)
  t.match((await deliveries(db))[0], { status: 'pending', attempts: 2, last_error: 'no answer within 1000 ms' })
  clock.advance(2 * WEBHOOKS.backoffBaseMs)
  const [third] = await app.webhooks.deliverDue()
  t.match(third, { ok: true, status: 200 })
  t.equal(receiver.received.length, 3)
  t.equal(new Set(receiver.received.map((r) => r.headers['webhook-id'])).size, 1, 'one idempotency id across attempts')
  t.match((await deliveries(db))[0], { status: 'delivered', attempts: 3 })
})

t.test('after the retry window a delivery is marked failed, and shown', async (t) => {
  const db = await createTestDatabase(t)
  const { app, clock } = await appOn(t, db, { retryForMs: 60_000, backoffBaseMs: 5000, backoffMaxMs: 20_000 })
  const receiver = await startReceiver(t)
  receiver.answer(() => 503)
  const endpoint = await createEndpoint(db.prisma, { url: receiver.url, events: ['key.created'] })
  await insertUserWithKey(db, { organizationId: await testOrgId(db) })
  let rounds = 0
  while ((await deliveries(db))[0].status === 'pending' && rounds++ < 50) {
    await app.webhooks.deliverDue()
    clock.advance(20_000)
  }
  const [row] = await deliveries(db)
  t.equal(row.status, 'failed')
  t.ok(row.attempts >= 3 && row.attempts <= 15, `${row.attempts} attempts in the window`)
  t.equal(row.last_status, 503)
  t.equal(receiver.received.length, row.attempts)
  t.match(app.webhooks.stats(), { delivered: 0, failures: row.attempts - 1, gaveUp: 1 }, 'each attempt counted once, the last as given up (found by an outside probe)')
  const adminKey = 'battra-admin-key-1'
  const listed = (await app.inject({ url: '/api/v1/webhooks', headers: { 'x-api-key': adminKey } })).json()
  t.match(listed.find((w: { id: string }) => w.id === endpoint.id), { failed: 1, pending: 0 })
  const failed = (await app.inject({ url: `/api/v1/webhooks/${endpoint.id}/deliveries?status=failed`, headers: { 'x-api-key': adminKey } })).json()
  t.match(failed, [{ id: row.id, status: 'failed', eventType: 'key.created', lastStatus: 503, nextAttemptAt: null }])
  clock.advance(3_600_000)
  t.same(await app.webhooks.deliverDue(), [], 'never sent again')
})

t.test('a rolled-back change queues and sends nothing', async (t) => {
  const db = await createTestDatabase(t)
  const { app } = await appOn(t, db)
  const receiver = await startReceiver(t)
  await createEndpoint(db.prisma, { url: receiver.url, events: ['*'] })
  const orgId = await testOrgId(db)
  const user = await db.prisma.user.findFirstOrThrow({ where: { email: 'dev+clerk_test@mock.com' } })
  await t.rejects(db.prisma.$transaction(async (tx) => {
    await tx.apiKey.create({ data: { tokenHash: 'f'.repeat(64), hint: 'x', userId: user.id, organizationId: orgId } })
    throw new Error('changed my mind')
  }))
  t.same(await deliveries(db), [])
  t.same(await app.webhooks.deliverDue(), [])
  t.equal(receiver.received.length, 0)
})

t.test('two instances on one database never deliver an event twice', async (t) => {
  const db = await createTestDatabase(t)
  const one = await appOn(t, db)
  const two = await appOn(t, db)
  const receiver = await startReceiver(t)
  // Slow enough that the two instances' rounds overlap.
  receiver.answer(() => new Promise((resolve) => setTimeout(() => resolve(200), 5)))
  await createEndpoint(db.prisma, { url: receiver.url, events: ['key.created'] })
  const orgId = await testOrgId(db)
  for (let i = 0; i < 30; i++) await insertUserWithKey(db, { organizationId: orgId })
  const drain = async (app: typeof one.app) => {
    for (let round = 0; round < 100; round++) {
      const outcomes = await app.webhooks.deliverDue()
      if (outcomes.length === 0 && (await deliveries(db)).every((d) => d.status !== 'pending')) return
    }
  }
  await Promise.all([drain(one.app), drain(two.app), drain(one.app), drain(two.app)])
  const ids = receiver.received.map((r) => r.headers['webhook-id'])
  t.equal(ids.length, 30, 'each event once')
  t.equal(new Set(ids).size, 30)
  const rows = await deliveries(db)
  t.ok(rows.every((d) => d.status === 'delivered' && d.attempts === 1), JSON.stringify(rows.filter((d) => d.attempts !== 1)))
  t.ok(one.app.webhooks.stats().delivered > 0 || two.app.webhooks.stats().delivered > 0)
})

t.test('delivery resumes after a restart: one cut short by shutdown is handed back at once', async (t) => {
  const db = await createTestDatabase(t)
  const receiver = await startReceiver(t)
  receiver.answer(() => 'hang')
  await createEndpoint(db.prisma, { url: receiver.url, events: ['key.created'] })
  await insertUserWithKey(db, { organizationId: await testOrgId(db) })
  const first = await appOn(t, db, { timeoutMs: 30_000 })
  const round = first.app.webhooks.deliverDue()
  while (receiver.received.length === 0) await new Promise((resolve) => setImmediate(resolve))
  await first.app.close()
  await round
  // The receiver had it: an attempt, as the metric counts it (found by an outside probe: sent twice, counted once).
  t.match((await deliveries(db))[0], { status: 'pending', attempts: 1, last_error: CUT_SHORT }, 'handed back, counted as an attempt')
  t.equal(first.app.webhooks.stats().failures, 1, 'counted once, as to be retried')

  receiver.answer(() => 200)
  const second = await appOn(t, db)
  const [outcome] = await second.app.webhooks.deliverDue()
  t.match(outcome, { ok: true })
  t.equal(receiver.received.length, 2)
  t.equal(receiver.received[0].headers['webhook-id'], receiver.received[1].headers['webhook-id'])
  t.match((await deliveries(db))[0], { status: 'delivered', attempts: 2 }, 'as many attempts as the receiver saw')
})

t.test('a send answered within the shutdown\'s grace is delivered, not sent again (found by an outside probe)', async (t) => {
  const db = await createTestDatabase(t)
  const receiver = await startReceiver(t)
  let answerNow!: () => void
  receiver.answer(() => new Promise((resolve) => { answerNow = () => resolve(200) }))
  await createEndpoint(db.prisma, { url: receiver.url, events: ['key.created'] })
  await insertUserWithKey(db, { organizationId: await testOrgId(db) })
  const worker = new WebhookWorker({ prisma: db.prisma, config: { ...WEBHOOKS, timeoutMs: 30_000 } })
  const round = worker.runOnce()
  await until(() => receiver.received.length === 1, 10_000, 'the send reached its receiver')
  // The answer comes once the worker is stopping.
  const stopped = worker.stop({ graceMs: 20_000 })
  answerNow()
  await stopped
  const [outcome] = await round
  t.match(outcome, { ok: true, status: 200 })
  t.match((await deliveries(db))[0], { status: 'delivered', attempts: 1, last_error: null })
  t.equal(receiver.received.length, 1)
})

t.test('deliveries claimed while the worker stops are handed back unsent, not sent while the shutdown waits (found by an outside probe)', async (t) => {
  const db = await createTestDatabase(t)
  const receiver = await startReceiver(t)
  receiver.answer(() => 'hang')
  await createEndpoint(db.prisma, { url: receiver.url, events: ['key.created'] })
  await insertUserWithKey(db, { organizationId: await testOrgId(db) })
  // The claim statement runs, and its rows come back only once stop() has begun.
  let claimSent!: () => void
  const claimed = new Promise<void>((resolve) => { claimSent = resolve })
  let release!: () => void
  const stopping = new Promise<void>((resolve) => { release = resolve })
  const prisma = new Proxy(db.prisma, {
    get (target, property, receiver) {
      const value = Reflect.get(target, property, receiver)
      if (property !== '$queryRaw') return value
      return async (...args: unknown[]) => {
        const rows = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args)
        claimSent()
        await stopping
        return rows
      }
    }
  })
  const worker = new WebhookWorker({ prisma, config: { ...WEBHOOKS, timeoutMs: 30_000 } })
  const round = worker.runOnce()
  await claimed
  const stopped = worker.stop()
  release()
  await stopped
  const [outcome] = await round
  t.match(outcome, { ok: false, final: false, error: 'shutting down' })
  t.equal(receiver.received.length, 0, 'nothing was sent')
  t.match((await deliveries(db))[0], { status: 'pending', attempts: 0 }, 'handed back at once, not counted as an attempt')
})

t.test('a removed endpoint\'s deliveries never hold back a live one\'s, however many are due (found by an outside probe)', async (t) => {
  const db = await createTestDatabase(t)
  const { app } = await appOn(t, db)
  const receiver = await startReceiver(t)
  const live = await createEndpoint(db.prisma, { url: receiver.url, events: ['key.created'] })
  const removed = await createEndpoint(db.prisma, { url: `${receiver.url}/removed`, events: ['key.updated'] })
  const disabled = await createEndpoint(db.prisma, { url: `${receiver.url}/disabled`, events: ['key.updated'] })
  // More due deliveries than a round claims (20), older than the live endpoint's, for each of the two.
  for (const endpoint of [removed, disabled]) {
    await db.pool.query(`INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, payload, next_attempt_at)
      SELECT gen_random_uuid()::text, $1, gen_random_uuid(), 'key.updated', '{}', now() - interval '1 hour' FROM generate_series(1, 30)`, [endpoint.id])
  }
  await removeEndpoint(db.prisma, removed.id)
  // Disabled without its deliveries being failed (an outcome recorded after removal sets one back to pending).
  await db.pool.query('UPDATE webhook_endpoints SET disabled_at = now() WHERE id = $1', [disabled.id])
  const { keyId } = await insertUserWithKey(db, { organizationId: await testOrgId(db) })

  const outcomes = await app.webhooks.deliverDue()
  t.equal(outcomes.length, 1, 'the live endpoint\'s delivery is claimed')
  t.same(receiver.received.map((r) => r.path), [new URL(receiver.url).pathname])
  t.equal((JSON.parse(receiver.received[0].body) as { data: { keyId: string } }).data.keyId, keyId)
  const byEndpoint = (await db.pool.query<{ endpoint_id: string, status: string, last_error: string | null, n: string }>(
    'SELECT endpoint_id, status, last_error, count(*) AS n FROM webhook_deliveries WHERE endpoint_id <> $1 GROUP BY 1, 2, 3', [live.id])).rows
  t.same(byEndpoint.filter((row) => row.endpoint_id === removed.id).map((row) => [row.status, row.last_error, Number(row.n)]), [['failed', 'endpoint removed', 30]], 'removing an endpoint fails what waited for it')
  t.same(byEndpoint.filter((row) => row.endpoint_id === disabled.id).map((row) => [row.status, Number(row.n)]), [['pending', 30]], 'never claimed')
})

t.test('a delivery under way when its endpoint is removed, which then fails, stays failed as "endpoint removed" (found by an outside probe)', async (t) => {
  const db = await createTestDatabase(t)
  const { app } = await appOn(t, db, { timeoutMs: 500 })
  const silent = await startReceiver(t)
  silent.answer(() => 'hang')
  const endpoint = await createEndpoint(db.prisma, { url: silent.url, events: ['key.created'] })
  await insertUserWithKey(db, { organizationId: await testOrgId(db) })
  const round = app.webhooks.deliverDue()
  await until(() => silent.received.length === 1, 10_000, 'the delivery under way')
  await removeEndpoint(db.prisma, endpoint.id)
  const [outcome] = await round
  t.match(outcome, { ok: false, error: 'no answer within 500 ms' })
  t.match((await deliveries(db))[0], { status: 'failed', last_error: 'endpoint removed' })
})

t.test('a receiver that does not answer holds only its own endpoint\'s deliveries, not the next rounds (found by an outside probe)', async (t) => {
  const db = await createTestDatabase(t)
  const silent = await startReceiver(t)
  silent.answer(() => 'hang')
  const prompt = await startReceiver(t)
  const silentEndpoint = await createEndpoint(db.prisma, { url: silent.url, events: ['key.created'] })
  await createEndpoint(db.prisma, { url: prompt.url, events: ['key.created'] })
  const { app } = await appOn(t, db, { worker: true, timeoutMs: 60_000 })
  const orgId = await testOrgId(db)
  await insertUserWithKey(db, { organizationId: orgId })
  await until(() => prompt.received.length === 1 && silent.received.length === 1, 10_000, 'the first event at both')
  await insertUserWithKey(db, { organizationId: orgId })
  await until(() => prompt.received.length === 2, 10_000, 'the second event at the prompt receiver, while the silent one still holds the first')
  const silentRows = (await db.pool.query<{ attempts: number, status: string }>('SELECT attempts, status FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY created_at', [silentEndpoint.id])).rows
  t.same(silentRows.map((row) => [row.status, row.attempts]), [['pending', 1], ['pending', 0]], 'its second one waits for its first: one round\'s deliveries per silent endpoint at a time')
  t.equal(silent.received.length, 1)
  await app.close()
  t.same((await db.pool.query<{ attempts: number, status: string }>('SELECT attempts, status FROM webhook_deliveries WHERE endpoint_id = $1', [silentEndpoint.id])).rows.map((row) => [row.status, row.attempts]).sort(), [['pending', 0], ['pending', 1]], 'handed back at close: the one its receiver had counted as an attempt, the one never sent not')
})

t.test('the worker delivers by itself and keeps going through an outage of the database', async (t) => {
  const db = await createTestDatabase(t, { proxy: true })
  const { app } = await build(t, { db, config: { webhooks: { ...WEBHOOKS, worker: true }, audit: { sweepIntervalMs: 0, expiringDays: 7, idleDays: 0 } } })
  const receiver = await startReceiver(t)
  await createEndpoint(db.prisma, { url: receiver.url, events: ['key.created'] })
  const orgId = await testOrgId(db)
  await insertUserWithKey(db, { organizationId: orgId })
  const waitFor = async (n: number) => { while (receiver.received.length < n) await new Promise((resolve) => setTimeout(resolve, 10)) }
  await waitFor(1)
  await db.proxy!.cut()
  await insertUserWithKey(db, { organizationId: orgId })
  await until(() => app.webhooks.stats().failing, 10_000, 'a failing round')
  t.equal(receiver.received.length, 1)
  await db.proxy!.restore()
  await waitFor(2)
  // The receiver counts a request before answering it; the worker records it once the answer is back (the
  // first one, cut off by the outage, is written when the database returns: it is not sent again).
  await until(async () => (await deliveries(db)).every((d) => d.status === 'delivered'), 10_000, 'both recorded as delivered')
  t.equal(receiver.received.length, 2, 'each sent once')
  t.equal(app.webhooks.stats().delivered, 2)
})
