// The audit trail as the database writes it: who did what, from the service or from outside, never a
// secret; the hash chain, its verification, pruning with an anchor; the sweeps' events.
import t from 'tap'
import { verifyChain } from '#src/audit/chain.ts'
import { hashApiKey } from '#src/auth/api-key.ts'
import { build } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertKey, insertOrganization, insertUserWithKey, keyOf, testOrgId } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)
const { app, db, clock } = await build(t)
const orgId = await testOrgId(db)
const adminKey = keyOf('ops+clerk_test@mock.com')
const admin = await db.prisma.apiKey.findUniqueOrThrow({ where: { tokenHash: hashApiKey(adminKey) } })

interface Event { seq: string, action: string, actor: Record<string, unknown>, key_id: string | null, user_id: string | null, organization_id: string | null, address: string | null, user_agent: string | null, changes: Record<string, { before: unknown, after: unknown }> | null, details: Record<string, unknown> | null }

async function eventsOf (keyId: string): Promise<Event[]> {
  const { rows } = await db.pool.query<Event>('SELECT seq::text, action, actor, key_id, user_id, organization_id, address, user_agent, changes, details FROM audit_events WHERE key_id = $1 ORDER BY seq', [keyId])
  return rows
}
const lastSeq = async () => (await db.pool.query<{ seq: string }>('SELECT coalesce(max(seq), 0)::text AS seq FROM audit_events')).rows[0].seq

const asAdmin = (method: 'POST' | 'PATCH' | 'DELETE', url: string, payload?: object) =>
  app.inject({ method, url, headers: { 'x-api-key': adminKey, 'user-agent': 'audit-test/1.0' }, ...(payload === undefined ? {} : { payload }) })

t.test('key management through the API: created, updated, rotated, revoked, each with its actor and no secret', async (t) => {
  const created = await asAdmin('POST', '/api/v1/api-keys', { description: 'ci', scopes: ['projects:read'] })
  t.equal(created.statusCode, 201)
  const { id, key } = created.json()
  t.equal((await asAdmin('PATCH', `/api/v1/api-keys/${id}`, { scopes: [], description: 'ci runner' })).statusCode, 200)
  const rotated = await asAdmin('POST', `/api/v1/api-keys/${id}/rotate`, { gracePeriodSeconds: 60 })
  t.equal(rotated.statusCode, 201)
  const successor = rotated.json()
  t.equal((await asAdmin('DELETE', `/api/v1/api-keys/${successor.id}`)).statusCode, 204)

  const events = await eventsOf(id)
  t.same(events.map((e) => e.action), ['key.created', 'key.updated', 'key.rotated'])
  for (const event of events) {
    t.same(event.actor, { type: 'key', keyId: admin.id, userId: admin.userId }, `${event.action}: the admin key is the actor`)
    t.equal(event.address, '127.0.0.1')
    t.equal(event.user_agent, 'audit-test/1.0')
    t.equal(event.organization_id, orgId)
  }
  t.same(events[1].changes, { scopes: { before: ['projects:read'], after: [] }, description: { before: 'ci', after: 'ci runner' } })
  t.equal(events[2].details?.successorId, successor.id)
  t.ok(events[2].changes?.expires_at, 'the rotation shortened the old key to its grace period')
  t.same((await eventsOf(successor.id)).map((e) => e.action), ['key.created', 'key.revoked'], 'a rotation also creates the successor')

  const { rows } = await db.pool.query<{ all: string }>('SELECT string_agg(actor::text || coalesce(changes::text, \'\') || coalesce(details::text, \'\'), \' \') AS all FROM audit_events')
  for (const secret of [key, hashApiKey(key), successor.key, hashApiKey(successor.key), adminKey, admin.tokenHash]) {
    t.notOk(rows[0].all.includes(secret), 'no key and no hash in the trail')
  }
})

t.test('a change made outside the service (plain SQL) is recorded with the database role as actor', async (t) => {
  const { keyId, userId } = await insertUserWithKey(db, { organizationId: orgId })
  await db.pool.query('UPDATE api_keys SET scopes = ARRAY[\'projects:write\'] WHERE id = $1', [keyId])
  await db.pool.query('UPDATE organization_memberships SET role = \'admin\' WHERE user_id = $1', [userId])
  await db.pool.query('UPDATE users SET disabled_at = now() WHERE id = $1', [userId])
  const events = await eventsOf(keyId)
  t.same(events.map((e) => e.action), ['key.created', 'key.updated'])
  t.equal(events[1].actor.type, 'database')
  t.type(events[1].actor.role, 'string')
  t.same(events[1].changes, { scopes: { before: [], after: ['projects:write'] } })
  const { rows } = await db.pool.query<Event>('SELECT action, actor, changes, details, organization_id FROM audit_events WHERE user_id = $1 AND key_id IS NULL ORDER BY seq', [userId])
  t.same(rows.map((e) => e.action), ['user.created', 'membership.changed', 'membership.changed', 'user.updated'])
  t.same(rows[2].changes, { role: { before: 'member', after: 'admin' } })
  t.equal(rows[2].organization_id, orgId)
  t.ok(rows[3].changes?.disabled_at, 'disabling the user is recorded')
  t.equal(rows[3].actor.type, 'database')
})

t.test('writes that change nothing claim-relevant record nothing; a rolled-back change records nothing', async (t) => {
  const { keyId } = await insertUserWithKey(db, { organizationId: orgId })
  const before = await lastSeq()
  await db.pool.query('UPDATE api_keys SET updated_at = now(), hint = hint WHERE id = $1', [keyId])
  const client = await db.pool.connect()
  try {
    await client.query('BEGIN')
    await client.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [keyId])
    await client.query('ROLLBACK')
  } finally {
    client.release()
  }
  t.equal(await lastSeq(), before)
})

t.test('a revocation whose actor says reason "leaked" is recorded as key.leaked with the report\'s url and source', async (t) => {
  for (const actor of [
    { type: 'system', reason: 'leaked', url: 'https://github.com/acme/app/blob/abc/config.yml', source: 'content' },
    { type: 'key', keyId: admin.id, userId: admin.userId, reason: 'leaked', url: 'https://gist.github.com/x', source: 'gist' }
  ]) {
    const { keyId } = await insertUserWithKey(db, { organizationId: orgId })
    await db.prisma.$transaction(async (tx) => {
      await tx.$executeRaw`SELECT set_config('battra.actor', ${JSON.stringify(actor)}, true)`
      await tx.apiKey.update({ where: { id: keyId }, data: { revokedAt: new Date() } })
    })
    const [, leaked] = await eventsOf(keyId)
    t.equal(leaked.action, 'key.leaked')
    t.same(leaked.details, { reason: 'leaked', url: actor.url, source: actor.source })
    t.equal(leaked.actor.type, actor.type)
    t.equal(leaked.actor.reason, 'leaked')
    t.notOk('url' in leaked.actor, 'the provenance is in details, not the actor')
  }
})

t.test('key.first_used comes from the usage flush (the service is the actor), once', async (t) => {
  const { keyId, key } = await insertUserWithKey(db, { organizationId: orgId })
  t.equal((await app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })).statusCode, 200)
  t.same((await eventsOf(keyId)).map((e) => e.action), ['key.created'], 'nothing on the request path')
  await app.apiKeyAuth.flushUsage()
  clock.advance(1000)
  t.equal((await app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })).statusCode, 200)
  await app.apiKeyAuth.flushUsage()
  const events = await eventsOf(keyId)
  t.same(events.map((e) => e.action), ['key.created', 'key.first_used'])
  t.same(events[1].actor, { type: 'system', task: 'usage' })
})

t.test('the sweep: key.expiring once, N days ahead; key.expired once, after; key.idle when asked for', async (t) => {
  const now = Date.now()
  clock.set(now)
  const { keyId } = await insertUserWithKey(db, { organizationId: orgId, key: { expiresAt: new Date(now + 10 * 86_400_000) } })
  await app.audit.sweep()
  t.same((await eventsOf(keyId)).map((e) => e.action), ['key.created'], '10 days ahead: not yet')
  clock.advance(4 * 86_400_000)
  await app.audit.sweep()
  await app.audit.sweep()
  t.same((await eventsOf(keyId)).map((e) => e.action), ['key.created', 'key.expiring'], 'within 7 days: once')
  clock.advance(7 * 86_400_000)
  await app.audit.sweep()
  await app.audit.sweep()
  const events = await eventsOf(keyId)
  t.same(events.map((e) => e.action), ['key.created', 'key.expiring', 'key.expired'])
  t.same(events[2].actor, { type: 'system', task: 'sweep' })
  clock.resume()
})

t.test('key.idle, opt-in: once per idle spell', async (t) => {
  const idle = await build(t, { db, config: { audit: { sweepIntervalMs: 0, expiringDays: 7, idleDays: 30 } } })
  const { id: keyId } = await insertKey(db, { userId: admin.userId, organizationId: orgId })
  idle.clock.set(Date.now() + 31 * 86_400_000)
  await idle.app.audit.sweep()
  await idle.app.audit.sweep()
  t.same((await eventsOf(keyId)).map((e) => e.action), ['key.created', 'key.idle'])
  await db.pool.query('UPDATE api_keys SET last_used_at = now() WHERE id = $1', [keyId])
  idle.clock.advance(31 * 86_400_000)
  await idle.app.audit.sweep()
  t.same((await eventsOf(keyId)).map((e) => e.action), ['key.created', 'key.idle', 'key.first_used', 'key.idle'], 'idle again after a use')
})

t.test('cache.flushed names the admin key, the target and the count', async (t) => {
  const { userId } = await insertUserWithKey(db, { organizationId: orgId })
  t.equal((await asAdmin('POST', '/api/v1/admin/auth-cache/flush', { userId })).statusCode, 200)
  const { rows } = await db.pool.query<Event>('SELECT action, actor, user_id, details FROM audit_events WHERE action = \'cache.flushed\' ORDER BY seq DESC LIMIT 1')
  t.equal(rows[0].user_id, userId)
  t.equal(rows[0].actor.keyId, admin.id)
  t.equal(rows[0].details?.scope, 'user')
})

t.test('concurrent changes append to one unbroken chain', async (t) => {
  const orgs = await Promise.all(Array.from({ length: 5 }, (_, i) => insertOrganization(db, `Chain ${i}`)))
  await Promise.all(orgs.flatMap((organizationId) => Array.from({ length: 4 }, () => insertUserWithKey(db, { organizationId }))))
  const result = await verifyChain(db.prisma)
  t.ok(result.ok, JSON.stringify(result.firstBad))
  t.ok(result.checked > 50)
})

t.test('the service cannot update or delete events; verify names the first row edited or deleted behind its back', async (t) => {
  t.equal((await verifyChain(db.prisma)).ok, true)
  await t.rejects(db.pool.query('UPDATE audit_events SET action = \'key.updated\' WHERE seq = 3'), /append-only/)
  await t.rejects(db.pool.query('DELETE FROM audit_events WHERE seq = 3'), /append-only/)
  await t.rejects(db.pool.query('TRUNCATE audit_events'), /append-only/)

  const { rows: [victim] } = await db.pool.query<{ id: string, seq: string }>('SELECT id, seq::text FROM audit_events WHERE action = \'key.revoked\' ORDER BY seq LIMIT 1')
  const tamper = async (sql: string) => {
    const client = await db.pool.connect()
    try {
      await client.query('BEGIN')
      await client.query('ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only')
      await client.query(sql, [victim.id])
      await client.query('ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only')
      await client.query('COMMIT')
    } finally {
      client.release()
    }
  }
  await tamper('UPDATE audit_events SET action = \'key.updated\' WHERE id = $1')
  const edited = await verifyChain(db.prisma)
  t.equal(edited.ok, false)
  t.equal(edited.firstBad?.seq, victim.seq, 'verify names the edited row')
  t.equal(edited.firstBad?.id, victim.id)
  t.match(edited.firstBad?.reason, /edited/)

  await tamper('UPDATE audit_events SET action = \'key.revoked\' WHERE id = $1')
  t.equal((await verifyChain(db.prisma)).ok, true, 'restored, it verifies again')
  await tamper('DELETE FROM audit_events WHERE id = $1')
  const deleted = await verifyChain(db.prisma)
  t.equal(deleted.ok, false)
  t.equal(deleted.firstBad?.seq, victim.seq, 'verify names the deleted row')
})
