import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

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
    schema: { response: { 200: Type.String(), 503: Type.String() } }
  }, async (request, reply) => {
    reply.type('text/plain; charset=utf-8')
    try {
      await fastify.database.pool.query('SELECT 1')
      return 'READY'
    } catch (error) {
      request.log.warn({ err: error }, 'database unreachable: not ready')
      reply.code(503)
      return 'NOT READY'
    }
  })
}

export default health
