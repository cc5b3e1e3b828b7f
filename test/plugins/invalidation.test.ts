import t from 'tap'
import { build, statementsDuring } from '#test/helpers/app.ts'
import { databaseKind, serverUrl } from '#test/helpers/database.ts'
import { insertOrganization, insertUserWithKey, testOrgId } from '#test/helpers/fixtures.ts'
import { eventually, until } from '#test/helpers/wait.ts'

t.comment(`database: ${databaseKind}`)
const { app, db } = await build(t, { config: { listener: { reconnectMinMs: 300, reconnectMaxMs: 300, heartbeatMs: 10_000 } } })
const orgId = await testOrgId(db)
const me = (key: string) => app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })

if (serverUrl === undefined) {
  t.test('embedded database: no NOTIFY through its socket, so cached entries are trusted only briefly', async (t) => {
    t.equal(app.invalidation.stats().state, 'unsupported')
    const { app: capped, db: cappedDb, clock } = await build(t, { config: { cache: { unverifiedTtlMs: 200 } } })
    const { key, keyId } = await insertUserWithKey(cappedDb, { organizationId: await testOrgId(cappedDb) })
    const request = () => capped.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })
    t.equal((await request()).statusCode, 200)
    await cappedDb.prisma.apiKey.update({ where: { id: keyId }, data: { revokedAt: new Date() } })
    t.equal((await request()).statusCode, 200, 'still trusted within the cap')
    clock.advance(250)
    t.equal((await request()).statusCode, 401, 'an outside change is seen once the trust cap has passed')
    const flush = await capped.inject({ method: 'POST', url: '/api/v1/admin/auth-cache/flush', headers: { 'x-api-key': 'battra-admin-key-1' } })
    t.match(flush.json(), { scope: 'all', broadcast: false })
  })
} else {
  t.test('a change made with plain SQL is forgotten at once', async (t) => {
    t.equal(app.invalidation.stats().state, 'listening')
    const { key, keyId } = await insertUserWithKey(db, { organizationId: orgId })
    t.equal((await me(key)).statusCode, 200)
    await db.pool.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [keyId])
    const ms = await until(async () => (await me(key)).statusCode === 401)
    t.ok(ms < 1000, `rejected after ${ms} ms`)
  })

  t.test("policy columns are claim-relevant: a key's networks or limit, or its organization's limit, changed with SQL", async (t) => {
    const org = await insertOrganization(db, 'Policy Org')
    const { key, keyId } = await insertUserWithKey(db, { organizationId: org })
    t.equal((await me(key)).statusCode, 200)
    await db.pool.query("UPDATE api_keys SET allowed_cidrs = '{192.0.2.0/24}' WHERE id = $1", [keyId])
    await until(async () => (await me(key)).json().code === 'IP_NOT_ALLOWED')
    await db.pool.query("UPDATE api_keys SET allowed_cidrs = '{}', rate_limit_requests = 1000, rate_limit_window_seconds = 60 WHERE id = $1", [keyId])
    await until(async () => (await me(key)).headers['ratelimit-limit'] === '1000')
    await db.pool.query('UPDATE organizations SET rate_limit_requests = 10, rate_limit_window_seconds = 60 WHERE id = $1', [org])
    await until(async () => (await me(key)).headers['ratelimit-limit'] === '10')
    t.pass('each change seen')
  })

  t.test('a membership role change updates the claims; a membership delete refuses the key', async (t) => {
    const { key, userId } = await insertUserWithKey(db, { organizationId: orgId, orgRole: 'member' })
    t.equal((await me(key)).json().orgRole, 'member')
    await db.pool.query("UPDATE organization_memberships SET role = 'admin' WHERE user_id = $1", [userId])
    t.ok(await eventually(async () => (await me(key)).json().orgRole === 'admin'), 'the new role is seen')
    await db.pool.query('DELETE FROM organization_memberships WHERE user_id = $1', [userId])
    t.ok(await eventually(async () => (await me(key)).json().code === 'ORG_MEMBERSHIP_REQUIRED'), 'the removal is seen')
  })

  t.test('exactly the affected entries go: another organization stays cached', async (t) => {
    const otherOrg = await insertOrganization(db, 'Untouched Org')
    const untouched = await insertUserWithKey(db, { organizationId: otherOrg })
    const changed = await insertUserWithKey(db, { organizationId: orgId })
    for (const key of [untouched.key, changed.key]) t.equal((await me(key)).statusCode, 200)
    await db.pool.query('UPDATE users SET disabled_at = now() WHERE id = $1', [changed.userId])
    await until(async () => (await me(changed.key)).statusCode === 403)
    t.equal(await statementsDuring(app, () => me(untouched.key)), 0, 'still served from the cache')
  })

  t.test('writes that cannot change claims (usage, descriptions) evict nothing', async (t) => {
    const { key, keyId } = await insertUserWithKey(db, { organizationId: orgId })
    t.equal((await me(key)).statusCode, 200)
    await app.apiKeyAuth.flushUsage()
    await db.pool.query("UPDATE api_keys SET description = 'renamed', updated_at = now() WHERE id = $1", [keyId])
    const before = app.invalidation.stats().notifications
    await db.pool.query("SELECT pg_notify('battra_auth_invalidation', 'org:00000000-0000-0000-0000-000000000000')")
    await until(async () => app.invalidation.stats().notifications > before)
    t.equal(app.invalidation.stats().notifications, before + 1, 'only the marker arrived')
    t.equal(await statementsDuring(app, () => me(key)), 0)
  })

  t.test("an instance's own broadcast is not applied twice when it echoes back", async (t) => {
    const start = app.invalidation.stats().notifications
    const { key, keyId } = await insertUserWithKey(db, { organizationId: orgId })
    // The app's listener may receive the fixture's two notifications (membership, key) after this file's
    // own listener did: a marker sent after them arrives after them, so wait for all three.
    await db.pool.query("SELECT pg_notify('battra_auth_invalidation', 'org:00000000-0000-0000-0000-000000000000')")
    await until(async () => app.invalidation.stats().notifications === start + 3)
    t.equal((await me(key)).statusCode, 200)
    const before = app.invalidation.stats().notifications
    const flush = await app.inject({ method: 'POST', url: '/api/v1/admin/auth-cache/flush', headers: { 'x-api-key': 'battra-admin-key-1' }, payload: { userId: '00000000-0000-4000-8000-000000000000' } })
    t.match(flush.json(), { broadcast: true })
    t.equal((await me(key)).statusCode, 200)
    // A marker sent after the flush arrives after its echo would have: then only the marker counts.
    await db.pool.query("SELECT pg_notify('battra_auth_invalidation', 'org:00000000-0000-0000-0000-000000000001')")
    await until(() => app.invalidation.stats().notifications > before)
    t.equal(app.invalidation.stats().notifications, before + 1, 'its echo was recognised and skipped')
    t.equal(await statementsDuring(app, () => me(key)), 0, 'nothing else evicted')
    t.ok(keyId)
  })

  t.test('deleting an organization refuses its keys (cascade included)', async (t) => {
    const doomed = await insertOrganization(db, 'Doomed Org')
    const { key } = await insertUserWithKey(db, { organizationId: doomed })
    t.equal((await me(key)).statusCode, 200)
    await db.pool.query('DELETE FROM organizations WHERE id = $1', [doomed])
    t.ok(await eventually(async () => (await me(key)).statusCode === 401), 'refused')
  })

  t.test('a key whose id is changed with SQL is announced under its old id too', async (t) => {
    const { key, keyId } = await insertUserWithKey(db, { organizationId: orgId })
    t.equal((await me(key)).json().keyId, keyId)
    const { rows } = await db.pool.query<{ id: string }>('UPDATE api_keys SET id = gen_random_uuid() WHERE id = $1 RETURNING id', [keyId])
    t.ok(await eventually(async () => (await me(key)).json().keyId === rows[0].id), 'the cached entry under the old id was evicted; the key answers with its new id')
  })

  t.test('a killed listener reconnects, flushes, and a change made meanwhile is not served', async (t) => {
    const { key, keyId } = await insertUserWithKey(db, { organizationId: orgId })
    t.equal((await me(key)).statusCode, 200)
    const { rows } = await db.pool.query("SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity WHERE application_name = 'battra-auth-listener' AND datname = current_database()")
    t.equal(rows.length, 1, 'one listener connection')
    await until(async () => app.invalidation.stats().state === 'disconnected')
    t.match(app.invalidation.stats(), { disconnectedSince: String })
    t.match(app.authCache.stats(), { trustCapMs: Number }, 'entries are trusted only briefly meanwhile')
    // Made while nobody listens: its notification is lost.
    await db.pool.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [keyId])
    await until(async () => app.invalidation.stats().state === 'listening')
    t.equal(app.invalidation.stats().reconnects, 1)
    t.equal((await me(key)).statusCode, 401, 'the flush on reconnect dropped the stale entry')
  })

  t.test('after an outage the listener comes back as soon as a lookup succeeds, not on its backoff', async (t) => {
    const { app: proxied, db: proxiedDb } = await build(t, { proxy: true, config: { listener: { reconnectMinMs: 20_000, reconnectMaxMs: 20_000, heartbeatMs: 10_000 } } })
    const fresh = async () => (await insertUserWithKey(proxiedDb, { organizationId: await testOrgId(proxiedDb) })).key
    await proxiedDb.proxy!.cut()
    await until(() => proxied.invalidation.stats().state === 'disconnected')
    await proxiedDb.proxy!.restore()
    const key = await fresh()
    t.equal((await proxied.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })).statusCode, 200, 'a lookup succeeds')
    const ms = await until(() => proxied.invalidation.stats().state === 'listening', 2000, 'listening again')
    t.ok(ms < 2000, `listening again ${Math.round(ms)} ms after the first successful lookup (the backoff would take 10-20 s)`)
  })
}
