import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { Claims } from '#src/auth/claims.ts'
import { RATE_LIMIT_SUCCESS_HEADERS, authErrorResponses } from '#src/schemas/common.ts'

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

/** A function of claims computed once per claims object: each is immutable and shared by every hit of its cache entry. */
function oncePerClaims<T> (compute: (claims: Claims) => T): (claims: Claims) => T {
  const computed = new WeakMap<Claims, T>()
  return (claims) => {
    let value = computed.get(claims)
    if (value === undefined) {
      value = compute(claims)
      computed.set(claims, value)
    }
    return value
  }
}

const auth: FastifyPluginAsyncTypebox = async (fastify) => {
  const serialisedClaims = oncePerClaims((claims) => JSON.stringify(claims))
  const identityHeaders = oncePerClaims(forwardHeaders)

  fastify.get('/me', {
    schema: { summary: "The calling key's claims", response: claimsResponse }
  }, (request, reply) => {
    reply.type('application/json; charset=utf-8').send(serialisedClaims(request.auth!))
  })

  // Forward-auth for nginx auth_request, Traefik ForwardAuth and Envoy ext_authz (HTTP).
  // Identity headers sent by the client are never read: the answer sets every one from the claims,
  // empty when the key has no organization, so a gateway that copies them overwrites the client's.
  // The answer is the headers: the body stays empty, as gateways ignore it.
  fastify.get('/verify', {
    schema: {
      summary: 'Forward-auth: 200 with identity headers (empty body), or the error',
      description: "Applies the key's policies to the client address (with TRUST_PROXY, the one the gateway forwards in X-Forwarded-For) and counts its rate limits.",
      response: {
        200: Type.Null({ description: 'Admitted: X-User-Id, X-User-Role, X-Context-Type, X-Organization-Id, X-Organization-External-Id, X-Organization-Name, X-Organization-Role, X-Api-Key-Id; for a key with a rate limit, RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset', headers: RATE_LIMIT_SUCCESS_HEADERS }),
        ...authErrorResponses
      }
    }
  }, (request, reply) => {
    reply.headers(identityHeaders(request.auth!)).send()
  })
}

export default auth
