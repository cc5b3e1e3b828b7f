import t from 'tap'
import { build } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'

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

t.test('an unknown route is a 404 in the error shape, once authenticated', async (t) => {
  const response = await app.inject({ url: '/nowhere', headers: { 'x-api-key': 'battra-dev-key-1' } })
  t.equal(response.statusCode, 404)
  t.match(response.json(), { statusCode: 404, code: 'NOT_FOUND', error: 'Not Found' })
  const anonymous = await app.inject({ url: '/nowhere' })
  t.equal(anonymous.statusCode, 401, 'routes are not revealed to callers without a key')
})
