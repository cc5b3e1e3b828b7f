import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { InvalidationTarget } from '../../../../../src/key-resolver.ts'
import { BadRequestError } from '../../../../../src/errors.ts'
import { authErrorResponses, bodyMayBeEmpty } from '../../../../../src/schemas.ts'

type FlushScope = 'all' | 'key' | 'user' | 'organization'

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
  usageFlushes: Type.Integer(),
  limitedClients: Type.Integer(),
  listener: Type.Object({
    state: Type.Union([Type.Literal('listening'), Type.Literal('disconnected'), Type.Literal('unsupported')]),
    notifications: Type.Integer(),
    reconnects: Type.Integer(),
    trustCapMs: Type.Union([Type.Integer(), Type.Null()]),
    disconnectedSince: Type.Union([Type.String({ format: 'date-time' }), Type.Null()])
  })
})

const Uuid = Type.String({ format: 'uuid' })

const authCache: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/', {
    config: adminOnly,
    schema: { summary: 'Auth cache statistics of this instance', response: { 200: Stats, ...authErrorResponses } }
  }, async () => ({ ...fastify.apiKeyAuth.stats(), listener: fastify.invalidation.stats() }))

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
    return { scope, ...await fastify.invalidation.publish(target) }
  })
}

export default authCache
