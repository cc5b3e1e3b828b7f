// PostgreSQL connections: one pg pool, shared by Prisma (through @prisma/adapter-pg) and the migrator.
import pg from 'pg'
import { PrismaPg } from '@prisma/adapter-pg'
import { PrismaClient } from '#src/generated/prisma/client.ts'
import { settledWithin } from '#src/settled-within.ts'

/** Counts every statement sent over the pool, so tests and the benchmark can check query budgets. */
export interface StatementCounter {
  count: number
}

export interface PoolOptions {
  url: string
  max: number
  connectTimeoutMs: number
  /** Enforced by the client, so that it holds on PGlite's socket too and when the server stops answering. */
  statementTimeoutMs: number
}

export function createPool (options: PoolOptions, counter: StatementCounter): pg.Pool {
  const deadlines = new StatementDeadlines(options.statementTimeoutMs)
  class CountingClient extends pg.Client {
    /** When each statement still waiting for its answer was sent (ms, monotonic), oldest first. */
    readonly pendingSince: number[] = []

    constructor (config?: string | pg.ClientConfig) {
      super(config)
      // The pool listens for errors only while a connection is idle. One checked out (held by a
      // transaction between statements) that the server terminates emits 'error' with nobody listening,
      // which crashed the process; its pending and next queries fail on their own (answered 503).
      this.on('error', () => {})
      deadlines.watch(this)
    }

    // pg's overloads make a faithful override signature unwieldy; counting and timing are all that is added.
    query (...args: unknown[]): any {
      counter.count++
      const last = args.length - 1
      const callback = args[last]
      const submittable = typeof (args[0] as { submit?: unknown } | null)?.submit === 'function'
      if (submittable) return (super.query as (...a: unknown[]) => unknown)(...args)
      // A connection answers its statements in the order they were sent: the first answer ends the oldest.
      this.pendingSince.push(performance.now())
      if (typeof callback === 'function') args[last] = timedCallback(callback as Callback, this.pendingSince)
      let result: unknown
      try {
        result = (super.query as (...a: unknown[]) => unknown)(...args)
      } catch (error) {
        this.pendingSince.pop() // refused before it was sent (no statement given)
        throw error
      }
      if (result instanceof Promise) {
        const answered = endsOldest(this.pendingSince)
        result.then(answered, answered)
      }
      return result
    }
  }
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.max,
    connectionTimeoutMillis: options.connectTimeoutMs,
    keepAlive: true,
    Client: CountingClient
  })
  // An idle connection dropped by the server is not an error of any request: the pool replaces it.
  pool.on('error', () => {})
  connectionsOf.set(pool, deadlines.clients)
  return pool
}

const connectionsOf = new WeakMap<pg.Pool, ReadonlySet<TimedClient>>()

/**
 * Ends the pool. A server that has not let its connections go within `withinMs` (one that stopped
 * answering: pg waits for its goodbye forever) has them dropped, so that closing the service cannot hang.
 */
export async function endPool (pool: pg.Pool, withinMs: number): Promise<void> {
  const ended = pool.end()
  if (await settledWithin(ended, withinMs)) return ended
  for (const client of connectionsOf.get(pool) ?? []) client.connection.stream.destroy()
  await ended
}

type Callback = (error: unknown, result: unknown) => void

// The closures that end a statement's wait are made here, not inside query(): one made there kept all of
// query()'s context, and with it the statement's rows, alive through scavenges (promoted to the old
// generation under load, as with pg's own query_timeout below).
function timedCallback (callback: Callback, pendingSince: number[]): Callback {
  return (error, result) => {
    pendingSince.shift()
    callback(error, result)
  }
}

function endsOldest (pendingSince: number[]): () => void {
  return () => { pendingSince.shift() }
}

interface TimedClient extends pg.Client {
  pendingSince: number[]
}

/**
 * The statement timeout, enforced by the client so that it holds on PGlite's socket too and when the
 * server stops answering. pg's own query_timeout arms a timer per statement with a closure made inside
 * Client.query, and in the service that kept each statement's rows alive long enough to be promoted to the
 * old generation: about 770 KB per scavenge under load, scavenges twice as long, and a third of the CPU
 * of GET /api/v1/projects above bare Fastify + pg (README, Performance). Here one sweep, while any
 * connection is open, ends every connection whose oldest statement has waited past the timeout: its
 * statements fail with "Query read timeout" (a database failure, 503) and the pool replaces it. A
 * statement fails between the timeout and a quarter of it later (at most a second later).
 */
class StatementDeadlines {
  readonly clients = new Set<TimedClient>()
  private sweeper: NodeJS.Timeout | undefined

  constructor (private readonly timeoutMs: number) {}

  watch (client: TimedClient): void {
    this.clients.add(client)
    client.once('end', () => {
      this.clients.delete(client)
      if (this.clients.size === 0) {
        clearInterval(this.sweeper)
        this.sweeper = undefined
      }
    })
    this.sweeper ??= setInterval(() => this.sweep(), Math.min(1000, Math.max(10, this.timeoutMs / 4))).unref()
  }

  private sweep (): void {
    const now = performance.now()
    for (const client of this.clients) {
      const oldest = client.pendingSince[0]
      if (oldest !== undefined && now - oldest > this.timeoutMs) {
        client.pendingSince.length = 0
        client.connection.stream.destroy(new Error('Query read timeout'))
      }
    }
  }
}

export function createPrisma (pool: pg.Pool): PrismaClient {
  return new PrismaClient({ adapter: new PrismaPg(pool) })
}

export type { PrismaClient }
