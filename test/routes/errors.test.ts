// What goes wrong is answered exactly: a failure of ours is a bare 500, a database that is away is a 503
// with Retry-After on every kind of route, every 5xx is logged, and input that cannot be stored or
// represented is a 400 with a code, never a 500.
import type { AddressInfo } from 'node:net'
import { connect } from 'node:net'
import { gzipSync } from 'node:zlib'
import type { FastifyInstance } from 'fastify'
import pg from 'pg'
import t, { type Test } from 'tap'
import { build } from '#test/helpers/app.ts'
import { createTestDatabase, databaseKind, serverUrl } from '#test/helpers/database.ts'
import { keyOf, testOrgId } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)
const dev = keyOf('dev+clerk_test@mock.com')
const admin = keyOf('ops+clerk_test@mock.com')

/** POST /api/v1/api-keys with the admin's key, these headers and this body, as the body tests send it. */
const createKey = (app: FastifyInstance, headers: Record<string, string | string[]>, payload?: string | Buffer) =>
  app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { 'x-api-key': admin, ...headers }, payload })

/** A 5xx body: exactly { statusCode, code, error, message }, nothing of the failure's details. */
function expectBare5xx (t: Test, response: { statusCode: number, body: string, headers: Record<string, unknown> }, statusCode: number, code: string) {
  t.equal(response.statusCode, statusCode, `status ${statusCode}`)
  const body = JSON.parse(response.body) as Record<string, unknown>
  t.same(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'], 'only the four fields')
  t.equal(body.code, code)
  t.equal(body.statusCode, statusCode)
  t.notMatch(response.body, /prisma|invocation|relation|\/work\/|node_modules|\.ts:\d|\bat \w|ECONN|Can't reach|postgres/i, 'no driver text, path or stack')
}

t.test('a failing route answers a bare 500 and logs it at level error with its request id, request logging off', async (t) => {
  const { app, db, logs } = await build(t, { captureLogs: true, config: { logRequests: false } })
  t.equal((await app.inject({ url: '/api/v1/projects', headers: { 'x-api-key': dev } })).statusCode, 200, 'the key is cached')
  await db.pool.query('ALTER TABLE projects RENAME TO projects_away')
  t.teardown(() => db.pool.query('ALTER TABLE projects_away RENAME TO projects'))
  const response = await app.inject({ url: '/api/v1/projects', headers: { 'x-api-key': dev } })
  expectBare5xx(t, response, 500, 'INTERNAL_SERVER_ERROR')
  t.equal(JSON.parse(response.body).message, 'Internal Server Error')
  const failures = logs.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.level === 50)
  t.equal(failures.length, 1, 'one error line')
  t.match(failures[0], { reqId: String, statusCode: 500, code: 'INTERNAL_SERVER_ERROR', msg: 'request failed' })
  t.match(JSON.stringify(failures[0]), /projects/, 'the details are in the log, for the operator')
})

t.test('database unreachable on every kind of route: 503 with Retry-After, never 500', async (t) => {
  const { app, db } = await build(t, { proxy: true, config: { unavailableRetryAfterSeconds: 7 } })
  const orgId = await testOrgId(db)
  const keyIds = (await db.prisma.apiKey.findMany({ where: { organizationId: orgId }, select: { id: true }, take: 1 })).map((k) => k.id)
  for (const key of [dev, admin]) t.equal((await app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })).statusCode, 200, 'cached before the outage')
  await db.proxy!.cut()
  const routes: Array<[string, 'GET' | 'POST' | 'DELETE', string, string, object | undefined]> = [
    ['projects', 'GET', '/api/v1/projects', dev, undefined],
    ['list keys', 'GET', '/api/v1/api-keys', dev, undefined],
    ['create a key', 'POST', '/api/v1/api-keys', dev, {}],
    ['revoke a key', 'DELETE', `/api/v1/api-keys/${keyIds[0]}`, admin, undefined],
    ['rotate a key', 'POST', `/api/v1/api-keys/${keyIds[0]}/rotate`, admin, {}]
  ]
  for (const [what, method, url, key, payload] of routes) {
    const response = await app.inject({ method, url, headers: { 'x-api-key': key }, ...(payload === undefined ? {} : { payload }) })
    expectBare5xx(t, response, 503, 'SERVICE_UNAVAILABLE')
    t.equal(response.headers['retry-after'], '7', `${what}: Retry-After`)
  }
  const ready = await app.inject({ url: '/ready' })
  t.equal(ready.statusCode, 503)
  await db.proxy!.restore()
})

t.test('numbers that are not finite are refused on every integer, with a 400', async (t) => {
  const { app } = await build(t)
  for (const value of ['1e309', 'Infinity', '-1e309', '-Infinity', 'NaN', '1.5', '1e3']) {
    for (const url of [`/api/v1/projects?limit=${value}`, `/api/v1/projects?offset=${value}`, `/api/v1/api-keys?limit=${value}`]) {
      const response = await app.inject({ url, headers: { 'x-api-key': dev } })
      t.equal(response.statusCode, 400, `${url}: 400`)
      t.equal(response.json().code, 'FST_ERR_VALIDATION')
    }
  }
  const rotate = await app.inject({ method: 'POST', url: '/api/v1/api-keys/00000000-0000-4000-8000-000000000000/rotate', headers: { 'x-api-key': dev, 'content-type': 'application/json' }, payload: '{"gracePeriodSeconds":1e309}' })
  t.equal(rotate.statusCode, 400, 'a body number too large for a double is refused')
})

t.test('a number in a query string is written in decimal, or refused (found by an outside probe: 0x10 read as 16)', async (t) => {
  const { app } = await build(t)
  const routes = ['/api/v1/projects', '/api/v1/api-keys', '/api/v1/audit-events']
  for (const value of ['0x10', '0b10', '0o3', '1e1', '.2e1', '+2', '%202', '2%20', '', '1_000', '١٢']) {
    for (const route of routes) {
      const response = await app.inject({ url: `${route}?limit=${value}`, headers: { 'x-api-key': dev } })
      t.equal(response.statusCode, 400, `limit=${value} on ${route}`)
      t.same(response.json(), { statusCode: 400, code: 'FST_ERR_VALIDATION', error: 'Bad Request', message: 'querystring/limit must be a number written in decimal' })
    }
  }
  for (const route of routes) {
    t.equal((await app.inject({ url: `${route}?limit=16`, headers: { 'x-api-key': dev } })).statusCode, 200, `decimal numbers are read: ${route}`)
    t.equal((await app.inject({ url: `${route}?limit=007`, headers: { 'x-api-key': dev } })).statusCode, 200, `leading zeros are decimal: ${route}`)
    t.equal((await app.inject({ url: `${route}?limit=0`, headers: { 'x-api-key': dev } })).json().message, 'querystring/limit must be >= 1', "decimal but out of range: the schema's own message")
  }
})

t.test('an expiresAt that names no real instant is a 400', async (t) => {
  const { app } = await build(t)
  for (const expiresAt of ['2099-12-31T23:59:60Z', '2099-02-30T00:00:00Z', '2099-04-31T12:00:00Z', '2099-01-01T24:00:00Z', '2099-01-01T10:00:00+24:00', 'tomorrow', '']) {
    const response = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { 'x-api-key': dev }, payload: { expiresAt } })
    t.equal(response.statusCode, 400, `${JSON.stringify(expiresAt)}: 400`)
    t.equal(response.json().code, 'FST_ERR_VALIDATION')
  }
  const real = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { 'x-api-key': dev }, payload: { expiresAt: '2099-02-28T23:59:59.999+01:00' } })
  t.equal(real.statusCode, 201, 'a real instant in any offset is accepted')
  t.equal(real.json().expiresAt, '2099-02-28T22:59:59.999Z')
})

t.test('bodies are JSON in UTF-8: any other type or charset is a 415, the route never runs (found by an outside probe)', async (t) => {
  const { app, db } = await build(t)
  const keysBefore = await db.prisma.apiKey.count()
  const payload = '{"description":"as text"}'
  for (const type of ['text/plain', 'text/plain; charset=utf-8', 'application/xml', 'application/json; charset=utf-16', 'application/json; charset="iso-8859-1"']) {
    const response = await createKey(app, { 'content-type': type }, payload)
    t.equal(response.statusCode, 415, type)
    t.match(response.json(), { statusCode: 415, code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', error: 'Unsupported Media Type' }, type)
  }
  t.equal(await db.prisma.apiKey.count(), keysBefore, 'no key was created')
  // An empty body is no body, whatever its type: fetch sends text/plain, curl -d '' a form (found by an outside probe).
  for (const type of ['text/plain;charset=UTF-8', 'application/x-www-form-urlencoded']) {
    const flush = await app.inject({ method: 'POST', url: '/api/v1/admin/auth-cache/flush', headers: { 'x-api-key': admin, 'content-type': type }, payload: '' })
    t.equal(flush.statusCode, 200, `an empty ${type} body is no body`)
  }
  for (const type of ['application/json', 'application/json; charset=UTF-8', 'application/json;charset="utf-8"']) {
    const response = await createKey(app, { 'content-type': type }, payload)
    t.equal(response.statusCode, 201, `${type} is read`)
  }
})

t.test('a compressed body is a 415 and bytes that are not UTF-8 a 400, never stored (found by an outside probe)', async (t) => {
  const { app, db } = await build(t)
  const keysBefore = await db.prisma.apiKey.count()
  const json = '{"description":"compressed"}'
  for (const [coding, payload] of [['gzip', gzipSync(json)], ['br', json], ['GZIP, identity', gzipSync(json)]] as const) {
    const response = await createKey(app, { 'content-type': 'application/json', 'content-encoding': coding }, payload)
    t.equal(response.statusCode, 415, `Content-Encoding ${coding}: 415`)
    t.match(response.json(), { code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', message: /Content-Encoding .* is not supported/ }, coding)
  }
  for (const bytes of [[0xff], [0xc3, 0x28], [0xed, 0xa0, 0x80]]) { // not UTF-8: a stray byte, a broken pair, a surrogate
    const payload = Buffer.concat([Buffer.from('{"description":"a'), Buffer.from(bytes), Buffer.from('b"}')])
    const response = await createKey(app, { 'content-type': 'application/json' }, payload)
    t.equal(response.statusCode, 400, `bytes ${Buffer.from(bytes).toString('hex')}: 400`)
    t.match(response.json(), { code: 'BAD_REQUEST', message: 'The body is not valid UTF-8' })
  }
  t.equal(await db.prisma.apiKey.count(), keysBefore, 'no key was created')
  const identity = await createKey(app, { 'content-type': 'application/json', 'content-encoding': 'identity' }, '{"description":"plain é, 鍵"}')
  t.equal(identity.statusCode, 201, 'identity is no coding; real UTF-8 is read')
  t.equal(identity.json().description, 'plain é, 鍵')
})

t.test('a body whose type is said twice over is refused, an empty one is no body whatever its headers, a lone surrogate is a 400 (found by an outside probe)', async (t) => {
  const { app, db } = await build(t)
  const keysBefore = await db.prisma.apiKey.count()
  const payload = '{"description":"twice"}'
  const create = (headers: Record<string, string | string[]>, body = payload) => createKey(app, headers, body)
  for (const type of ['application/json; charset=utf-8; charset=latin1', 'application/json; charset="utf-8"; charset="utf-16"', 'application/json; charset=latin1; charset=utf-8']) {
    const response = await create({ 'content-type': type })
    t.equal(response.statusCode, 400, type)
    t.match(response.json(), { code: 'BAD_REQUEST', message: 'Content-Type gives its charset more than once' })
  }
  const extended = await create({ 'content-type': "application/json; charset*=utf-8''latin1" })
  t.equal(extended.statusCode, 415, 'charset*= is not read: refused rather than guessed')
  const repeated = await create({ 'content-type': ['application/json', 'text/plain'] })
  t.equal(repeated.statusCode, 400, 'Content-Type twice')
  t.match(repeated.json(), { message: 'Content-Type is given more than once' })
  for (const escaped of ['a\\ud800b', 'p\\udfffq', '\\udc00\\ud800']) {
    const response = await create({ 'content-type': 'application/json' }, `{"description":"${escaped}"}`)
    t.equal(response.statusCode, 400, `${escaped}: 400`)
    t.match(response.json().message, /lone surrogate/)
  }
  t.equal(await db.prisma.apiKey.count(), keysBefore, 'no key was created')
  const pair = await create({ 'content-type': 'application/json' }, '{"description":"\\ud83d\\udd11"}')
  t.equal(pair.statusCode, 201, 'a surrogate pair is one character')
  t.equal(pair.json().description, '\u{1F511}')
  // Empty is no body, whatever the charset or coding says, on the report route too.
  for (const headers of [{ 'content-type': 'application/json; charset=latin1' }, { 'content-type': 'application/json', 'content-encoding': 'gzip' }]) {
    const flush = await app.inject({ method: 'POST', url: '/api/v1/admin/auth-cache/flush', headers: { 'x-api-key': admin, ...headers }, payload: '' })
    t.equal(flush.statusCode, 200, `empty with ${JSON.stringify(headers)}: no body`)
  }
  for (const type of ['text/plain', 'application/octet-stream', 'application/x-www-form-urlencoded']) {
    const report = await app.inject({ method: 'POST', url: '/api/v1/api-keys/report-leak', headers: { 'content-type': type }, payload: '' })
    const none = await app.inject({ method: 'POST', url: '/api/v1/api-keys/report-leak', headers: { 'content-length': '0' } })
    t.equal(report.statusCode, none.statusCode, `report-leak: an empty ${type} body is answered as no body (${none.statusCode})`)
  }
})

t.test('a JSON body is validated as sent: a number, boolean or null where a string belongs is a 400, not coerced (found by an outside probe)', async (t) => {
  const { app, db } = await build(t)
  const keysBefore = await db.prisma.apiKey.count()
  const bodies = ['{"description":1e309}', '{"description":123}', '{"description":true}', '{"description":null}', '{"rateLimit":{"requests":"5","windowSeconds":60}}']
  for (const payload of bodies) {
    const response = await createKey(app, { 'content-type': 'application/json' }, payload)
    t.equal(response.statusCode, 400, payload)
    t.equal(response.json().code, 'FST_ERR_VALIDATION', payload)
  }
  t.equal(await db.prisma.apiKey.count(), keysBefore, 'no key was created')
  const query = await app.inject({ url: '/api/v1/audit-events?limit=2', headers: { 'x-api-key': admin } })
  t.equal(query.statusCode, 200, 'a query string is text: its numbers are still read as numbers')
})

t.test('a JSON null is a body, refused where an object belongs; no body at all is an empty object (found by an outside probe)', async (t) => {
  const { app, db } = await build(t)
  const json = { 'x-api-key': admin, 'content-type': 'application/json' }
  const { id } = (await createKey(app, {})).json()
  t.ok(id, 'a POST with no body creates a key, as {} does')
  const keysBefore = await db.prisma.apiKey.count()
  for (const [method, url] of [['POST', '/api/v1/admin/auth-cache/flush'], ['POST', `/api/v1/api-keys/${id}/rotate`], ['PATCH', `/api/v1/api-keys/${id}`], ['POST', '/api/v1/api-keys']] as const) {
    const response = await app.inject({ method, url, headers: json, payload: 'null' })
    t.equal(response.statusCode, 400, `${method} ${url} with null: 400`)
    t.equal(response.json().code, 'FST_ERR_VALIDATION')
  }
  t.equal(await db.prisma.apiKey.count(), keysBefore, 'nothing rotated or created')
  t.equal((await db.prisma.apiKey.findUniqueOrThrow({ where: { id } })).revokedAt, null)
  const chunkedGzip = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { ...json, 'transfer-encoding': 'gzip, chunked' }, payload: '{}' })
  t.equal(chunkedGzip.statusCode, 415, 'a transfer coding other than chunked is refused, not read as plain')
})

t.test('NUL characters are refused in bodies and URLs: PostgreSQL cannot store them', async (t) => {
  const { app } = await build(t)
  const body = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { 'x-api-key': dev, 'content-type': 'application/json' }, payload: '{"description":"a\\u0000b"}' })
  t.equal(body.statusCode, 400)
  t.equal(body.json().code, 'BAD_REQUEST')
  t.match(body.json().message, /NUL/)
  const escaped = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { 'x-api-key': dev, 'content-type': 'application/json' }, payload: '{"description":"a literal \\\\u0000 is text"}' })
  t.equal(escaped.statusCode, 201, 'an escaped backslash followed by u0000 is text, not NUL')
  for (const [method, url] of [['GET', '/api/v1/api-keys?userId=%00'], ['DELETE', '/api/v1/api-keys/%00'], ['GET', '/api/v1/projects?limit=1%00']] as const) {
    const response = await app.inject({ method, url, headers: { 'x-api-key': dev } })
    t.equal(response.statusCode, 400, `${url}: 400`)
  }
  const malformed = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { 'x-api-key': dev, 'content-type': 'application/json' }, payload: '{"description":' })
  t.equal(malformed.statusCode, 400, 'malformed JSON: 400')
  t.equal(malformed.json().code, 'BAD_REQUEST')
})

t.test("an error that brings no code of its own still gets one in the house style (the docs' static files refusing a path)", async (t) => {
  const { app } = await build(t)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  // Sent as is: clients (and inject) would resolve the dots first.
  const answer = await new Promise<string>((resolve) => {
    const socket = connect(port, '127.0.0.1', () => socket.end('GET /docs/static/../../api/v1/projects HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'))
    let received = ''
    socket.on('data', (chunk) => { received += chunk })
    socket.on('close', () => resolve(received))
  })
  const status = Number(answer.split(' ')[1])
  t.ok(status >= 400 && status < 500, `status ${status}`)
  const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))
  t.same(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'])
  t.match(body.code, /^[A-Z][A-Z0-9_]*$/, `code ${body.code}`)
})

t.test('a database dropped under the service is a 503 with Retry-After on every kind of route, not a 500 (found by an outside probe)', { skip: serverUrl === undefined ? 'PostgreSQL only: an in-memory PGlite cannot be dropped from outside' : false }, async (t) => {
  const db = await createTestDatabase(t, { listen: false })
  const { app } = await build(t, { db })
  t.equal((await app.inject({ url: '/api/v1/projects', headers: { 'x-api-key': admin } })).statusCode, 200, 'the key is cached')
  const superuser = new pg.Client({ connectionString: serverUrl })
  await superuser.connect()
  await superuser.query(`DROP DATABASE "${new URL(db.url).pathname.slice(1)}" WITH (FORCE)`)
  await superuser.end()
  for (const [method, url] of [['GET', '/api/v1/projects'], ['GET', '/api/v1/api-keys'], ['POST', '/api/v1/api-keys']] as const) {
    const response = await app.inject({ method, url, headers: { 'x-api-key': admin }, ...(method === 'POST' ? { payload: {} } : {}) })
    expectBare5xx(t, response, 503, 'SERVICE_UNAVAILABLE')
    t.ok(Number(response.headers['retry-after']) >= 1, `${method} ${url}: Retry-After`)
  }
  t.equal((await app.inject({ url: '/ready' })).statusCode, 503, '/ready agrees')
})
