// GET /api/v1/audit-events: admin sees all, others their own user's and organization's events only;
// filters, cursor pagination, and 400s (never 500s) for bad filters.
import t from 'tap'
import { build } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertOrganization, insertUserWithKey, keyOf, testOrgId } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)
const { app, db } = await build(t)
const orgA = await testOrgId(db)
const orgB = await insertOrganization(db, 'Rival Org')
const alice = await insertUserWithKey(db, { organizationId: orgA, email: 'alice@a.example' })
const bob = await insertUserWithKey(db, { organizationId: orgB, email: 'bob@b.example', orgRole: 'owner' })
const personal = await insertUserWithKey(db, { organizationId: null, email: 'solo@c.example' })
const adminKey = keyOf('ops+clerk_test@mock.com')

interface Page { events: Array<{ id: string, seq: string, action: string, keyId?: string, userId?: string, organizationId?: string, actor: { type: string } }>, nextCursor: string | null }

async function list (key: string, query = ''): Promise<{ statusCode: number, body: Page & { code?: string, message?: string } }> {
  const response = await app.inject({ url: `/api/v1/audit-events${query}`, headers: { 'x-api-key': key } })
  return { statusCode: response.statusCode, body: response.json() }
}

async function all (key: string, query = ''): Promise<Page['events']> {
  const events: Page['events'] = []
  let cursor: string | null = null
  do {
    const { statusCode, body } = await list(key, `?limit=100${query}${cursor === null ? '' : `&cursor=${cursor}`}`)
    if (statusCode !== 200) throw new Error(`${statusCode}`)
    events.push(...body.events)
    cursor = body.nextCursor
  } while (cursor !== null)
  return events
}

// Something to see in each organization, made through the API (so with a key actor).
const inA = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { 'x-api-key': alice.key }, payload: { description: 'alice 2' } })
const inB = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { 'x-api-key': bob.key }, payload: { description: 'bob 2' } })
t.equal(inA.statusCode, 201)
t.equal(inB.statusCode, 201)

t.test('auth:admin sees every event, newest first, paged by cursor without gaps or repeats', async (t) => {
  const events = await all(adminKey)
  const { rows } = await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM audit_events')
  t.equal(events.length, rows[0].n)
  t.equal(new Set(events.map((e) => e.id)).size, events.length, 'no repeats')
  const seqs = events.map((e) => BigInt(e.seq))
  t.ok(seqs.every((seq, i) => i === 0 || seq < seqs[i - 1]), 'newest first')
  const small = await list(adminKey, '?limit=2')
  t.equal(small.body.events.length, 2)
  t.equal(small.body.nextCursor, small.body.events[1].seq)
  const next = await list(adminKey, `?limit=2&cursor=${small.body.nextCursor!}`)
  t.same(next.body.events.map((e) => e.seq), [events[2].seq, events[3].seq])
})

t.test('tenant isolation: a key sees only its own user\'s events and its organization\'s', async (t) => {
  const ofAlice = await all(alice.key)
  t.ok(ofAlice.some((e) => e.keyId === inA.json().id && e.action === 'key.created'))
  t.ok(ofAlice.every((e) => e.organizationId === orgA || e.userId === alice.userId), 'nothing outside A or alice')
  t.notOk(ofAlice.some((e) => e.organizationId === orgB || e.userId === bob.userId || e.userId === personal.userId))
  const ofBob = await all(bob.key)
  t.ok(ofBob.some((e) => e.keyId === inB.json().id))
  t.notOk(ofBob.some((e) => e.organizationId === orgA || e.userId === alice.userId), 'B never sees A')
  // Asking for another organization's events by filter gives nothing, not an error that confirms it.
  t.same((await list(bob.key, `?organizationId=${orgA}`)).body.events, [])
  t.same((await list(bob.key, `?keyId=${inA.json().id}`)).body.events, [])
  const ofSolo = await all(personal.key)
  t.ok(ofSolo.length > 0 && ofSolo.every((e) => e.userId === personal.userId), 'a personal key: its own user only')
})

t.test('filters: keyId, userId, organizationId, action, since/until (and from/to)', async (t) => {
  const key = inA.json().id
  t.same((await all(adminKey, `&keyId=${key}`)).map((e) => e.action), ['key.created'])
  t.ok((await all(adminKey, `&userId=${bob.userId}`)).every((e) => e.userId === bob.userId))
  t.ok((await all(adminKey, `&organizationId=${orgB}`)).every((e) => e.organizationId === orgB))
  const created = await all(adminKey, '&action=key.created')
  t.ok(created.length >= 5 && created.every((e) => e.action === 'key.created'))
  const future = new Date(Date.now() + 3_600_000).toISOString()
  t.same(await all(adminKey, `&since=${encodeURIComponent(future)}`), [])
  t.same(await all(adminKey, `&from=${encodeURIComponent(future)}`), [])
  const everything = await all(adminKey)
  t.equal((await all(adminKey, `&until=${encodeURIComponent(future)}`)).length, everything.length)
  t.equal((await all(adminKey, `&to=${encodeURIComponent(future)}&since=2020-01-01T00:00:00Z`)).length, everything.length)
})

t.test('bad filters answer 400 with the error body, never 500', async (t) => {
  for (const query of [
    '?keyId=not-a-uuid', '?userId=1', '?organizationId=%27%3B--', '?since=yesterday', '?until=2026-02-30T00:00:00Z',
    '?cursor=abc', '?cursor=-1', '?cursor=99999999999999999999', '?limit=0', '?limit=101', '?limit=1e309', '?action=KEY.CREATED',
    '?action=' + 'a'.repeat(65), '?nope=1', '?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z',
    '?since=2026-01-01T00:00:00Z&from=2026-01-01T00:00:00Z', '?keyId=%00'
  ]) {
    const { statusCode, body } = await list(adminKey, query)
    t.equal(statusCode, 400, query)
    t.same(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'], `${query}: the error body`)
  }
  t.equal((await list(adminKey, '?action=no.such_action')).statusCode, 200, 'an unknown action is a filter that matches nothing')
})

t.test('no key: 401', async (t) => {
  t.equal((await app.inject({ url: '/api/v1/audit-events' })).statusCode, 401)
})

t.test('database down: 503 with Retry-After and the bare error body; a cache flush still flushes (its event is logged as lost)', async (t) => {
  const down = await build(t, { proxy: true })
  const headers = { 'x-api-key': adminKey }
  t.equal((await down.app.inject({ url: '/api/v1/audit-events', headers })).statusCode, 200, 'the key is cached')
  await down.db.proxy!.cut()
  for (const [method, url] of [['GET', '/api/v1/audit-events'], ['GET', '/api/v1/webhooks']] as const) {
    const response = await down.app.inject({ method, url, headers })
    t.equal(response.statusCode, 503, url)
    t.ok(response.headers['retry-after'])
    t.same(Object.keys(response.json()).sort(), ['code', 'error', 'message', 'statusCode'])
    t.equal(response.json().code, 'SERVICE_UNAVAILABLE')
  }
  const flushed = await down.app.inject({ method: 'POST', url: '/api/v1/admin/auth-cache/flush', headers })
  t.equal(flushed.statusCode, 200, 'the flush is not held hostage by its audit event')
  await down.db.proxy!.restore()
})
