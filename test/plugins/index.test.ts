import Fastify from 'fastify'
import t from 'tap'
import battraAuth from '#plugins/index.ts'
import { testConfig } from '#test/helpers/app.ts'
import { createTestDatabase, databaseKind, serverUrl } from '#test/helpers/database.ts'
import { keyOf } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)

t.test('another Fastify service registers the plugin in one line and gets request.auth', async (t) => {
  const db = await createTestDatabase(t)
  const app = Fastify()
  await app.register(battraAuth, { config: testConfig(db.url) })
  app.get('/stories', { config: { auth: { roles: ['product_owner', 'managing_contributor'] } } }, async (request) => ({ owner: request.auth!.email }))
  app.get('/status', { config: { auth: false } }, async (request) => ({ auth: request.auth }))
  t.teardown(() => app.close())

  const ok = await app.inject({ url: '/stories', headers: { 'x-api-key': keyOf('po+clerk_test@mock.com') } })
  t.equal(ok.statusCode, 200)
  t.same(ok.json(), { owner: 'po+clerk_test@mock.com' })

  const wrongRole = await app.inject({ url: '/stories', headers: { 'x-api-key': keyOf('dev+clerk_test@mock.com') } })
  t.equal(wrongRole.statusCode, 403)
  t.equal(wrongRole.json().code, 'FORBIDDEN')

  // Fastify's own error handler answers the plugin's errors exactly: status, code, message, challenge.
  const missing = await app.inject({ url: '/stories' })
  t.equal(missing.statusCode, 401)
  t.match(missing.json(), { statusCode: 401, code: 'API_KEY_MISSING', error: 'Unauthorized' })
  t.equal(missing.headers['www-authenticate'], 'ApiKey realm="battra"')

  const open = await app.inject({ url: '/status' })
  t.same(open.json(), { auth: null }, 'routes can opt out')
  t.match(app.invalidation.stats(), { state: serverUrl === undefined ? 'unsupported' : 'listening' }, 'cache invalidation comes with it')
})

t.test('a route policy that is not exactly false or { scopes?, roles? } with known values fails the start', async (t) => {
  const db = await createTestDatabase(t)
  const invalid: Array<[unknown, RegExp]> = [
    [{ roles: 'managing_contributor' }, /config\.auth\.roles must be array/],
    [{ scopes: 'auth:admin' }, /config\.auth\.scopes must be array/],
    [{ scope: ['auth:admin'] }, /must not have additional properties/],
    [{ roles: ['boss'] }, /config\.auth\.roles\.0/],
    [{ roles: [] }, /config\.auth\.roles/],
    [{ scopes: ['NOT A SCOPE'] }, /config\.auth\.scopes\.0/],
    [true, /config\.auth must be object/],
    [null, /config\.auth must be object/]
  ]
  for (const [policy, message] of invalid) {
    const app = Fastify()
    await app.register(battraAuth, { config: testConfig(db.url) })
    const registered = await (async () => {
      app.get('/guarded', { config: { auth: policy as false } }, async () => 'open?')
      await app.ready()
    })().then(() => undefined, (error: Error) => error)
    t.ok(registered instanceof Error, `${JSON.stringify(policy)}: the start fails`)
    t.match(registered?.message, /GET \/guarded: config\.auth must be false or/, 'naming the route')
    t.match(registered?.message, message, 'and the problem')
    await app.close().catch(() => {})
  }
})
