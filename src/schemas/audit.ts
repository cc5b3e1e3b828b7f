// The shapes of the audit trail (GET /api/v1/audit-events): one schema per shape, types derived from them.
import { Type, type Static } from 'typebox'
import { DateTime, Nullable, Uuid } from './common.ts'

/** Actions the database triggers and the service's sweeps record (and webhooks can subscribe to). */
export const AUDIT_ACTIONS = [
  'key.created', 'key.rotated', 'key.revoked', 'key.leaked', 'key.updated', 'key.deleted', 'key.expired', 'key.first_used',
  'key.expiring', 'key.idle', 'cache.flushed', 'membership.changed', 'user.created', 'user.updated', 'user.deleted',
  'organization.created', 'organization.updated', 'organization.deleted', 'audit.pruned'
] as const
export type AuditAction = typeof AUDIT_ACTIONS[number]

/** Actor types: a key (through the API), the command line, the service itself, or the database role of an outside writer. */
export const ACTOR_TYPES = ['key', 'cli', 'system', 'database'] as const

export const ActorSchema = Type.Object({
  type: Type.String({ description: `${ACTOR_TYPES.join(', ')} (database: a change made outside the service, by role)` }),
  keyId: Type.Optional(Uuid),
  userId: Type.Optional(Uuid),
  role: Type.Optional(Type.String({ description: 'database actors: the PostgreSQL role' })),
  task: Type.Optional(Type.String({ description: 'system actors: usage, sweep' })),
  reason: Type.Optional(Type.String({ description: 'why, when the actor said (e.g. leaked)' })),
  reporter: Type.Optional(Type.String({ description: 'leaked-key revocations: who reported the key (github, public)' }))
})

const Changes = Type.Record(Type.String(), Type.Object({ before: Type.Unknown(), after: Type.Unknown() }), {
  description: 'Claim-relevant fields that changed (snake_case column names), before and after. Never a secret or a hash.'
})

export const AuditEventSchema = Type.Object({
  id: Uuid,
  seq: Type.String({ description: 'Position in the hash chain' }),
  at: DateTime,
  action: Type.String({ description: AUDIT_ACTIONS.join(', ') }),
  actor: ActorSchema,
  keyId: Type.Optional(Uuid),
  userId: Type.Optional(Uuid),
  organizationId: Type.Optional(Uuid),
  address: Type.Optional(Type.String()),
  userAgent: Type.Optional(Type.String()),
  changes: Type.Optional(Changes),
  details: Type.Optional(Type.Record(Type.String(), Type.Unknown()))
})
export type AuditEventView = Static<typeof AuditEventSchema>

export const AuditCursor = Type.String({ pattern: '^[0-9]{1,18}$', description: 'nextCursor of the previous page' })

export const ListAuditEventsQuerySchema = Type.Object({
  keyId: Type.Optional(Uuid),
  userId: Type.Optional(Uuid),
  organizationId: Type.Optional(Uuid),
  action: Type.Optional(Type.String({ pattern: '^[a-z_]+(\\.[a-z_]+){0,3}$', maxLength: 64 })),
  since: Type.Optional(DateTime),
  until: Type.Optional(DateTime),
  from: Type.Optional(DateTime),
  to: Type.Optional(DateTime),
  cursor: Type.Optional(AuditCursor),
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 50 })
}, { additionalProperties: false, description: 'since/from: at or after; until/to: before. Newest first.' })
export type ListAuditEventsQuery = Static<typeof ListAuditEventsQuerySchema>

export const AuditEventPageSchema = Type.Object({
  events: Type.Array(AuditEventSchema),
  nextCursor: Nullable(Type.String())
})
export type AuditEventPage = Static<typeof AuditEventPageSchema>
