// The invalidation channel's payloads: written by the database triggers (prisma/migrations/
// *_auth_invalidation_triggers) and by the service itself (admin flush, key management).
import { isUuid } from '#src/schemas/common.ts'

/** What an invalidation concerns: everything, one key, a user's keys, an organization's, or a membership's. */
export type InvalidationTarget =
  | { all: true }
  | { keyId: string }
  | { userId: string }
  | { organizationId: string }
  /** A membership: the keys of that user in that organization. */
  | { organizationId: string, userId: string }

export const INVALIDATION_CHANNEL = 'battra_auth_invalidation'

export interface InvalidationMessage {
  target: InvalidationTarget
  /** A key row was added: unknown keys remembered negatively may now exist. */
  keyAdded: boolean
}

/** Reads a payload; anything unreadable is taken as "all", since forgetting too much is always safe. */
export function parseInvalidation (payload: string): InvalidationMessage {
  const [kind, first, second] = payload.split(':')
  const valid = first !== undefined && isUuid(first)
  if (kind === 'key' && valid) return { target: { keyId: first }, keyAdded: false }
  if (kind === 'key+' && valid) return { target: { keyId: first }, keyAdded: true }
  if (kind === 'user' && valid) return { target: { userId: first }, keyAdded: false }
  if (kind === 'org' && valid) return { target: { organizationId: first }, keyAdded: false }
  if (kind === 'member' && valid && second !== undefined && isUuid(second)) {
    return { target: { organizationId: first, userId: second }, keyAdded: false }
  }
  return { target: { all: true }, keyAdded: payload !== 'all' }
}

export function formatInvalidation (target: InvalidationTarget): string {
  if ('all' in target) return 'all'
  if ('keyId' in target) return `key:${target.keyId}`
  if ('userId' in target && 'organizationId' in target) return `member:${target.organizationId}:${target.userId}`
  if ('userId' in target) return `user:${target.userId}`
  return `org:${target.organizationId}`
}
