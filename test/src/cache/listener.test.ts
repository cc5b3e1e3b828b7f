// The invalidation listener without PostgreSQL: a fake client and timers the test fires by hand.
import { EventEmitter } from 'node:events'
import t from 'tap'
import type { InvalidationMessage } from '#src/cache/invalidation.ts'
import { InvalidationListener, type ListenerClient, type Timers } from '#src/cache/listener.ts'

class FakeClient extends EventEmitter implements ListenerClient {
  processID: number | null = null
  queries: string[] = []
  ended = false
  destroyed = false
  connection = { stream: { destroy: () => { this.destroyed = true } } }
  constructor (readonly behaviour: { refuse?: boolean, version?: string, hangOnEnd?: boolean, pid: number }) { super() }
  async connect (): Promise<void> {
    if (this.behaviour.refuse === true) throw new Error('connect ECONNREFUSED')
    this.processID = this.behaviour.pid
  }

  async query (text: string): Promise<{ rows: Array<Record<string, unknown>> }> {
    if (this.ended) throw new Error('Client was closed')
    this.queries.push(text)
    return { rows: text === 'SELECT version()' ? [{ version: this.behaviour.version ?? 'PostgreSQL 15.19' }] : [] }
  }

  async end (): Promise<void> {
    this.ended = true
    if (this.behaviour.hangOnEnd === true) await new Promise(() => {}) // a server that never answers the goodbye
  }

  notify (payload: string, processId = 999): void {
    this.emit('notification', { processId, payload, channel: 'battra_auth_invalidation' })
  }
}

class ManualTimers implements Timers {
  timeouts: Array<{ fn: () => void, ms: number, cleared: boolean }> = []
  intervals: Array<{ fn: () => void, ms: number, cleared: boolean }> = []
  setTimeout = (fn: () => void, ms: number) => { const timer = { fn, ms, cleared: false }; this.timeouts.push(timer); return timer }
  clearTimeout = (handle: unknown) => { (handle as { cleared: boolean }).cleared = true }
  setInterval = (fn: () => void, ms: number) => { const timer = { fn, ms, cleared: false }; this.intervals.push(timer); return timer }
  clearInterval = (handle: unknown) => { if (handle !== undefined) (handle as { cleared: boolean }).cleared = true }
  pending () { return this.timeouts.filter((timer) => !timer.cleared) }
  /** Fires the pending timeouts; returns their delays. */
  fire (): number[] {
    const due = this.pending()
    for (const timer of due) timer.cleared = true
    for (const timer of due) timer.fn()
    return due.map((timer) => timer.ms)
  }
}

const settle = () => new Promise((resolve) => setImmediate(resolve))

function harness (plan: Array<{ refuse?: boolean, version?: string, hangOnEnd?: boolean }>, closeTimeoutMs?: number) {
  const clients: FakeClient[] = []
  const events: string[] = []
  const messages: InvalidationMessage[] = []
  const timers = new ManualTimers()
  let now = 1_000_000
  const listener = new InvalidationListener({
    createClient: () => {
      const client = new FakeClient({ ...(plan[clients.length] ?? {}), pid: 100 + clients.length })
      clients.push(client)
      return client
    },
    onMessage: (message) => messages.push(message),
    onListening: () => events.push('listening'),
    onDisconnected: () => events.push('disconnected'),
    reconnectMinMs: 100,
    reconnectMaxMs: 1000,
    heartbeatMs: 5000,
    closeTimeoutMs,
    log: { info: () => {}, warn: () => {} },
    now: () => now,
    random: () => 1, // no jitter: backoff × (0.5 + 1/2)
    timers
  })
  return { listener, clients, events, messages, timers, advance: (ms: number) => { now += ms } }
}

t.test('connects, listens, applies notifications and skips the echo of its own broadcasts', async (t) => {
  const h = harness([{}])
  await h.listener.start()
  t.same(h.events, ['listening'], 'changes are pushed: the owner forgets what it missed and trusts again')
  t.match(h.clients[0].queries, ['SELECT version()', 'LISTEN battra_auth_invalidation'])
  h.clients[0].notify('key:0b0f5d0e-8f7e-4d59-9a1c-2f6e6e3a3c11')
  h.clients[0].notify('user:0b0f5d0e-8f7e-4d59-9a1c-2f6e6e3a3c11', 100)
  t.same(h.messages, [{ target: { keyId: '0b0f5d0e-8f7e-4d59-9a1c-2f6e6e3a3c11' }, keyAdded: false }], 'its own (process 100) is skipped')
  t.match(h.listener.stats(), { state: 'listening', notifications: 1, reconnects: 0, disconnectedSince: null })
  await h.listener.publish('all', { query: async () => { throw new Error('not the fallback') } })
  t.match(h.clients[0].queries.at(-1), 'SELECT pg_notify($1, $2)', 'broadcasts go out on its own session')
})

t.test('a lost connection distrusts the cache, reconnects with doubling backoff, and flushes on return', async (t) => {
  const h = harness([{}, { refuse: true }, { refuse: true }, { refuse: true }, {}])
  await h.listener.start()
  h.advance(10)
  h.clients[0].emit('error', new Error('terminated'))
  t.same(h.events, ['listening', 'disconnected'])
  t.match(h.listener.stats(), { state: 'disconnected', disconnectedSince: new Date(1_000_010).toISOString() })
  const delays: number[] = []
  while (h.listener.stats().state !== 'listening') {
    delays.push(...h.timers.fire())
    await settle()
  }
  t.same(delays, [100, 200, 400, 800], 'the backoff doubles from the minimum')
  t.same(h.events, ['listening', 'disconnected', 'listening'])
  t.equal(h.listener.stats().reconnects, 1)
  t.ok(h.clients[0].ended, 'the lost client is closed')
})

t.test('the backoff is capped, and jitter spreads it', async (t) => {
  const delays: number[] = []
  for (const random of [0, 1]) {
    const clients: FakeClient[] = []
    const timers = new ManualTimers()
    const listener = new InvalidationListener({
      createClient: () => { const client = new FakeClient({ refuse: true, pid: 1 }); clients.push(client); return client },
      onMessage: () => {},
      onListening: () => {},
      onDisconnected: () => {},
      reconnectMinMs: 100,
      reconnectMaxMs: 1000,
      heartbeatMs: 5000,
      log: { info: () => {}, warn: () => {} },
      random: () => random,
      timers
    })
    await listener.start()
    for (let i = 0; i < 8; i++) {
      delays.push(...timers.fire())
      await settle()
    }
    await listener.stop()
  }
  t.same(delays.slice(0, 8), [50, 100, 200, 400, 500, 500, 500, 500], 'with the least jitter: half of the backoff, capped at half the maximum')
  t.same(delays.slice(8), [100, 200, 400, 800, 1000, 1000, 1000, 1000], 'with the most: the backoff itself, capped at the maximum')
})

t.test('reconnectNow skips the wait once the database is seen answering again', async (t) => {
  const h = harness([{}, { refuse: true }, {}])
  await h.listener.start()
  h.clients[0].emit('end')
  h.timers.fire()
  await settle()
  t.equal(h.timers.pending().length, 1, 'a reconnection is scheduled for later')
  h.listener.reconnectNow()
  await settle()
  t.equal(h.listener.stats().state, 'listening', 'listening again at once')
  t.equal(h.timers.pending().length, 0, 'the scheduled attempt is cancelled')
  h.listener.reconnectNow()
  t.equal(h.clients.length, 3, 'no extra connection while listening')
})

t.test('a heartbeat that fails finds a silently dead connection', async (t) => {
  const h = harness([{}, {}])
  await h.listener.start()
  await h.clients[0].end()
  h.timers.intervals[0].fn()
  await settle()
  t.same(h.events, ['listening', 'disconnected'])
})

t.test('PGlite cannot notify: the listener says so and stops trying', async (t) => {
  const h = harness([{ version: 'PostgreSQL 17.4 (PGlite 0.5.14)' }])
  await h.listener.start()
  t.equal(h.listener.stats().state, 'unsupported')
  t.equal(h.timers.pending().length, 0, 'no reconnection scheduled')
  t.ok(h.timers.intervals[0].cleared, 'no heartbeat')
  t.same(h.events, [], 'the cache stays distrusting (its trust cap holds)')
})

t.test('stop closes the connection and schedules nothing more', async (t) => {
  const h = harness([{}, {}])
  await h.listener.start()
  await h.listener.stop()
  t.ok(h.clients[0].ended)
  h.clients[0].emit('end')
  t.equal(h.timers.pending().length, 0)
})

t.test('stop drops a connection whose server never answers the goodbye, instead of waiting forever', async (t) => {
  const h = harness([{ hangOnEnd: true }], 50)
  await h.listener.start()
  await h.listener.stop()
  t.ok(h.clients[0].ended, 'the goodbye was sent')
  t.ok(h.clients[0].destroyed, 'then the socket was dropped')
  const polite = harness([{}], 50)
  await polite.listener.start()
  await polite.listener.stop()
  t.notOk(polite.clients[0].destroyed, 'a server that answers is left to close the connection itself')
})
