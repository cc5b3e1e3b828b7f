// POST/GET/DELETE /api/v1/webhooks: auth:admin only, URLs and event types checked (400), the secret shown
// once and never again (not in lists, not in logs, not in a table Prisma maps).
import t from 'tap'
import { build } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertOrganization, keyOf, testOrgId } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)
const { app, db, logs } = await build(t, { captureLogs: true, config: { webhooks: { worker: false, pollIntervalMs: 1000, timeoutMs: 1000, retryForMs: 3_600_000, backoffBaseMs: 1000, backoffMaxMs: 60_000 } } })
const adminKey = keyOf('ops+clerk_test@mock.com')
const orgId = await testOrgId(db)

const call = (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: unknown, key = adminKey) =>
  app.inject({ method, url, headers: { 'x-api-key': key }, ...(payload === undefined ? {} : { payload: payload as object }) })

t.test('register, list, remove; the secret only in the create answer', async (t) => {
  const created = await call('POST', '/api/v1/webhooks', { url: 'https://hooks.example.com/battra?x=1', events: ['key.created', 'key.expiring', 'key.created'], organizationId: orgId, description: 'ops' })
  t.equal(created.statusCode, 201)
  t.equal(created.headers['cache-control'], 'no-store')
  const endpoint = created.json()
  t.match(endpoint, { url: 'https://hooks.example.com/battra?x=1', events: ['key.created', 'key.expiring'], organizationId: orgId, description: 'ops', secret: /^whsec_[A-Za-z0-9+/]{43}=$/ })
  const global = (await call('POST', '/api/v1/webhooks', { url: 'http://127.0.0.1:9/hook', events: ['*'] })).json()
  t.equal(global.organizationId, null)

  const listed = await call('GET', '/api/v1/webhooks')
  t.equal(listed.statusCode, 200)
  t.same(listed.json().map((w: { id: string }) => w.id), [endpoint.id, global.id])
  t.notOk(listed.body.includes(endpoint.secret) || listed.body.includes('whsec_'), 'never the secret in a list')
  t.same((await call('GET', `/api/v1/webhooks?organizationId=${orgId}`)).json().map((w: { id: string }) => w.id), [endpoint.id])
  t.same((await call('GET', `/api/v1/webhooks/${endpoint.id}/deliveries`)).json(), [])
  const one = await call('GET', `/api/v1/webhooks/${endpoint.id}`)
  t.equal(one.statusCode, 200)
  t.same(one.json(), listed.json()[0], 'one endpoint, as the list shows it')

  const mapped = JSON.stringify(await db.prisma.webhookEndpoint.findMany())
  t.notOk(mapped.includes(endpoint.secret), 'Prisma (and so Studio) never sees the secret')
  t.notOk(logs.some((line) => line.includes(endpoint.secret) || line.includes(endpoint.secret.slice(6))), 'nor the logs')

  t.equal((await call('DELETE', `/api/v1/webhooks/${endpoint.id}`)).statusCode, 204)
  t.equal((await call('DELETE', `/api/v1/webhooks/${endpoint.id}`)).statusCode, 404)
  t.equal((await call('GET', `/api/v1/webhooks/${endpoint.id}/deliveries`)).statusCode, 404)
  t.equal((await call('GET', `/api/v1/webhooks/${endpoint.id}`)).statusCode, 404, 'a removed endpoint is not found')
  t.same((await call('GET', '/api/v1/webhooks')).json().map((w: { id: string }) => w.id), [global.id])
})

t.test('bad registrations answer 400 (or 404 for an unknown organization), never 500', async (t) => {
  const cases: Array<[unknown, number, string]> = [
    [{ url: 'ftp://example.com/x', events: ['*'] }, 400, 'INVALID_WEBHOOK'],
    [{ url: 'javascript:alert(1)', events: ['*'] }, 400, 'INVALID_WEBHOOK'],
    [{ url: 'file:///etc/passwd', events: ['*'] }, 400, 'INVALID_WEBHOOK'],
    [{ url: 'not a url', events: ['*'] }, 400, 'INVALID_WEBHOOK'],
    [{ url: 'https://user:pass@example.com/', events: ['*'] }, 400, 'INVALID_WEBHOOK'],
    [{ url: 'https://example.com/#frag', events: ['*'] }, 400, 'INVALID_WEBHOOK'],
    [{ url: 'https://example.com/', events: ['key.exploded'] }, 400, 'INVALID_WEBHOOK'],
    [{ url: 'https://example.com/', events: [] }, 400, 'FST_ERR_VALIDATION'],
    [{ url: 'https://example.com/' }, 400, 'FST_ERR_VALIDATION'],
    [{ url: `https://example.com/${'a'.repeat(3000)}`, events: ['*'] }, 400, 'FST_ERR_VALIDATION'],
    [{ url: 'https://example.com/', events: ['*'], secret: 'mine' }, 400, 'FST_ERR_VALIDATION'],
    [{ url: 'https://example.com/', events: ['*'], organizationId: 'nope' }, 400, 'FST_ERR_VALIDATION'],
    [{ url: 'https://example.com/', events: ['*'], organizationId: '00000000-0000-4000-8000-000000000000' }, 404, 'ORGANIZATION_NOT_FOUND']
  ]
  for (const [payload, status, code] of cases) {
    const response = await call('POST', '/api/v1/webhooks', payload)
    t.equal(response.statusCode, status, JSON.stringify(payload).slice(0, 80))
    t.equal(response.json().code, code)
  }
  t.equal((await call('DELETE', '/api/v1/webhooks/not-a-uuid')).statusCode, 400)
  t.equal((await call('GET', '/api/v1/webhooks/not-a-uuid')).statusCode, 400)
  t.equal((await call('GET', '/api/v1/webhooks/00000000-0000-4000-8000-000000000000/deliveries?status=lost')).statusCode, 400)
})

t.test('only auth:admin', async (t) => {
  const orgB = await insertOrganization(db, 'B')
  for (const key of [keyOf('po+clerk_test@mock.com'), keyOf('dev+clerk_test@mock.com')]) {
    t.equal((await call('POST', '/api/v1/webhooks', { url: 'https://example.com/', events: ['*'], organizationId: orgB }, key)).statusCode, 403)
    t.equal((await call('GET', '/api/v1/webhooks', undefined, key)).statusCode, 403)
    t.equal((await call('DELETE', '/api/v1/webhooks/00000000-0000-4000-8000-000000000000', undefined, key)).statusCode, 403)
    t.equal((await call('GET', '/api/v1/webhooks/00000000-0000-4000-8000-000000000000', undefined, key)).statusCode, 403)
  }
  t.equal((await app.inject({ url: '/api/v1/webhooks' })).statusCode, 401)
})

t.test('deliveries page with ?after=<the last id of the previous page>: every delivery once, in order, whatever the microseconds', async (t) => {
  const endpoint = (await call('POST', '/api/v1/webhooks', { url: 'https://hooks.example.com/paged', events: ['*'] })).json()
  const other = (await call('POST', '/api/v1/webhooks', { url: 'https://hooks.example.com/other', events: ['*'] })).json()
  // 11 deliveries: several in one millisecond (microseconds apart), several at one instant (ordered by id).
  await db.pool.query(`INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, payload, created_at)
    SELECT 'msg_' || lpad(i::text, 2, '0'), $1, gen_random_uuid(), 'key.updated', '{}',
      timestamptz '2026-01-01 00:00:00' + (CASE WHEN i <= 4 THEN i * 100 WHEN i <= 8 THEN 1000 ELSE i * 1000 END) * interval '1 microsecond'
    FROM generate_series(1, 11) AS i`, [endpoint.id])
  await db.pool.query('INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, payload) VALUES (\'msg_other\', $1, gen_random_uuid(), \'key.updated\', \'{}\')', [other.id])
  const whole = (await call('GET', `/api/v1/webhooks/${endpoint.id}/deliveries?limit=100`)).json() as Array<{ id: string }>
  t.equal(whole.length, 11)
  const paged: string[] = []
  let after: string | undefined
  for (let page = 0; page < 10; page++) {
    const answer = await call('GET', `/api/v1/webhooks/${endpoint.id}/deliveries?limit=3${after === undefined ? '' : `&after=${after}`}`)
    t.equal(answer.statusCode, 200, answer.body)
    const ids = (answer.json() as Array<{ id: string }>).map((delivery) => delivery.id)
    paged.push(...ids)
    if (ids.length < 3) break
    after = ids.at(-1)
  }
  t.same(paged, whole.map((delivery) => delivery.id), 'the pages, one after another, are the whole list')

  for (const [after, why] of [['msg_nothing', 'no such delivery'], ['msg_other', "another endpoint's delivery"]]) {
    const refused = await call('GET', `/api/v1/webhooks/${endpoint.id}/deliveries?after=${after}`)
    t.equal(refused.statusCode, 400, why)
    t.match(refused.json(), { code: 'FST_ERR_VALIDATION', message: /^querystring\/after must be the id of one of this endpoint's deliveries/ }, why)
  }
})
