import t from 'tap'
import { build } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertUserWithKey, keyOf, testOrgId } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)
const { app, db } = await build(t)
const orgId = await testOrgId(db)

t.test('GET /api/v1/auth/me returns the claims', async (t) => {
  const response = await app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': keyOf('sm+clerk_test@mock.com') } })
  t.equal(response.statusCode, 200)
  const claims = response.json()
  t.same(Object.keys(claims).sort(), ['contextType', 'email', 'expiresAt', 'keyId', 'orgRole', 'organizationExternalId', 'organizationId', 'organizationName', 'organizationSlug', 'role', 'scopes', 'userExternalId', 'userId'].sort())
  t.match(claims, { role: 'managing_contributor', orgRole: 'admin', organizationId: orgId })
})

t.test('GET /api/v1/auth/verify sets identity headers from the claims, never from the client', async (t) => {
  const spoofed = {
    'x-api-key': keyOf('po+clerk_test@mock.com'),
    'x-user-id': '00000000-0000-0000-0000-000000000000',
    'x-user-role': 'sponsor',
    'x-organization-id': '11111111-1111-1111-1111-111111111111',
    'x-context-type': 'personal',
    'x-organization-role': 'owner',
    'x-api-key-id': 'forged'
  }
  const response = await app.inject({ url: '/api/v1/auth/verify', headers: spoofed })
  t.equal(response.statusCode, 200)
  t.equal(response.body, '', 'the answer is in the headers')
  const claims = (await app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': keyOf('po+clerk_test@mock.com') } })).json()
  t.match(response.headers, {
    'x-user-id': claims.userId,
    'x-user-role': 'product_owner',
    'x-context-type': 'organization',
    'x-organization-id': orgId,
    'x-organization-external-id': 'org_test_battra',
    'x-organization-name': 'Test Org',
    'x-organization-role': 'admin',
    'x-api-key-id': claims.keyId
  })
  t.not(response.headers['x-user-id'], spoofed['x-user-id'])
})

t.test('forward-auth for a personal key sends the organization headers empty, so a gateway overwrites them', async (t) => {
  const { key, userId } = await insertUserWithKey(db, { organizationId: null })
  const response = await app.inject({ url: '/api/v1/auth/verify', headers: { 'x-api-key': key, 'x-organization-id': orgId } })
  t.equal(response.statusCode, 200)
  t.equal(response.headers['x-user-id'], userId)
  t.equal(response.headers['x-context-type'], 'personal')
  t.equal(response.headers['x-organization-id'], '')
  t.equal(response.headers['x-organization-role'], '')
})

t.test('forward-auth answers errors exactly like any route, without identity headers', async (t) => {
  const response = await app.inject({ url: '/api/v1/auth/verify', headers: { 'x-api-key': 'battra-unknown', 'x-user-id': 'x' } })
  t.equal(response.statusCode, 401)
  t.equal(response.json().code, 'API_KEY_INVALID')
  t.equal(response.headers['www-authenticate'], 'ApiKey realm="battra"')
  t.notOk(response.headers['x-user-id'])
})
