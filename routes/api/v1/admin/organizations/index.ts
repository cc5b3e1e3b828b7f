import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { setOrganizationRateLimit } from '#src/keys/management.ts'
import { NullableInput, Uuid, authErrorResponses, errorResponses } from '#src/schemas/common.ts'
import { OrganizationRateLimitSchema, RateLimitSchema } from '#src/schemas/keys.ts'

const organizations: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.patch('/:id', {
    config: { auth: { scopes: ['auth:admin'] } },
    schema: {
      summary: "Set or remove an organization's rate limit, shared by all its keys (a tenant quota)",
      description: "Counted together with each key's own limit: a request must pass both. Takes effect on every instance at once.",
      params: Type.Object({ id: Uuid }),
      body: Type.Object({ rateLimit: NullableInput(RateLimitSchema) }, { additionalProperties: false }),
      response: { 200: OrganizationRateLimitSchema, ...errorResponses(404), ...authErrorResponses }
    }
  }, async (request) => {
    const organization = await setOrganizationRateLimit(fastify.prisma, { type: 'key', claims: request.auth!, policy: request.keyPolicy, address: request.ip, userAgent: request.headers['user-agent'] }, request.params.id, request.body.rateLimit)
    await fastify.invalidation.publish({ organizationId: organization.id })
    return organization
  })
}

export default organizations
