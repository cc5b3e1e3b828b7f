// Needs Redis at redis://127.0.0.1:6379 (REDIS_URL to change it). Each test uses its own key prefix and
// deletes its keys.
import t, { type Test } from 'tap'
import { EventEmitter, once } from 'node:events'
import net from 'node:net'
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { LocalRateLimiter, RedisRateLimiter, type RateDecision, type RateLimitBackend, type RedisRateLimiterOptions } from '#src/policy/rate-limiter.ts'

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const redisAddress = new URL(REDIS_URL)

const admin = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 })
t.before(async () => {
  await admin.connect()
})
t.teardown(() => admin.disconnect())

/** A key prefix of its own for a test, whose keys are deleted when the test ends. */
function prefixFor (t: Test): string {
  const prefix = `battra:test:rl:${randomUUID()}:`
  t.teardown(async () => {
    const keys = await admin.keys(`${prefix}*`)
    if (keys.length > 0) await admin.del(...keys)
  })
  return prefix
}

/** Records the limiter's state changes and lets a test wait for the next one. */
function stateRecorder () {
  const events = new EventEmitter()
  const states: Array<[RateLimitBackend, string | undefined]> = []
  return {
    states,
    onStateChange: (state: RateLimitBackend, error?: Error) => {
      states.push([state, error?.message])
      events.emit(state)
    },
    next: async (state: RateLimitBackend) => { await once(events, state, { signal: AbortSignal.timeout(10_000) }) }
  }
}

/** A limiter closed when the test ends; its timeout is 2 s unless given, so that a loaded machine does not turn a counting test into a fallback test. */
function limiterFor (t: Test, options: Partial<RedisRateLimiterOptions> & { keyPrefix: string }): RedisRateLimiter {
  const limiter = new RedisRateLimiter({ redis: REDIS_URL, timeoutMs: 2000, ...options })
  t.teardown(() => limiter.close())
  return limiter
}

const allowedCount = (decisions: RateDecision[]): number => decisions.filter((decision) => decision.allowed).length

/** Forwards TCP to Redis; can be cut (connections dropped, port closed), restored, and stalled (held). */
class TcpProxy {
  private server: net.Server | undefined
  private readonly sockets = new Set<net.Socket>()
  private readonly held: Array<() => void> = []
  private stalled = false
  port = 0

  async start (): Promise<void> {
    this.server = net.createServer((client) => {
      const upstream = net.connect(Number(redisAddress.port || 6379), redisAddress.hostname)
      this.sockets.add(client).add(upstream)
      const drop = (): void => {
        client.destroy()
        upstream.destroy()
        this.sockets.delete(client)
        this.sockets.delete(upstream)
      }
      client.on('data', (chunk) => {
        if (this.stalled) this.held.push(() => upstream.write(chunk))
        else upstream.write(chunk)
      })
      upstream.on('data', (chunk) => client.write(chunk))
      for (const socket of [client, upstream]) {
        socket.on('error', drop)
        socket.on('close', drop)
      }
    })
    this.server.listen(this.port, '127.0.0.1')
    await once(this.server, 'listening')
    this.port = (this.server.address() as net.AddressInfo).port
  }

  async cut (): Promise<void> {
    for (const socket of this.sockets) socket.destroy()
    this.sockets.clear()
    await new Promise((resolve) => this.server?.close(resolve))
  }

  /** Requests are held, not forwarded: Redis looks alive but silent. */
  stall (): void {
    this.stalled = true
  }

  resume (): void {
    this.stalled = false
    for (const forward of this.held.splice(0)) forward()
  }
}

// ---------------------------------------------------------------------------------------------------------
// Local limiter

t.test('local: exact count per window, then a new window with the injected clock', async (t) => {
  let now = 1_000_000 // the start of a 10 s window
  const limiter = new LocalRateLimiter({ now: () => now })
  const first = Array.from({ length: 5 }, () => limiter.consume('key-a', 3, 10))
  t.same(first.map((decision) => [decision.allowed, decision.remaining]), [[true, 2], [true, 1], [true, 0], [false, 0], [false, 0]])
  t.same(first.map((decision) => decision.resetSeconds), [10, 10, 10, 10, 10])
  t.equal(first[0].limit, 3)
  t.ok(limiter.consume('key-b', 3, 10).allowed, 'buckets are independent')

  now += 9_001
  t.match(limiter.consume('key-a', 3, 10), { allowed: false, remaining: 0, resetSeconds: 1 }, 'still refused 999 ms before the end')
  now += 998
  t.match(limiter.consume('key-a', 3, 10), { allowed: false, resetSeconds: 1 }, 'at least 1 s while limited')
  now += 1
  t.match(limiter.consume('key-a', 3, 10), { allowed: true, remaining: 2, resetSeconds: 10 }, 'the next window starts from zero')
})

t.test('local: a changed policy applies at once', async (t) => {
  let now = 0
  const limiter = new LocalRateLimiter({ now: () => now })
  for (let i = 0; i < 3; i++) limiter.consume('key', 3, 60)
  t.notOk(limiter.consume('key', 3, 60).allowed)
  t.match(limiter.consume('key', 5, 60), { allowed: true, remaining: 1 }, 'a raised limit admits the difference')
  t.notOk(limiter.consume('key', 2, 60).allowed, 'a lowered limit refuses')
  t.match(limiter.consume('key', 2, 10), { allowed: true, remaining: 1, resetSeconds: 10 }, 'another window length counts afresh')
  now = 5_000
  t.match(limiter.consume('key', 2, 10), { allowed: true, remaining: 0, resetSeconds: 5 })
  t.match(limiter.consume('key', 2, 10), { allowed: false, resetSeconds: 5 })
})

t.test('local: limit 0 refuses everything; invalid arguments throw', async (t) => {
  const limiter = new LocalRateLimiter()
  t.match(limiter.consume('key', 0, 1), { allowed: false, limit: 0, remaining: 0, resetSeconds: 1 })
  for (const [limit, windowSeconds] of [[-1, 1], [1.5, 1], [Number.NaN, 1], [1, 0], [1, 0.5], [1, Number.POSITIVE_INFINITY]]) {
    t.throws(() => limiter.consume('key', limit, windowSeconds), RangeError, `${limit} per ${windowSeconds}`)
  }
})

t.test('local: memory is bounded whatever the number of buckets', async (t) => {
  const limiter = new LocalRateLimiter({ maxBuckets: 100, now: () => 0 })
  for (let i = 0; i < 10_000; i++) limiter.consume(`key-${i}`, 1, 60)
  t.equal(limiter.trackedBuckets, 100)
  t.notOk(limiter.consume('key-9999', 1, 60).allowed, 'the most recent are kept')
})

// ---------------------------------------------------------------------------------------------------------
// Redis limiter, Redis up

t.test('redis: exact count in one window; the counter expires with its window', async (t) => {
  const keyPrefix = prefixFor(t)
  const now = 1_800_000_000_000 // a multiple of 60 s: a window starts here
  const limiter = limiterFor(t, { keyPrefix, now: () => now })
  t.equal(await limiter.ready(), 'redis')

  const decisions: RateDecision[] = []
  for (let i = 0; i < 12; i++) decisions.push(await limiter.consume('key', 10, 60))
  t.same(decisions.map((decision) => decision.remaining), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0])
  t.same(decisions.map((decision) => decision.allowed), [...Array(10).fill(true), false, false])
  t.ok(decisions.every((decision) => decision.resetSeconds === 60 && decision.limit === 10))

  const key = `${keyPrefix}{key}:${now / 60_000}`
  t.equal(await admin.get(key), '10', 'refused requests are not counted')
  const ttl = await admin.pttl(key)
  t.ok(ttl > 60_000 && ttl <= 65_000, `expires with its window (plus grace): ${ttl} ms`)
  t.notOk(limiter.consume('key', 10, 60) instanceof Promise, 'past its limit, a bucket is refused without a Redis call')
  t.match(limiter.stats(), { backend: 'redis', fallbacks: 0, redisErrors: 0 })
})

t.test('redis: the next window starts from zero (injected clock)', async (t) => {
  const keyPrefix = prefixFor(t)
  let now = 1_800_000_000_000
  const limiter = limiterFor(t, { keyPrefix, now: () => now })
  await limiter.ready()
  t.ok((await limiter.consume('key', 1, 10)).allowed)
  now += 9_500
  t.match(await limiter.consume('key', 1, 10), { allowed: false, resetSeconds: 1 })
  now += 500
  t.match(await limiter.consume('key', 1, 10), { allowed: true, remaining: 0, resetSeconds: 10 })
  t.equal((await admin.keys(`${keyPrefix}*`)).length, 2, 'one counter per window')
})

t.test('redis: three limiters sharing a bucket admit exactly the limit', async (t) => {
  const keyPrefix = prefixFor(t)
  const limiters = [0, 1, 2].map(() => limiterFor(t, { keyPrefix }))
  await Promise.all(limiters.map((limiter) => limiter.ready()))
  const decisions = await Promise.all(Array.from({ length: 200 }, (_, i) => limiters[i % 3].consume('shared', 50, 60)))
  t.equal(allowedCount(decisions), 50)
  t.same(decisions.filter((decision) => decision.allowed).map((decision) => decision.remaining).sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i), 'each admitted request saw its own count')
  const [key] = await admin.keys(`${keyPrefix}*`)
  t.equal(await admin.get(key), '50')
  t.ok(limiters.every((limiter) => limiter.stats().fallbacks === 0))
})

t.test('redis batched: three limiters still admit exactly the limit; unused reservations are the only loss', async (t) => {
  const keyPrefix = prefixFor(t)
  const limiters = [0, 1, 2].map(() => limiterFor(t, { keyPrefix, mode: 'batched' }))
  await Promise.all(limiters.map((limiter) => limiter.ready()))
  const flood = await Promise.all(Array.from({ length: 200 }, (_, i) => limiters[i % 3].consume('shared', 50, 60)))
  t.equal(allowedCount(flood), 50, 'all reservations get used in a flood')

  // A quiet instance holds a reservation of 10% (5): a busy one gets the rest, 45.
  t.ok((await limiters[0].consume('quiet', 50, 60)).allowed)
  const busy = await Promise.all(Array.from({ length: 100 }, () => limiters[1].consume('quiet', 50, 60)))
  t.equal(allowedCount(busy), 45)
  const remaining = await Promise.all(Array.from({ length: 10 }, () => limiters[0].consume('quiet', 50, 60)))
  t.equal(allowedCount(remaining), 4, 'the quiet instance still has its 4')
  const counters = await Promise.all((await admin.keys(`${keyPrefix}*`)).map((key) => admin.get(key)))
  t.same(counters, ['50', '50'])
})

t.test('redis: a limit of 0 refuses without a call; invalid arguments throw', async (t) => {
  const limiter = limiterFor(t, { keyPrefix: prefixFor(t) })
  await limiter.ready()
  const refused = limiter.consume('key', 0, 60)
  t.notOk(refused instanceof Promise)
  t.match(refused, { allowed: false, limit: 0, remaining: 0 })
  t.throws(() => limiter.consume('key', -1, 60), RangeError)
})

// ---------------------------------------------------------------------------------------------------------
// Redis limiter, Redis down or failing

for (const mode of ['exact', 'batched'] as const) {
  t.test(`fallback (${mode}): nothing listening, answers at once from local counting`, async (t) => {
    const closed = net.createServer()
    closed.listen(0, '127.0.0.1')
    await once(closed, 'listening')
    const { port } = closed.address() as net.AddressInfo
    await new Promise((resolve) => closed.close(resolve)) // a port known to be free

    const recorder = stateRecorder()
    const limiter = limiterFor(t, { redis: `redis://127.0.0.1:${port}`, keyPrefix: prefixFor(t), mode, onStateChange: recorder.onStateChange })
    const started = performance.now()
    const decisions = []
    for (let i = 0; i < 4; i++) decisions.push(await limiter.consume('key', 3, 60))
    const elapsed = performance.now() - started
    t.ok(elapsed < 100, `4 checks in ${elapsed.toFixed(2)} ms`)
    t.same(decisions.map((decision) => decision.allowed), [true, true, true, false], 'limited per instance')

    t.equal(await limiter.ready(), 'local')
    t.match(limiter.stats(), { backend: 'local', fallbacks: 1 })
    t.ok(limiter.stats().redisErrors >= 1)
    t.same(recorder.states.map(([state]) => state), ['local'], 'reported once')
    t.match(recorder.states[0][1], /ECONNREFUSED/)
    for (let i = 0; i < 100; i++) await limiter.consume('key', 3, 60)
    t.equal(limiter.stats().fallbacks, 1, 'still one fallback')
  })
}

t.test('fallback: Redis lost, answers locally at once, and returns to Redis when it is back', async (t) => {
  const keyPrefix = prefixFor(t)
  const proxy = new TcpProxy()
  await proxy.start()
  t.teardown(() => proxy.cut())
  const recorder = stateRecorder()
  const limiter = limiterFor(t, { redis: `redis://127.0.0.1:${proxy.port}`, keyPrefix, maxReconnectDelayMs: 100, onStateChange: recorder.onStateChange })
  t.equal(await limiter.ready(), 'redis')
  t.ok((await limiter.consume('key', 5, 60)).allowed)

  const lost = recorder.next('local')
  await proxy.cut()
  await lost
  const started = performance.now()
  const whileDown = []
  for (let i = 0; i < 6; i++) whileDown.push(await limiter.consume('key', 5, 60))
  const elapsed = performance.now() - started
  t.ok(elapsed < 100, `6 checks in ${elapsed.toFixed(2)} ms`)
  t.same(whileDown.map((decision) => decision.allowed), [true, true, true, true, true, false], 'local counting starts afresh')
  t.match(limiter.stats(), { backend: 'local', fallbacks: 1 })

  const back = recorder.next('redis')
  await proxy.start()
  await back
  t.equal(limiter.stats().backend, 'redis')
  t.match(await limiter.consume('key', 5, 60), { allowed: true, remaining: 3 }, 'the Redis count resumes where it was')
  t.same(recorder.states.map(([state]) => state), ['redis', 'local', 'redis'])
  t.match(limiter.stats(), { backend: 'redis', fallbacks: 1 })
})

t.test('fallback: a silent Redis costs one timeout, then local answers, then Redis again', async (t) => {
  const keyPrefix = prefixFor(t)
  const proxy = new TcpProxy()
  await proxy.start()
  t.teardown(() => proxy.cut())
  const recorder = stateRecorder()
  const limiter = limiterFor(t, { redis: `redis://127.0.0.1:${proxy.port}`, keyPrefix, timeoutMs: 50, recoveryProbeMs: 100, onStateChange: recorder.onStateChange })
  await limiter.ready()
  t.ok((await limiter.consume('key', 5, 60)).allowed)

  proxy.stall()
  let started = performance.now()
  const timedOut = await limiter.consume('key', 5, 60)
  const waited = performance.now() - started
  t.ok(waited >= 45 && waited < 500, `answered after the timeout: ${waited.toFixed(1)} ms`)
  t.match(timedOut, { allowed: true, remaining: 4 }, 'answered locally')
  t.match(limiter.stats(), { backend: 'local', fallbacks: 1, redisErrors: 1 })
  t.match(recorder.states.at(-1)?.[1], /timed out/)
  started = performance.now()
  await limiter.consume('key', 5, 60)
  t.ok(performance.now() - started < 25, 'the next check does not wait for a timeout')

  const back = recorder.next('redis')
  proxy.resume()
  await back
  t.equal(limiter.stats().backend, 'redis')
  t.ok((await limiter.consume('key', 5, 60)).allowed)
})

t.test('fallback (batched): checks waiting on a reservation that times out are answered locally together', async (t) => {
  const proxy = new TcpProxy()
  await proxy.start()
  t.teardown(() => proxy.cut())
  const recorder = stateRecorder()
  const limiter = limiterFor(t, { redis: `redis://127.0.0.1:${proxy.port}`, keyPrefix: prefixFor(t), mode: 'batched', timeoutMs: 50, recoveryProbeMs: 100, onStateChange: recorder.onStateChange })
  await limiter.ready()
  const firstBatch = []
  for (let i = 0; i < 5; i++) firstBatch.push(await limiter.consume('key', 50, 60))
  t.same(firstBatch.map((decision) => decision.remaining), [49, 48, 47, 46, 45], 'one reservation of 5')

  proxy.stall()
  const started = performance.now()
  const waiting = await Promise.all(Array.from({ length: 10 }, () => limiter.consume('key', 50, 60)))
  const waited = performance.now() - started
  t.ok(waited >= 45 && waited < 500, `one timeout for all: ${waited.toFixed(1)} ms`)
  t.equal(allowedCount(waiting), 10)
  t.match(limiter.stats(), { backend: 'local', fallbacks: 1, redisErrors: 1 })

  const back = recorder.next('redis')
  proxy.resume()
  await back
  t.ok((await limiter.consume('key', 50, 60)).allowed)
})

t.test('fallback: an error reply is answered locally, never thrown', async (t) => {
  const keyPrefix = prefixFor(t)
  const now = 1_800_000_000_000
  const recorder = stateRecorder()
  const limiter = limiterFor(t, { keyPrefix, now: () => now, recoveryProbeMs: 50, onStateChange: recorder.onStateChange })
  await limiter.ready()
  await admin.hset(`${keyPrefix}{broken}:${now / 60_000}`, 'field', 'value') // WRONGTYPE for the script
  const back = recorder.next('redis')
  t.match(await limiter.consume('broken', 5, 60), { allowed: true, remaining: 4 })
  t.match(recorder.states.at(-1)?.[1], /WRONGTYPE/)
  await back
  t.ok((await limiter.consume('sound', 5, 60)).allowed, 'other buckets go back to Redis')
})

t.test('close: checks after close are answered locally', async (t) => {
  const limiter = new RedisRateLimiter({ redis: REDIS_URL, keyPrefix: prefixFor(t) })
  await limiter.ready()
  await limiter.close()
  await limiter.close()
  t.match(await limiter.consume('key', 1, 60), { allowed: true })
  t.equal(limiter.stats().fallbacks, 0, 'closing is not a fallback')
})
