// The application built on a test database, with a clock the test can move.
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import battraAuthService, { createFastify } from '#src/app.ts'
import { loadConfig, type Config } from '#src/config.ts'
import { Hearer, createTestDatabase, type Teardown, type TestDatabase } from './database.ts'

export type ConfigOverrides = Partial<Omit<Config, 'cache'>> & { cache?: Partial<Config['cache']> }

export function testConfig (databaseUrl: string, overrides: ConfigOverrides = {}): Config {
  const base = loadConfig({})
  return {
    ...base,
    databaseUrl,
    logLevel: 'silent',
    // Tests flush usage themselves unless they test the interval.
    usageFlushIntervalMs: 3_600_000,
    databaseConnectTimeoutMs: 1000,
    databaseStatementTimeoutMs: 2000,
    ...overrides,
    cache: { ...base.cache, ...overrides.cache }
  }
}

/** The app's clock: the real time moved forward by `advance`, or pinned to an instant by `set`. */
export class TestClock {
  private offset = 0
  private pinned: number | undefined
  readonly now = (): number => this.pinned ?? Date.now() + this.offset
  advance (ms: number): void {
    if (this.pinned !== undefined) this.pinned += ms
    else this.offset += ms
  }

  /** Stops the clock at this instant (ms since epoch); it moves again only by `advance` or `set`. */
  set (ms: number): void {
    this.pinned = ms
  }

  /** Follows the real time again (plus what `advance` added). */
  resume (): void {
    this.pinned = undefined
  }
}

export interface TestApp {
  app: FastifyInstance
  db: TestDatabase
  clock: TestClock
  /** Every log line, at trace level, when asked for with `captureLogs`. */
  logs: string[]
}

export async function build (t: Teardown, options: { config?: ConfigOverrides, proxy?: boolean, db?: TestDatabase, captureLogs?: boolean } = {}): Promise<TestApp> {
  const db = options.db ?? await createTestDatabase(t, { proxy: options.proxy })
  const config = testConfig(db.url, { ...(options.captureLogs === true ? { logLevel: 'trace' } : {}), ...options.config })
  const logs: string[] = []
  const clock = new TestClock()
  const app = createFastify(config, options.captureLogs === true ? { write: (line: string) => { logs.push(line) } } : undefined)
  app.register(fp(battraAuthService), { config, now: clock.now })
  await app.ready()
  // Fixtures wait until this app's listener too has applied their notifications.
  let closed = false
  const hearer = new Hearer(() => !closed && app.invalidation.stats().state === 'listening')
  app.invalidation.onChange((payload) => hearer.record(payload))
  db.hear(hearer)
  t.teardown(async () => {
    closed = true
    await app.close()
  })
  return { app, db, clock, logs }
}

/** Statements the app sent to the database while `fn` ran. */
export async function statementsDuring (app: FastifyInstance, fn: () => Promise<unknown>): Promise<number> {
  const before = app.database.statements.count
  await fn()
  return app.database.statements.count - before
}
