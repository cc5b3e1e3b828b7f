// The counters of key and organization rate limits: in this process, or shared by every instance through
// Redis when REDIS_URL is set (src/policy/rate-limiter.ts). Redis unreachable, failing or slow: checks are
// answered in process at once (each instance then admits up to the limit on its own), the switch is
// logged once, counted in /metrics and shown in the admin stats and /ready; never a 5xx.
import fp from 'fastify-plugin'
import { checkRateLimits, type KeyPolicy, type RateVerdict } from '#src/policy/key-policy.ts'
import { LocalRateLimiter, RedisRateLimiter, type RateDecision, type RateLimitBackend } from '#src/policy/rate-limiter.ts'
import { pulledCounter, pulledGauge } from '#src/metrics.ts'
import type { RateLimitStats } from '#src/schemas/cache.ts'

declare module 'fastify' {
  interface FastifyInstance {
    keyRateLimits: {
      /**
       * Counts one request of an admitted key against its limits (the key's, then its organization's).
       * Synchronous unless Redis is asked. Only for policies with a limit.
       */
      check: (policy: KeyPolicy) => RateVerdict | Promise<RateVerdict>
      /**
       * Counts one request of any other bucket (e.g. `leak-report:<client address>`) on the same counters:
       * in process, or shared through Redis. Buckets of keys and organizations are `key:` and `org:`.
       */
      consume: (bucket: string, limit: number, windowSeconds: number) => RateDecision | Promise<RateDecision>
      stats: () => RateLimitStats
    }
  }
}

export interface RateLimitPluginOptions {
  /** The clock (ms since epoch), for tests: windows are computed from it. */
  now?: () => number
}

/** Where a Redis URL points, without its credentials, for the logs. */
function redisAddress (url: string): string {
  const parsed = new URL(url)
  return `${parsed.protocol}//${parsed.host}`
}

export default fp<RateLimitPluginOptions>(async function keyRateLimits (fastify, opts) {
  const { config, metrics, log } = fastify
  const { redisUrl, mode, redisTimeoutMs } = config.rateLimit
  const now = opts.now ?? Date.now
  const limited = { key: 0, organization: 0 }

  let redis: RedisRateLimiter | undefined
  let limiter: LocalRateLimiter | RedisRateLimiter
  if (redisUrl === undefined) {
    limiter = new LocalRateLimiter({ now })
  } else {
    const where = redisAddress(redisUrl)
    let connectedOnce = false
    redis = new RedisRateLimiter({
      redis: redisUrl,
      mode,
      timeoutMs: redisTimeoutMs,
      now,
      // Once per switch, however many errors a Redis outage produces.
      onStateChange: (state: RateLimitBackend, error?: Error) => {
        if (state === 'local') {
          log.warn({ redis: where, reason: error?.message }, 'rate limits: Redis unreachable, failing or slow; counting in this process until it answers again (each instance admits up to the limit on its own)')
        } else {
          log.info({ redis: where, mode }, connectedOnce ? 'rate limits: Redis answers again; counters shared by every instance' : 'rate limits: counters shared by every instance through Redis')
          connectedOnce = true
        }
      }
    })
    limiter = redis
    // Bounded by the connection timeout: a Redis that is down at start costs a warning, not the start.
    await redis.ready()
  }

  const count = (verdict: RateVerdict): RateVerdict => {
    if (!verdict.decision.allowed) limited[verdict.scope]++
    return verdict
  }

  const stats = (): RateLimitStats => {
    const backend = redis === undefined ? { backend: 'local' as const, fallbacks: 0, redisErrors: 0 } : redis.stats()
    return { store: redis === undefined ? 'memory' : 'redis', ...backend, mode, limited: { ...limited } }
  }

  fastify.decorate('keyRateLimits', {
    check (policy: KeyPolicy) {
      const verdict = checkRateLimits(limiter, policy)
      return verdict instanceof Promise ? verdict.then(count) : count(verdict)
    },
    consume: (bucket: string, limit: number, windowSeconds: number) => limiter.consume(bucket, limit, windowSeconds),
    stats
  })

  pulledGauge(metrics, 'battra_auth_rate_limit_backend', '1 for where rate-limit checks are answered now (local while Redis is unreachable).', ['backend'], () => {
    const { backend } = stats()
    return [[{ backend: 'redis' }, backend === 'redis' ? 1 : 0], [{ backend: 'local' }, backend === 'local' ? 1 : 0]]
  })
  pulledCounter(metrics, 'battra_auth_rate_limit_fallbacks_total', 'Switches from Redis to counting in this process.', [], () => [[undefined, stats().fallbacks]])
  pulledCounter(metrics, 'battra_auth_rate_limit_redis_errors_total', 'Failed or timed-out Redis calls and connection errors of the rate limiter.', [], () => [[undefined, stats().redisErrors]])
  pulledCounter(metrics, 'battra_auth_rate_limited_total', 'Requests refused with 429 RATE_LIMITED, by the limit that refused them.', ['scope'], () => [[{ scope: 'key' }, limited.key], [{ scope: 'organization' }, limited.organization]])

  fastify.addHook('onClose', () => limiter.close())
}, { name: 'key-rate-limits', dependencies: ['config', 'metrics'] })
