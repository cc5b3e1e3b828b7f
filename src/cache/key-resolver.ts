// Resolves key hashes to claims through a cache: bounded LRU per hash, a separate bounded negative cache,
// one lookup for concurrent misses of one key, and stale-if-error when the lookup fails. Once a lookup has
// failed, a key with a stale entry is answered from it at once and refreshed in the background (a circuit
// breaker): a database that accepts connections but never answers costs cached keys nothing.
import type { AuthCacheConfig } from '#src/config.ts'
import { subjectOf, type Resolution } from '#src/auth/claims.ts'
import type { ResolverStats } from '#src/schemas/cache.ts'
import type { InvalidationMessage, InvalidationTarget } from './invalidation.ts'
import { TtlLru } from './ttl-lru.ts'

export type { InvalidationTarget, ResolverStats }

export type KeyLookup = (tokenHash: string) => Promise<Resolution>

/** The lookup failed and nothing cached may stand in for it. */
export class LookupUnavailableError extends Error {
  constructor (readonly cause: unknown) {
    super('key lookup failed and no cached answer is usable')
    this.name = 'LookupUnavailableError'
  }
}

function matcherFor (target: InvalidationTarget): (r: Resolution) => boolean {
  if ('all' in target) return () => true
  if ('keyId' in target) return (r) => subjectOf(r).keyId === target.keyId
  if ('userId' in target && 'organizationId' in target) {
    return (r) => subjectOf(r).userId === target.userId && subjectOf(r).organizationId === target.organizationId
  }
  if ('userId' in target) return (r) => subjectOf(r).userId === target.userId
  return (r) => subjectOf(r).organizationId === target.organizationId
}

export class KeyResolver {
  private readonly positive: TtlLru<Resolution & { ok: true }>
  private readonly negative: TtlLru<Resolution & { ok: false }>
  private readonly inFlight = new Map<string, Promise<Resolution>>()
  // Invalidations made while lookups are in flight, numbered: a lookup that started before one that
  // concerns what it read must not fill the cache with it. Unrelated ones do not stop it.
  private generation = 0
  private readonly invalidationLog: Array<{ generation: number, matches: (r: Resolution) => boolean }> = []
  private static readonly MAX_LOGGED_INVALIDATIONS = 10_000
  private readonly counters = { hits: 0, negativeHits: 0, misses: 0, lookups: 0, lookupFailures: 0, staleServed: 0, invalidations: 0 }
  /** When lookups started failing; undefined while the last one succeeded. */
  private failingSince: number | undefined
  /**
   * Set while nothing tells this process about changes (invalidation listener down, or a database that
   * cannot notify): entries older than this are not trusted, whatever their TTL.
   */
  private trustCapMs: number | undefined

  constructor (
    private readonly lookup: KeyLookup,
    private readonly config: AuthCacheConfig,
    private readonly now: () => number = Date.now
  ) {
    this.positive = new TtlLru(config.maxEntries)
    this.negative = new TtlLru(config.negativeMaxEntries)
  }

  /** Whether changes reach this process as they happen (a listener is up): else entries are trusted only briefly. */
  setChangesPushed (pushed: boolean): void {
    this.trustCapMs = pushed ? undefined : this.config.unverifiedTtlMs
  }

  /** The cached answer for a hash when it is fresh: the hot path, synchronous and allocation-free. */
  cached (tokenHash: string, now: number): Resolution | undefined {
    const hit = this.positive.getFresh(tokenHash, now)
    if (hit !== undefined && (this.trustCapMs === undefined || now - hit.storedAt < this.trustCapMs)) {
      this.counters.hits++
      return hit.value
    }
    const negativeHit = this.negative.getFresh(tokenHash, now)
    if (negativeHit !== undefined && (this.trustCapMs === undefined || now - negativeHit.storedAt < this.trustCapMs)) {
      this.counters.negativeHits++
      return negativeHit.value
    }
    return undefined
  }

  /**
   * Whether the hash was good when last looked up and its entry is still kept (fresh, or stale within
   * AUTH_STALE_IF_ERROR_MS): a key like that is not a guess, so the failed-attempt limiter lets it through
   * to its lookup once its entry is no longer fresh.
   */
  knownGood (tokenHash: string, now: number): boolean {
    return this.positive.peek(tokenHash, now) !== undefined
  }

  /** Whether a lookup of this hash is under way (a request for it would not start another). */
  isLookingUp (tokenHash: string): boolean {
    return this.inFlight.has(tokenHash)
  }

  /** Looks a hash up (once, however many ask at the same time) and caches the answer. */
  resolve (tokenHash: string): Promise<Resolution> {
    const pending = this.inFlight.get(tokenHash)
    if (pending !== undefined) return pending
    this.counters.misses++
    if (this.failingSince !== undefined) {
      // The circuit is open: a stale answer now, and the lookup in the background.
      const stale = this.stale(tokenHash, this.now())
      if (stale !== undefined) {
        this.counters.staleServed++
        this.startLookup(tokenHash).catch(() => {})
        return Promise.resolve(stale)
      }
    }
    return this.startLookup(tokenHash)
  }

  private startLookup (tokenHash: string): Promise<Resolution> {
    const promise = this.lookUpAndCache(tokenHash).finally(() => {
      this.inFlight.delete(tokenHash)
      if (this.inFlight.size === 0) this.invalidationLog.length = 0
    })
    this.inFlight.set(tokenHash, promise)
    return promise
  }

  private async lookUpAndCache (tokenHash: string): Promise<Resolution> {
    const generation = this.generation
    this.counters.lookups++
    let resolution: Resolution
    try {
      resolution = await this.lookup(tokenHash)
    } catch (error) {
      this.counters.lookupFailures++
      const now = this.now()
      this.failingSince ??= now
      const stale = this.stale(tokenHash, now)
      if (stale === undefined) throw new LookupUnavailableError(error)
      this.counters.staleServed++
      return stale
    }
    this.failingSince = undefined
    if (!this.invalidatedSince(generation, resolution)) this.store(tokenHash, resolution, this.now())
    return resolution
  }

  private stale (tokenHash: string, now: number): Resolution | undefined {
    return (this.positive.peek(tokenHash, now) ?? this.negative.peek(tokenHash, now))?.value
  }

  private invalidatedSince (generation: number, resolution: Resolution): boolean {
    for (const entry of this.invalidationLog) {
      if (entry.generation > generation && entry.matches(resolution)) return true
    }
    return false
  }

  private logInvalidation (matches: (r: Resolution) => boolean): void {
    this.generation++
    this.counters.invalidations++
    if (this.inFlight.size === 0) return
    if (this.invalidationLog.length >= KeyResolver.MAX_LOGGED_INVALIDATIONS) {
      // Too many to keep apart: from here on, every lookup in flight counts as invalidated.
      this.invalidationLog.length = 0
      this.invalidationLog.push({ generation: this.generation, matches: () => true })
      return
    }
    this.invalidationLog.push({ generation: this.generation, matches })
  }

  private store (tokenHash: string, resolution: Resolution, now: number): void {
    const { ttlMs, negativeTtlMs, staleIfErrorMs } = this.config
    if (resolution.ok) {
      // Kept past the key's expiry on purpose: the request path checks expiry on every hit, so an
      // expired key is refused from memory instead of costing a lookup each time it is tried.
      const freshUntil = now + ttlMs
      this.negative.delete(tokenHash)
      this.positive.set(tokenHash, resolution, now, freshUntil, freshUntil + staleIfErrorMs)
    } else {
      const freshUntil = now + negativeTtlMs
      this.positive.delete(tokenHash)
      this.negative.set(tokenHash, resolution, now, freshUntil, freshUntil + staleIfErrorMs)
    }
  }

  /** Forgets what depends on the target; returns how many entries went. */
  invalidate (target: InvalidationTarget): number {
    const matches = matcherFor(target)
    this.logInvalidation(matches)
    if ('all' in target) return this.positive.clear() + this.negative.clear()
    return this.positive.deleteWhere(matches) + this.negative.deleteWhere(matches)
  }

  /** Applies an announced change; a new key row may also make a key remembered as unknown exist. */
  apply (message: InvalidationMessage): number {
    let forgotten = 0
    if (message.keyAdded) {
      // Unknown keys are remembered without an owner: any of them may be the new one.
      const unknown = (r: Resolution) => !r.ok && r.keyId === undefined
      this.logInvalidation(unknown)
      forgotten += this.negative.deleteWhere(unknown)
    }
    return forgotten + this.invalidate(message.target)
  }

  stats (): ResolverStats {
    return {
      entries: this.positive.size,
      negativeEntries: this.negative.size,
      maxEntries: this.config.maxEntries,
      negativeMaxEntries: this.config.negativeMaxEntries,
      ttlMs: this.config.ttlMs,
      negativeTtlMs: this.config.negativeTtlMs,
      staleIfErrorMs: this.config.staleIfErrorMs,
      ...this.counters,
      evictions: this.positive.evictions + this.negative.evictions,
      inFlight: this.inFlight.size,
      databaseFailingSince: this.failingSince === undefined ? null : new Date(this.failingSince).toISOString(),
      trustCapMs: this.trustCapMs ?? null
    }
  }
}
