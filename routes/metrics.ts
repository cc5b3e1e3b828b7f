import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

// Prometheus text format. Open like most exporters: counts, no identities; restrict it at the network
// (or scrape through a gateway) if that matters where you run it.
const metrics: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/metrics', {
    config: { auth: false },
    schema: { summary: 'Prometheus metrics', response: { 200: Type.String() } }
  }, async (_request, reply) => {
    reply.type(fastify.metrics.contentType)
    return fastify.metrics.metrics()
  })
}

export default metrics
