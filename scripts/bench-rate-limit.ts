// Checks per second and latency of the rate limiters in one process: local, Redis exact (with and without
// ioredis auto-pipelining) and Redis batched, 1, 8 and 64 requests at once, over 100 buckets whose
// limits are never reached (the admitted path, the one every request of a limited key takes).
// Run: node --import tsx scripts/bench-rate-limit.ts [seconds per scenario, default 3]
// Needs Redis at REDIS_URL (default redis://127.0.0.1:6379); its keys are deleted at the end.
import { createHistogram } from 'node:perf_hooks'
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { LocalRateLimiter, RedisRateLimiter, type RateLimiter, type RedisRateLimiterOptions } from '#src/policy/rate-limiter.ts'

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const SECONDS = Number(process.argv[2] ?? 3)
const BUCKETS = Array.from({ length: 100 }, (_, i) => `key-${i}`)
const LIMIT = 1_000_000_000
const WINDOW_SECONDS = 3600
const keyPrefix = `battra:bench:rl:${randomUUID()}:`

interface Result {
  scenario: string
  concurrency: number
  'checks/s': string
  'p50 (µs)': string
  'p99 (µs)': string
  'p99.9 (µs)': string
  'max (µs)': string
}

async function measure (scenario: string, limiter: RateLimiter, concurrency: number): Promise<Result> {
  const histogram = createHistogram()
  let checks = 0
  let refused = 0
  const until = performance.now() + SECONDS * 1000
  const worker = async (offset: number): Promise<void> => {
    for (let i = offset; performance.now() < until; i += concurrency) {
      const started = process.hrtime.bigint()
      const decision = await limiter.consume(BUCKETS[i % BUCKETS.length], LIMIT, WINDOW_SECONDS)
      histogram.record(process.hrtime.bigint() - started || 1n)
      if (!decision.allowed) refused++
      checks++
      // A synchronous limiter would never yield: let timers and I/O run now and then, as a server would.
      if (i % 1000 === offset) await new Promise(setImmediate)
    }
  }
  const started = performance.now()
  await Promise.all(Array.from({ length: concurrency }, (_, offset) => worker(offset)))
  const elapsed = (performance.now() - started) / 1000
  if (refused > 0) throw new Error(`${scenario}: ${refused} refused; the limit should never be reached`)
  const micros = (nanoseconds: number): string => (nanoseconds / 1000).toFixed(nanoseconds < 10_000 ? 2 : 0)
  return {
    scenario,
    concurrency,
    'checks/s': Math.round(checks / elapsed).toLocaleString('en'),
    'p50 (µs)': micros(histogram.percentile(50)),
    'p99 (µs)': micros(histogram.percentile(99)),
    'p99.9 (µs)': micros(histogram.percentile(99.9)),
    'max (µs)': micros(histogram.max)
  }
}

async function redisLimiter (options: Partial<RedisRateLimiterOptions>): Promise<RedisRateLimiter> {
  const limiter = new RedisRateLimiter({ redis: REDIS_URL, keyPrefix, timeoutMs: 1000, ...options })
  if (await limiter.ready() !== 'redis') throw new Error(`Redis unreachable at ${REDIS_URL}`)
  return limiter
}

const results: Result[] = []
const local = new LocalRateLimiter()
results.push(await measure('local', local, 1))
results.push(await measure('local', local, 64))

for (const [scenario, options] of [
  ['redis exact', { mode: 'exact' }],
  ['redis exact, no auto-pipelining', { mode: 'exact', autoPipelining: false }],
  ['redis batched (10%, at most 100)', { mode: 'batched' }]
] as Array<[string, Partial<RedisRateLimiterOptions>]>) {
  for (const concurrency of [1, 8, 64]) {
    const limiter = await redisLimiter(options)
    results.push(await measure(scenario, limiter, concurrency))
    const { fallbacks, redisErrors } = limiter.stats()
    if (fallbacks > 0 || redisErrors > 0) throw new Error(`${scenario}: ${fallbacks} fallbacks, ${redisErrors} errors`)
    await limiter.close()
  }
}

const admin = new Redis(REDIS_URL)
const keys = await admin.keys(`${keyPrefix}*`)
if (keys.length > 0) await admin.del(...keys)
const server = (await admin.info('server')).match(/redis_version:(\S+)/)?.[1]
admin.disconnect()

console.log(`Node ${process.version}, Redis ${server} on loopback, ${SECONDS} s per scenario, ${BUCKETS.length} buckets, one process`)
console.table(results)
