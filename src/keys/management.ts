// Creating, listing, updating, revoking and rotating keys: who may do what, and the data rules. Shared by
// the HTTP routes and the command line.
//
// A calling key without auth:admin manages only its own user's keys whose scopes it holds itself (any
// other key answers 404, as if absent); a key it creates or rotates into has no scope it lacks, does not
// outlive it (its expiry as it stood before the request), and belongs to an organization the user is
// still a member of. A key has at most one successor: the conditional update in rotateKey lets exactly
// one of any number of concurrent rotations win.
//
// Every such decision is taken and written in one transaction against fresh rows, never against the
// calling key's cached claims: the target key's row and the calling key's row are locked (SELECT … FOR
// UPDATE, in id order) and the calling key is re-read (revoked or expired: 401, as the auth hook would
// answer; its scopes, expiry, networks and limit as they are now). So a change that an administrator
// commits while a request of the key is in flight is either seen by it or waits for it: a key cannot undo
// a lock-down by racing it. A transaction that loses a deadlock or serialization race runs again (up to 3
// times), then answers 409 CONCURRENT_CHANGE.
//
// Rate-limit counters: a key created by a key with a rate limit (without auth:admin), and a rotation's
// successor, count on the counter of the key they came from (rate_limit_bucket_id), so that minting keys
// does not multiply a limit. Such a key keeps the calling key's window length (a counter is per window
// length). auth:admin and the command line create keys with their own counter; PATCH never moves a key
// to another counter (rateLimit null forgets it).
//
// Updates by such a key: scopes only narrow (a subset of the key's current ones), expiresAt only moves
// earlier (never to none, never past the calling key's own expiry). Key policies: nothing the calling key
// creates or updates may be less restricted than the calling key itself. Its networks bound theirs (a key
// restricted to 10.0.0.0/8 cannot make or turn a key into one usable from anywhere) and its rate limit
// bounds theirs (no limit, or a looser one, is refused); when it creates a key without saying, the new
// key inherits the calling key's networks and limit. Rotation copies the old key's policies, so it rotates
// only keys no less restricted than itself (the new key is a credential it obtains). A calling key without
// a policy sets any. auth:admin (and the command line) set anything and inherit nothing.
import { generateApiKey, hashApiKey, hintFor } from '#src/auth/api-key.ts'
import type { Claims } from '#src/auth/claims.ts'
import type { PrismaClient } from '#src/db/pool.ts'
import { isTransactionConflict } from '#src/db/failures.ts'
import type { Prisma } from '#src/generated/prisma/client.ts'
import {
  ApiKeyExpiredError, ApiKeyInvalidError, ConcurrentChangeError, unauthorized,
  ApiKeyNotActiveError, ApiKeyNotFoundError, ForbiddenError, InvalidCidrError, InvalidExpiryError, InvalidGracePeriodError,
  InvalidRateLimitError, InvalidScopesError, NotAMemberError, OrganizationNotFoundError, TargetUserDisabledError, UserNotFoundError
} from '#src/errors.ts'
import { CidrError, parseAllowedCidrs } from '#src/policy/cidr.ts'
import {
  MAX_RATE_LIMIT_REQUESTS, MAX_RATE_LIMIT_WINDOW_SECONDS, isValidRateLimit, looserRateLimit, rateLimitOf, widerNetworks, type RateLimit
} from '#src/policy/key-policy.ts'
import {
  ADMIN_SCOPE, KeyViewSchema, MAX_GRACE_SECONDS, MAX_SCOPES, SCOPE_PATTERN, type CreatedKey, type KeyView, type OrganizationRateLimit
} from '#src/schemas/keys.ts'
import { isUuid } from '#src/schemas/common.ts'
import type { LeakReport, LeakReporter } from '#src/schemas/leaks.ts'

const SCOPE = new RegExp(SCOPE_PATTERN)

/** The restrictions of the calling key: nothing it makes or changes may be less restricted. */
export interface CallerPolicy {
  allowedCidrs: readonly string[]
  rateLimit: RateLimit | null
  /** The counter its limit counts on (its rate_limit_bucket_id, else its id): keys it derives share it. */
  bucketId?: string
}

/**
 * Who asks: a key (its claims and policy as they stood before the request, and where the request came
 * from), an operator on the command line, or the service itself acting on a leak report (who reported it,
 * and where the key was found).
 */
export type Actor =
  | { type: 'key', claims: Claims, policy?: CallerPolicy | null, address?: string, userAgent?: string }
  | { type: 'cli' }
  | SystemActor

export interface SystemActor {
  type: 'system'
  reason: 'leaked'
  reporter: LeakReporter
  url?: string
  source?: string
}

export type Transaction = Parameters<Parameters<PrismaClient['$transaction']>[0]>[0]
/** What key management reads and writes through: the client, or a transaction of it. */
type Db = PrismaClient | Transaction

/** The actor as the database records it (battra.actor, read by triggers): never a key or a hash. */
export function actorRecord (actor: Actor): Record<string, string> {
  if (actor.type === 'cli') return { type: 'cli' }
  if (actor.type === 'system') {
    const record: Record<string, string> = { type: 'system', reason: actor.reason, reporter: actor.reporter }
    if (actor.url !== undefined) record.url = actor.url.slice(0, 2048)
    if (actor.source !== undefined) record.source = actor.source.slice(0, 256)
    return record
  }
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
    await setActor(tx, actor)
    return work(tx)
  }, { maxWait: 10_000, timeout: 30_000 })
}

/**
 * Names another actor for the rest of the transaction: a transaction that changes several rows for
 * different reasons (a leak report naming several keys, each found elsewhere) names each before its change.
 */
export async function setActor (tx: Transaction, actor: Actor): Promise<void> {
  await tx.$executeRaw`SELECT set_config('battra.actor', ${JSON.stringify(actorRecord(actor))}, true)`
}

const RETRIES = 3

/**
 * A key-management decision: asActor, run again when it loses a deadlock or serialization race to a
 * concurrent transaction (nothing of it was written), then 409 CONCURRENT_CHANGE, never a 500.
 */
async function decide<T> (prisma: PrismaClient, actor: Actor, work: (tx: Transaction) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await asActor(prisma, actor, work)
    } catch (error) {
      if (!isTransactionConflict(error)) throw error
      if (attempt >= RETRIES) throw new ConcurrentChangeError()
    }
  }
}

/** The columns of a locked row the rules read. */
interface LockedKey {
  id: string
  revoked_at: Date | null
  expires_at: Date | null
  scopes: string[] | null
  allowed_cidrs: string[] | null
  rate_limit_requests: number | null
  rate_limit_window_seconds: number | null
  rate_limit_bucket_id: string | null
}

/**
 * Locks the target key's row and the calling key's (FOR UPDATE, in id order: two transactions locking
 * the same pair never wait on each other crosswise), and returns the actor as it is now: a calling key
 * re-read from its row (scopes, expiry, networks, limit, counter), or refused with 401 when it was
 * revoked, expired or deleted meanwhile. Other actors come back unchanged.
 */
async function lockFresh (tx: Transaction, actor: Actor, now: Date, targetId?: string): Promise<Actor> {
  const ids = new Set<string>()
  if (targetId !== undefined) {
    if (!isUuid(targetId)) throw new ApiKeyNotFoundError()
    ids.add(targetId.toLowerCase())
  }
  if (actor.type === 'key') ids.add(actor.claims.keyId.toLowerCase())
  if (ids.size === 0) return actor
  const rows = await tx.$queryRaw<LockedKey[]>`
    SELECT id, revoked_at, expires_at, scopes, allowed_cidrs, rate_limit_requests, rate_limit_window_seconds, rate_limit_bucket_id
      FROM api_keys WHERE id = ANY(${[...ids]}::uuid[]) ORDER BY id FOR UPDATE`
  if (actor.type !== 'key') return actor
  const row = rows.find((candidate) => candidate.id.toLowerCase() === actor.claims.keyId.toLowerCase())
  if (row === undefined || row.revoked_at !== null) throw unauthorized(ApiKeyInvalidError)
  if (row.expires_at !== null && row.expires_at.getTime() <= now.getTime()) throw unauthorized(ApiKeyExpiredError)
  const allowedCidrs = row.allowed_cidrs ?? []
  const rateLimit = rateLimitOf(row.rate_limit_requests, row.rate_limit_window_seconds)
  return {
    ...actor,
    claims: { ...actor.claims, scopes: row.scopes ?? [], expiresAt: row.expires_at === null ? null : row.expires_at.toISOString() },
    policy: allowedCidrs.length === 0 && rateLimit === null ? null : { allowedCidrs, rateLimit, bucketId: row.rate_limit_bucket_id ?? row.id }
  }
}

/**
 * A key that shares the calling key's counter keeps its window length: a counter is per window length,
 * so another window would be a fresh counter (a limit reset at will).
 */
function assertCallerWindow (caller: CallerPolicy, rateLimit: RateLimit | null): void {
  if (caller.rateLimit === null || rateLimit === null || rateLimit.windowSeconds === caller.rateLimit.windowSeconds) return
  throw new ForbiddenError(`rateLimit: a key sharing the calling key's rate-limit counter keeps its window of ${caller.rateLimit.windowSeconds} s (${rateLimit.windowSeconds} s asked)`)
}

/** The command line and the service itself are bound by no rule of key management. */
export const isAdmin = (actor: Actor): boolean => actor.type !== 'key' || actor.claims.scopes.includes(ADMIN_SCOPE)

// The columns of a key's view, from its schema: one list for the select and the answer. `rateLimit` is
// the view of two columns.
type ViewColumns = Exclude<keyof KeyView, 'rateLimit'>
const VIEW = {
  ...Object.fromEntries(Object.keys(KeyViewSchema.properties).filter((name) => name !== 'rateLimit').map((name) => [name, true])) as { [K in ViewColumns]: true },
  rateLimitRequests: true,
  rateLimitWindowSeconds: true
} as const

/** The view's columns and the key's rate-limit counter, which the view does not show. */
const ROW = { ...VIEW, rateLimitBucketId: true } as const

type KeyRow = Prisma.ApiKeyGetPayload<{ select: typeof ROW }>

/** The column as written by the leak handler (src/leaks/revoke.ts); anything but an object (SQL, Studio) shows as null. */
const leakReportOf = (value: Prisma.JsonValue | null): LeakReport | null =>
  value !== null && typeof value === 'object' && !Array.isArray(value) ? value as LeakReport : null

const iso = (date: Date | null): string | null => date === null ? null : date.toISOString()

function toView (row: Omit<KeyRow, 'rateLimitBucketId'> & { rateLimitBucketId?: string | null }): KeyView {
  const { rateLimitRequests, rateLimitWindowSeconds, rateLimitBucketId: _bucket, ...columns } = row
  return {
    ...columns,
    leakReport: leakReportOf(row.leakReport),
    createdAt: row.createdAt.toISOString(),
    lastUsedAt: iso(row.lastUsedAt),
    expiresAt: iso(row.expiresAt),
    revokedAt: iso(row.revokedAt),
    allowedCidrs: row.allowedCidrs ?? [],
    rateLimit: rateLimitOf(rateLimitRequests, rateLimitWindowSeconds)
  }
}

/** A limit's columns. */
const rateLimitColumns = (limit: RateLimit | null) => ({ rateLimitRequests: limit?.requests ?? null, rateLimitWindowSeconds: limit?.windowSeconds ?? null })

export function validateScopes (scopes: readonly string[]): string[] {
  const unique = [...new Set(scopes)]
  if (unique.length > MAX_SCOPES) throw new InvalidScopesError(`At most ${MAX_SCOPES} scopes`)
  const bad = unique.find((scope) => !SCOPE.test(scope))
  if (bad !== undefined) throw new InvalidScopesError(`Invalid scope "${bad}": lowercase words separated by colons, e.g. projects:read`)
  return unique
}

/** Normalised networks, or 400 INVALID_CIDR naming the first bad entry. */
export function validateAllowedCidrs (entries: unknown): string[] {
  try {
    return parseAllowedCidrs(entries)
  } catch (error) {
    if (error instanceof CidrError) throw new InvalidCidrError(error.message)
    throw error
  }
}

/** A limit the limiter and the database accept, or 400 INVALID_RATE_LIMIT. */
export function validateRateLimit (limit: RateLimit | null): RateLimit | null {
  if (limit === null) return null
  if (!isValidRateLimit(limit)) {
    throw new InvalidRateLimitError(`rateLimit must be { requests: 1 to ${MAX_RATE_LIMIT_REQUESTS}, windowSeconds: 1 to ${MAX_RATE_LIMIT_WINDOW_SECONDS} }, whole numbers`)
  }
  return { requests: limit.requests, windowSeconds: limit.windowSeconds }
}

/** The calling key's restrictions when they bind (a key without auth:admin), else undefined. */
function bindingPolicy (actor: Actor): CallerPolicy | undefined {
  if (actor.type !== 'key' || isAdmin(actor) || actor.policy === undefined || actor.policy === null) return undefined
  return actor.policy
}

/** Refuses (403) networks or a limit that would be less restricted than the calling key's own. */
function assertWithinCallerPolicy (actor: Actor, allowedCidrs: readonly string[] | undefined, rateLimit: RateLimit | null | undefined): void {
  const caller = bindingPolicy(actor)
  if (caller === undefined) return
  const wider = allowedCidrs === undefined ? undefined : widerNetworks(allowedCidrs, caller.allowedCidrs)
  if (wider !== undefined) throw new ForbiddenError(`allowedCidrs: ${wider}`)
  const looser = rateLimit === undefined ? undefined : looserRateLimit(rateLimit, caller.rateLimit)
  if (looser !== undefined) throw new ForbiddenError(`rateLimit: ${looser}`)
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
  /** Checked and normalised here. Default: the calling key's networks (without auth:admin), else any address. */
  allowedCidrs?: readonly unknown[]
  /** Default: the calling key's limit (without auth:admin), else none. */
  rateLimit?: RateLimit | null
}

/**
 * The organization of a key created without saying: the calling key's when the key is for its own user;
 * for another user (auth:admin), the calling key's organization only if that user is a member of it, else
 * none (a personal key). The command line names it or makes a personal key.
 */
async function defaultOrganization (tx: Transaction, actor: Actor, userId: string): Promise<string | null> {
  if (actor.type !== 'key' || actor.claims.organizationId === null) return null
  if (userId === actor.claims.userId) return actor.claims.organizationId
  const membership = await tx.organizationMembership.findUnique({
    where: { organizationId_userId: { organizationId: actor.claims.organizationId, userId } },
    select: { id: true }
  })
  return membership === null ? null : actor.claims.organizationId
}

/** Creates a key for an existing, enabled user, in an organization the user belongs to (or personal). */
export async function createKey (prisma: PrismaClient, actor: Actor, spec: NewKey, now = new Date()): Promise<CreatedKey> {
  const scopes = validateScopes(spec.scopes ?? [])
  const requestedCidrs = spec.allowedCidrs === undefined ? undefined : validateAllowedCidrs(spec.allowedCidrs)
  const requestedLimit = spec.rateLimit === undefined ? undefined : validateRateLimit(spec.rateLimit)
  if (spec.expiresAt !== undefined && spec.expiresAt !== null && spec.expiresAt.getTime() <= now.getTime()) {
    throw new InvalidExpiryError('expiresAt must be in the future')
  }
  const key = generateApiKey()
  const row = await decide(prisma, actor, async (tx) => {
    // The calling key as it is now (locked): what it may give is bounded by its current row.
    const current = await lockFresh(tx, actor, now)
    const caller = current.type === 'key' ? current.claims : undefined
    const userId = spec.userId?.toLowerCase() ?? caller?.userId
    if (userId === undefined) throw new UserNotFoundError()
    if (caller !== undefined && userId !== caller.userId.toLowerCase() && !isAdmin(current)) {
      throw new ForbiddenError(`Creating keys for other users requires the scope ${ADMIN_SCOPE}`)
    }
    assertScopesHeld(current, scopes)
    const organizationId = spec.organizationId !== undefined ? spec.organizationId : await defaultOrganization(tx, current, userId)
    const bound = lifetimeBound(current)
    const expiresAt = spec.expiresAt !== undefined ? spec.expiresAt : bound === Number.POSITIVE_INFINITY ? null : new Date(bound)
    if (expiresAt !== null && expiresAt.getTime() <= now.getTime()) throw new InvalidExpiryError('expiresAt must be in the future')
    assertWithinLifetime(current, expiresAt)
    const inherited = bindingPolicy(current)
    const allowedCidrs = requestedCidrs ?? [...(inherited?.allowedCidrs ?? [])]
    const rateLimit = requestedLimit !== undefined ? requestedLimit : inherited?.rateLimit ?? null
    assertWithinCallerPolicy(current, allowedCidrs, rateLimit)
    // A key derived from a rate-limited key counts on its counter: minting keys does not multiply a limit.
    const shares = inherited !== undefined && inherited.rateLimit !== null && rateLimit !== null
    if (shares) assertCallerWindow(inherited, rateLimit)
    await assertUsable(tx, userId, organizationId)
    return tx.apiKey.create({
      data: {
        tokenHash: hashApiKey(key),
        hint: hintFor(key),
        userId,
        organizationId,
        description: spec.description ?? null,
        scopes,
        expiresAt,
        allowedCidrs,
        ...rateLimitColumns(rateLimit),
        rateLimitBucketId: shares ? inherited.bucketId ?? caller!.keyId : null
      },
      select: ROW
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
  const row = await prisma.apiKey.findUnique({ where: { id: id.toLowerCase() }, select: ROW })
  if (row === null || !mayManage(actor, row)) throw new ApiKeyNotFoundError()
  return row
}

/** Revokes an active key (one in its rotation grace period included): it stops working on every instance. */
export async function revokeKey (prisma: PrismaClient, actor: Actor, id: string, now = new Date()): Promise<KeyView> {
  if (!isUuid(id)) throw new ApiKeyNotFoundError()
  return decide(prisma, actor, async (tx) => {
    // A calling key revoked meanwhile (by an administrator, or by itself concurrently) does not act.
    const current = await lockFresh(tx, actor, now, id)
    const key = await findManageable(tx, current, id)
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
  if (!isUuid(id)) throw new ApiKeyNotFoundError()
  const { created, updated } = await decide(prisma, actor, async (tx) => {
    // Both rows locked, the calling key re-read: the rules below compare with what both are now.
    const current = await lockFresh(tx, actor, now, id)
    const old = await findManageable(tx, current, id)
    if (old.replacedById !== null) throw new ApiKeyNotActiveError('The key was already rotated; rotate its successor instead')
    if (!isActive(old, now)) throw new ApiKeyNotActiveError('A revoked or expired key cannot be rotated')
    assertWithinLifetime(current, old.expiresAt)
    // The new key is a credential the caller obtains: it may not be less restricted than the caller.
    const rateLimit = rateLimitOf(old.rateLimitRequests, old.rateLimitWindowSeconds)
    assertWithinCallerPolicy(current, old.allowedCidrs ?? [], rateLimit)
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
        expiresAt: old.expiresAt,
        allowedCidrs: old.allowedCidrs ?? [],
        rateLimitRequests: old.rateLimitRequests,
        rateLimitWindowSeconds: old.rateLimitWindowSeconds,
        // The successor counts on the old key's counter: during the grace period both share one.
        rateLimitBucketId: rateLimit === null ? null : old.rateLimitBucketId ?? old.id
      },
      select: ROW
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

export interface KeyChanges {
  /** null: none. */
  description?: string | null
  /** null: never expires (auth:admin only, unless it already never did). */
  expiresAt?: Date | null
  scopes?: readonly string[]
  /** Checked and normalised here; []: any address. */
  allowedCidrs?: readonly unknown[]
  /** null: no limit of its own. */
  rateLimit?: RateLimit | null
}

/**
 * Changes an active key (the rules at the top of this file) and returns its view; the caller announces the
 * change (the database triggers tell other instances too). Only the properties given change.
 */
export async function updateKey (prisma: PrismaClient, actor: Actor, id: string, changes: KeyChanges, now = new Date()): Promise<KeyView> {
  const scopes = changes.scopes === undefined ? undefined : validateScopes(changes.scopes)
  const allowedCidrs = changes.allowedCidrs === undefined ? undefined : validateAllowedCidrs(changes.allowedCidrs)
  const rateLimit = changes.rateLimit === undefined ? undefined : validateRateLimit(changes.rateLimit)
  const expiresAt = changes.expiresAt
  if (expiresAt !== undefined && expiresAt !== null && expiresAt.getTime() <= now.getTime()) {
    throw new InvalidExpiryError('expiresAt must be in the future (revoke the key to stop it now)')
  }
  if (!isUuid(id)) throw new ApiKeyNotFoundError()
  return decide(prisma, actor, async (tx) => {
    // The target's row and the calling key's are locked for the transaction, and the calling key re-read:
    // the rules compare with what both are now, not with what the calling key's cached claims said.
    const current = await lockFresh(tx, actor, now, id)
    const admin = isAdmin(current)
    const key = await findManageable(tx, current, id)
    if (!isActive(key, now)) throw new ApiKeyNotActiveError('A revoked or expired key cannot be changed')
    assertWithinCallerPolicy(current, allowedCidrs, rateLimit)
    const caller = bindingPolicy(current)
    // A key on the calling key's counter keeps its window (another would be a fresh counter).
    if (caller !== undefined && rateLimit !== undefined && (key.rateLimitBucketId ?? key.id) === caller.bucketId) assertCallerWindow(caller, rateLimit)
    if (!admin && scopes !== undefined) {
      const wider = scopes.find((scope) => !key.scopes.includes(scope))
      if (wider !== undefined) throw new ForbiddenError(`Without ${ADMIN_SCOPE}, scopes can only be narrowed: ${wider} is not among the key's scopes`)
    }
    const expiryChanges = expiresAt !== undefined && (expiresAt?.getTime() ?? null) !== (key.expiresAt?.getTime() ?? null)
    if (!admin && expiryChanges) {
      if (expiresAt === null || (key.expiresAt !== null && expiresAt.getTime() > key.expiresAt.getTime())) {
        throw new ForbiddenError(`Without ${ADMIN_SCOPE}, an expiry can only be brought forward${key.expiresAt === null ? '' : ` (the key expires at ${key.expiresAt.toISOString()})`}`)
      }
      assertWithinLifetime(current, expiresAt)
    }
    const data = {
      ...(changes.description === undefined ? {} : { description: changes.description }),
      ...(expiryChanges ? { expiresAt } : {}),
      ...(scopes === undefined ? {} : { scopes }),
      ...(allowedCidrs === undefined ? {} : { allowedCidrs }),
      ...(rateLimit === undefined ? {} : rateLimitColumns(rateLimit)),
      // No limit, no counter; a limit set again starts a counter of the key's own.
      ...(rateLimit === null ? { rateLimitBucketId: null } : {})
    }
    if (Object.keys(data).length === 0) return toView(key)
    return toView(await tx.apiKey.update({ where: { id: key.id }, data, select: ROW }))
  })
}

/**
 * Sets (or with null, removes) the limit an organization's keys share: a tenant quota. auth:admin only
 * (the command line is). Its keys' cached entries are evicted by the database trigger on every instance.
 */
export async function setOrganizationRateLimit (prisma: PrismaClient, actor: Actor, organizationId: string, limit: RateLimit | null): Promise<OrganizationRateLimit> {
  return updateOrganization(prisma, actor, organizationId, { rateLimit: limit })
}

export interface OrganizationChanges {
  /** null: no shared limit. */
  rateLimit?: RateLimit | null
  /** false: "report only", a leak report flags the organization's keys instead of revoking them. */
  leakAutoRevoke?: boolean
}

/** Changes an organization's settings (only those given) and returns them all. auth:admin only (the command line is). */
export async function updateOrganization (prisma: PrismaClient, actor: Actor, organizationId: string, changes: OrganizationChanges): Promise<OrganizationRateLimit> {
  if (!isAdmin(actor)) throw new ForbiddenError(`Changing an organization's settings requires the scope ${ADMIN_SCOPE}`)
  const rateLimit = changes.rateLimit === undefined ? undefined : validateRateLimit(changes.rateLimit)
  const data = {
    ...(rateLimit === undefined ? {} : rateLimitColumns(rateLimit)),
    ...(changes.leakAutoRevoke === undefined ? {} : { leakAutoRevoke: changes.leakAutoRevoke })
  }
  return asActor(prisma, actor, async (tx) => {
    const { count } = await tx.organization.updateMany({ where: { id: organizationId }, data })
    if (count === 0) throw new OrganizationNotFoundError()
    const org = await tx.organization.findUniqueOrThrow({
      where: { id: organizationId },
      select: { id: true, slug: true, name: true, rateLimitRequests: true, rateLimitWindowSeconds: true, leakAutoRevoke: true }
    })
    return { id: org.id, slug: org.slug, name: org.name, rateLimit: rateLimitOf(org.rateLimitRequests, org.rateLimitWindowSeconds), leakAutoRevoke: org.leakAutoRevoke }
  })
}
