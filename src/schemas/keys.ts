// The shapes of key management: one schema per shape, the TypeScript types derived from them.
import { Type, type Static } from 'typebox'
import { DateTime, Nullable, Pagination, Uuid } from './common.ts'

export const ADMIN_SCOPE = 'auth:admin'
export const MAX_SCOPES = 32
export const SCOPE_PATTERN = '^[a-z][a-z0-9_-]{0,30}(:[a-z0-9_*-]{1,30}){0,3}$'
export const MAX_GRACE_SECONDS = 30 * 24 * 3600
export const MAX_DESCRIPTION_LENGTH = 200

const Scopes = Type.Array(Type.String({ pattern: SCOPE_PATTERN, maxLength: 127 }), { maxItems: MAX_SCOPES })

/** A key as people see it: never the key, never its hash. */
export const KeyViewSchema = Type.Object({
  id: Uuid,
  userId: Uuid,
  hint: Type.String({ description: 'Non-secret label, e.g. battra_AbCd…wXyZ' }),
  description: Nullable(Type.String()),
  organizationId: Nullable(Uuid),
  scopes: Type.Array(Type.String()),
  createdAt: DateTime,
  lastUsedAt: Nullable(DateTime),
  expiresAt: Nullable(DateTime),
  revokedAt: Nullable(DateTime),
  replacedById: Nullable(Uuid)
}, { description: 'replacedById: the key that replaced this one by rotation (a key has at most one successor)' })
export type KeyView = Static<typeof KeyViewSchema>

/** The answer to create and rotate: the key itself, this once. */
export const CreatedKeySchema = Type.Object({
  key: Type.String({ description: 'The key itself. Shown in this response only: store it now.' }),
  ...Type.Pick(KeyViewSchema, ['id', 'hint', 'description', 'organizationId', 'scopes', 'createdAt', 'expiresAt']).properties
})
export type CreatedKey = Static<typeof CreatedKeySchema> & KeyView

export const CreateKeyBodySchema = Type.Object({
  description: Type.Optional(Type.String({ maxLength: MAX_DESCRIPTION_LENGTH })),
  expiresAt: Type.Optional(DateTime),
  organizationId: Type.Optional(Type.Union([Uuid, Type.Null()], { description: "Default: the calling key's organization; null: a personal key" })),
  scopes: Type.Optional(Scopes),
  userId: Type.Optional(Type.String({ format: 'uuid', lowercase: true, description: 'auth:admin only' }))
}, { additionalProperties: false })
export type CreateKeyBody = Static<typeof CreateKeyBodySchema>

export const ListKeysQuerySchema = Type.Object({
  userId: Type.Optional(Uuid),
  organizationId: Type.Optional(Uuid),
  includeRevoked: Type.Boolean({ default: false }),
  ...Pagination
})
export type ListKeysQuery = Static<typeof ListKeysQuerySchema>

export const KeyIdParamsSchema = Type.Object({ id: Uuid })

export const RotateKeyBodySchema = Type.Object({
  gracePeriodSeconds: Type.Integer({ minimum: 0, maximum: MAX_GRACE_SECONDS, default: 0, description: 'How long the old key keeps working' })
}, { additionalProperties: false })
