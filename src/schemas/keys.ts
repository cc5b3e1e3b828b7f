// The shapes of key management: one schema per shape, the TypeScript types derived from them.
import { Type, type Static } from 'typebox'
import { MAX_ALLOWED_CIDRS } from '#src/policy/cidr.ts'
import { MAX_RATE_LIMIT_REQUESTS, MAX_RATE_LIMIT_WINDOW_SECONDS } from '#src/policy/key-policy.ts'
import { DateTime, Nullable, NullableInput, Pagination, Uuid } from './common.ts'
import { LeakReportSchema, REVOCATION_REASONS } from './leaks.ts'

export const ADMIN_SCOPE = 'auth:admin'
export const MAX_SCOPES = 32
export const SCOPE_PATTERN = '^[a-z][a-z0-9_-]{0,30}(:[a-z0-9_*-]{1,30}){0,3}$'
export const MAX_GRACE_SECONDS = 30 * 24 * 3600
export const MAX_DESCRIPTION_LENGTH = 200

const Scopes = Type.Array(Type.String({ pattern: SCOPE_PATTERN, maxLength: 127 }), { maxItems: MAX_SCOPES })

export const RateLimitSchema = Type.Object({
  requests: Type.Integer({ minimum: 1, maximum: MAX_RATE_LIMIT_REQUESTS }),
  windowSeconds: Type.Integer({ minimum: 1, maximum: MAX_RATE_LIMIT_WINDOW_SECONDS, description: 'Windows are fixed and aligned on the epoch (a 3600 s window resets on the hour, UTC)' })
}, { additionalProperties: false, description: 'At most `requests` requests per window of `windowSeconds`' })

// Entries are checked by the service itself (src/policy/cidr.ts), so that a bad one is answered 400
// INVALID_CIDR naming it, and more than MAX_ALLOWED_CIDRS too.
const AllowedCidrsInput = Type.Array(Type.String(), {
  description: `IPv4/IPv6 networks (CIDRs, or single addresses) the key may be used from, at most ${MAX_ALLOWED_CIDRS}; [] means any address. IPv4-mapped IPv6 clients match their IPv4 networks.`
})

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
  replacedById: Nullable(Uuid),
  allowedCidrs: Type.Array(Type.String(), { description: 'Networks the key may be used from, normalised; empty: any address' }),
  rateLimit: Nullable(RateLimitSchema),
  revokedReason: Nullable(Type.Enum(REVOCATION_REASONS, { description: 'leaked: a leak report revoked the key; null: revoked by its owner, an operator or SQL (or not revoked)' })),
  leakReport: Nullable(LeakReportSchema)
}, { description: "replacedById: the key that replaced this one by rotation (a key has at most one successor). rateLimit: the key's own limit (its organization may have one too). leakReport: set when the key was reported leaked (GitHub secret scanning or the public route)" })
export type KeyView = Static<typeof KeyViewSchema>

/** The answer to create and rotate: the key itself, this once. */
export const CreatedKeySchema = Type.Object({
  key: Type.String({ description: 'The key itself. Shown in this response only: store it now.' }),
  ...Type.Pick(KeyViewSchema, ['id', 'hint', 'description', 'organizationId', 'scopes', 'createdAt', 'expiresAt', 'allowedCidrs', 'rateLimit']).properties
})
export type CreatedKey = Static<typeof CreatedKeySchema> & KeyView

export const CreateKeyBodySchema = Type.Object({
  description: Type.Optional(Type.String({ maxLength: MAX_DESCRIPTION_LENGTH })),
  expiresAt: Type.Optional(DateTime),
  organizationId: Type.Optional(Type.Union([Uuid, Type.Null()], { description: "Default: the calling key's organization; null: a personal key" })),
  scopes: Type.Optional(Scopes),
  userId: Type.Optional(Type.String({ format: 'uuid', lowercase: true, description: 'auth:admin only' })),
  allowedCidrs: Type.Optional(AllowedCidrsInput),
  rateLimit: Type.Optional(NullableInput(RateLimitSchema))
}, { additionalProperties: false })
export type CreateKeyBody = Static<typeof CreateKeyBodySchema>

export const UpdateKeyBodySchema = Type.Object({
  description: Type.Optional(NullableInput(Type.String({ maxLength: MAX_DESCRIPTION_LENGTH }))),
  expiresAt: Type.Optional(NullableInput(DateTime)),
  scopes: Type.Optional(Scopes),
  allowedCidrs: Type.Optional(AllowedCidrsInput),
  rateLimit: Type.Optional(NullableInput(RateLimitSchema))
}, { additionalProperties: false, description: 'Only the properties given change; null clears description, expiresAt (auth:admin) and rateLimit, [] clears allowedCidrs.' })
export type UpdateKeyBody = Static<typeof UpdateKeyBodySchema>

export const OrganizationRateLimitSchema = Type.Object({
  id: Uuid,
  slug: Type.String(),
  name: Type.String(),
  rateLimit: Nullable(RateLimitSchema),
  leakAutoRevoke: Type.Boolean({ description: 'true: a leak report revokes the key at once; false ("report only"): it records the report on the key, which keeps working' })
}, { description: "An organization's settings: the rate limit shared by all its keys, and what a leak report does" })
export type OrganizationRateLimit = Static<typeof OrganizationRateLimitSchema>

export const OrganizationSettingsBodySchema = Type.Object({
  rateLimit: Type.Optional(NullableInput(RateLimitSchema)),
  leakAutoRevoke: Type.Optional(Type.Boolean())
}, { additionalProperties: false, minProperties: 1, description: 'Only the properties given change; rateLimit null removes the limit.' })
export type OrganizationSettingsBody = Static<typeof OrganizationSettingsBodySchema>

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
