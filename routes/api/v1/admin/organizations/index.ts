import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { updateOrganization } from '#src/keys/management.ts'
import { Uuid, authErrorResponses, errorResponses } from '#src/schemas/common.ts'
import { OrganizationRateLimitSchema, OrganizationSettingsBodySchema } from '#src/schemas/keys.ts'

const organizations: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.patch('/:id', {
    config: { auth: { scopes: ['auth:admin'] } },
    schema: {
      summary: "Change an organization's settings: the rate limit shared by all its keys (a tenant quota), and what a leak report does to its keys",
      description: 'Only the properties given change (at least one). rateLimit is counted together with each key\'s own limit: a request must pass both; takes effect on every instance at once. leakAutoRevoke false ("report only"): a leak report records itself on the key (leakReport) without revoking it.',
      params: Type.Object({ id: Uuid }),
      body: OrganizationSettingsBodySchema,
      response: { 200: OrganizationRateLimitSchema, ...errorResponses(404), ...authErrorResponses }
    }
  }, async (request) => {
    const organization = await updateOrganization(fastify.prisma, { type: 'key', claims: request.auth!, policy: request.keyPolicy, address: request.ip, userAgent: request.headers['user-agent'] }, request.params.id, request.body)
    if (request.body.rateLimit !== undefined) await fastify.invalidation.publish({ organizationId: organization.id })
    return organization
  })
}

export default organizations
