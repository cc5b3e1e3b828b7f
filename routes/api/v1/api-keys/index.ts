import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { Claims } from '../../../../src/claims.ts'
import { ForbiddenError } from '../../../../src/errors.ts'
import { MAX_GRACE_SECONDS, MAX_SCOPES, SCOPE_PATTERN, createKey, listKeys, revokeKey, rotateKey } from '../../../../src/key-management.ts'
import { authErrorResponses, bodyMayBeEmpty } from '../../../../src/schemas.ts'

const ADMIN_SCOPE = 'auth:admin'
const Uuid = Type.String({ format: 'uuid' })
const NullableDate = Type.Union([Type.String({ format: 'date-time' }), Type.Null()])
const errorRef = Type.Ref('ErrorResponse')

const KeyView = Type.Object({
  id: Uuid,
  userId: Uuid,
  hint: Type.String({ description: 'Non-secret label, e.g. battra_AbCd…wXyZ' }),
  description: Type.Union([Type.String(), Type.Null()]),
  organizationId: Type.Union([Uuid, Type.Null()]),
  scopes: Type.Array(Type.String()),
  createdAt: Type.String({ format: 'date-time' }),
  lastUsedAt: NullableDate,
  expiresAt: NullableDate,
  revokedAt: NullableDate
})

const CreatedKey = Type.Object({
  id: Uuid,
  key: Type.String({ description: 'The key itself. Shown in this response only: store it now.' }),
  hint: Type.String(),
  description: Type.Union([Type.String(), Type.Null()]),
  organizationId: Type.Union([Uuid, Type.Null()]),
  scopes: Type.Array(Type.String()),
  createdAt: Type.String({ format: 'date-time' }),
  expiresAt: NullableDate
})

const KeyId = Type.Object({ id: Uuid })
const Scopes = Type.Array(Type.String({ pattern: SCOPE_PATTERN, maxLength: 127 }), { maxItems: MAX_SCOPES })

const isAdmin = (claims: Claims) => claims.scopes.includes(ADMIN_SCOPE)

const apiKeys: FastifyPluginAsyncTypebox = async (fastify) => {
  const { prisma, invalidation } = fastify

  fastify.post('/', {
    schema: {
      summary: 'Create a key (for yourself; for another user with auth:admin)',
      body: Type.Object({
        description: Type.Optional(Type.String({ maxLength: 200 })),
        expiresAt: Type.Optional(Type.String({ format: 'date-time' })),
        organizationId: Type.Optional(Type.Union([Uuid, Type.Null()], { description: "Default: the calling key's organization; null: a personal key" })),
        scopes: Type.Optional(Scopes),
        userId: Type.Optional(Type.String({ format: 'uuid', description: 'auth:admin only' }))
      }, { additionalProperties: false }),
      response: { 201: CreatedKey, 404: errorRef, 409: errorRef, ...authErrorResponses }
    }
  }, async (request, reply) => {
    const caller = request.auth!
    const body = request.body
    const userId = body.userId ?? caller.userId
    if (userId !== caller.userId && !isAdmin(caller)) throw new ForbiddenError(`Creating keys for other users requires the scope ${ADMIN_SCOPE}`)
    const scopes = body.scopes ?? []
    const wider = isAdmin(caller) ? undefined : scopes.find((scope) => !caller.scopes.includes(scope))
    if (wider !== undefined) throw new ForbiddenError(`The scope ${wider} is wider than the calling key's scopes`)
    const organizationId = body.organizationId !== undefined
      ? body.organizationId
      : userId === caller.userId ? caller.organizationId : null
    const created = await createKey(prisma, {
      userId,
      organizationId,
      description: body.description,
      scopes,
      expiresAt: body.expiresAt === undefined ? null : new Date(body.expiresAt)
    })
    reply.code(201).header('cache-control', 'no-store')
    return created
  })

  fastify.get('/', {
    schema: {
      summary: 'List your keys (auth:admin: any user or organization); never their hashes',
      querystring: Type.Object({
        userId: Type.Optional(Uuid),
        organizationId: Type.Optional(Uuid),
        includeRevoked: Type.Boolean({ default: false }),
        limit: Type.Integer({ minimum: 1, maximum: 100, default: 50 }),
        offset: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 0 })
      }),
      response: { 200: Type.Array(KeyView), ...authErrorResponses }
    }
  }, async (request) => {
    const caller = request.auth!
    const { userId, organizationId, includeRevoked, limit, offset } = request.query
    if (!isAdmin(caller) && userId !== undefined && userId !== caller.userId) {
      throw new ForbiddenError(`Listing other users' keys requires the scope ${ADMIN_SCOPE}`)
    }
    return listKeys(prisma, {
      userId: isAdmin(caller) ? userId : caller.userId,
      organizationId,
      includeRevoked,
      limit,
      offset
    })
  })

  fastify.delete('/:id', {
    schema: {
      summary: 'Revoke a key (your own; any with auth:admin), on every instance',
      params: KeyId,
      response: { 204: Type.Null(), 404: errorRef, ...authErrorResponses }
    }
  }, async (request, reply) => {
    const caller = request.auth!
    await revokeKey(prisma, request.params.id, isAdmin(caller) ? undefined : caller.userId)
    // At once here; the database trigger tells the other instances too.
    await invalidation.publish({ keyId: request.params.id })
    reply.code(204)
  })

  fastify.post('/:id/rotate', {
    schema: {
      summary: 'Issue a replacement key; the old one keeps working for the grace period, then expires',
      params: KeyId,
      body: Type.Object({
        gracePeriodSeconds: Type.Integer({ minimum: 0, maximum: MAX_GRACE_SECONDS, default: 0 })
      }, { additionalProperties: false }),
      response: { 201: CreatedKey, 404: errorRef, 409: errorRef, ...authErrorResponses }
    },
    preValidation: bodyMayBeEmpty
  }, async (request, reply) => {
    const caller = request.auth!
    const { created } = await rotateKey(prisma, request.params.id, request.body.gracePeriodSeconds, isAdmin(caller) ? undefined : caller.userId)
    await invalidation.publish({ keyId: request.params.id })
    reply.code(201).header('cache-control', 'no-store')
    return created
  })
}

export default apiKeys
