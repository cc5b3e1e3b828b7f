import t from 'tap'
import { build } from '#test/helpers/app.ts'
import { migrate } from '#src/db/migrate.ts'
import { createTestDatabase, databaseKind } from '#test/helpers/database.ts'

t.comment(`database: ${databaseKind}`)
const { app } = await build(t)

t.test('GET /health answers OK in plain text without a key', async (t) => {
  const response = await app.inject({ url: '/health', headers: { 'x-api-key': 'garbage key with spaces' } })
  t.equal(response.statusCode, 200)
  t.equal(response.body, 'OK')
  t.match(response.headers['content-type'], /^text\/plain/)
})

t.test('GET /ready answers READY while the database answers', async (t) => {
  const response = await app.inject({ url: '/ready' })
  t.equal(response.statusCode, 200)
  t.equal(response.body, 'READY')
})

t.test('GET /ready with Accept: application/json details the rate limiter, with the same status', async (t) => {
  const response = await app.inject({ url: '/ready', headers: { accept: 'application/json' } })
  t.equal(response.statusCode, 200)
  t.match(response.headers['content-type'], /^application\/json/)
  t.same(response.json(), {
    status: 'READY',
    database: 'up',
    rateLimit: { store: 'memory', backend: 'local', mode: 'exact', fallbacks: 0, redisErrors: 0, limited: { key: 0, organization: 0 } }
  })
  t.equal((await app.inject({ url: '/ready', headers: { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' } })).body, 'READY', 'anything else: the text')
})

t.test('an unknown route is a 404 in the error shape, once authenticated', async (t) => {
  const response = await app.inject({ url: '/nowhere', headers: { 'x-api-key': 'battra-dev-key-1' } })
  t.equal(response.statusCode, 404)
  t.match(response.json(), { statusCode: 404, code: 'NOT_FOUND', error: 'Not Found' })
  const anonymous = await app.inject({ url: '/nowhere' })
  t.equal(anonymous.statusCode, 401, 'routes are not revealed to callers without a key')
})

t.test('GET /ready answers 503 while the database lacks migrations of this build, READY once they are applied, 503 again if they are undone (found by outside probes)', async (t) => {
  const db = await createTestDatabase(t, { migrate: false })
  const { app: unmigrated } = await build(t, { db })
  const text = await unmigrated.inject({ url: '/ready' })
  t.equal(text.statusCode, 503)
  t.equal(text.body, 'NOT READY')
  const json = await unmigrated.inject({ url: '/ready', headers: { accept: 'application/json' } })
  t.equal(json.statusCode, 503)
  t.equal(json.json().code, 'NOT_READY')
  t.match(json.json().message, /migration\(s\) of this build: run npm run db:migrate/)
  await migrate(db.pool)
  const after = await unmigrated.inject({ url: '/ready' })
  t.equal(after.statusCode, 200, 'ready as soon as db:migrate has run, without a restart')
  t.equal(after.body, 'READY')
  // Not a latch: a database rolled back (or replaced) under the running service is not ready again.
  await db.pool.query('UPDATE "_prisma_migrations" SET rolled_back_at = now() WHERE migration_name = (SELECT max(migration_name) FROM "_prisma_migrations")')
  t.equal((await unmigrated.inject({ url: '/ready' })).statusCode, 503, 'a migration rolled back: not ready again')
  await db.pool.query('DROP TABLE "_prisma_migrations"')
  t.equal((await unmigrated.inject({ url: '/ready' })).statusCode, 503, 'no migrations table: not ready')
})
