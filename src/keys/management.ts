// Creating, listing, revoking and rotating keys: who may do what, and the data rules. Shared by the HTTP
// routes and the command line.
//
// A calling key without auth:admin manages only its own user's keys whose scopes it holds itself (any
// other key answers 404, as if absent); a key it creates or rotates into has no scope it lacks, does not
// outlive it (its expiry as it stood before the request), and belongs to an organization the user is
// still a member of. A key has at most one successor: the conditional update in rotateKey lets exactly
// one of any number of concurrent rotations win.
import { generateApiKey, hashApiKey, hintFor } from '#src/auth/api-key.ts'
import type { Claims } from '#src/auth/claims.ts'
import type { PrismaClient } from '#src/db/pool.ts'
import type { Prisma } from '#src/generated/prisma/client.ts'
import {
  ApiKeyNotActiveError, ApiKeyNotFoundError, ForbiddenError, InvalidExpiryError, InvalidGracePeriodError,
  InvalidScopesError, NotAMemberError, TargetUserDisabledError, UserNotFoundError
} from '#src/errors.ts'
import { ADMIN_SCOPE, KeyViewSchema, MAX_GRACE_SECONDS, MAX_SCOPES, SCOPE_PATTERN, type CreatedKey, type KeyView } from '#src/schemas/keys.ts'

const SCOPE = new RegExp(SCOPE_PATTERN)

/**
 * Who asks: a key (its claims as they stood before the request, and where the request came from), or
 * an operator on the command line.
 */
export type Actor =
  | { type: 'key', claims: Claims, address?: string, userAgent?: string }
  | { type: 'cli' }

type Transaction = Parameters<Parameters<PrismaClient['$transaction']>[0]>[0]
/** What key management reads and writes through: the client, or a transaction of it. */
type Db = PrismaClient | Transaction

/** The actor as the database records it (battra.actor, read by triggers): never a key or a hash. */
export function actorRecord (actor: Actor): Record<string, string> {
  if (actor.type === 'cli') return { type: 'cli' }
  const record: Record<string, string> = { type: 'key', keyId: actor.claims.keyId, userId: actor.claims.userId }
  if (actor.address !== undefined) record.address = actor.address
  if (actor.userAgent !== undefined) record.userAgent = actor.userAgent.slice(0, 256)
  return record
}

/**
 * Runs a change in one transaction that names its actor (the transaction-local setting battra.actor),
 * so that what the database records of the change (triggers) knows who made it.
 */
export async function asActor<T> (prisma: PrismaClient, actor: Actor, work: (tx: Transaction) => Promise<T>): Promise<T> {
  // A busy machine must not turn a slow change into a failed one: the transaction gets time.
  return prisma.$transaction(async (tx) => {
    await tx.$executeRaw`SELECT set_config('battra.actor', ${JSON.stringify(actorRecord(actor))}, true)`
    return work(tx)
  }, { maxWait: 10_000, timeout: 30_000 })
}

export const isAdmin = (actor: Actor): boolean => actor.type === 'cli' || actor.claims.scopes.includes(ADMIN_SCOPE)

// The columns of a key's view, from its schema: one list for the select and the answer.
const VIEW = Object.fromEntries(Object.keys(KeyViewSchema.properties).map((name) => [name, true])) as { [K in keyof KeyView]: true }

type KeyRow = Prisma.ApiKeyGetPayload<{ select: typeof VIEW }>

const iso = (date: Date | null): string | null => date === null ? null : date.toISOString()

function toView (row: KeyRow): KeyView {
  return { ...row, createdAt: row.createdAt.toISOString(), lastUsedAt: iso(row.lastUsedAt), expiresAt: iso(row.expiresAt), revokedAt: iso(row.revokedAt) }
}

export function validateScopes (scopes: readonly string[]): string[] {
  const unique = [...new Set(scopes)]
  if (unique.length > MAX_SCOPES) throw new InvalidScopesError(`At most ${MAX_SCOPES} scopes`)
  const bad = unique.find((scope) => !SCOPE.test(scope))
  if (bad !== undefined) throw new InvalidScopesError(`Invalid scope "${bad}": lowercase words separated by colons, e.g. projects:read`)
  return unique
}

/** The latest expiry (ms) a key made by this actor may have: the calling key's own, unless admin. */
function lifetimeBound (actor: Actor): number {
  if (isAdmin(actor) || actor.type !== 'key' || actor.claims.expiresAt === null) return Number.POSITIVE_INFINITY
  return Date.parse(actor.claims.expiresAt)
}

function assertWithinLifetime (actor: Actor, expiresAt: Date | null): void {
  const bound = lifetimeBound(actor)
  if (bound === Number.POSITIVE_INFINITY) return
  if (expiresAt === null || expiresAt.getTime() > bound) {
    throw new ForbiddenError(`A key cannot outlive the calling key, which expires at ${new Date(bound).toISOString()}`)
  }
}

function assertScopesHeld (actor: Actor, scopes: readonly string[]): void {
  if (isAdmin(actor) || actor.type !== 'key') return
  const wider = scopes.find((scope) => !actor.claims.scopes.includes(scope))
  if (wider !== undefined) throw new ForbiddenError(`The scope ${wider} is wider than the calling key's scopes`)
}

/** Whether the actor may act on the key at all; keys it may not are answered as if absent. */
function mayManage (actor: Actor, key: { userId: string, scopes: readonly string[] }): boolean {
  if (isAdmin(actor) || actor.type !== 'key') return true
  return key.userId === actor.claims.userId && key.scopes.every((scope) => actor.claims.scopes.includes(scope))
}

async function assertUsable (prisma: Db, userId: string, organizationId: string | null): Promise<void> {
  const user = await prisma.user.findUnique({
    where: { id: userId },
    select: { disabledAt: true, memberships: organizationId === null ? false : { where: { organizationId }, select: { id: true } } }
  })
  if (user === null) throw new UserNotFoundError()
  if (user.disabledAt !== null) throw new TargetUserDisabledError()
  if (organizationId !== null && user.memberships.length === 0) throw new NotAMemberError()
}

const isActive = (key: { revokedAt: Date | null, expiresAt: Date | null }, now: Date) =>
  key.revokedAt === null && (key.expiresAt === null || key.expiresAt.getTime() > now.getTime())

export interface NewKey {
  /** Default: the calling key's user (required from the command line). */
  userId?: string
  /** Default: the calling key's organization when the key is for its own user; null: a personal key. */
  organizationId?: string | null
  description?: string | null
  scopes?: readonly string[]
  /** Default: the calling key's expiry when it has one (and no auth:admin), else none. */
  expiresAt?: Date | null
}

/** Creates a key for an existing, enabled user, in an organization the user belongs to (or personal). */
export async function createKey (prisma: PrismaClient, actor: Actor, spec: NewKey, now = new Date()): Promise<CreatedKey> {
  const caller = actor.type === 'key' ? actor.claims : undefined
  const userId = spec.userId ?? caller?.userId
  if (userId === undefined) throw new UserNotFoundError()
  if (caller !== undefined && userId !== caller.userId && !isAdmin(actor)) {
    throw new ForbiddenError(`Creating keys for other users requires the scope ${ADMIN_SCOPE}`)
  }
  const scopes = validateScopes(spec.scopes ?? [])
  assertScopesHeld(actor, scopes)
  const organizationId = spec.organizationId !== undefined
    ? spec.organizationId
    : caller !== undefined && userId === caller.userId ? caller.organizationId : null
  const bound = lifetimeBound(actor)
  const expiresAt = spec.expiresAt !== undefined ? spec.expiresAt : bound === Number.POSITIVE_INFINITY ? null : new Date(bound)
  if (expiresAt !== null && expiresAt.getTime() <= now.getTime()) throw new InvalidExpiryError('expiresAt must be in the future')
  assertWithinLifetime(actor, expiresAt)
  const key = generateApiKey()
  const row = await asActor(prisma, actor, async (tx) => {
    await assertUsable(tx, userId, organizationId)
    return tx.apiKey.create({
      data: { tokenHash: hashApiKey(key), hint: hintFor(key), userId, organizationId, description: spec.description ?? null, scopes, expiresAt },
      select: VIEW
    })
  })
  return { ...toView(row), key }
}

export interface KeyFilter {
  userId?: string
  organizationId?: string
  includeRevoked?: boolean
  limit?: number
  offset?: number
}

/** Keys by owner and organization. Without auth:admin, only the calling key's user's own. */
export async function listKeys (prisma: PrismaClient, actor: Actor, filter: KeyFilter): Promise<KeyView[]> {
  let userId = filter.userId
  if (!isAdmin(actor) && actor.type === 'key') {
    if (userId !== undefined && userId !== actor.claims.userId) {
      throw new ForbiddenError(`Listing other users' keys requires the scope ${ADMIN_SCOPE}`)
    }
    userId = actor.claims.userId
  }
  const rows = await prisma.apiKey.findMany({
    where: { userId, organizationId: filter.organizationId, ...(filter.includeRevoked === true ? {} : { revokedAt: null }) },
    orderBy: [{ createdAt: 'desc' }, { id: 'asc' }],
    take: filter.limit ?? 100,
    skip: filter.offset ?? 0,
    select: VIEW
  })
  return rows.map(toView)
}

async function findManageable (prisma: Db, actor: Actor, id: string): Promise<KeyRow> {
  const row = await prisma.apiKey.findUnique({ where: { id: id.toLowerCase() }, select: VIEW })
  if (row === null || !mayManage(actor, row)) throw new ApiKeyNotFoundError()
  return row
}

/** Revokes an active key (one in its rotation grace period included): it stops working on every instance. */
export async function revokeKey (prisma: PrismaClient, actor: Actor, id: string, now = new Date()): Promise<KeyView> {
  return asActor(prisma, actor, async (tx) => {
    const key = await findManageable(tx, actor, id)
    if (!isActive(key, now)) throw new ApiKeyNotActiveError('The key is already revoked or expired')
    // Conditional: of two concurrent revocations, the second finds nothing left to do.
    const { count } = await tx.apiKey.updateMany({ where: { id: key.id, revokedAt: null }, data: { revokedAt: now } })
    if (count === 0) throw new ApiKeyNotActiveError('The key is already revoked or expired')
    return { ...toView(key), revokedAt: now.toISOString() }
  })
}

/**
 * Issues the key's successor, with the same user, organization, description, scopes and expiry; the old
 * key keeps working for the grace period (0: it stops now), then expires. Both in one transaction, and
 * only if the old key is active and has no successor yet.
 */
export async function rotateKey (prisma: PrismaClient, actor: Actor, id: string, gracePeriodSeconds: number, now = new Date()): Promise<{ created: CreatedKey, old: KeyView }> {
  if (!Number.isInteger(gracePeriodSeconds) || gracePeriodSeconds < 0 || gracePeriodSeconds > MAX_GRACE_SECONDS) {
    throw new InvalidGracePeriodError(`gracePeriodSeconds must be an integer from 0 to ${MAX_GRACE_SECONDS}`)
  }
  const key = generateApiKey()
  const { created, updated } = await asActor(prisma, actor, async (tx) => {
    const old = await findManageable(tx, actor, id)
    if (old.replacedById !== null) throw new ApiKeyNotActiveError('The key was already rotated; rotate its successor instead')
    if (!isActive(old, now)) throw new ApiKeyNotActiveError('A revoked or expired key cannot be rotated')
    assertWithinLifetime(actor, old.expiresAt)
    await assertUsable(tx, old.userId, old.organizationId)
    const graceEnd = new Date(now.getTime() + gracePeriodSeconds * 1000)
    const oldExpiry = old.expiresAt !== null && old.expiresAt < graceEnd ? old.expiresAt : graceEnd
    const created = await tx.apiKey.create({
      data: {
        tokenHash: hashApiKey(key),
        hint: hintFor(key),
        userId: old.userId,
        organizationId: old.organizationId,
        description: old.description,
        scopes: old.scopes,
        expiresAt: old.expiresAt
      },
      select: VIEW
    })
    // The row lock makes concurrent rotations wait here; each re-reads replaced_by_id, and all but the
    // first find it set and roll back their new key.
    const { count } = await tx.apiKey.updateMany({
      where: { id: old.id, replacedById: null, revokedAt: null, OR: [{ expiresAt: null }, { expiresAt: { gt: now } }] },
      data: { replacedById: created.id, expiresAt: oldExpiry }
    })
    if (count === 0) throw new ApiKeyNotActiveError('The key was rotated or revoked meanwhile')
    return { created, updated: { ...old, replacedById: created.id, expiresAt: oldExpiry } }
  })
  return { created: { ...toView(created), key }, old: toView(updated) }
}
