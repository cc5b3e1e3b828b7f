// The rules of key management for a calling key without auth:admin, as an attacker would probe them:
// no wider scope, no longer life, own keys only, still a member, one successor per key.
import t from 'tap'
import { build } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertKey, insertOrganization, insertUserWithKey, keyOf, testOrgId } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)
const { app, db } = await build(t)
const orgId = await testOrgId(db)
const admin = keyOf('ops+clerk_test@mock.com')

type Method = 'GET' | 'POST' | 'DELETE'
async function call (key: string, method: Method, url: string, payload?: object) {
  const response = await app.inject({ method, url, headers: { 'x-api-key': key }, ...(payload === undefined ? {} : { payload }) })
  return { statusCode: response.statusCode, body: response.body === '' ? {} : response.json() }
}
const me = (key: string) => call(key, 'GET', '/api/v1/auth/me')
const activeKeysOf = (userId: string) => db.prisma.apiKey.count({ where: { userId, revokedAt: null, OR: [{ expiresAt: null }, { expiresAt: { gt: new Date() } }] } })

t.test('a key without scopes cannot rotate, revoke or see a sibling key that has auth:admin', async (t) => {
  const plain = await insertUserWithKey(db, { organizationId: orgId })
  const powerful = await insertKey(db, { userId: plain.userId, organizationId: orgId, scopes: ['auth:admin'] })
  const rotate = await call(plain.key, 'POST', `/api/v1/api-keys/${powerful.id}/rotate`, {})
  t.equal(rotate.statusCode, 404, 'rotation answers as if the key did not exist')
  t.equal(rotate.body.code, 'API_KEY_NOT_FOUND')
  t.notOk(rotate.body.key, 'no key handed out')
  t.equal((await call(plain.key, 'DELETE', `/api/v1/api-keys/${powerful.id}`)).statusCode, 404)
  t.equal((await me(powerful.key)).statusCode, 200, 'the admin key is untouched')
  const created = await call(plain.key, 'POST', '/api/v1/api-keys', { scopes: ['auth:admin'] })
  t.equal(created.statusCode, 403, 'nor create one')
  t.equal(await activeKeysOf(plain.userId), 2, 'no key was minted')
})

t.test('a key cannot create or rotate into a key that outlives it', async (t) => {
  const soon = new Date(Date.now() + 120_000)
  const shortLived = await insertUserWithKey(db, { organizationId: orgId, key: { expiresAt: soon } })
  const forever = await call(shortLived.key, 'POST', '/api/v1/api-keys', { expiresAt: new Date(Date.now() + 86_400_000).toISOString() })
  t.equal(forever.statusCode, 403, 'an explicit later expiry is refused')
  t.match(forever.body.message, /outlive/)
  const inherited = await call(shortLived.key, 'POST', '/api/v1/api-keys', {})
  t.equal(inherited.statusCode, 201, 'no expiry given: the new key gets the calling key\'s')
  t.equal(inherited.body.expiresAt, soon.toISOString())
  const sooner = await call(shortLived.key, 'POST', '/api/v1/api-keys', { expiresAt: new Date(Date.now() + 60_000).toISOString() })
  t.equal(sooner.statusCode, 201, 'a shorter life is fine')

  const eternal = await insertKey(db, { userId: shortLived.userId, organizationId: orgId })
  const rotated = await call(shortLived.key, 'POST', `/api/v1/api-keys/${eternal.id}/rotate`, {})
  t.equal(rotated.statusCode, 403, 'rotating a key without expiry would hand out a key that outlives the caller')
  t.equal((await me(eternal.key)).statusCode, 200, 'the target keeps working')
  const self = await call(shortLived.key, 'POST', `/api/v1/api-keys/${shortLived.keyId}/rotate`, { gracePeriodSeconds: 60 })
  t.equal(self.statusCode, 201, 'rotating a key with itself is the normal case')
  t.equal(self.body.expiresAt, soon.toISOString(), 'the successor keeps the expiry')
})

t.test('an old key inside its grace period cannot mint long-lived keys or rotate again', async (t) => {
  const { key, keyId } = await insertUserWithKey(db, { organizationId: orgId })
  const rotated = await call(key, 'POST', `/api/v1/api-keys/${keyId}/rotate`, { gracePeriodSeconds: 300 })
  t.equal(rotated.statusCode, 201)
  t.equal((await me(key)).statusCode, 200, 'the old key works during its grace period')
  const again = await call(key, 'POST', `/api/v1/api-keys/${keyId}/rotate`, {})
  t.equal(again.statusCode, 409, 'a key has at most one successor')
  t.equal(again.body.code, 'API_KEY_NOT_ACTIVE')
  const minted = await call(key, 'POST', '/api/v1/api-keys', {})
  t.equal(minted.statusCode, 201)
  t.ok(Date.parse(minted.body.expiresAt) <= Date.now() + 300_000 + 1000, 'a key made by the old key ends with its grace period')
  const listed = (await call(rotated.body.key, 'GET', '/api/v1/api-keys')).body as Array<{ id: string, replacedById: string | null }>
  t.equal(listed.find((k) => k.id === keyId)?.replacedById, rotated.body.id, 'the old key names its successor in the list')
})

t.test('ten concurrent rotations of one key: exactly one succeeds', async (t) => {
  const { key, keyId, userId } = await insertUserWithKey(db, { organizationId: orgId })
  const answers = await Promise.all(Array.from({ length: 10 }, () => call(key, 'POST', `/api/v1/api-keys/${keyId}/rotate`, { gracePeriodSeconds: 600 })))
  const statuses = answers.map((a) => a.statusCode).sort()
  t.same(statuses, [201, 409, 409, 409, 409, 409, 409, 409, 409, 409], 'one 201, nine 409')
  t.ok(answers.filter((a) => a.statusCode === 409).every((a) => a.body.code === 'API_KEY_NOT_ACTIVE'))
  t.equal(await activeKeysOf(userId), 2, 'the old key (in its grace period) and one successor')
  const keys = await Promise.all(answers.filter((a) => a.statusCode === 201).map((a) => me(a.body.key)))
  t.same(keys.map((k) => k.statusCode), [200])
})

t.test('a member removed from an organization cannot create or rotate keys for it any more', async (t) => {
  const org = await insertOrganization(db, 'Left Org')
  const member = await insertUserWithKey(db, { organizationId: org })
  const personal = await insertKey(db, { userId: member.userId, organizationId: null })
  t.equal((await call(personal.key, 'POST', '/api/v1/api-keys', { organizationId: org })).statusCode, 201, 'while a member')
  await db.prisma.organizationMembership.deleteMany({ where: { organizationId: org, userId: member.userId } })
  await db.notified(`member:${org}:${member.userId}`)
  const create = await call(personal.key, 'POST', '/api/v1/api-keys', { organizationId: org })
  t.equal(create.statusCode, 403)
  t.equal(create.body.code, 'ORG_MEMBERSHIP_REQUIRED')
  const rotate = await call(personal.key, 'POST', `/api/v1/api-keys/${member.keyId}/rotate`, {})
  t.equal(rotate.statusCode, 403, 'nor rotate a key of that organization')
  t.equal(rotate.body.code, 'ORG_MEMBERSHIP_REQUIRED')
})

t.test('user ids are compared whatever their case', async (t) => {
  const { key, userId } = await insertUserWithKey(db, { organizationId: orgId })
  const created = await call(key, 'POST', '/api/v1/api-keys', { userId: userId.toUpperCase() })
  t.equal(created.statusCode, 201, 'your own id in upper case is your own id')
  const listed = await call(key, 'GET', `/api/v1/api-keys?userId=${userId.toUpperCase()}`)
  t.equal(listed.statusCode, 200)
  const revoked = await call(key, 'DELETE', `/api/v1/api-keys/${created.body.id.toUpperCase()}`)
  t.equal(revoked.statusCode, 204, 'key ids too')
})

t.test('auth:admin is not bound by these rules, but a key still has one successor', async (t) => {
  const target = await insertUserWithKey(db, { organizationId: orgId, key: { scopes: ['projects:write'] } })
  const first = await call(admin, 'POST', `/api/v1/api-keys/${target.keyId}/rotate`, {})
  t.equal(first.statusCode, 201)
  t.same(first.body.scopes, ['projects:write'], 'rotation copies the scopes')
  t.equal((await call(admin, 'POST', `/api/v1/api-keys/${target.keyId}/rotate`, {})).statusCode, 409)
})
