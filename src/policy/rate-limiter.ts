// Request limits per bucket (an API key, an organisation) checked after a key is authenticated: at most
// `limit` requests per window of `windowSeconds`, in process (LocalRateLimiter) or shared by every instance
// through Redis (RedisRateLimiter, which falls back to its own LocalRateLimiter while Redis is unreachable).
//
// Why fixed windows (aligned on the epoch: window n covers [n·w, (n+1)·w)) rather than a sliding-window
// counter: the guarantee is exact and easy to state and to test ("at most N per window", one counter per
// window, one atomic increment), the window's end is known, so Retry-After and RateLimit-Reset are exact
// (a client that waits them out is admitted; a sliding estimate can only guess), and most API gateways do
// the same. Aligned on the epoch rather than started by a bucket's first request (@fastify/rate-limit's
// way), so that every instance, and the local fallback, computes the same window from the clock alone and
// the Redis key can name it. The cost: a client may send N at the end of one window and N at the start of
// the next, 2N within w seconds. For a runaway agent loop (the case this exists for) the long-run rate is
// what matters, and it is bounded by N per w.
//
// What a fleet of instances sharing one Redis guarantees, per bucket and window of limit N:
// - Redis reachable, exact mode: at most N admitted, whatever the number of instances (one atomic script
//   per check; refused requests are not counted). Clocks that disagree by d shift an instance's window
//   edges by d but cannot add admissions: each window has one counter, which admits at most N.
// - Batched mode: also at most N (Redis never hands out more than N); up to (instances − 1) × (batch − 1)
//   requests may be refused while other instances hold them unused.
// - k instances falling back (Redis lost, failing, or slower than the timeout): each admits up to N on its
//   own, so at most N + k × N in the windows the outage spans. A check that timed out may still have been
//   counted in Redis: that only lowers what the others admit.
import { LRUCache } from 'lru-cache'
import { Redis, type RedisOptions } from 'ioredis'

export interface RateDecision {
  allowed: boolean
  limit: number
  /** Requests left in the window after this one. */
  remaining: number
  /** Whole seconds until the window ends, at least 1: Retry-After and RateLimit-Reset. */
  resetSeconds: number
}

export interface RateLimiter {
  /** Counts one request of `bucket` and tells whether it is admitted. Throws only on invalid arguments. */
  consume (bucket: string, limit: number, windowSeconds: number): RateDecision | Promise<RateDecision>
  close (): Promise<void>
}

/** Milliseconds since the epoch. */
export type Clock = () => number

export type RateLimitBackend = 'redis' | 'local'

const DEFAULT_MAX_BUCKETS = 100_000

function checkArguments (limit: number, windowSeconds: number): void {
  if (!Number.isSafeInteger(limit) || limit < 0) throw new RangeError(`limit must be a whole number ≥ 0, got ${limit}`)
  if (!Number.isSafeInteger(windowSeconds) || windowSeconds < 1) throw new RangeError(`windowSeconds must be a whole number ≥ 1, got ${windowSeconds}`)
}

function decision (allowed: boolean, limit: number, used: number, windowEnd: number, now: number): RateDecision {
  return { allowed, limit, remaining: Math.max(0, limit - used), resetSeconds: Math.max(1, Math.ceil((windowEnd - now) / 1000)) }
}

// ---------------------------------------------------------------------------------------------------------

interface LocalWindow {
  windowMs: number
  index: number
  used: number
}

export interface LocalRateLimiterOptions {
  /**
   * Buckets remembered; past this, the least recently used is forgotten (lru-cache: O(1) even when full).
   * A forgotten bucket starts its window again at 0, so keep it above the number of buckets active within
   * one window. Default 100 000 (about 10 MB).
   */
  maxBuckets?: number
  now?: Clock
}

/** Counters in this process only: exact for one instance, synchronous. */
export class LocalRateLimiter implements RateLimiter {
  private readonly windows: LRUCache<string, LocalWindow>
  private readonly now: Clock

  constructor (options: LocalRateLimiterOptions = {}) {
    this.windows = new LRUCache<string, LocalWindow>({ max: options.maxBuckets ?? DEFAULT_MAX_BUCKETS })
    this.now = options.now ?? Date.now
  }

  get trackedBuckets (): number {
    return this.windows.size
  }

  consume (bucket: string, limit: number, windowSeconds: number): RateDecision {
    checkArguments(limit, windowSeconds)
    const now = this.now()
    const windowMs = windowSeconds * 1000
    const index = Math.floor(now / windowMs)
    let window = this.windows.get(bucket)
    if (window === undefined) {
      window = { windowMs, index, used: 0 }
      this.windows.set(bucket, window)
    } else if (window.index !== index || window.windowMs !== windowMs) {
      // A new window, or the bucket's policy changed its length: count from zero, reusing the object.
      window.windowMs = windowMs
      window.index = index
      window.used = 0
    }
    const windowEnd = (index + 1) * windowMs
    if (window.used >= limit) return decision(false, limit, window.used, windowEnd, now)
    window.used++
    return decision(true, limit, window.used, windowEnd, now)
  }

  async close (): Promise<void> {
    this.windows.clear()
  }
}

// ---------------------------------------------------------------------------------------------------------

// One atomic step per check: take up to ARGV[2] requests from the counter of one bucket in one window,
// never past the limit ARGV[1]; the counter is created with an expiry of ARGV[3] ms. Refused requests are
// not counted, so the counter is the number admitted. Returns { taken, counter after }.
const TAKE_SCRIPT = `
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local taken = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - used)
if taken <= 0 then return { 0, used } end
used = redis.call('INCRBY', KEYS[1], taken)
if used == taken then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return { taken, used }
`

/**
 * A counter outlives its window by this much: an instance whose clock lags the others' still finds it (and
 * the count) instead of creating a fresh one. Clock skew only shifts when an instance changes counters; it
 * cannot add admissions, since each window's counter admits at most `limit`.
 */
const KEY_GRACE_MS = 5000

interface ScriptedRedis extends Redis {
  battraRateLimitTake (key: string, limit: number, wanted: number, ttlMs: number): Promise<unknown>
}

/** What this instance knows of one bucket's counter in Redis, for the current window. */
interface RedisBucket {
  windowMs: number
  index: number
  limit: number
  /** The counter after this instance's last call. */
  used: number
  /** Requests taken from Redis ahead of time and not used yet (batched mode). */
  reserved: number
  /** The counter reached the limit: refuse without asking Redis until the window ends. */
  exhausted: boolean
  /** A reservation in flight, which the bucket's other checks wait for (batched mode). */
  pending: Promise<boolean> | undefined
}

export interface RedisRateLimiterStats {
  backend: RateLimitBackend
  /** Times the limiter switched to local counting (Redis unreachable at start, lost, failing or slow). */
  fallbacks: number
  /** Failed or timed-out calls and connection errors, including failed reconnection attempts. */
  redisErrors: number
}

export interface RedisRateLimiterOptions {
  /**
   * A redis:// URL or ioredis options. The limiter opens its own connection, because it needs fail-fast
   * settings a shared client would impose on others: no offline queue, no retried commands, a command
   * timeout.
   */
  redis: string | RedisOptions
  /** A check taking longer is answered locally, and the limiter falls back. Default 50 ms. */
  timeoutMs?: number
  /** Default 500 ms. */
  connectTimeoutMs?: number
  /** Reconnection attempts back off linearly up to this. Default 1000 ms. */
  maxReconnectDelayMs?: number
  /**
   * While local with the connection up (calls timed out), Redis is pinged after this long, then again
   * while it fails. Default 1000 ms; doubled, up to 30 s, for a fallback soon after a recovery.
   */
  recoveryProbeMs?: number
  /** Keys are `${keyPrefix}{bucket}:${window index}`; the braces make the bucket a Redis Cluster hash tag. */
  keyPrefix?: string
  /**
   * 'exact' (default): one Redis call per admitted request. 'batched': an instance takes up to
   * batchFraction × limit (at most maxBatch) requests at once and admits them locally. The fleet still
   * admits at most `limit` per window (Redis never hands out more), but up to (instances − 1) ×
   * (batch − 1) requests may be refused while held unused by other instances.
   */
  mode?: 'exact' | 'batched'
  batchFraction?: number
  maxBatch?: number
  /** Buckets remembered, for the local fallback and for Redis-side state. Default 100 000. */
  maxBuckets?: number
  /**
   * ioredis's auto-pipelining: checks issued in one event-loop turn share one write. Default true. On a
   * loaded 2-core machine, scripts/bench-rate-limit.ts could not tell the two apart in checks per second
   * (the noise exceeded the difference), but a burst of 200 checks from three limiters completed in 22-28 ms
   * with it and 38-41 ms without, and without it one such burst once exceeded the 50 ms timeout.
   */
  autoPipelining?: boolean
  now?: Clock
  /** Called once per switch between Redis and local counting (log it); errors it throws are ignored. */
  onStateChange?: (state: RateLimitBackend, error?: Error) => void
}

/**
 * Counters shared by every instance through Redis: one atomic Lua script per check (EVALSHA via
 * defineCommand). While Redis is unreachable, failing or slower than timeoutMs, checks are answered at
 * once by an embedded LocalRateLimiter (each instance then admits up to `limit` per window on its own);
 * it returns to Redis as soon as the connection is ready again. Never throws because of Redis.
 */
export class RedisRateLimiter implements RateLimiter {
  private readonly client: ScriptedRedis
  private readonly local: LocalRateLimiter
  private readonly buckets: LRUCache<string, RedisBucket>
  private readonly now: Clock
  private readonly keyPrefix: string
  private readonly batched: boolean
  private readonly batchFraction: number
  private readonly maxBatch: number
  private readonly recoveryProbeMs: number
  private readonly onStateChange: (state: RateLimitBackend, error?: Error) => void
  private state: 'starting' | RateLimitBackend = 'starting'
  private fallbacks = 0
  private redisErrors = 0
  private closed = false
  private probe: NodeJS.Timeout | undefined
  private probeDelayMs: number
  private recoveredAt = 0
  private readonly settled: Promise<RateLimitBackend>
  private settle: ((backend: RateLimitBackend) => void) | undefined

  constructor (options: RedisRateLimiterOptions) {
    const timeoutMs = options.timeoutMs ?? 50
    const maxReconnectDelayMs = options.maxReconnectDelayMs ?? 1000
    const failFast: RedisOptions = {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      connectTimeout: options.connectTimeoutMs ?? 500,
      commandTimeout: timeoutMs,
      retryStrategy: (attempt) => Math.min(attempt * 100, maxReconnectDelayMs),
      enableAutoPipelining: options.autoPipelining ?? true
    }
    const client = typeof options.redis === 'string' ? new Redis(options.redis, failFast) : new Redis({ ...options.redis, ...failFast })
    client.defineCommand('battraRateLimitTake', { numberOfKeys: 1, lua: TAKE_SCRIPT })
    this.client = client as ScriptedRedis
    this.now = options.now ?? Date.now
    this.local = new LocalRateLimiter({ maxBuckets: options.maxBuckets, now: this.now })
    this.buckets = new LRUCache<string, RedisBucket>({ max: options.maxBuckets ?? DEFAULT_MAX_BUCKETS })
    this.keyPrefix = options.keyPrefix ?? 'battra:rl:'
    this.batched = options.mode === 'batched'
    this.batchFraction = options.batchFraction ?? 0.1
    this.maxBatch = options.maxBatch ?? 100
    this.recoveryProbeMs = options.recoveryProbeMs ?? 1000
    this.probeDelayMs = this.recoveryProbeMs
    const onStateChange = options.onStateChange
    this.onStateChange = (state, error) => {
      try {
        onStateChange?.(state, error)
      } catch {}
    }
    this.settled = new Promise((resolve) => { this.settle = resolve })

    client.on('ready', () => this.useRedis())
    client.on('error', (error: Error) => {
      this.redisErrors++
      this.fallBack(error)
    })
    client.on('close', () => this.fallBack(new Error('the connection to Redis closed')))
  }

  /** Where checks are answered now. Local until the first connection is ready. */
  get backend (): RateLimitBackend {
    return this.state === 'redis' ? 'redis' : 'local'
  }

  stats (): RedisRateLimiterStats {
    return { backend: this.backend, fallbacks: this.fallbacks, redisErrors: this.redisErrors }
  }

  /** Resolves once the first connection attempt has settled: 'redis' when ready, 'local' when it failed. */
  ready (): Promise<RateLimitBackend> {
    return this.settled
  }

  consume (bucket: string, limit: number, windowSeconds: number): RateDecision | Promise<RateDecision> {
    checkArguments(limit, windowSeconds)
    if (this.state !== 'redis') return this.local.consume(bucket, limit, windowSeconds)
    const now = this.now()
    const windowMs = windowSeconds * 1000
    const index = Math.floor(now / windowMs)
    const windowEnd = (index + 1) * windowMs
    if (limit === 0) return decision(false, 0, 0, windowEnd, now)

    const known = this.buckets.get(bucket)
    const current = known !== undefined && known.index === index && known.windowMs === windowMs && known.limit === limit ? known : undefined
    if (this.batched) {
      const state = current ?? this.track(bucket, limit, windowMs, index)
      if (state.reserved > 0) {
        state.reserved--
        return decision(true, limit, state.used - state.reserved, windowEnd, now)
      }
      if (state.exhausted) return decision(false, limit, state.used, windowEnd, now)
      return this.reserveThenConsume(state, bucket, limit, windowSeconds, now)
    }
    // A counter at its limit stays there until the window ends: a client hammering past its limit costs no
    // Redis call.
    if (current?.exhausted === true) return decision(false, limit, current.used, windowEnd, now)
    return this.takeOne(bucket, limit, windowSeconds, index, now)
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.stopProbe()
    this.settle?.(this.backend)
    try {
      if (this.client.status === 'ready') await this.client.quit()
      else this.client.disconnect()
    } catch {
      this.client.disconnect()
    }
    await this.local.close()
    this.buckets.clear()
  }

  private async takeOne (bucket: string, limit: number, windowSeconds: number, index: number, now: number): Promise<RateDecision> {
    const windowMs = windowSeconds * 1000
    const windowEnd = (index + 1) * windowMs
    let taken: number
    let used: number
    try {
      [taken, used] = await this.take(bucket, index, limit, 1, windowEnd - now)
    } catch (error) {
      this.callFailed(error)
      return this.local.consume(bucket, limit, windowSeconds)
    }
    if (taken === 0) {
      const state = this.track(bucket, limit, windowMs, index)
      state.used = used
      state.exhausted = true
    }
    return decision(taken > 0, limit, used, windowEnd, now)
  }

  private async reserveThenConsume (state: RedisBucket, bucket: string, limit: number, windowSeconds: number, now: number): Promise<RateDecision> {
    state.pending ??= this.reserve(state, bucket, limit, now)
    const reserved = await state.pending
    if (!reserved) return this.local.consume(bucket, limit, windowSeconds)
    // Served from what was reserved, or refused, or another reservation: the same path as any check.
    return this.consume(bucket, limit, windowSeconds)
  }

  private async reserve (state: RedisBucket, bucket: string, limit: number, now: number): Promise<boolean> {
    const wanted = Math.max(1, Math.min(this.maxBatch, Math.floor(limit * this.batchFraction)))
    try {
      const [taken, used] = await this.take(bucket, state.index, limit, wanted, (state.index + 1) * state.windowMs - now)
      state.reserved += taken
      state.used = used
      state.exhausted = used >= limit
      return true
    } catch (error) {
      this.callFailed(error)
      return false
    } finally {
      state.pending = undefined
    }
  }

  private async take (bucket: string, index: number, limit: number, wanted: number, msUntilWindowEnd: number): Promise<[number, number]> {
    const reply = await this.client.battraRateLimitTake(`${this.keyPrefix}{${bucket}}:${index}`, limit, wanted, msUntilWindowEnd + KEY_GRACE_MS)
    if (!Array.isArray(reply) || typeof reply[0] !== 'number' || typeof reply[1] !== 'number') {
      throw new Error(`unexpected reply from the rate-limit script: ${JSON.stringify(reply)}`)
    }
    return [reply[0], reply[1]]
  }

  /** The bucket's state for this window, created anew (a reservation in flight keeps the old object). */
  private track (bucket: string, limit: number, windowMs: number, index: number): RedisBucket {
    const state: RedisBucket = { windowMs, index, limit, used: 0, reserved: 0, exhausted: false, pending: undefined }
    this.buckets.set(bucket, state)
    return state
  }

  private callFailed (error: unknown): void {
    this.redisErrors++
    this.fallBack(error instanceof Error ? error : new Error(String(error)))
  }

  private useRedis (): void {
    if (this.closed) return
    this.stopProbe()
    if (this.state === 'redis') return
    if (this.state === 'local') this.recoveredAt = Date.now()
    this.state = 'redis'
    // Counts taken while local do not carry over; what Redis holds for the window still applies.
    this.buckets.clear()
    this.settle?.('redis')
    this.settle = undefined
    this.onStateChange('redis')
  }

  private fallBack (error: Error): void {
    if (this.closed || this.state === 'local') return
    this.state = 'local'
    this.fallbacks++
    this.settle?.('local')
    this.settle = undefined
    this.onStateChange('local', error)
    this.startProbe()
  }

  // A call that timed out leaves the connection up, so no 'ready' event will announce Redis's return: ping
  // it. When the connection is down, ioredis reconnects by itself and 'ready' ends the fallback. A Redis
  // that answers pings but keeps failing checks (slower than the timeout, or an error reply) would make the
  // limiter flap: each fallback soon after a recovery doubles the wait, up to 30 s.
  private startProbe (): void {
    if (this.probe !== undefined) return
    const sinceRecovery = Date.now() - this.recoveredAt
    this.probeDelayMs = sinceRecovery < 10 * this.probeDelayMs ? Math.min(this.probeDelayMs * 2, 30_000) : this.recoveryProbeMs
    const tick = (): void => {
      this.probe = setTimeout(() => {
        if (this.client.status !== 'ready') return tick()
        this.client.ping().then(() => this.useRedis(), () => {
          this.redisErrors++
          if (this.state === 'local' && !this.closed) tick()
        })
      }, this.probeDelayMs)
      this.probe.unref()
    }
    tick()
  }

  private stopProbe (): void {
    clearTimeout(this.probe)
    this.probe = undefined
  }
}
