import t, { type Test } from 'tap'
import { KEY_PREFIX, generateApiKey } from '#src/auth/api-key.ts'
import { PERSONAS } from '#src/db/seed.ts'
import { build, statementsDuring } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertKey, insertOrganization, insertUserWithKey, keyOf, testOrgId, withOneCharacterChanged } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)
const { app, db, clock } = await build(t)
const orgId = await testOrgId(db)

const me = (headers: Record<string, string | string[]>) => app.inject({ method: 'GET', url: '/api/v1/auth/me', headers })

function expectError (t: Test, response: Awaited<ReturnType<typeof me>>, statusCode: number, code: string) {
  t.equal(response.statusCode, statusCode, `status ${statusCode}`)
  const body = response.json()
  t.equal(body.code, code)
  t.equal(body.statusCode, statusCode)
  t.type(body.message, 'string')
  t.ok(body.message.length > 0, 'message at top level')
  if (statusCode === 401) t.equal(response.headers['www-authenticate'], 'ApiKey realm="battra"')
  else t.notOk(response.headers['www-authenticate'], 'no challenge on non-401')
}

// The personas of SPEC.md ("Running"), written out here rather than read from the seed under test.
const SPEC_PERSONAS = [
  { key: 'battra-dev-key-1', email: 'dev+clerk_test@mock.com', role: 'contributor', orgRole: 'member', scopes: [] },
  { key: 'battra-sm-key-1', email: 'sm+clerk_test@mock.com', role: 'managing_contributor', orgRole: 'admin', scopes: [] },
  { key: 'battra-po-key-1', email: 'po+clerk_test@mock.com', role: 'product_owner', orgRole: 'admin', scopes: [] },
  { key: 'battra-qa-key-1', email: 'qa+clerk_test@mock.com', role: 'contributor', orgRole: 'member', scopes: [] },
  { key: 'battra-sponsor-key-1', email: 'sponsor+clerk_test@mock.com', role: 'sponsor', orgRole: 'member', scopes: [] },
  { key: 'battra-admin-key-1', email: 'ops+clerk_test@mock.com', role: 'contributor', orgRole: 'owner', scopes: ['auth:admin'] },
  { key: 'battra-devops-key-1', email: 'devops-agent-1@battra.local', role: 'contributor', orgRole: 'member', scopes: [] },
  { key: 'battra-documenter-key-1', email: 'documenter-agent-1@battra.local', role: 'contributor', orgRole: 'member', scopes: [] }
]

t.test("every persona of the spec (the reference document's five, the operator, Battra's devops and documenter agents) gets its claims", async (t) => {
  const externalIds = new Set<string>()
  for (const persona of SPEC_PERSONAS) {
    const response = await me({ 'x-api-key': persona.key })
    t.equal(response.statusCode, 200, persona.email)
    const claims = response.json()
    t.match(claims, {
      email: persona.email,
      role: persona.role,
      userExternalId: /^user_[a-z0-9_]+$/,
      contextType: 'organization',
      organizationId: orgId,
      organizationExternalId: 'org_test_battra',
      organizationSlug: 'test-org',
      organizationName: 'Test Org',
      orgRole: persona.orgRole,
      scopes: persona.scopes,
      expiresAt: null
    }, persona.email)
    externalIds.add(claims.userExternalId)
  }
  t.equal(externalIds.size, SPEC_PERSONAS.length, 'each persona has its own external id')
  t.equal(await db.prisma.user.count(), SPEC_PERSONAS.length, 'and no other user was seeded')
})

t.test('the key is read from every accepted header form', async (t) => {
  const key = keyOf('dev+clerk_test@mock.com')
  const forms: Array<Record<string, string>> = [
    { 'x-api-key': key },
    { 'X-API-Key': `ApiKey ${key}` },
    { 'x-api-key': `apikey ${key}` },
    { 'x-api-key': `APIKEY \t ${key}  ` },
    { authorization: `ApiKey ${key}` },
    { authorization: `apiKey ${key}` },
    { 'x-api-key': key, authorization: `ApiKey ${key}` }
  ]
  for (const headers of forms) {
    const response = await me(headers)
    t.equal(response.statusCode, 200, JSON.stringify(Object.keys(headers)) + ' ' + JSON.stringify(Object.values(headers)).replace(key, '<key>'))
    t.equal(response.json().email, 'dev+clerk_test@mock.com')
  }
})

t.test('error table of the spec', async (t) => {
  const devUser = await db.prisma.user.findFirstOrThrow({ where: { email: 'dev+clerk_test@mock.com' } })

  t.test('no key: 401 API_KEY_MISSING', async (t) => {
    expectError(t, await me({}), 401, 'API_KEY_MISSING')
    expectError(t, await me({ 'x-api-key': '   ' }), 401, 'API_KEY_MISSING')
    expectError(t, await me({ 'x-api-key': 'ApiKey' }), 401, 'API_KEY_MISSING')
    expectError(t, await me({ authorization: 'ApiKey ' }), 401, 'API_KEY_MISSING')
    // Other schemes belong to other authenticators.
    expectError(t, await me({ authorization: `Bearer ${keyOf('dev+clerk_test@mock.com')}` }), 401, 'API_KEY_MISSING')
  })

  t.test('unknown key: 401 API_KEY_INVALID, "Invalid API key"', async (t) => {
    const response = await me({ 'x-api-key': 'battra-nobody-key-1' })
    expectError(t, response, 401, 'API_KEY_INVALID')
    t.equal(response.json().message, 'Invalid API key')
    expectError(t, await me({ 'x-api-key': generateApiKey() }), 401, 'API_KEY_INVALID')
  })

  t.test('revoked key: 401 API_KEY_INVALID', async (t) => {
    const { key } = await insertKey(db, { userId: devUser.id, organizationId: orgId, revokedAt: new Date() })
    expectError(t, await me({ 'x-api-key': key }), 401, 'API_KEY_INVALID')
  })

  t.test('malformed keys: 401 API_KEY_INVALID without any lookup', async (t) => {
    const valid = generateApiKey()
    const badChecksum = withOneCharacterChanged(valid)
    for (const key of [badChecksum, 'x'.repeat(257), 'battra-dev-key-1\u00e9', 'two words', 'tab\there']) {
      const statements = await statementsDuring(app, async () => {
        expectError(t, await me({ 'x-api-key': key }), 401, 'API_KEY_INVALID')
      })
      t.equal(statements, 0, 'no database statement')
    }
    t.ok(badChecksum.startsWith(KEY_PREFIX))
  })

  t.test('expired key: 401 API_KEY_EXPIRED', async (t) => {
    const { key } = await insertKey(db, { userId: devUser.id, organizationId: orgId, expiresAt: new Date(Date.now() - 1000) })
    expectError(t, await me({ 'x-api-key': key }), 401, 'API_KEY_EXPIRED')
  })

  t.test('disabled user: 403 USER_DISABLED', async (t) => {
    const { key } = await insertUserWithKey(db, { organizationId: orgId, disabledAt: new Date() })
    expectError(t, await me({ 'x-api-key': key }), 403, 'USER_DISABLED')
  })

  t.test('user not a member of the key organization: 403 ORG_MEMBERSHIP_REQUIRED', async (t) => {
    const { key } = await insertUserWithKey(db, { organizationId: orgId, orgRole: null })
    expectError(t, await me({ 'x-api-key': key }), 403, 'ORG_MEMBERSHIP_REQUIRED')
  })

  t.test('missing scope for a route: 403 FORBIDDEN', async (t) => {
    const response = await app.inject({ method: 'GET', url: '/api/v1/admin/auth-cache', headers: { 'x-api-key': keyOf('dev+clerk_test@mock.com') } })
    expectError(t, response, 403, 'FORBIDDEN')
    t.match(response.json().message, /auth:admin/)
  })

  t.test('conflicting or repeated key headers: 400 API_KEY_CONFLICT', async (t) => {
    const dev = keyOf('dev+clerk_test@mock.com')
    const sm = keyOf('sm+clerk_test@mock.com')
    expectError(t, await me({ 'x-api-key': dev, authorization: `ApiKey ${sm}` }), 400, 'API_KEY_CONFLICT')
    expectError(t, await me({ 'x-api-key': [dev, dev] }), 400, 'API_KEY_CONFLICT')
    expectError(t, await me({ 'x-api-key': [dev, sm] }), 400, 'API_KEY_CONFLICT')
    expectError(t, await me({ authorization: [`ApiKey ${dev}`, `ApiKey ${dev}`] }), 400, 'API_KEY_CONFLICT')
  })

  t.test('a personal key (no organization) gives a personal context', async (t) => {
    const { key, userId } = await insertUserWithKey(db, { organizationId: null })
    const response = await me({ 'x-api-key': key })
    t.equal(response.statusCode, 200)
    t.match(response.json(), { userId, contextType: 'personal', organizationId: null, organizationName: null, orgRole: null })
  })
})

t.test('too many failed attempts from one client: 429 with Retry-After, others unaffected', async (t) => {
  const { app } = await build(t, { db, config: { failedAttempts: { limit: 5, windowMs: 60_000, maxClients: 100 } } })
  const attacker = { remoteAddress: '10.9.9.9' }
  for (let i = 0; i < 5; i++) {
    const response = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { 'x-api-key': `guess-${i}` }, ...attacker })
    t.equal(response.statusCode, 401, `attempt ${i + 1} is answered`)
  }
  const statements = await statementsDuring(app, async () => {
    const limited = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { 'x-api-key': 'guess-6' }, ...attacker })
    expectError(t, limited, 429, 'TOO_MANY_FAILED_ATTEMPTS')
    t.ok(Number(limited.headers['retry-after']) > 0 && Number(limited.headers['retry-after']) <= 60, 'Retry-After in seconds')
  })
  t.equal(statements, 0, 'refused before any lookup')
  const other = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { 'x-api-key': keyOf('qa+clerk_test@mock.com') }, remoteAddress: '10.9.9.10' })
  t.equal(other.statusCode, 200, 'another client still authenticates')
})

t.test('cache', async (t) => {
  t.test('a second request for the same key makes no database statement', async (t) => {
    const { key } = await insertUserWithKey(db, { organizationId: orgId })
    const first = await statementsDuring(app, async () => t.equal((await me({ 'x-api-key': key })).statusCode, 200))
    t.equal(first, 1, 'a miss costs one statement')
    const second = await statementsDuring(app, async () => t.equal((await me({ 'x-api-key': key })).statusCode, 200))
    t.equal(second, 0, 'a hit costs none')
  })

  t.test('100 concurrent first requests for one key make exactly one statement', async (t) => {
    const { key } = await insertUserWithKey(db, { organizationId: orgId })
    const statements = await statementsDuring(app, async () => {
      const responses = await Promise.all(Array.from({ length: 100 }, () => me({ 'x-api-key': key })))
      t.same([...new Set(responses.map((r) => r.statusCode))], [200])
    })
    t.equal(statements, 1)
  })

  t.test('an unknown key is cached negatively', async (t) => {
    const key = generateApiKey()
    const statements = await statementsDuring(app, async () => {
      for (let i = 0; i < 3; i++) t.equal((await me({ 'x-api-key': key })).statusCode, 401)
    })
    t.equal(statements, 1)
  })

  t.test('an expired key is rejected even while cached, with no statement', async (t) => {
    const { key } = await insertUserWithKey(db, { organizationId: orgId, key: { expiresAt: new Date(Date.now() + 1500) } })
    t.equal((await me({ 'x-api-key': key })).statusCode, 200)
    clock.advance(1600)
    const statements = await statementsDuring(app, async () => {
      expectError(t, await me({ 'x-api-key': key }), 401, 'API_KEY_EXPIRED')
    })
    t.equal(statements, 0, 'answered from the cache')
  })

  t.test('flush by key, user, organization and all', async (t) => {
    const admin = { 'x-api-key': keyOf('ops+clerk_test@mock.com') }
    const otherOrg = await insertOrganization(db, 'Flush Org')
    const a = await insertUserWithKey(db, { organizationId: orgId })
    const b = await insertUserWithKey(db, { organizationId: otherOrg })
    const flush = (payload?: object) => app.inject({ method: 'POST', url: '/api/v1/admin/auth-cache/flush', headers: admin, ...(payload === undefined ? {} : { payload }) })
    const warm = async () => {
      for (const key of [a.key, b.key]) t.equal((await me({ 'x-api-key': key })).statusCode, 200)
    }
    const lookupsFor = async (key: string) => statementsDuring(app, () => me({ 'x-api-key': key }))

    const cases: Array<[object | undefined, string, number, number]> = [
      [{ keyId: a.keyId }, 'key', 1, 0],
      [{ userId: b.userId }, 'user', 0, 1],
      [{ organizationId: otherOrg }, 'organization', 0, 1],
      [undefined, 'all', 1, 1],
      [{}, 'all', 1, 1]
    ]
    for (const [payload, scope, aLookups, bLookups] of cases) {
      await warm()
      const response = await flush(payload)
      t.equal(response.statusCode, 200, `flush ${JSON.stringify(payload)}`)
      t.equal(response.json().scope, scope)
      t.ok(response.json().flushed >= aLookups + bLookups, 'reports what it flushed')
      t.equal(await lookupsFor(a.key), aLookups, `${scope}: key a looked up again?`)
      t.equal(await lookupsFor(b.key), bLookups, `${scope}: key b looked up again?`)
    }

    const bad = await flush({ keyId: 'not-a-uuid' })
    t.equal(bad.statusCode, 400)
    t.equal(bad.json().code, 'FST_ERR_VALIDATION')
    const two = await flush({ keyId: a.keyId, userId: a.userId })
    t.equal(two.statusCode, 400, 'one target at a time')
    t.equal(two.json().code, 'BAD_REQUEST')
    const misspelt = await flush({ keyid: a.keyId })
    t.equal(misspelt.statusCode, 400, 'an unknown property is refused, not taken for "flush all"')
  })

  t.test('the flush and statistics routes refuse keys without auth:admin', async (t) => {
    for (const persona of PERSONAS.filter((p) => !p.scopes.includes('auth:admin'))) {
      const flush = await app.inject({ method: 'POST', url: '/api/v1/admin/auth-cache/flush', headers: { 'x-api-key': persona.key } })
      expectError(t, flush, 403, 'FORBIDDEN')
    }
    expectError(t, await app.inject({ method: 'POST', url: '/api/v1/admin/auth-cache/flush' }), 401, 'API_KEY_MISSING')
    const stats = await app.inject({ method: 'GET', url: '/api/v1/admin/auth-cache', headers: { 'x-api-key': keyOf('ops+clerk_test@mock.com') } })
    t.equal(stats.statusCode, 200)
    t.match(stats.json(), { entries: Number, hits: Number, misses: Number, maxEntries: 50_000 })
    t.ok(stats.json().hits > 0)
  })
})
