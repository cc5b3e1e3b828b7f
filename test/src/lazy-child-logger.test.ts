// The per-request logger made on first use: what is logged is what Fastify's own child would log.
import { Writable } from 'node:stream'
import Fastify, { LogController, type FastifyBaseLogger } from 'fastify'
import t from 'tap'
import { lazyChildLoggerFactory } from '#src/lazy-child-logger.ts'

/** pino's loggers, and so the lazy one, answer isLevelEnabled; Fastify's base type does not declare it. */
const enabled = (log: FastifyBaseLogger, level: string) => (log as FastifyBaseLogger & { isLevelEnabled: (level: string) => boolean }).isLevelEnabled(level)

function appLoggingTo (lines: Array<Record<string, unknown>>) {
  const stream = new Writable({
    write (chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line))
      done()
    }
  })
  return Fastify({ logger: { level: 'info', stream }, logController: new LogController({ disableRequestLogging: true }), childLoggerFactory: lazyChildLoggerFactory })
}

t.test("a request's log lines carry its request id, as with Fastify's own child", async (t) => {
  const lines: Array<Record<string, unknown>> = []
  const app = appLoggingTo(lines)
  app.get('/logs', async (request) => {
    request.log.info({ detail: 1 }, 'first')
    request.log.child({ part: 'inner' }).warn('second')
    return { level: request.log.level }
  })
  app.get('/quiet', async () => 'nothing logged')
  app.get('/debug', { logLevel: 'debug' }, async (request) => {
    request.log.debug('shown at the route level')
    return 'ok'
  })
  const response = await app.inject('/logs')
  t.same(response.json(), { level: 'info' })
  t.match(lines, [{ reqId: 'req-1', detail: 1, msg: 'first' }, { reqId: 'req-1', part: 'inner', msg: 'second', level: 40 }])
  lines.length = 0
  await app.inject('/quiet')
  t.same(lines, [], 'nothing logged for a request that logs nothing')
  await app.inject('/debug')
  t.match(lines, [{ reqId: 'req-3', level: 20, msg: 'shown at the route level' }], "a route's log level applies")
})

t.test('no child is made for a request that does not log', async (t) => {
  const lines: Array<Record<string, unknown>> = []
  const app = appLoggingTo(lines)
  app.get('/quiet', async () => 'ok')
  await app.ready()
  let children = 0
  const child = app.log.child.bind(app.log)
  app.log.child = ((...args: Parameters<typeof child>) => { children++; return child(...args) }) as typeof child
  for (let i = 0; i < 10; i++) await app.inject('/quiet')
  t.equal(children, 0)
  await app.close()
})

t.test('nor for one that logs only below the level; a child once made keeps its own level', async (t) => {
  const lines: Array<Record<string, unknown>> = []
  const app = appLoggingTo(lines)
  app.get('/below', async (request) => {
    request.log.debug('below info')
    request.log.trace('further below')
    return { debug: enabled(request.log, 'debug'), info: enabled(request.log, 'info') }
  })
  app.get('/lowered', async (request) => {
    request.log.level = 'debug'
    request.log.debug('shown once the request lowered its level')
    return { debug: enabled(request.log, 'debug') }
  })
  await app.ready()
  let children = 0
  const child = app.log.child.bind(app.log)
  app.log.child = ((...args: Parameters<typeof child>) => { children++; return child(...args) }) as typeof child
  t.same((await app.inject('/below')).json(), { debug: false, info: true })
  t.equal(children, 0, 'no child for lines that are not written')
  t.same(lines, [])
  t.same((await app.inject('/lowered')).json(), { debug: true })
  t.match(lines, [{ reqId: 'req-2', level: 20, msg: 'shown once the request lowered its level' }])
  t.equal(enabled(app.log, 'debug'), false, "the instance's level is untouched")
  await app.close()
})
