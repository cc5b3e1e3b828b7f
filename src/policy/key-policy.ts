// A key's policy as the auth hook applies it: the networks it may be used from and the rate limits it
// counts against (its own, its organization's), compiled once per cache entry so that a request pays a
// property check when the key has no policy, and a range lookup or a counter when it has one.
//
// Order of the checks (after the key itself is admitted): the client address, then the route's scopes and
// roles, then the rate limits, the key's before its organization's. As in Kong (ip-restriction, then acl,
// then rate-limiting), a request refused for its address or its scopes does not count against a limit.
// The key's own limit comes first so that a key hammering past it is refused without touching the
// organization's counter, which its sibling keys share; a request the organization's limit refuses has
// still used one of the key's own, which only makes the key's limit stricter, never looser.
import { compileAllowList, firstCidrOutside } from './cidr.ts'
import type { RateDecision, RateLimiter } from './rate-limiter.ts'

export interface RateLimit {
  requests: number
  windowSeconds: number
}

export const MAX_RATE_LIMIT_REQUESTS = 1_000_000_000
/** A day: fixed windows are aligned on the epoch, so a daily limit resets at midnight UTC. */
export const MAX_RATE_LIMIT_WINDOW_SECONDS = 86_400

/** The policy of an admitted key; a key without any has none (null), and pays nothing for it. */
export interface KeyPolicy {
  /** The key's networks, normalised (empty: any address). */
  readonly allowedCidrs: readonly string[]
  /** Whether a client address may use the key; null when any may. */
  readonly allowsAddress: ((address: string) => boolean) | null
  /** The key's own limit. */
  readonly rateLimit: RateLimit | null
  /**
   * The counter of the key's own limit: `key:<bucket>:<windowSeconds>`, where the bucket is the key's id or
   * that of the key it was derived from (api_keys.rate_limit_bucket_id), whose counter it shares. The
   * window length is part of the name: keys of one bucket share a counter when their windows are equal,
   * and a counter never switches window length (which would start it again from zero).
   */
  readonly keyBucket: string
  /** The limit of the key's organization, shared by all its keys. */
  readonly organizationRateLimit: RateLimit | null
  readonly organizationBucket: string | null
}

export type RateLimitScope = 'key' | 'organization'

/** The answer of the rate limits: refused by `scope`, or admitted with the decision its headers show. */
export interface RateVerdict {
  decision: RateDecision
  scope: RateLimitScope
}

/** A limit from its two columns: both or neither (a database CHECK says so too). */
export function rateLimitOf (requests: number | null, windowSeconds: number | null): RateLimit | null {
  return requests === null || windowSeconds === null ? null : { requests, windowSeconds }
}

/** Whether a limit is one the limiter and the database accept. */
export function isValidRateLimit (limit: RateLimit): boolean {
  return Number.isSafeInteger(limit.requests) && limit.requests >= 1 && limit.requests <= MAX_RATE_LIMIT_REQUESTS &&
    Number.isSafeInteger(limit.windowSeconds) && limit.windowSeconds >= 1 && limit.windowSeconds <= MAX_RATE_LIMIT_WINDOW_SECONDS
}

/** Never admits: the matcher of an allow-list that cannot be read (written around the service with SQL). */
function admitNobody (): boolean {
  return false
}

/**
 * The compiled policy of a key, or null when it has none: no networks, no limit of its own, none on its
 * organization. A stored allow-list that does not parse (only SQL can write one) admits nobody: a
 * restriction that cannot be read must not turn into none.
 */
export function compileKeyPolicy (keyId: string, organizationId: string | null, allowedCidrs: readonly string[], rateLimit: RateLimit | null, organizationRateLimit: RateLimit | null, bucketId: string | null = null): KeyPolicy | null {
  const organizationLimit = organizationId === null ? null : organizationRateLimit
  if (allowedCidrs.length === 0 && rateLimit === null && organizationLimit === null) return null
  let allowsAddress: ((address: string) => boolean) | null = null
  if (allowedCidrs.length > 0) {
    try {
      allowsAddress = compileAllowList(allowedCidrs)
    } catch {
      allowsAddress = admitNobody
    }
  }
  return {
    allowedCidrs,
    allowsAddress,
    // Positive whole numbers: the database's CHECK constraints guarantee it, whoever writes.
    rateLimit,
    keyBucket: rateLimit === null ? `key:${bucketId ?? keyId}` : `key:${bucketId ?? keyId}:${rateLimit.windowSeconds}`,
    organizationRateLimit: organizationLimit,
    organizationBucket: organizationId === null ? null : `org:${organizationId}`
  }
}

/** Whether the policy has a limit to count: a key with only networks never reaches the limiter. */
export function hasRateLimit (policy: KeyPolicy): boolean {
  return policy.rateLimit !== null || policy.organizationRateLimit !== null
}

/**
 * Counts one request against the key's limit, then its organization's. Synchronous when the limiter
 * answers synchronously (in process, or a counter known to be exhausted); a promise when Redis is asked.
 * Only for policies with a limit (hasRateLimit).
 */
export function checkRateLimits (limiter: RateLimiter, policy: KeyPolicy): RateVerdict | Promise<RateVerdict> {
  const own = policy.rateLimit
  if (own === null) return checkOrganization(limiter, policy, undefined)
  const decision = limiter.consume(policy.keyBucket, own.requests, own.windowSeconds)
  return decision instanceof Promise
    ? decision.then((answered) => afterKey(limiter, policy, answered))
    : afterKey(limiter, policy, decision)
}

function afterKey (limiter: RateLimiter, policy: KeyPolicy, decision: RateDecision): RateVerdict | Promise<RateVerdict> {
  if (!decision.allowed) return { decision, scope: 'key' }
  return checkOrganization(limiter, policy, decision)
}

function checkOrganization (limiter: RateLimiter, policy: KeyPolicy, own: RateDecision | undefined): RateVerdict | Promise<RateVerdict> {
  const limit = policy.organizationRateLimit
  if (limit === null || policy.organizationBucket === null) return { decision: own!, scope: 'key' }
  const decision = limiter.consume(policy.organizationBucket, limit.requests, limit.windowSeconds)
  return decision instanceof Promise
    ? decision.then((answered) => combine(own, answered))
    : combine(own, decision)
}

/**
 * Both admitted: the headers show the limit closest to refusing (fewest remaining; on a tie, the later
 * reset), as the IETF RateLimit draft advises when several apply.
 */
function combine (own: RateDecision | undefined, organization: RateDecision): RateVerdict {
  if (!organization.allowed || own === undefined) return { decision: organization, scope: 'organization' }
  const tighter = organization.remaining < own.remaining || (organization.remaining === own.remaining && organization.resetSeconds > own.resetSeconds)
  return tighter ? { decision: organization, scope: 'organization' } : { decision: own, scope: 'key' }
}

/** The RateLimit-* headers of a decision (the names @fastify/rate-limit sends with its draft-spec option). */
export function rateLimitHeaders (decision: RateDecision): Record<string, string> {
  return {
    'ratelimit-limit': String(decision.limit),
    'ratelimit-remaining': String(decision.remaining),
    'ratelimit-reset': String(decision.resetSeconds)
  }
}

// ---------------------------------------------------------------------------------------------------------
// What a key without auth:admin may give the keys it creates or updates: nothing less restricted than
// itself. Its networks bound theirs; its limit bounds theirs.

/**
 * Why `cidrs` would admit an address the calling key's `callerCidrs` does not, or undefined when they do
 * not (any list is within an empty one; an empty list, meaning any address, is within no other).
 */
export function widerNetworks (cidrs: readonly string[], callerCidrs: readonly string[]): string | undefined {
  if (callerCidrs.length === 0) return undefined
  if (cidrs.length === 0) return `any address is wider than the calling key's networks (${callerCidrs.join(', ')})`
  const outside = firstCidrOutside(cidrs, callerCidrs)
  return outside === undefined ? undefined : `${outside} is outside the calling key's networks (${callerCidrs.join(', ')})`
}

/**
 * Why `limit` would be looser than the calling key's, or undefined when it is not: no limit is looser than
 * any; a limit is no looser when it admits no more requests per window and no higher average rate.
 */
export function looserRateLimit (limit: RateLimit | null, callerLimit: RateLimit | null): string | undefined {
  if (callerLimit === null) return undefined
  const caller = formatRateLimit(callerLimit)
  if (limit === null) return `no rate limit is looser than the calling key's (${caller})`
  const burst = limit.requests > callerLimit.requests
  const average = limit.requests * callerLimit.windowSeconds > callerLimit.requests * limit.windowSeconds
  return burst || average ? `the rate limit ${formatRateLimit(limit)} is looser than the calling key's (${caller})` : undefined
}

/** `100/60s`: the form the command line reads and prints. */
export function formatRateLimit (limit: RateLimit): string {
  return `${limit.requests}/${limit.windowSeconds}s`
}

const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86_400 } as const

/** Reads `100/60s`, `100/60`, `1000/1h`, `10/s`, `5000/d`; undefined when the text is not one. */
export function parseRateLimit (text: string): RateLimit | undefined {
  const match = /^([1-9][0-9]*)\/([1-9][0-9]*)?([smhd])?$/.exec(text.trim())
  if (match === null || (match[2] === undefined && match[3] === undefined)) return undefined
  const limit = { requests: Number(match[1]), windowSeconds: Number(match[2] ?? 1) * UNIT_SECONDS[(match[3] ?? 's') as keyof typeof UNIT_SECONDS] }
  return isValidRateLimit(limit) ? limit : undefined
}
