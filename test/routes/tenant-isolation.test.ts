import t from 'tap'
import { build } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertOrganization, insertUserWithKey, keyOf, testOrgId } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)
const { app, db } = await build(t)
const orgA = await testOrgId(db)
const secretProject = await db.prisma.project.findFirstOrThrow({ where: { organizationId: orgA } })
const devA = await db.prisma.user.findFirstOrThrow({ where: { email: 'dev+clerk_test@mock.com' } })
const devAKey = await db.prisma.apiKey.findFirstOrThrow({ where: { userId: devA.id } })
const orgB = await insertOrganization(db, 'Rival Org')
await db.prisma.project.create({ data: { organizationId: orgB, name: 'Rival roadmap' } })
const intruder = await insertUserWithKey(db, { organizationId: orgB, orgRole: 'owner', role: 'product_owner', email: 'boss@rival.example' })

/** Everything that identifies organization A or its members. */
const secretsOfA = [orgA, secretProject.id, secretProject.name, devA.id, devA.email, devAKey.id, devAKey.hint, 'Test Org', 'test-org']

async function attempt (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: object, extraHeaders: Record<string, string> = {}) {
  const response = await app.inject({ method, url, headers: { 'x-api-key': intruder.key, ...extraHeaders }, ...(payload === undefined ? {} : { payload }) })
  for (const secret of secretsOfA) {
    if (response.body.includes(secret)) throw new Error(`${method} ${url} leaked "${secret}": ${response.body}`)
    for (const value of Object.values(response.headers)) {
      if (String(value).includes(secret)) throw new Error(`${method} ${url} leaked "${secret}" in a header`)
    }
  }
  return response
}

t.test("a key of organization B never reaches organization A's data", async (t) => {
  const refused: Array<[string, 'GET' | 'POST' | 'PATCH' | 'DELETE', string, object | undefined, number[]]> = [
    ['list A user keys', 'GET', `/api/v1/api-keys?userId=${devA.id}`, undefined, [403]],
    ['revoke A key', 'DELETE', `/api/v1/api-keys/${devAKey.id}`, undefined, [404]],
    ['rotate A key', 'POST', `/api/v1/api-keys/${devAKey.id}/rotate`, {}, [404]],
    ['change A key', 'PATCH', `/api/v1/api-keys/${devAKey.id}`, { allowedCidrs: ['203.0.113.0/24'], rateLimit: { requests: 1, windowSeconds: 86_400 } }, [404]],
    ["set A's organization limit", 'PATCH', `/api/v1/admin/organizations/${orgA}`, { rateLimit: { requests: 1, windowSeconds: 86_400 } }, [403]],
    ['create a key in A', 'POST', '/api/v1/api-keys', { organizationId: orgA }, [403]],
    ['create a key for an A user', 'POST', '/api/v1/api-keys', { userId: devA.id, organizationId: orgA }, [403]],
    ['flush A caches', 'POST', '/api/v1/admin/auth-cache/flush', { organizationId: orgA }, [403]],
    ['read cache statistics', 'GET', '/api/v1/admin/auth-cache', undefined, [403]],
    ["A's audit events by filter", 'GET', `/api/v1/audit-events?organizationId=${orgA}`, undefined, [200]],
    ["A's key's audit events", 'GET', `/api/v1/audit-events?keyId=${devAKey.id}`, undefined, [200]],
    ['its own audit events', 'GET', '/api/v1/audit-events?limit=100', undefined, [200]],
    ['register a webhook', 'POST', '/api/v1/webhooks', { url: 'https://example.com/hook', events: ['*'], organizationId: orgA }, [403]],
    ['list webhooks', 'GET', '/api/v1/webhooks', undefined, [403]]
  ]
  for (const [what, method, url, payload, statuses] of refused) {
    const response = await attempt(method, url, payload)
    t.ok(statuses.includes(response.statusCode), `${what}: ${response.statusCode}`)
  }

  const projects = await attempt('GET', '/api/v1/projects?limit=100')
  t.same(projects.json().map((p: { name: string }) => p.name), ['Rival roadmap'])
  const keys = await attempt('GET', `/api/v1/api-keys?organizationId=${orgA}`)
  t.same(keys.json(), [], 'filtering by A lists nothing')
  const me = await attempt('GET', '/api/v1/auth/me', undefined, { 'x-organization-id': orgA, 'x-user-id': devA.id })
  t.equal(me.json().organizationId, orgB)
  const verify = await attempt('GET', '/api/v1/auth/verify', undefined, { 'x-organization-id': orgA, 'x-organization-role': 'owner', 'x-user-id': devA.id })
  t.equal(verify.headers['x-organization-id'], orgB, 'forward-auth never echoes client identity headers')
  t.equal(verify.headers['x-user-id'], intruder.userId)

  t.equal((await app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': keyOf('dev+clerk_test@mock.com') } })).statusCode, 200, "A's key is untouched")
})
