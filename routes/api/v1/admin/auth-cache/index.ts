import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { InvalidationTarget } from '../../../../../src/key-resolver.ts'
import { authErrorResponses } from '../../../../../src/schemas.ts'

const adminOnly = { auth: { scopes: ['auth:admin'] } }

const Stats = Type.Object({
  entries: Type.Integer(),
  negativeEntries: Type.Integer(),
  maxEntries: Type.Integer(),
  negativeMaxEntries: Type.Integer(),
  ttlMs: Type.Integer(),
  negativeTtlMs: Type.Integer(),
  staleIfErrorMs: Type.Integer(),
  hits: Type.Integer(),
  negativeHits: Type.Integer(),
  misses: Type.Integer(),
  lookups: Type.Integer(),
  lookupFailures: Type.Integer(),
  staleServed: Type.Integer(),
  evictions: Type.Integer(),
  invalidations: Type.Integer(),
  inFlight: Type.Integer(),
  usagePendingKeys: Type.Integer(),
  usageFlushes: Type.Integer()
})

const Uuid = Type.String({ format: 'uuid' })

const authCache: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/', {
    config: adminOnly,
    schema: { summary: 'Auth cache statistics of this instance', response: { 200: Stats, ...authErrorResponses } }
  }, async () => fastify.apiKeyAuth.stats())

  // The answer to "restart the gateway to clear caches".
  fastify.post('/flush', {
    config: adminOnly,
    // A flush of everything needs no body at all.
    preValidation: async (request) => { request.body ??= {} },
    schema: {
      summary: 'Flush cached keys: all, or those of one key, user or organization',
      body: Type.Union([
        Type.Object({}, { additionalProperties: false }),
        Type.Object({ keyId: Uuid }, { additionalProperties: false }),
        Type.Object({ userId: Uuid }, { additionalProperties: false }),
        Type.Object({ organizationId: Uuid }, { additionalProperties: false })
      ], { description: 'At most one of keyId, userId, organizationId; none (or no body) flushes everything.' }),
      response: {
        200: Type.Object({ scope: Type.Union([Type.Literal('all'), Type.Literal('key'), Type.Literal('user'), Type.Literal('organization')]), flushed: Type.Integer() }),
        ...authErrorResponses
      }
    }
  }, async (request) => {
    const body = request.body ?? {}
    const target: InvalidationTarget = 'keyId' in body
      ? { keyId: body.keyId }
      : 'userId' in body ? { userId: body.userId } : 'organizationId' in body ? { organizationId: body.organizationId } : { all: true }
    const scope = 'keyId' in target ? 'key' : 'userId' in target ? 'user' : 'organizationId' in target ? 'organization' : 'all'
    return { scope, flushed: fastify.apiKeyAuth.invalidate(target) } as const
  })
}

export default authCache
