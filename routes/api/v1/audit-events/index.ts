import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { listEvents } from '#src/audit/events.ts'
import { AuditEventPageSchema, ListAuditEventsQuerySchema } from '#src/schemas/audit.ts'
import { authErrorResponses } from '#src/schemas/common.ts'

const auditEvents: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/', {
    schema: {
      summary: 'The audit trail, newest first: auth:admin sees every event; any other key those of its own user and its organization',
      description: 'Filters: keyId, userId, organizationId, action, since (or from, inclusive) and until (or to, exclusive). Pages: pass nextCursor as cursor.',
      querystring: ListAuditEventsQuerySchema,
      response: { 200: AuditEventPageSchema, ...authErrorResponses }
    }
  }, async (request) => listEvents(fastify.prisma, { type: 'key', claims: request.auth! }, request.query))
}

export default auditEvents
