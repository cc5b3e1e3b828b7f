import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { Claims } from '../../../../src/claims.ts'
import { authErrorResponses } from '../../../../src/schemas.ts'

const claimsResponse = { 200: Type.Ref('Claims'), ...authErrorResponses }

/** The identity headers a gateway copies onto the upstream request, always all of them, empty when absent. */
export function forwardHeaders (claims: Claims): Record<string, string> {
  return {
    'x-user-id': claims.userId,
    'x-user-role': claims.role,
    'x-context-type': claims.contextType,
    'x-organization-id': claims.organizationId ?? '',
    'x-organization-external-id': claims.organizationExternalId ?? '',
    'x-organization-name': claims.organizationName ?? '',
    'x-organization-role': claims.orgRole ?? '',
    'x-api-key-id': claims.keyId
  }
}

const auth: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/me', {
    schema: { summary: "The calling key's claims", response: claimsResponse }
  }, async (request) => request.auth!)

  // Forward-auth for nginx auth_request, Traefik ForwardAuth and Envoy ext_authz (HTTP).
  // Identity headers sent by the client are never read: the answer sets every one from the claims,
  // empty when the key has no organization, so a gateway that copies them overwrites the client's.
  fastify.get('/verify', {
    schema: { summary: 'Forward-auth: 200 with identity headers, or the error', response: claimsResponse }
  }, async (request, reply) => {
    const claims = request.auth!
    reply.headers(forwardHeaders(claims))
    return claims
  })
}

export default auth
