// The application built on a test database, with a clock the test can move.
import Fastify, { type FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import battraAuthService, { serverOptions } from '#src/app.ts'
import { loadConfig, type Config } from '#src/config.ts'
import { createTestDatabase, type Teardown, type TestDatabase } from './database.ts'

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

/** A clock that starts at the real time and moves only when told. */
export class TestClock {
  private offset = 0
  readonly now = (): number => Date.now() + this.offset
  advance (ms: number): void {
    this.offset += ms
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
  const fastifyOptions = serverOptions(config)
  if (options.captureLogs === true) {
    fastifyOptions.logger = { ...(fastifyOptions.logger as object), stream: { write: (line: string) => { logs.push(line) } } }
  }
  const clock = new TestClock()
  const app = Fastify(fastifyOptions)
  app.register(fp(battraAuthService), { config, now: clock.now })
  await app.ready()
  t.teardown(() => app.close())
  return { app, db, clock, logs }
}

/** Statements the app sent to the database while `fn` ran. */
export async function statementsDuring (app: FastifyInstance, fn: () => Promise<unknown>): Promise<number> {
  const before = app.database.statements.count
  await fn()
  return app.database.statements.count - before
}
