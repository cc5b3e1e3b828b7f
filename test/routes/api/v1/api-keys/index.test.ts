import t from 'tap'
import { isPlausibleKey } from '#src/auth/api-key.ts'
import { build, statementsDuring } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertOrganization, insertUserWithKey, keyOf, testOrgId, withOneCharacterChanged } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)
const { app, db, clock } = await build(t)
const orgId = await testOrgId(db)
const dev = keyOf('dev+clerk_test@mock.com')
const sm = keyOf('sm+clerk_test@mock.com')
const admin = keyOf('ops+clerk_test@mock.com')

type Json = Record<string, any>
async function call (key: string, method: 'GET' | 'POST' | 'DELETE', url: string, payload?: object): Promise<{ statusCode: number, body: any, headers: Json }> {
  const response = await app.inject({ method, url, headers: { 'x-api-key': key }, ...(payload === undefined ? {} : { payload }) })
  return { statusCode: response.statusCode, body: response.body === '' ? {} : response.json(), headers: response.headers }
}
const me = (key: string) => call(key, 'GET', '/api/v1/auth/me')

t.test('create → use → rotate (both work during the grace period, the old one expires) → revoke', async (t) => {
  const created = await call(dev, 'POST', '/api/v1/api-keys', { description: 'CI runner', expiresAt: new Date(Date.now() + 86_400_000).toISOString() })
  t.equal(created.statusCode, 201)
  t.equal(created.headers['cache-control'], 'no-store')
  t.match(created.body, { id: String, key: /^battra_[0-9A-Za-z]{38}$/, hint: /^battra_.{4}….{4}$/, description: 'CI runner', organizationId: orgId, scopes: [] })
  t.ok(isPlausibleKey(created.body.key))
  const stored = await db.prisma.apiKey.findUniqueOrThrow({ where: { id: created.body.id } })
  t.not(stored.tokenHash, created.body.key, 'stored hashed')
  t.notOk(JSON.stringify(stored).includes(created.body.key), 'the plaintext is nowhere in the row')

  const claims = (await me(created.body.key)).body
  t.match(claims, { keyId: created.body.id, email: 'dev+clerk_test@mock.com', organizationId: orgId, contextType: 'organization' })

  const rotated = await call(created.body.key, 'POST', `/api/v1/api-keys/${created.body.id}/rotate`, { gracePeriodSeconds: 1 })
  t.equal(rotated.statusCode, 201)
  t.not(rotated.body.key, created.body.key)
  t.match(rotated.body, { description: 'CI runner', organizationId: orgId, scopes: [], expiresAt: created.body.expiresAt })
  t.equal((await me(created.body.key)).statusCode, 200, 'old key still works during the grace period')
  t.equal((await me(rotated.body.key)).statusCode, 200, 'new key works')
  clock.advance(1100)
  const old = await me(created.body.key)
  t.equal(old.statusCode, 401)
  t.equal(old.body.code, 'API_KEY_EXPIRED', 'old key expired after the grace period')
  t.equal((await me(rotated.body.key)).statusCode, 200)

  const revoked = await call(rotated.body.key, 'DELETE', `/api/v1/api-keys/${rotated.body.id}`)
  t.equal(revoked.statusCode, 204)
  const after = await me(rotated.body.key)
  t.equal(after.statusCode, 401, 'revocation takes effect at once, cache or not')
  t.equal(after.body.code, 'API_KEY_INVALID')
  const again = await call(admin, 'DELETE', `/api/v1/api-keys/${rotated.body.id}`)
  t.equal(again.statusCode, 409, 'revoking a revoked key: 409')
  t.equal(again.body.code, 'API_KEY_NOT_ACTIVE')
  const notActive = await call(admin, 'POST', `/api/v1/api-keys/${rotated.body.id}/rotate`, {})
  t.equal(notActive.statusCode, 409)
  t.equal(notActive.body.code, 'API_KEY_NOT_ACTIVE')
})

t.test('rotation with a grace period of 0 stops the old key now', async (t) => {
  const created = (await call(dev, 'POST', '/api/v1/api-keys', {})).body
  t.equal((await me(created.key)).statusCode, 200)
  const rotated = await call(dev, 'POST', `/api/v1/api-keys/${created.id}/rotate`)
  t.equal(rotated.statusCode, 201, 'no body means a grace period of 0')
  t.equal((await me(created.key)).body.code, 'API_KEY_EXPIRED')
  t.equal((await me(rotated.body.key)).statusCode, 200)
})

t.test('a key expires exactly at expires_at, even while cached, without a lookup', async (t) => {
  const expiresAt = new Date(Date.now() + 1500)
  const created = (await call(dev, 'POST', '/api/v1/api-keys', { expiresAt: expiresAt.toISOString() })).body
  t.equal((await me(created.key)).statusCode, 200)
  t.teardown(() => clock.resume())
  clock.set(expiresAt.getTime() - 1)
  t.equal((await me(created.key)).statusCode, 200, 'still valid a millisecond before')
  clock.set(expiresAt.getTime())
  const statements = await statementsDuring(app, async () => {
    const response = await me(created.key)
    t.equal(response.body.code, 'API_KEY_EXPIRED', 'refused from the very millisecond')
  })
  t.equal(statements, 0, 'answered from the cache')
})

t.test('a key of the new form with a wrong checksum is refused with zero database statements', async (t) => {
  const created = (await call(dev, 'POST', '/api/v1/api-keys', {})).body
  const tampered = withOneCharacterChanged(created.key)
  const statements = await statementsDuring(app, async () => {
    t.equal((await me(tampered)).body.code, 'API_KEY_INVALID')
  })
  t.equal(statements, 0)
})

t.test('scopes: never wider than the calling key, unless auth:admin', async (t) => {
  const escalation = await call(dev, 'POST', '/api/v1/api-keys', { scopes: ['auth:admin'] })
  t.equal(escalation.statusCode, 403)
  t.equal(escalation.body.code, 'FORBIDDEN')
  t.match(escalation.body.message, /auth:admin/)

  const granted = await call(admin, 'POST', '/api/v1/api-keys', { scopes: ['projects:read', 'projects:write'] })
  t.equal(granted.statusCode, 201)
  const narrower = await call(granted.body.key, 'POST', '/api/v1/api-keys', { scopes: ['projects:read'] })
  t.equal(narrower.statusCode, 201, 'a subset of its own scopes')
  t.same(narrower.body.scopes, ['projects:read'])
  t.equal((await call(narrower.body.key, 'POST', '/api/v1/api-keys', { scopes: ['projects:write'] })).statusCode, 403)
  const invalid = await call(admin, 'POST', '/api/v1/api-keys', { scopes: ['Not A Scope'] })
  t.equal(invalid.statusCode, 400)
})

t.test('one user cannot list, rotate or revoke another user\'s keys', async (t) => {
  const smKeys = (await call(sm, 'GET', '/api/v1/api-keys')).body
  t.equal(smKeys.length, 1)
  const smKeyId = smKeys[0].id
  const smUserId = smKeys[0].userId
  for (const [method, url] of [['DELETE', `/api/v1/api-keys/${smKeyId}`], ['POST', `/api/v1/api-keys/${smKeyId}/rotate`]] as const) {
    const response = await call(dev, method, url, method === 'POST' ? {} : undefined)
    t.equal(response.statusCode, 404, `${method} ${url}: as if it did not exist`)
    t.equal(response.body.code, 'API_KEY_NOT_FOUND')
  }
  t.equal((await call(dev, 'GET', `/api/v1/api-keys?userId=${smUserId}`)).statusCode, 403)
  const devList = (await call(dev, 'GET', '/api/v1/api-keys')).body
  t.ok(devList.every((k: Json) => k.userId !== smUserId), 'only own keys listed')
  t.equal((await me(sm)).statusCode, 200, "sm's key untouched")
  t.equal((await call(dev, 'POST', '/api/v1/api-keys', { userId: smUserId })).statusCode, 403, 'cannot create for another user')
})

t.test('listing: own keys with their times, never a hash or a key', async (t) => {
  const list = await call(dev, 'GET', '/api/v1/api-keys?includeRevoked=true')
  t.equal(list.statusCode, 200)
  t.ok(list.body.length >= 3)
  for (const key of list.body) {
    t.same(Object.keys(key).sort(), ['allowedCidrs', 'createdAt', 'description', 'expiresAt', 'hint', 'id', 'lastUsedAt', 'leakReport', 'organizationId', 'rateLimit', 'replacedById', 'revokedAt', 'revokedReason', 'scopes', 'userId'])
    t.notMatch(JSON.stringify(key), /[0-9a-f]{64}/, 'no hash')
    t.notMatch(JSON.stringify(key), /battra_[0-9A-Za-z]{38}/, 'no key')
  }
  const active = (await call(dev, 'GET', '/api/v1/api-keys')).body
  t.ok(active.every((k: Json) => k.revokedAt === null), 'revoked keys only when asked')
  t.ok(active.length < list.body.length)
})

t.test('admin: create for another user, list by user and organization', async (t) => {
  const otherOrg = await insertOrganization(db, 'Admin Target Org')
  const target = await insertUserWithKey(db, { organizationId: otherOrg })
  const created = await call(admin, 'POST', '/api/v1/api-keys', { userId: target.userId, organizationId: otherOrg, description: 'made by ops' })
  t.equal(created.statusCode, 201)
  t.match((await me(created.body.key)).body, { userId: target.userId, organizationId: otherOrg })
  const byUser = (await call(admin, 'GET', `/api/v1/api-keys?userId=${target.userId}`)).body
  t.equal(byUser.length, 2)
  const byOrg = (await call(admin, 'GET', `/api/v1/api-keys?organizationId=${otherOrg}`)).body
  t.same(byOrg.map((k: Json) => k.id).sort(), [target.keyId, created.body.id].sort())
  t.equal((await call(admin, 'DELETE', `/api/v1/api-keys/${target.keyId}`)).statusCode, 204)
  t.equal((await me(target.key)).statusCode, 401)
})

t.test('bad requests are refused clearly', async (t) => {
  const otherOrg = await insertOrganization(db, 'Not Mine')
  const notMember = await call(dev, 'POST', '/api/v1/api-keys', { organizationId: otherOrg })
  t.equal(notMember.statusCode, 403)
  t.equal(notMember.body.code, 'ORG_MEMBERSHIP_REQUIRED')
  const past = await call(dev, 'POST', '/api/v1/api-keys', { expiresAt: '2020-01-01T00:00:00Z' })
  t.equal(past.statusCode, 400)
  t.equal(past.body.code, 'INVALID_EXPIRY')
  const personal = await call(dev, 'POST', '/api/v1/api-keys', { organizationId: null })
  t.equal(personal.statusCode, 201)
  t.equal((await me(personal.body.key)).body.contextType, 'personal')
  t.equal((await call(admin, 'POST', '/api/v1/api-keys', { userId: '00000000-0000-4000-8000-000000000000' })).body.code, 'USER_NOT_FOUND')
  for (const [payload, what] of [[{ unknown: 1 }, 'unknown property'], [{ expiresAt: 'tomorrow' }, 'bad date'], [{ description: 'x'.repeat(201) }, 'long description']] as const) {
    const response = await call(dev, 'POST', '/api/v1/api-keys', payload)
    t.equal(response.statusCode, 400, what)
  }
  t.equal((await call(dev, 'DELETE', '/api/v1/api-keys/not-a-uuid')).statusCode, 400)
  t.equal((await call(dev, 'POST', `/api/v1/api-keys/${(await call(dev, 'GET', '/api/v1/api-keys')).body[0].id}/rotate`, { gracePeriodSeconds: -1 })).statusCode, 400)
})
