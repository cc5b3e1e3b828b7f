import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import { createKey, listKeys, revokeKey, rotateKey, updateKey, type Actor } from '#src/keys/management.ts'
import { authErrorResponses, bodyMayBeEmpty, errorResponses } from '#src/schemas/common.ts'
import { CreateKeyBodySchema, CreatedKeySchema, KeyIdParamsSchema, KeyViewSchema, ListKeysQuerySchema, RotateKeyBodySchema, UpdateKeyBodySchema } from '#src/schemas/keys.ts'

const apiKeys: FastifyPluginAsyncTypebox = async (fastify) => {
  const { prisma, invalidation } = fastify
  // The calling key's policy travels with it: what it creates or changes may not be less restricted.
  const actorOf = (request: FastifyRequest): Actor => ({ type: 'key', claims: request.auth!, policy: request.keyPolicy, address: request.ip, userAgent: request.headers['user-agent'] })

  fastify.post('/', {
    schema: {
      summary: 'Create a key (for yourself; for another user with auth:admin)',
      description: 'Without auth:admin the new key has no scope the calling key lacks, does not outlive it (its expiry defaults to the calling key\'s), and is not less restricted: its allowedCidrs must lie within the calling key\'s and its rateLimit be no looser (both default to the calling key\'s); a key created by a rate-limited key shares its rate-limit counter and keeps its window. The rules use the calling key as it is when the request is written, not as it was cached. For another user (auth:admin), organizationId defaults to the calling key\'s organization only if that user is a member of it, else the key is personal. 400 INVALID_CIDR names a bad network; 409 CONCURRENT_CHANGE: retry.',
      body: CreateKeyBodySchema,
      response: { 201: CreatedKeySchema, ...errorResponses(404, 409), ...authErrorResponses }
    },
    // Every property has a default: a POST with no body creates a key as `{}` does.
    preValidation: bodyMayBeEmpty
  }, async (request, reply) => {
    const { expiresAt, ...body } = request.body
    const created = await createKey(prisma, actorOf(request), { ...body, ...(expiresAt === undefined ? {} : { expiresAt: new Date(expiresAt) }) })
    reply.code(201).header('cache-control', 'no-store')
    return created
  })

  fastify.get('/', {
    schema: {
      summary: 'List your keys (auth:admin: any user or organization); never their hashes',
      querystring: ListKeysQuerySchema,
      response: { 200: Type.Array(KeyViewSchema), ...authErrorResponses }
    }
  }, async (request) => listKeys(prisma, actorOf(request), request.query))

  fastify.patch('/:id', {
    schema: {
      summary: 'Change a key: description, expiry, scopes, allowed networks, rate limit (your own; any with auth:admin)',
      description: 'Only the properties given change. Without auth:admin, scopes can only narrow and expiresAt only move earlier (never past the calling key\'s own expiry), and allowedCidrs and rateLimit may not be less restricted than the calling key\'s as it is now (a key on the calling key\'s rate-limit counter keeps its window). Takes effect on every instance at once. A revoked or expired key answers 409 API_KEY_NOT_ACTIVE; another user\'s key 404.',
      params: KeyIdParamsSchema,
      body: UpdateKeyBodySchema,
      response: { 200: KeyViewSchema, ...errorResponses(404, 409), ...authErrorResponses }
    },
    preValidation: bodyMayBeEmpty
  }, async (request) => {
    const { expiresAt, ...changes } = request.body
    const updated = await updateKey(prisma, actorOf(request), request.params.id, {
      ...changes,
      ...(expiresAt === undefined ? {} : { expiresAt: expiresAt === null ? null : new Date(expiresAt) })
    })
    // At once here; the database trigger tells the other instances too.
    await invalidation.publish({ keyId: updated.id })
    return updated
  })

  fastify.delete('/:id', {
    schema: {
      summary: 'Revoke a key (your own; any with auth:admin), on every instance',
      params: KeyIdParamsSchema,
      response: { 204: Type.Null(), ...errorResponses(404, 409), ...authErrorResponses }
    }
  }, async (request, reply) => {
    const revoked = await revokeKey(prisma, actorOf(request), request.params.id)
    // At once here; the database trigger tells the other instances too.
    await invalidation.publish({ keyId: revoked.id })
    reply.code(204)
  })

  fastify.post('/:id/rotate', {
    schema: {
      summary: 'Issue a replacement key; the old one keeps working for the grace period, then expires',
      description: 'A key has at most one successor: rotating it again answers 409 API_KEY_NOT_ACTIVE. The successor of a rate-limited key shares its rate-limit counter (during the grace period and after).',
      params: KeyIdParamsSchema,
      body: RotateKeyBodySchema,
      response: { 201: CreatedKeySchema, ...errorResponses(404, 409), ...authErrorResponses }
    },
    preValidation: bodyMayBeEmpty
  }, async (request, reply) => {
    const { created, old } = await rotateKey(prisma, actorOf(request), request.params.id, request.body.gracePeriodSeconds)
    await invalidation.publish({ keyId: old.id })
    reply.code(201).header('cache-control', 'no-store')
    return created
  })
}

export default apiKeys
