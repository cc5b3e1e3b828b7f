// The service's logger (createFastify): request logs when they are on; without them, the same logger
// still serves request.log and fastify.log, though Fastify itself was given none.
import { connect, type AddressInfo } from 'node:net'
import t from 'tap'
import { createFastify, urlForLog } from '#src/app.ts'
import { generateApiKey } from '#src/auth/api-key.ts'
import { startDraining } from '#src/http-server.ts'
import { build, testConfig } from '#test/helpers/app.ts'
import { keyOf } from '#test/helpers/fixtures.ts'
import { until } from '#test/helpers/wait.ts'

const dev = keyOf('dev+clerk_test@mock.com')
const parsed = (logs: string[]) => logs.map((line) => JSON.parse(line) as Record<string, unknown>)

t.test('request logging on: one access line per request at info, with the request, its answer and the time taken', async (t) => {
  const { app, logs } = await build(t, { captureLogs: true, config: { logRequests: true, logLevel: 'info' } })
  logs.length = 0
  t.equal((await app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': dev } })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/v1/auth/me' })).statusCode, 401)
  // Refused by Fastify before routing (a URL that does not decode): Fastify logs no answer for these.
  t.equal((await app.inject({ url: '/api/v1/auth/%zz' })).statusCode, 400)
  const completed = parsed(logs).filter((line) => line.msg === 'request completed')
  t.match(completed, [
    { level: 30, reqId: String, req: { method: 'GET', url: '/api/v1/auth/me', remoteAddress: '127.0.0.1' }, res: { statusCode: 200 }, responseTime: Number },
    { level: 30, reqId: String, req: { method: 'GET', url: '/api/v1/auth/me' }, res: { statusCode: 401 }, responseTime: Number },
    { level: 30, reqId: String, req: { method: 'GET', url: '/api/v1/auth/[redacted]' }, res: { statusCode: 400 }, code: 'BAD_REQUEST' }
  ])
  t.equal(completed.length, 3)
  t.equal(completed[1].code, 'API_KEY_MISSING', "a refusal's access line carries its code")
  t.notOk(parsed(logs).some((line) => line.msg === 'request refused'), 'and is the only line of the refusal')
  t.notOk(parsed(logs).some((line) => line.msg === 'incoming request'), 'no arrival line at info')
  t.notMatch(logs.join('\n'), dev, 'the key is in no line')
})

t.test('request logging on, at debug: the arrival line too, carrying the same request id', async (t) => {
  const { app, logs } = await build(t, { captureLogs: true, config: { logRequests: true, logLevel: 'debug' } })
  logs.length = 0
  t.equal((await app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': dev } })).statusCode, 200)
  const lines = parsed(logs)
  const incoming = lines.find((line) => line.msg === 'incoming request')
  t.match(incoming, { level: 20, reqId: String, req: { method: 'GET', url: '/api/v1/auth/me' } })
  t.match(lines.find((line) => line.msg === 'request completed'), { reqId: incoming?.reqId, req: { url: '/api/v1/auth/me' }, res: { statusCode: 200 } })
  t.notMatch(logs.join('\n'), dev, 'the key is in no line')
})

t.test('request logging on: no key in any line, wherever the client put it', async (t) => {
  const { app, logs } = await build(t, { captureLogs: true, config: { logRequests: true } })
  logs.length = 0
  // Not read from the query, but sent there by clients used to it: the query is not logged.
  t.equal((await app.inject({ url: `/api/v1/auth/me?api_key=${dev}&page=2`, headers: { 'x-api-key': dev } })).statusCode, 200)
  t.match(parsed(logs).find((line) => line.msg === 'request completed'), { req: { url: '/api/v1/auth/me?[redacted]' } })
  t.equal((await app.inject({ url: `/api/v1/auth/me?${dev}`, headers: { 'x-api-key': dev } })).statusCode, 200, 'a key as a bare name')
  t.notMatch(logs.join('\n'), dev, 'a key in the query is in no line (found by an outside probe)')
  // A key where its id belongs, or anywhere in the path in its current form.
  const current = generateApiKey()
  logs.length = 0
  await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${dev}`, headers: { 'x-api-key': dev } })
  await app.inject({ url: `/api/v1/projects/${current};x`, headers: { 'x-api-key': dev } })
  const id = '0ac026e9-f145-4c8f-bb43-52e792b13f9f'
  await app.inject({ method: 'POST', url: `/api/v1/api-keys/${id}/rotate`, headers: { 'x-api-key': dev } })
  t.same(parsed(logs).filter((line) => line.msg === 'request completed').map((line) => (line.req as { url: string }).url), [
    '/api/v1/api-keys/[redacted]', '/api/v1/projects/[redacted]', `/api/v1/api-keys/${id}/rotate`
  ])
  t.notMatch(logs.join('\n'), dev, 'a key in the path is in no line (found by an outside probe)')
  t.notMatch(logs.join('\n'), current, 'nor one of the current form')
  // A legacy key can be any string: wherever it stands in a path, only the routes' own words and ids are
  // logged (found by an outside probe: these shapes logged it).
  const legacy = 'battra-qa-key-1'
  const shapes = [`/${legacy}`, `/api/v1/auth/me/${legacy}`, `/api/v1/${legacy}/auth/me`, `/health#${legacy}`, `/health;key=${legacy}`,
    `/api/v1/auth/me%3Fkey=${legacy}`, `//${legacy}//x`, `/api/v1/auth/me/%${legacy}`, `http://user:${legacy}@host/api/v1/auth/me`]
  logs.length = 0
  for (const url of shapes) await app.inject({ url, headers: { 'x-api-key': dev } })
  t.same(parsed(logs).filter((line) => line.msg === 'request completed').map((line) => (line.req as { url: string }).url), [
    // inject drops a fragment and the scheme and authority of an absolute URL; raw HTTP keeps them (below)
    '/[redacted]', '/api/v1/auth/me/[redacted]', '/api/v1/[redacted]/auth/me', '/health', '/[redacted]',
    '/api/v1/auth/[redacted]', '//[redacted]//[redacted]', '/api/v1/auth/me/[redacted]', '/api/v1/auth/me'
  ])
  t.notMatch(logs.join('\n'), legacy, 'no legacy key in any line')
  logs.length = 0
  await app.inject({ url: '/health', headers: { host: legacy } })
  t.notMatch(logs.join('\n'), legacy, 'nor in the Host header, which is not logged (found by an outside probe)')
  const routeWords = { words: new Set(['api', 'v1', 'auth', 'me', 'health', 'api-keys']), beforeIds: new Set(['api-keys']) }
  t.equal(urlForLog(`/health#${legacy}`, routeWords), '/[redacted]')
  t.equal(urlForLog(`http://user:${legacy}@host/api/v1/auth/me`, routeWords), '[redacted]//[redacted]/api/v1/auth/me')
  // A UUID is kept where a route takes an id, and only there: a legacy key may be a UUID (found by an outside probe).
  const uuid = '0ac026e9-f145-4c8f-bb43-52e792b13f9f'
  t.equal(urlForLog(`/api/v1/api-keys/${uuid}`, routeWords), `/api/v1/api-keys/${uuid}`)
  t.equal(urlForLog(`/health/${uuid}`, routeWords), '/health/[redacted]')
  t.equal(urlForLog(`/${uuid}`, routeWords), '/[redacted]')
  t.equal(urlForLog(`/api/v1/${uuid}/api-keys`, routeWords), '/api/v1/[redacted]/api-keys')
  logs.length = 0
  await app.inject({ url: `/health/${uuid}`, headers: { 'x-api-key': dev } })
  await app.inject({ url: `/api/v1/api-keys/${uuid}`, headers: { 'x-api-key': dev } })
  t.same(parsed(logs).filter((line) => line.msg === 'request completed').map((line) => (line.req as { url: string }).url), ['/health/[redacted]', `/api/v1/api-keys/${uuid}`], "the service's own routes teach where ids go")
})

t.test('request logging off: no line per request; what a route logs carries its request id, at the configured level', async (t) => {
  const logs: string[] = []
  const app = createFastify(testConfig('postgresql://unused', { logRequests: false, logLevel: 'info' }), { write: (line: string) => { logs.push(line) } })
  app.get('/quiet', async () => 'ok')
  app.get('/logs', async (request) => {
    request.log.info({ detail: 1 }, 'from the route')
    request.log.debug('below the level')
    return 'ok'
  })
  t.teardown(() => app.close())
  t.equal((await app.inject('/quiet')).statusCode, 200)
  t.same(logs, [], 'no request lines')
  await app.inject('/logs')
  t.match(parsed(logs), [{ msg: 'from the route', detail: 1, reqId: 'req-2', level: 30 }])
  t.equal(logs.length, 1, 'debug is below the level')
  app.log.warn('outside any request')
  t.match(parsed(logs)[1], { msg: 'outside any request', level: 40 }, "fastify.log is the service's logger")
})

t.test('request logging off: a 5xx the HTTP layer answers by itself (the drain\'s 503) is still logged, as every 5xx is (found by an outside probe)', async (t) => {
  const logs: string[] = []
  const app = createFastify(testConfig('postgresql://unused', { logRequests: false, logLevel: 'info' }), { write: (line: string) => { logs.push(line) } })
  app.get('/quiet', async () => 'ok')
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  logs.length = 0
  t.equal((await fetch(`${url}/quiet`)).status, 200)
  t.same(logs, [], 'no line for a request answered')
  startDraining(app.server)
  t.equal((await fetch(`${url}/quiet`)).status, 503)
  t.match(parsed(logs), [{ level: 40, msg: 'request refused', statusCode: 503, code: 'SERVICE_UNAVAILABLE', req: { method: 'GET', url: '/quiet', remoteAddress: '127.0.0.1' } }])
  // Three pipelined on one connection: the first refusal closes it, the others get no answer and no line
  // (found by an outside probe: three lines for one 503).
  const answer = await new Promise<string>((resolve) => {
    let received = ''
    const socket = connect((app.server.address() as AddressInfo).port, '127.0.0.1', () => socket.write('GET /quiet HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(3)))
    socket.on('data', (chunk) => { received += chunk })
    socket.on('close', () => resolve(received))
    socket.on('error', () => resolve(received))
  })
  t.equal([...answer.matchAll(/HTTP\/1\.1 503/g)].length, 1, 'one 503 on the wire')
  t.equal(parsed(logs).length, 2, 'one more line')
})

t.test('request logging on: a request whose client leaves before the answer has its line, once (found by an outside probe: none at info)', async (t) => {
  const logs: string[] = []
  const app = createFastify(testConfig('postgresql://unused', { logRequests: true, logLevel: 'info' }), { write: (line: string) => { logs.push(line) } })
  let release = () => {}
  const released = new Promise<void>((resolve) => { release = resolve })
  let arrived = () => {}
  const waiting = new Promise<void>((resolve) => { arrived = resolve })
  app.get('/slow', async () => {
    arrived()
    await released
    return 'late'
  })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  logs.length = 0
  const socket = connect((app.server.address() as AddressInfo).port, '127.0.0.1', () => socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n'))
  socket.on('error', () => {})
  await waiting
  socket.destroy()
  await until(() => logs.some((line) => line.includes('request abandoned')), 5000, 'the abandoned line')
  release()
  await app.inject('/slow')
  const abandoned = parsed(logs).find((line) => line.msg === 'request abandoned')
  t.match(abandoned, { level: 30, reqId: String, req: { method: 'GET', url: '/slow', remoteAddress: '127.0.0.1', remotePort: Number }, responseTime: Number })
  t.equal(parsed(logs).filter((line) => line.reqId === abandoned?.reqId).length, 1, 'one line, not a second when the handler ends')
  t.equal(parsed(logs).filter((line) => line.msg === 'request completed').length, 1, 'the next request has its own')
})

t.test('behind a trusted proxy, a forwarded address that is not one is not logged as one (found by an outside probe)', async (t) => {
  const { app, logs } = await build(t, { captureLogs: true, config: { logRequests: true, trustProxy: ['127.0.0.1'] } })
  logs.length = 0
  await app.inject({ url: '/health', headers: { 'x-forwarded-for': 'battra-dev-key-1' } })
  await app.inject({ url: '/health', headers: { 'x-forwarded-for': '203.0.113.7' } })
  // A zone can be any word: an address with one is logged with its zone masked (found by an outside probe).
  await app.inject({ url: '/health', headers: { 'x-forwarded-for': 'fe80::1%battra-dev-key-1' } })
  t.same(parsed(logs).filter((line) => line.msg === 'request completed').map((line) => (line.req as { remoteAddress: string }).remoteAddress), ['[not an address]', '203.0.113.7', 'fe80::1%[redacted]'])
  t.notMatch(logs.join('\n'), 'battra-dev-key-1')
})
