// PostgreSQL connections: one pg pool, shared by Prisma (through @prisma/adapter-pg) and the migrator.
import pg from 'pg'
import { PrismaPg } from '@prisma/adapter-pg'
import { PrismaClient } from '#src/generated/prisma/client.ts'

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
  class CountingClient extends pg.Client {
    constructor (config?: string | pg.ClientConfig) {
      super(config)
      // The pool listens for errors only while a connection is idle. One checked out (held by a
      // transaction between statements) that the server terminates emits 'error' with nobody listening,
      // which crashed the process; its pending and next queries fail on their own (answered 503).
      this.on('error', () => {})
    }

    // pg's overloads make a faithful override signature unwieldy; counting is all that is added.
    query (...args: unknown[]): any {
      counter.count++
      return (super.query as (...a: unknown[]) => unknown)(...args)
    }
  }
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.max,
    connectionTimeoutMillis: options.connectTimeoutMs,
    query_timeout: options.statementTimeoutMs,
    keepAlive: true,
    Client: CountingClient
  })
  // An idle connection dropped by the server is not an error of any request: the pool replaces it.
  pool.on('error', () => {})
  return pool
}

export function createPrisma (pool: pg.Pool): PrismaClient {
  return new PrismaClient({ adapter: new PrismaPg(pool) })
}

export type { PrismaClient }
