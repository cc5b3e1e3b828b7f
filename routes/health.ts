import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import { RateLimitStatsSchema } from '#src/schemas/cache.ts'
import { errorBody } from '#src/errors.ts'
import { errorRef } from '#src/schemas/common.ts'

const ReadyDetailSchema = Type.Object({
  status: Type.Literal('READY'),
  database: Type.Literal('up'),
  rateLimit: RateLimitStatsSchema
}, { description: 'With Accept: application/json. Redis being unreachable does not make the service unready: rateLimit.backend says local, and rate limits are counted per instance meanwhile.' })

/** JSON only when the client asks for it: the text contract (READY / NOT READY) is what probes read. */
const wantsJson = (request: FastifyRequest): boolean => request.headers.accept?.includes('application/json') === true

const health: FastifyPluginAsyncTypebox = async (fastify) => {
  // As Battra's gateway answers: plain text, never authenticated, never touching the database.
  fastify.get('/health', {
    config: { auth: false },
    schema: { response: { 200: Type.String() } }
  }, async (_request, reply) => {
    reply.type('text/plain; charset=utf-8')
    return 'OK'
  })

  fastify.get('/ready', {
    config: { auth: false },
    schema: {
      description: '200 READY when the database answers and has every migration of this build, else 503 NOT READY (text/plain). With Accept: application/json, the same statuses with a JSON body: the detail (the rate limiter\'s backend) when ready, the error body when not.',
      response: {
        200: { content: { 'text/plain': { schema: Type.String() }, 'application/json': { schema: ReadyDetailSchema } } },
        503: { content: { 'text/plain': { schema: Type.String() }, 'application/json': { schema: errorRef } } }
      }
    }
  }, async (request, reply) => {
    const json = wantsJson(request)
    reply.type(json ? 'application/json; charset=utf-8' : 'text/plain; charset=utf-8')
    const notReady = (message: string) => {
      reply.code(503)
      return json ? errorBody(503, 'NOT_READY', message) : 'NOT READY'
    }
    let pending: string[]
    try {
      // Its statements also show that the database answers.
      pending = await fastify.database.pendingMigrations()
    } catch (error) {
      request.log.warn({ err: error }, 'database unreachable: not ready')
      // As every other answer to a database failure (found by an outside probe: it alone had none).
      reply.header('retry-after', String(fastify.config.unavailableRetryAfterSeconds))
      return notReady('The database does not answer')
    }
    // Up but without this build's tables: every key lookup would fail, so no traffic yet.
    if (pending.length > 0) return notReady(`The database lacks ${pending.length} migration(s) of this build: run npm run db:migrate`)
    return json ? { status: 'READY' as const, database: 'up' as const, rateLimit: fastify.keyRateLimits.stats() } : 'READY'
  })
}

export default health
