import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { InvalidationTarget } from '#src/cache/invalidation.ts'
import { BadRequestError } from '#src/errors.ts'
import { AuthCacheStatsSchema } from '#src/schemas/cache.ts'
import { Uuid, authErrorResponses, bodyMayBeEmpty } from '#src/schemas/common.ts'

type FlushScope = 'all' | 'key' | 'user' | 'organization'

const adminOnly = { auth: { scopes: ['auth:admin'] } }

const authCache: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/', {
    config: adminOnly,
    schema: { summary: 'Auth cache statistics of this instance', response: { 200: AuthCacheStatsSchema, ...authErrorResponses } }
  }, async () => ({ ...fastify.authCache.stats(), ...fastify.apiKeyAuth.stats(), listener: fastify.invalidation.stats(), rateLimit: fastify.keyRateLimits.stats() }))

  // The answer to "restart the gateway to clear caches".
  fastify.post('/flush', {
    config: adminOnly,
    // A flush of everything needs no body at all.
    preValidation: bodyMayBeEmpty,
    schema: {
      summary: 'Flush cached keys on every instance: all, or those of one key, user or organization',
      body: Type.Object({
        keyId: Type.Optional(Uuid),
        userId: Type.Optional(Uuid),
        organizationId: Type.Optional(Uuid)
      }, { additionalProperties: false, description: 'At most one of keyId, userId, organizationId; none (or no body) flushes everything.' }),
      response: {
        200: Type.Object({
          scope: Type.Union([Type.Literal('all'), Type.Literal('key'), Type.Literal('user'), Type.Literal('organization')]),
          flushed: Type.Integer({ description: 'Entries flushed on this instance' }),
          broadcast: Type.Boolean({ description: 'Whether the flush was sent to every other instance (false on the embedded database)' })
        }),
        ...authErrorResponses
      }
    }
  }, async (request) => {
    const { keyId, userId, organizationId } = request.body
    const given = [keyId, userId, organizationId].filter((id) => id !== undefined).length
    if (given > 1) throw new BadRequestError('Flush one key, user or organization at a time, or everything')
    const [scope, target]: [FlushScope, InvalidationTarget] = keyId !== undefined
      ? ['key', { keyId }]
      : userId !== undefined
        ? ['user', { userId }]
        : organizationId !== undefined ? ['organization', { organizationId }] : ['all', { all: true }]
    const answer = { scope, ...await fastify.invalidation.publish(target) }
    // The flush has happened whatever the database says: a failure to record it is logged, not answered.
    await fastify.audit.record({ type: 'key', claims: request.auth!, address: request.ip, userAgent: request.headers['user-agent'] }, 'cache.flushed',
      { keyId: keyId ?? null, userId: userId ?? null, organizationId: organizationId ?? null }, { scope, flushed: answer.flushed, broadcast: answer.broadcast })
    return answer
  })
}

export default authCache
