// Key policies in key management: create and PATCH with allowedCidrs and rateLimit, the narrow-only rules
// for keys without auth:admin, inheritance from a restricted calling key, and the organization limit.
import t from 'tap'
import { build } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertKey, insertOrganization, insertUserWithKey, keyOf, testOrgId } from '#test/helpers/fixtures.ts'
import { createKey, setOrganizationRateLimit, updateKey } from '#src/keys/management.ts'

t.comment(`database: ${databaseKind}`)
const { app, db } = await build(t)
const orgId = await testOrgId(db)
const dev = keyOf('dev+clerk_test@mock.com')
const sm = keyOf('sm+clerk_test@mock.com')
const admin = keyOf('ops+clerk_test@mock.com')
const devUser = await db.prisma.user.findFirstOrThrow({ where: { email: 'dev+clerk_test@mock.com' } })

type Json = Record<string, any>
async function call (key: string, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: object, remoteAddress?: string): Promise<{ statusCode: number, body: any, headers: Json }> {
  const response = await app.inject({ method, url, headers: { 'x-api-key': key }, remoteAddress, ...(payload === undefined ? {} : { payload }) })
  return { statusCode: response.statusCode, body: response.body === '' ? {} : response.json(), headers: response.headers }
}
const me = (key: string, remoteAddress?: string) => call(key, 'GET', '/api/v1/auth/me', undefined, remoteAddress)
const patch = (key: string, id: string, payload: object, remoteAddress?: string) => call(key, 'PATCH', `/api/v1/api-keys/${id}`, payload, remoteAddress)
const inAnHour = () => new Date(Date.now() + 3_600_000).toISOString()

t.test('create with networks and a rate limit: normalised, shown in the answer and the list, enforced', async (t) => {
  const created = await call(dev, 'POST', '/api/v1/api-keys', { allowedCidrs: ['10.0.0.0/8', '2001:DB8:0::/32', '10.0.0.0/8', '192.168.1.1'], rateLimit: { requests: 2, windowSeconds: 60 } })
  t.equal(created.statusCode, 201)
  t.same(created.body.allowedCidrs, ['10.0.0.0/8', '2001:db8::/32', '192.168.1.1/32'], 'normalised and deduplicated')
  t.same(created.body.rateLimit, { requests: 2, windowSeconds: 60 })
  const listed = (await call(dev, 'GET', '/api/v1/api-keys')).body.find((key: Json) => key.id === created.body.id)
  t.same([listed.allowedCidrs, listed.rateLimit], [created.body.allowedCidrs, created.body.rateLimit])
  const row = await db.prisma.apiKey.findUniqueOrThrow({ where: { id: created.body.id } })
  t.same([row.allowedCidrs, row.rateLimitRequests, row.rateLimitWindowSeconds], [['10.0.0.0/8', '2001:db8::/32', '192.168.1.1/32'], 2, 60], 'as Prisma Studio shows them')
  t.equal((await me(created.body.key, '127.0.0.1')).body.code, 'IP_NOT_ALLOWED')
  const admitted = await me(created.body.key, '10.9.8.7')
  t.equal(admitted.statusCode, 200)
  t.equal(admitted.headers['ratelimit-limit'], '2')

  const plain = await call(dev, 'POST', '/api/v1/api-keys', {})
  t.same([plain.body.allowedCidrs, plain.body.rateLimit], [[], null], 'no policy unless asked')
})

t.test('bad networks and limits: 400 naming the entry', async (t) => {
  const hostBits = await call(admin, 'POST', '/api/v1/api-keys', { allowedCidrs: ['10.0.0.0/8', '10.0.0.1/8'] })
  t.equal(hostBits.statusCode, 400)
  t.match(hostBits.body, { code: 'INVALID_CIDR', message: /^allowedCidrs\[1\] "10\.0\.0\.1\/8": has host bits set beyond \/8/ })
  for (const [entry, reason] of [['nonsense', /not a valid IPv4 address/], ['10.0.0.0/33', /at most 32/], ['fe80::1%eth0', /zone ids/], ['010.0.0.1', /not a valid IPv4/], ['', /is empty/]] as const) {
    const response = await call(admin, 'POST', '/api/v1/api-keys', { allowedCidrs: [entry] })
    t.equal(response.statusCode, 400, JSON.stringify(entry))
    t.equal(response.body.code, 'INVALID_CIDR')
    t.match(response.body.message, reason)
    t.match(response.body.message, `allowedCidrs[0] ${JSON.stringify(entry)}`)
  }
  const tooMany = await call(admin, 'POST', '/api/v1/api-keys', { allowedCidrs: Array.from({ length: 101 }, (_, i) => `10.${i}.0.0/16`) })
  t.match(tooMany.body, { statusCode: 400, code: 'INVALID_CIDR', message: 'allowedCidrs accepts at most 100 entries, got 101' })
  t.equal((await call(admin, 'POST', '/api/v1/api-keys', { allowedCidrs: Array.from({ length: 100 }, (_, i) => `10.${i}.0.0/16`) })).statusCode, 201, '100 is fine')
  const { keyId } = await insertUserWithKey(db, { organizationId: orgId })
  const onPatch = await patch(admin, keyId, { allowedCidrs: ['::a.b.c.d'] })
  t.equal(onPatch.body.code, 'INVALID_CIDR', 'the same on PATCH')
  for (const rateLimit of [{ requests: 0, windowSeconds: 60 }, { requests: 10 }, { requests: 10, windowSeconds: 86_401 }, { requests: 1.5, windowSeconds: 60 }, { requests: 10, windowSeconds: 60, burst: 3 }, '100/60s']) {
    const response = await call(admin, 'POST', '/api/v1/api-keys', { rateLimit })
    t.equal(response.statusCode, 400, JSON.stringify(rateLimit))
    t.match(response.body.message, /rateLimit/)
  }
})

t.test('PATCH by the owner changes description, networks and limit, effective at once even while cached', async (t) => {
  const created = (await call(dev, 'POST', '/api/v1/api-keys', { description: 'laptop' })).body
  t.equal((await me(created.key)).statusCode, 200, 'cached now')
  const updated = await patch(dev, created.id, { description: 'CI runner', allowedCidrs: ['192.0.2.0/24'], rateLimit: { requests: 5, windowSeconds: 10 } })
  t.equal(updated.statusCode, 200)
  t.match(updated.body, { id: created.id, description: 'CI runner', allowedCidrs: ['192.0.2.0/24'], rateLimit: { requests: 5, windowSeconds: 10 }, scopes: [], revokedAt: null })
  t.notOk('key' in updated.body, 'never the key')
  t.equal((await me(created.key)).body.code, 'IP_NOT_ALLOWED', 'the cached entry was replaced')
  const fromInside = await me(created.key, '192.0.2.10')
  t.equal(fromInside.headers['ratelimit-limit'], '5')

  const cleared = await patch(dev, created.id, { allowedCidrs: [], rateLimit: null, description: null })
  t.match(cleared.body, { allowedCidrs: [], rateLimit: null, description: null })
  const free = await me(created.key)
  t.equal(free.statusCode, 200)
  t.notOk(free.headers['ratelimit-limit'], 'no limit, no headers')

  const nothing = await patch(dev, created.id, {})
  t.equal(nothing.statusCode, 200, 'an empty PATCH changes nothing')
  t.same(nothing.body, cleared.body)
  const unknown = await patch(dev, created.id, { userId: devUser.id })
  t.equal(unknown.statusCode, 400, 'only the documented properties')
})

t.test('without auth:admin: scopes only narrow, expiresAt only moves earlier and never past the calling key', async (t) => {
  const caller = (await call(admin, 'POST', '/api/v1/api-keys', { userId: devUser.id, organizationId: orgId, scopes: ['projects:read', 'projects:write'], expiresAt: new Date(Date.now() + 10 * 86_400_000).toISOString() })).body
  const target = (await call(admin, 'POST', '/api/v1/api-keys', { userId: devUser.id, organizationId: orgId, scopes: ['projects:read', 'projects:write'], expiresAt: new Date(Date.now() + 5 * 86_400_000).toISOString() })).body

  const narrowed = await patch(caller.key, target.id, { scopes: ['projects:read'] })
  t.equal(narrowed.statusCode, 200)
  t.same(narrowed.body.scopes, ['projects:read'])
  const widened = await patch(caller.key, target.id, { scopes: ['projects:read', 'projects:write'] })
  t.equal(widened.statusCode, 403, 'not back, though the calling key holds it')
  t.match(widened.body, { code: 'FORBIDDEN', message: /projects:write is not among the key's scopes/ })

  const earlier = new Date(Date.now() + 2 * 86_400_000).toISOString()
  const shortened = await patch(caller.key, target.id, { expiresAt: earlier })
  t.equal(shortened.statusCode, 200)
  t.equal(shortened.body.expiresAt, earlier)
  const later = await patch(caller.key, target.id, { expiresAt: new Date(Date.now() + 3 * 86_400_000).toISOString() })
  t.match(later.body, { statusCode: 403, code: 'FORBIDDEN', message: /can only be brought forward/ })
  t.equal((await patch(caller.key, target.id, { expiresAt: null })).statusCode, 403, 'never to "never"')
  const past = await patch(caller.key, target.id, { expiresAt: '2020-01-01T00:00:00Z' })
  t.match(past.body, { statusCode: 400, code: 'INVALID_EXPIRY' })
  t.equal((await patch(caller.key, target.id, { expiresAt: earlier })).statusCode, 200, 'the same expiry again is no change')

  // A key without expiry, made by an operator: the calling key's own expiry bounds the one it sets.
  const forever = (await call(admin, 'POST', '/api/v1/api-keys', { userId: devUser.id, organizationId: orgId, scopes: ['projects:read'] })).body
  const beyondCaller = await patch(caller.key, forever.id, { expiresAt: new Date(Date.now() + 20 * 86_400_000).toISOString() })
  t.match(beyondCaller.body, { statusCode: 403, message: /cannot outlive the calling key/ })
  t.equal((await patch(caller.key, forever.id, { expiresAt: inAnHour() })).statusCode, 200)

  // auth:admin: any direction.
  t.same((await patch(admin, target.id, { scopes: ['projects:read', 'projects:write', 'auth:admin'] })).body.scopes, ['projects:read', 'projects:write', 'auth:admin'])
  t.equal((await patch(admin, target.id, { expiresAt: null })).body.expiresAt, null)
})

t.test("another user's key answers 404; a revoked or expired key 409; a bad id 400", async (t) => {
  const smKey = (await call(sm, 'GET', '/api/v1/api-keys')).body[0]
  const response = await patch(dev, smKey.id, { description: 'mine now' })
  t.equal(response.statusCode, 404)
  t.equal(response.body.code, 'API_KEY_NOT_FOUND')
  t.equal((await db.prisma.apiKey.findUniqueOrThrow({ where: { id: smKey.id } })).description, smKey.description, 'unchanged')
  t.equal((await patch(dev, '00000000-0000-4000-8000-000000000000', {})).statusCode, 404)
  // A key of the same user with a scope the calling key lacks is not its to manage either.
  const scoped = await insertKey(db, { userId: devUser.id, organizationId: orgId, scopes: ['projects:write'] })
  t.equal((await patch(dev, scoped.id, { scopes: [] })).statusCode, 404)
  const revoked = await insertKey(db, { userId: devUser.id, organizationId: orgId, revokedAt: new Date() })
  t.match((await patch(dev, revoked.id, { description: 'x' })).body, { statusCode: 409, code: 'API_KEY_NOT_ACTIVE' })
  const expired = await insertKey(db, { userId: devUser.id, organizationId: orgId, expiresAt: new Date(Date.now() - 1000) })
  t.match((await patch(admin, expired.id, { expiresAt: inAnHour() })).body, { statusCode: 409, code: 'API_KEY_NOT_ACTIVE' }, 'an expired key is not revived')
  t.equal((await patch(dev, 'not-a-uuid', {})).statusCode, 400)
})

t.test('a restricted calling key cannot make or turn any key into a less restricted one', async (t) => {
  const office = '10.20.0.0/16'
  const restricted = (await call(dev, 'POST', '/api/v1/api-keys', { allowedCidrs: [office, '2001:db8::/32'], rateLimit: { requests: 100, windowSeconds: 60 } })).body
  const from = '10.20.1.2'
  const create = (payload: object) => call(restricted.key, 'POST', '/api/v1/api-keys', payload, from)

  const inherited = await create({ description: 'made by the restricted key' })
  t.equal(inherited.statusCode, 201)
  t.same([inherited.body.allowedCidrs, inherited.body.rateLimit], [[office, '2001:db8::/32'], { requests: 100, windowSeconds: 60 }], 'inherits networks and limit when none are given')
  t.equal((await create({ allowedCidrs: ['10.20.5.0/24'], rateLimit: { requests: 10, windowSeconds: 60 } })).statusCode, 201, 'narrower networks, a limit no looser')

  const refusals: Array<[object, RegExp, string?]> = [
    [{ allowedCidrs: [] }, /allowedCidrs: any address is wider than the calling key's networks \(10\.20\.0\.0\/16, 2001:db8::\/32\)/],
    [{ allowedCidrs: ['10.20.0.0/16', '192.168.0.0/16'] }, /allowedCidrs: 192\.168\.0\.0\/16 is outside the calling key's networks/],
    [{ allowedCidrs: ['10.0.0.0/8'] }, /10\.0\.0\.0\/8 is outside/],
    [{ rateLimit: null }, /rateLimit: no rate limit is looser than the calling key's \(100\/60s\)/],
    [{ rateLimit: { requests: 1000, windowSeconds: 60 } }, /the rate limit 1000\/60s is looser than the calling key's \(100\/60s\)/],
    [{ rateLimit: { requests: 100, windowSeconds: 30 } }, /100\/30s is looser/],
    [{ rateLimit: { requests: 10, windowSeconds: 1 } }, /10\/1s is looser/, 'never more than 100 at once, but 600 a minute'],
    // No looser (60 a minute at most, 1 at once), but the new key shares the calling key's counter, which is
    // per window length: another window would be a fresh counter.
    [{ rateLimit: { requests: 1, windowSeconds: 1 } }, /keeps its window of 60 s \(1 s asked\)/, 'another window']
  ]
  for (const [payload, message, why] of refusals) {
    const response = await create(payload)
    t.equal(response.statusCode, 403, why ?? JSON.stringify(payload))
    t.equal(response.body.code, 'FORBIDDEN')
    t.match(response.body.message, message)
  }

  // PATCH: itself, and a sibling key of the same user made without a policy.
  t.equal((await patch(restricted.key, restricted.id, { allowedCidrs: [] }, from)).statusCode, 403, 'a key cannot lift its own restriction')
  t.equal((await patch(restricted.key, restricted.id, { rateLimit: null }, from)).statusCode, 403)
  t.equal((await patch(restricted.key, restricted.id, { rateLimit: { requests: 50, windowSeconds: 60 } }, from)).statusCode, 200, 'but can tighten it')
  const sibling = (await call(dev, 'POST', '/api/v1/api-keys', {})).body
  t.equal((await patch(restricted.key, sibling.id, { description: 'renamed' }, from)).statusCode, 200, 'a change that sets no policy is not a loosening')
  t.equal((await patch(restricted.key, sibling.id, { allowedCidrs: ['0.0.0.0/0'] }, from)).statusCode, 403)
  t.equal((await patch(restricted.key, sibling.id, { allowedCidrs: ['10.20.30.0/24'], rateLimit: { requests: 5, windowSeconds: 60 } }, from)).statusCode, 200)
  // Rotating obtains a new key with the old one's policies: only of keys no less restricted than the caller.
  const unrestricted = (await call(dev, 'POST', '/api/v1/api-keys', {})).body
  const escape = await call(restricted.key, 'POST', `/api/v1/api-keys/${unrestricted.id}/rotate`, {}, from)
  t.match(escape.body, { statusCode: 403, code: 'FORBIDDEN', message: /any address is wider than the calling key's networks/ }, 'no unrestricted key by rotation')
  t.equal((await me(unrestricted.key)).statusCode, 200, 'and the refused rotation left the key as it was')
  const itself = await call(restricted.key, 'POST', `/api/v1/api-keys/${restricted.id}/rotate`, { gracePeriodSeconds: 60 }, from)
  t.equal(itself.statusCode, 201, 'rotating itself is the normal case')
  t.same([itself.body.allowedCidrs, itself.body.rateLimit], [[office, '2001:db8::/32'], { requests: 50, windowSeconds: 60 }])
  // An unrestricted key of the same user lifts what it likes.
  t.match((await patch(dev, restricted.id, { allowedCidrs: [], rateLimit: null })).body, { allowedCidrs: [], rateLimit: null })
  // auth:admin is not bound by its own policy.
  const restrictedAdmin = (await call(admin, 'POST', '/api/v1/api-keys', { scopes: ['auth:admin'], allowedCidrs: ['127.0.0.0/8'] })).body
  const anywhere = await call(restrictedAdmin.key, 'POST', '/api/v1/api-keys', {})
  t.same(anywhere.body.allowedCidrs, [], 'an admin key inherits nothing')
})

t.test('rotation copies the policies', async (t) => {
  const created = (await call(dev, 'POST', '/api/v1/api-keys', { allowedCidrs: ['127.0.0.1'], rateLimit: { requests: 7, windowSeconds: 7 } })).body
  const rotated = await call(created.key, 'POST', `/api/v1/api-keys/${created.id}/rotate`, {})
  t.equal(rotated.statusCode, 201)
  t.same([rotated.body.allowedCidrs, rotated.body.rateLimit], [['127.0.0.1/32'], { requests: 7, windowSeconds: 7 }])
  t.equal((await me(rotated.body.key, '10.0.0.1')).body.code, 'IP_NOT_ALLOWED')
})

t.test('organization limit: auth:admin sets and removes it; every key of the organization shares it at once', async (t) => {
  const org = await insertOrganization(db, 'Tenant')
  const member = await insertUserWithKey(db, { organizationId: org })
  t.equal((await me(member.key)).statusCode, 200, 'cached without a limit')
  const url = `/api/v1/admin/organizations/${org}`
  const set = await call(admin, 'PATCH', url, { rateLimit: { requests: 1, windowSeconds: 3600 } })
  t.equal(set.statusCode, 200)
  t.match(set.body, { id: org, name: 'Tenant', rateLimit: { requests: 1, windowSeconds: 3600 } })
  t.equal((await me(member.key)).headers['ratelimit-limit'], '1', 'the cached entry was replaced')
  t.equal((await me(member.key)).body.code, 'RATE_LIMITED')
  const removed = await call(admin, 'PATCH', url, { rateLimit: null })
  t.equal(removed.body.rateLimit, null)
  t.equal((await me(member.key)).statusCode, 200)
  t.match((await call(dev, 'PATCH', url, { rateLimit: null })).body, { statusCode: 403, code: 'FORBIDDEN' })
  t.match((await call(admin, 'PATCH', '/api/v1/admin/organizations/00000000-0000-4000-8000-000000000000', { rateLimit: null })).body, { statusCode: 404, code: 'ORGANIZATION_NOT_FOUND' })
  t.equal((await call(admin, 'PATCH', url, { rateLimit: { requests: 0, windowSeconds: 1 } })).statusCode, 400)
  t.equal((await call(admin, 'PATCH', url, {})).statusCode, 400, 'rateLimit is required: null removes it')
})

t.test('the rules hold for callers other than the HTTP routes (the CLI): 400 INVALID_RATE_LIMIT, INVALID_CIDR', async (t) => {
  const cli = { type: 'cli' as const }
  const { keyId } = await insertUserWithKey(db, { organizationId: orgId })
  await t.rejects(createKey(db.prisma, cli, { userId: devUser.id, rateLimit: { requests: 0, windowSeconds: 60 } }), { code: 'INVALID_RATE_LIMIT', statusCode: 400, message: /requests: 1 to 1000000000, windowSeconds: 1 to 86400/ })
  await t.rejects(updateKey(db.prisma, cli, keyId, { rateLimit: { requests: 10, windowSeconds: 1.5 } }), { code: 'INVALID_RATE_LIMIT' })
  await t.rejects(setOrganizationRateLimit(db.prisma, cli, orgId, { requests: 10, windowSeconds: 0 }), { code: 'INVALID_RATE_LIMIT' })
  await t.rejects(updateKey(db.prisma, cli, keyId, { allowedCidrs: ['10.0.0.0/8', 42] }), { code: 'INVALID_CIDR', statusCode: 400, message: 'allowedCidrs[1] 42: must be a string, got number' })
  t.match((await db.prisma.apiKey.findUniqueOrThrow({ where: { id: keyId } })), { allowedCidrs: [], rateLimitRequests: null }, 'nothing written')
})
