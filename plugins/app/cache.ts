import fp from 'fastify-plugin'
import { Histogram } from 'prom-client'
import type { Resolution } from '#src/auth/claims.ts'
import type { InvalidationMessage, InvalidationTarget } from '#src/cache/invalidation.ts'
import { KeyResolver, type ResolverStats } from '#src/cache/key-resolver.ts'
import { lookUpKey } from '#src/keys/lookup.ts'
import { pulledCounter, pulledGauge } from '#src/metrics.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Resolved keys of this process: the auth hook reads it, the invalidation listener keeps it true. */
    authCache: {
      /** The fresh cached answer for a token hash: the hot path, synchronous. */
      cached: (tokenHash: string, now: number) => Resolution | undefined
      /** Whether a lookup of this hash is under way. */
      isLookingUp: (tokenHash: string) => boolean
      /** Good when last looked up, its entry still kept (fresh or stale): not a guess. */
      knownGood: (tokenHash: string, now: number) => boolean
      /** Looks the hash up in the database (once for concurrent callers) and caches the answer. */
      resolve: (tokenHash: string) => Promise<Resolution>
      /** Forgets what depends on the target, in this process; returns how many entries went. */
      invalidate: (target: InvalidationTarget) => number
      /** Applies a change announced by the database or another instance. */
      apply: (message: InvalidationMessage) => number
      /** Whether changes are pushed to this process as they happen; if not, entries are trusted only briefly. */
      setChangesPushed: (pushed: boolean) => void
      /** Calls `listener` whenever a lookup succeeded: the database answers again. */
      onDatabaseAnswered: (listener: () => void) => void
      stats: () => ResolverStats
    }
  }
}

export interface CachePluginOptions {
  /** The clock (ms since epoch), for tests. */
  now?: () => number
}

export default fp<CachePluginOptions>(async function authCache (fastify, opts) {
  const { database, config, metrics } = fastify
  const now = opts.now ?? Date.now
  const lookupSeconds = new Histogram({
    name: 'battra_auth_db_lookup_duration_seconds',
    help: 'Duration of key lookups in the database.',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [metrics]
  })
  const answered: Array<() => void> = []
  const resolver = new KeyResolver(async (tokenHash) => {
    const stop = lookupSeconds.startTimer()
    try {
      const resolution = await lookUpKey(database.prisma, tokenHash, now())
      for (const listener of answered) listener()
      return resolution
    } finally {
      stop()
    }
  }, config.cache, now)
  // Until something tells this process about changes, nothing vouches for its entries beyond the cap.
  resolver.setChangesPushed(false)

  const stats = () => resolver.stats()
  pulledCounter(metrics, 'battra_auth_cache_hits_total', 'Requests answered from the cache.', ['cache'], () => [[{ cache: 'positive' }, stats().hits], [{ cache: 'negative' }, stats().negativeHits]])
  pulledCounter(metrics, 'battra_auth_cache_misses_total', 'Requests that needed a lookup (concurrent misses of one key count once).', [], () => [[undefined, stats().misses]])
  pulledCounter(metrics, 'battra_auth_cache_evictions_total', 'Entries pushed out by the size bound.', [], () => [[undefined, stats().evictions]])
  pulledCounter(metrics, 'battra_auth_cache_invalidations_total', 'Invalidations applied (notifications, flushes, own writes).', [], () => [[undefined, stats().invalidations]])
  pulledCounter(metrics, 'battra_auth_cache_stale_served_total', 'Answers served stale because the database failed.', [], () => [[undefined, stats().staleServed]])
  pulledCounter(metrics, 'battra_auth_lookup_failures_total', 'Key lookups that failed (database errors).', [], () => [[undefined, stats().lookupFailures]])
  pulledGauge(metrics, 'battra_auth_cache_entries', 'Entries in the cache.', ['cache'], () => [[{ cache: 'positive' }, stats().entries], [{ cache: 'negative' }, stats().negativeEntries]])
  pulledCounter(metrics, 'battra_auth_db_statements_total', 'Statements sent to the database by this process.', [], () => [[undefined, database.statements.count]])

  fastify.decorate('authCache', {
    cached: (tokenHash: string, at: number) => resolver.cached(tokenHash, at),
    isLookingUp: (tokenHash: string) => resolver.isLookingUp(tokenHash),
    knownGood: (tokenHash: string, at: number) => resolver.knownGood(tokenHash, at),
    resolve: (tokenHash: string) => resolver.resolve(tokenHash),
    invalidate: (target: InvalidationTarget) => resolver.invalidate(target),
    apply: (message: InvalidationMessage) => resolver.apply(message),
    setChangesPushed: (pushed: boolean) => resolver.setChangesPushed(pushed),
    onDatabaseAnswered: (listener: () => void) => { answered.push(listener) },
    stats
  })
}, { name: 'auth-cache', dependencies: ['config', 'database', 'metrics'] })
