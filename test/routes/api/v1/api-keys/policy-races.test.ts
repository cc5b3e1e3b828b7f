// Key management decides against fresh rows, not the calling key's cached claims (finding A): a request
// authorised before an administrator's lock-down, and written after it, cannot undo it. Keys derived from
// a rate-limited key share its counter (finding B): creating and rotating keys does not multiply a limit.
// And the organization of a key an administrator creates for another user.
import t, { type Test } from 'tap'
import type { Claims } from '#src/auth/claims.ts'
import { isTransactionConflict } from '#src/db/failures.ts'
import { createKey, revokeKey, rotateKey, updateKey, type Actor } from '#src/keys/management.ts'
import { build, type TestApp } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertOrganization, insertUserWithKey, keyOf, testOrgId } from '#test/helpers/fixtures.ts'
import { until } from '#test/helpers/wait.ts'

t.comment(`database: ${databaseKind}`)
const built = await build(t)
const { app, db } = built
const admin = keyOf('ops+clerk_test@mock.com')
const orgId = await testOrgId(db)
const LOCKDOWN = { allowedCidrs: ['10.0.0.0/8'], rateLimit: { requests: 1, windowSeconds: 86_400 } }

type Json = Record<string, any>
async function call (on: TestApp['app'], key: string, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: object, remoteAddress?: string): Promise<{ statusCode: number, body: any }> {
  const response = await on.inject({ method, url, headers: { 'x-api-key': key }, remoteAddress, ...(payload === undefined ? {} : { payload }) })
  return { statusCode: response.statusCode, body: response.body === '' ? {} : response.json() }
}
const me = (key: string, remoteAddress?: string, on = app) => call(on, key, 'GET', '/api/v1/auth/me', undefined, remoteAddress)
const patch = (key: string, id: string, payload: object) => call(app, key, 'PATCH', `/api/v1/api-keys/${id}`, payload)
const create = async (key: string, payload: object = {}): Promise<Json> => {
  const created = await call(app, key, 'POST', '/api/v1/api-keys', payload)
  if (created.statusCode !== 201) throw new Error(`create: ${JSON.stringify(created.body)}`)
  return created.body
}
const policyOf = async (id: string) => {
  const row = await db.prisma.apiKey.findUniqueOrThrow({ where: { id } })
  return { allowedCidrs: row.allowedCidrs, rateLimit: row.rateLimitRequests === null ? null : { requests: row.rateLimitRequests, windowSeconds: row.rateLimitWindowSeconds } }
}
/** The calling key as its cached claims showed it before the request: what a request in flight carries. */
async function snapshotOf (key: string): Promise<Actor> {
  const claims = (await me(key)).body as Claims
  return { type: 'key', claims, policy: null, address: '127.0.0.1' }
}
const codeOf = async (work: Promise<unknown>): Promise<string> => work.then(() => 'ok', (error: { code?: string }) => error.code ?? String(error))

t.test('A: a change authorised from a snapshot taken before an admin lock-down cannot undo it', async (t) => {
  const x = await create(admin, { userId: (await db.prisma.user.findFirstOrThrow({ where: { email: 'dev+clerk_test@mock.com' } })).id, scopes: [] })
  const stale = await snapshotOf(x.key)
  t.equal((await patch(admin, x.id, LOCKDOWN)).statusCode, 200, 'the admin locks the key down')

  // The request of the key was authorised before (its claims say: no policy), and is written now.
  t.equal(await codeOf(updateKey(db.prisma, stale, x.id, { allowedCidrs: [], rateLimit: null })), 'FORBIDDEN', 'refused: the key is restricted now')
  t.equal(await codeOf(updateKey(db.prisma, stale, x.id, { rateLimit: { requests: 5, windowSeconds: 86_400 } })), 'FORBIDDEN', 'a looser limit too')
  t.equal(await codeOf(createKey(db.prisma, stale, { allowedCidrs: [] })), 'FORBIDDEN', 'no unrestricted key can be minted from the old snapshot')
  const inherited = await createKey(db.prisma, stale, {})
  t.same([inherited.allowedCidrs, inherited.rateLimit], [LOCKDOWN.allowedCidrs, LOCKDOWN.rateLimit], 'a key created without saying inherits the current restriction')
  const sibling = await create(admin, { userId: stale.type === 'key' ? stale.claims.userId : '', organizationId: stale.type === 'key' ? stale.claims.organizationId : null })
  t.equal(await codeOf(rotateKey(db.prisma, stale, sibling.id, 0)), 'FORBIDDEN', 'nor rotate an unrestricted sibling into a credential it obtains')
  t.same(await policyOf(x.id), LOCKDOWN, "the admin's restriction stands")
  t.equal((await me(x.key, '127.0.0.1')).body.code, 'IP_NOT_ALLOWED')

  // Revoked meanwhile: a request in flight does not act any more.
  t.equal((await call(app, admin, 'DELETE', `/api/v1/api-keys/${x.id}`)).statusCode, 204)
  t.equal(await codeOf(revokeKey(db.prisma, stale, inherited.id)), 'API_KEY_INVALID', 'a revoked calling key revokes nothing')
  t.equal(await codeOf(updateKey(db.prisma, stale, inherited.id, { description: 'mine' })), 'API_KEY_INVALID')
  t.equal(await codeOf(createKey(db.prisma, stale, {})), 'API_KEY_INVALID')
  t.equal((await db.prisma.apiKey.findUniqueOrThrow({ where: { id: inherited.id } })).revokedAt, null)

  // Scopes removed meanwhile: the calling key no longer holds them.
  const scoped = await create(admin, { userId: stale.type === 'key' ? stale.claims.userId : '', scopes: ['projects:read'] })
  const scopedStale = await snapshotOf(scoped.key)
  t.equal((await patch(admin, scoped.id, { scopes: [] })).statusCode, 200)
  t.equal(await codeOf(createKey(db.prisma, scopedStale, { scopes: ['projects:read'] })), 'FORBIDDEN', 'a scope taken away is not passed on')
})

t.test('A: many parallel self-PATCHes while the admin locks the key down: the lock-down wins', async (t) => {
  const user = await insertUserWithKey(db, { organizationId: orgId })
  const x = await create(user.key)
  let adminDone = false
  let afterAdmin = 0
  let written = 0
  let unavailable = 0
  const loop = async () => {
    for (let i = 0; i < 6; i++) {
      const answer = await patch(x.key, x.id, { allowedCidrs: [], rateLimit: null })
      // The embedded database has one connection: a lookup queued behind many transactions may answer
      // 503 AUTH_UNAVAILABLE (retry later). Anything else of 5xx would be a bug.
      if (answer.statusCode >= 500 && answer.body.code !== 'AUTH_UNAVAILABLE') throw new Error(`5xx: ${JSON.stringify(answer.body)}`)
      if (answer.statusCode === 503) unavailable++
      if (answer.statusCode === 200) written++
      if (adminDone && answer.statusCode === 200) afterAdmin++
    }
  }
  const lockDown = async () => {
    await until(() => written >= 5, 20_000, 'some self-PATCHes written')
    const answer = await patch(admin, x.id, LOCKDOWN)
    t.equal(answer.statusCode, 200, 'the admin answer')
    adminDone = true
  }
  await Promise.all([...Array.from({ length: 10 }, loop), lockDown()])
  t.equal(afterAdmin, 0, 'no self-PATCH started after the lock-down succeeded')
  t.comment(`self-PATCHes written: ${written}; 503 AUTH_UNAVAILABLE: ${unavailable}`)
  t.same(await policyOf(x.id), LOCKDOWN, "final state: the admin's restriction")
  t.equal((await me(x.key, '127.0.0.1')).body.code, 'IP_NOT_ALLOWED')

  // Limits: after the admin set 1/60, none of 20 parallel self-PATCHes i/60 (i = 1..20) loosens it.
  const y = await create(user.key)
  t.equal((await patch(admin, y.id, { rateLimit: { requests: 1, windowSeconds: 60 } })).statusCode, 200)
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => patch(y.key, y.id, { rateLimit: { requests: i + 1, windowSeconds: 60 } })))
  t.same(answers.filter((a) => a.statusCode >= 500 && a.body.code !== 'AUTH_UNAVAILABLE'), [], 'no 5xx')
  t.same((await policyOf(y.id)).rateLimit, { requests: 1, windowSeconds: 60 })
})

t.test('A: on PostgreSQL, a self-PATCH waiting on the row lock sees the change committed before it', { skip: databaseKind !== 'PostgreSQL' && 'needs a second connection' }, async (t) => {
  const user = await insertUserWithKey(db, { organizationId: orgId })
  const x = await create(user.key)
  t.equal((await me(x.key)).statusCode, 200, 'cached: no policy')
  const client = await db.pool.connect()
  t.teardown(() => client.release())
  await client.query('BEGIN')
  await client.query('SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE', [x.id])
  const pending = patch(x.key, x.id, { allowedCidrs: [], rateLimit: null })
  await until(async () => (await db.pool.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")).rows[0].n >= 1, 10_000, 'the self-PATCH waiting on the lock')
  await client.query('UPDATE api_keys SET allowed_cidrs = $2, rate_limit_requests = 1, rate_limit_window_seconds = 86400 WHERE id = $1', [x.id, ['10.0.0.0/8']])
  await client.query('COMMIT')
  const answer = await pending
  t.equal(answer.statusCode, 403, 'refused against the row as committed')
  t.same(await policyOf(x.id), LOCKDOWN)
  await until(async () => (await me(x.key, '127.0.0.1')).body.code === 'IP_NOT_ALLOWED', 5000, 'refused from 127.0.0.1')
  t.pass('refused from 127.0.0.1')
})

t.test('A: on PostgreSQL, a deadlock with another transaction is retried, never a 500', { skip: databaseKind !== 'PostgreSQL' && 'needs a second connection' }, async (t) => {
  const user = await insertUserWithKey(db, { organizationId: orgId })
  const [a, b] = [await create(user.key), await create(user.key)].sort((x, y) => x.id < y.id ? -1 : 1)
  t.equal((await me(a.key)).statusCode, 200)
  const client = await db.pool.connect()
  t.teardown(() => client.release())
  await client.query('BEGIN')
  await client.query('SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE', [b.id])
  // Key a changes key b: it locks a, then waits for b, which this transaction holds.
  const pending = patch(a.key, b.id, { description: 'changed by a' })
  await until(async () => (await db.pool.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")).rows[0].n >= 1, 10_000, 'the PATCH waiting on the lock')
  // Now this transaction wants a: a deadlock, which PostgreSQL breaks by aborting one of the two.
  const mine = await client.query('SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE', [a.id]).then(() => 'locked', (error: { code?: string }) => error.code)
  await client.query(mine === 'locked' ? 'COMMIT' : 'ROLLBACK')
  const answer = await pending
  t.comment(`this transaction: ${mine === 'locked' ? 'won (the PATCH was the victim and ran again)' : `aborted (${mine})`}`)
  t.equal(answer.statusCode, 200, 'the PATCH succeeds, retried if it was the victim')
  t.equal((await db.prisma.apiKey.findUniqueOrThrow({ where: { id: b.id } })).description, 'changed by a')
})

t.test('what counts as a lost race to run again', async (t) => {
  t.ok(isTransactionConflict({ code: 'P2034', message: 'Transaction failed due to a write conflict or a deadlock. Please retry your transaction' }))
  t.ok(isTransactionConflict({ code: 'P2010', meta: { code: '40P01', message: 'deadlock detected' } }))
  t.ok(isTransactionConflict(Object.assign(new Error('wrapped'), { cause: { originalCode: '40001', message: 'could not serialize access due to concurrent update' } })))
  t.notOk(isTransactionConflict({ code: 'P2002', message: 'Unique constraint failed' }))
  t.notOk(isTransactionConflict(new Error('boom')))
})

/** Moves the app's clock to the start of a window, so that a test's requests all fall in one. */
function toWindowStart (clock: TestApp['clock'], windowSeconds: number): void {
  const windowMs = windowSeconds * 1000
  clock.advance(windowMs - (clock.now() % windowMs) + 1)
}

async function derivedKeysShareTheLimit (t: Test, on: TestApp): Promise<void> {
  toWindowStart(on.clock, 3600)
  const user = await insertUserWithKey(db, { organizationId: orgId })
  const l = (await call(on.app, admin, 'POST', '/api/v1/api-keys', { userId: user.userId, organizationId: orgId, rateLimit: { requests: 2, windowSeconds: 3600 } })).body
  const child = await call(on.app, l.key, 'POST', '/api/v1/api-keys', {})
  t.equal(child.statusCode, 201, "L's request 1: a child")
  t.same(child.body.rateLimit, { requests: 2, windowSeconds: 3600 }, 'which inherits the limit')
  const successor = await call(on.app, l.key, 'POST', `/api/v1/api-keys/${l.id}/rotate`, { gracePeriodSeconds: 3600 })
  t.equal(successor.statusCode, 201, "L's request 2: a successor")
  const statuses = []
  for (const key of [l.key, child.body.key, successor.body.key, child.body.key, successor.body.key]) statuses.push((await me(key, undefined, on.app)).statusCode)
  t.same(statuses, [429, 429, 429, 429, 429], 'L, its child and its successor: 2 requests in all under a limit of 2')
  const rows = await db.prisma.apiKey.findMany({ where: { id: { in: [child.body.id, successor.body.id] } } })
  t.same(rows.map((row) => row.rateLimitBucketId), [l.id, l.id], "both count on L's counter")
  const created = await db.prisma.auditEvent.findFirstOrThrow({ where: { keyId: child.body.id, action: 'key.created' } })
  t.match(created.changes, { rate_limit_bucket_id: { before: null, after: l.id } }, 'the audit trail records the counter')
}

t.test('B: keys created or rotated by a rate-limited key share its counter (in process)', async (t) => {
  await derivedKeysShareTheLimit(t, built)
})

t.test('B: the same with the counters in Redis', async (t) => {
  const withRedis = await build(t, { db, config: { rateLimit: { redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', mode: 'exact', redisTimeoutMs: 2000 } } })
  t.equal(withRedis.app.keyRateLimits.stats().backend, 'redis')
  await derivedKeysShareTheLimit(t, withRedis)
  t.equal(withRedis.app.keyRateLimits.stats().backend, 'redis', 'answered by Redis throughout')
})

t.test('B: a derived key keeps the window of the counter it shares; an admin gives a key its own', async (t) => {
  const user = await insertUserWithKey(db, { organizationId: orgId })
  const l = await create(admin, { userId: user.userId, organizationId: orgId, rateLimit: { requests: 100, windowSeconds: 3600 } })
  t.equal((await db.prisma.apiKey.findUniqueOrThrow({ where: { id: l.id } })).rateLimitBucketId, null, 'created by an admin: a counter of its own')
  const otherWindow = await call(app, l.key, 'POST', '/api/v1/api-keys', { rateLimit: { requests: 1, windowSeconds: 1800 } })
  t.match(otherWindow, { statusCode: 403, body: { code: 'FORBIDDEN', message: /keeps its window of 3600 s/ } }, 'another window would be a fresh counter')
  const stricter = await call(app, l.key, 'POST', '/api/v1/api-keys', { rateLimit: { requests: 10, windowSeconds: 3600 } })
  t.equal(stricter.statusCode, 201, 'fewer requests in the same window: fine')
  t.equal((await db.prisma.apiKey.findUniqueOrThrow({ where: { id: stricter.body.id } })).rateLimitBucketId, l.id)
  t.match(await patch(stricter.body.key, stricter.body.id, { rateLimit: { requests: 5, windowSeconds: 1800 } }), { statusCode: 403 }, 'nor by PATCH of itself')
  t.match(await patch(l.key, l.id, { rateLimit: { requests: 50, windowSeconds: 1800 } }), { statusCode: 403 }, 'the root keeps its window too')
  t.equal((await patch(stricter.body.key, stricter.body.id, { rateLimit: { requests: 9, windowSeconds: 3600 } })).statusCode, 200)
  const grandchild = await call(app, stricter.body.key, 'POST', '/api/v1/api-keys', {})
  t.equal((await db.prisma.apiKey.findUniqueOrThrow({ where: { id: grandchild.body.id } })).rateLimitBucketId, l.id, 'a chain shares one counter')
  t.equal((await patch(admin, grandchild.body.id, { rateLimit: null })).statusCode, 200)
  t.equal((await db.prisma.apiKey.findUniqueOrThrow({ where: { id: grandchild.body.id } })).rateLimitBucketId, null, 'no limit, no counter')
})

t.test('an admin creating a key for another user: its organization if the user is a member, else personal', async (t) => {
  const member = await insertUserWithKey(db, { organizationId: orgId })
  const outsider = await insertUserWithKey(db, { organizationId: await insertOrganization(db, 'Elsewhere') })
  const loner = await insertUserWithKey(db)
  t.equal((await create(admin, { userId: member.userId })).organizationId, orgId, "a member: the admin key's organization")
  t.equal((await create(admin, { userId: outsider.userId })).organizationId, null, 'a member of another organization only: personal')
  t.equal((await create(admin, { userId: loner.userId })).organizationId, null, 'no organization: personal')
  t.equal((await call(app, admin, 'POST', '/api/v1/api-keys', { userId: loner.userId, organizationId: orgId })).body.code, 'ORG_MEMBERSHIP_REQUIRED', 'asked for explicitly: refused')
})
