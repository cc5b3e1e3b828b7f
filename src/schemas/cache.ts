// Statistics of the auth cache and its invalidation listener (GET /api/v1/admin/auth-cache).
import { Type, type Static } from 'typebox'
import { DateTime, Nullable } from './common.ts'

export const ResolverStatsSchema = Type.Object({
  entries: Type.Integer(),
  negativeEntries: Type.Integer(),
  maxEntries: Type.Integer(),
  negativeMaxEntries: Type.Integer(),
  ttlMs: Type.Integer(),
  negativeTtlMs: Type.Integer(),
  staleIfErrorMs: Type.Integer(),
  hits: Type.Integer(),
  negativeHits: Type.Integer(),
  misses: Type.Integer(),
  lookups: Type.Integer(),
  lookupFailures: Type.Integer(),
  staleServed: Type.Integer(),
  evictions: Type.Integer(),
  invalidations: Type.Integer(),
  inFlight: Type.Integer(),
  /** Set while the database fails: cached keys are answered from the cache at once, refreshed in the background. */
  databaseFailingSince: Nullable(DateTime),
  /** Entries older than this are not trusted while no listener pushes changes; null while one does. */
  trustCapMs: Nullable(Type.Integer())
})
export type ResolverStats = Static<typeof ResolverStatsSchema>

export const ListenerStatsSchema = Type.Object({
  state: Type.Enum(['listening', 'disconnected', 'unsupported']),
  notifications: Type.Integer(),
  reconnects: Type.Integer(),
  disconnectedSince: Nullable(DateTime)
})

export const UsageStatsSchema = Type.Object({
  usagePendingKeys: Type.Integer(),
  usageFlushes: Type.Integer(),
  limitedClients: Type.Integer()
})
export type UsageStats = Static<typeof UsageStatsSchema>

export const RateLimitStatsSchema = Type.Object({
  store: Type.Enum(['redis', 'memory'], { description: 'Where counters are meant to live: Redis (REDIS_URL set) or this process' }),
  backend: Type.Enum(['redis', 'local'], { description: 'Where checks are answered now: local while Redis is unreachable, failing or slow (each instance then counts alone)' }),
  mode: Type.Enum(['exact', 'batched']),
  fallbacks: Type.Integer({ description: 'Switches from Redis to local counting since the start' }),
  redisErrors: Type.Integer({ description: 'Failed or timed-out Redis calls and connection errors' }),
  limited: Type.Object({
    key: Type.Integer({ description: "Requests refused by their key's own limit" }),
    organization: Type.Integer({ description: "Requests refused by their organization's limit" })
  })
}, { description: 'Key and organization rate limits of this instance' })
export type RateLimitStats = Static<typeof RateLimitStatsSchema>

export const AuthCacheStatsSchema = Type.Object({
  ...ResolverStatsSchema.properties,
  ...UsageStatsSchema.properties,
  listener: ListenerStatsSchema,
  rateLimit: RateLimitStatsSchema
})
