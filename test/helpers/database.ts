// A real database of its own for each test file, torn down with it.
// DATABASE_URL set: a fresh PostgreSQL database on that server; unset: an in-memory PGlite.
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { loadConfig } from '#src/config.ts'
import { INVALIDATION_CHANNEL } from '#src/cache/invalidation.ts'
import { openEmbeddedDatabase } from '#src/db/embedded.ts'
import { migrate } from '#src/db/migrate.ts'
import { createPool, createPrisma, type PrismaClient } from '#src/db/pool.ts'
import { seedDevPersonas } from '#src/db/seed.ts'
import { TcpProxy } from './proxy.ts'

export interface Teardown { teardown: (fn: () => unknown) => void }

export const serverUrl = loadConfig().databaseUrl
export const databaseKind = serverUrl === undefined ? 'embedded PGlite' : 'PostgreSQL'

export interface TestDatabase {
  /** Where the app should connect (through the proxy when one was asked for). */
  url: string
  /** Direct access for arranging and checking data, bypassing the app's counters. */
  prisma: PrismaClient
  pool: pg.Pool
  proxy: TcpProxy | undefined
  /**
   * Resolves once this file's own listener, and every app built on this database whose listener is up,
   * have received a notification with this payload (at once on PGlite, which cannot notify).
   */
  notified: (payload: string) => Promise<void>
  /** Adds a hearer whose notifications `notified` waits for (build() adds each app it builds). */
  hear: (hearer: Hearer) => void
}

/** Something that hears the invalidation channel: the file's own listener, or an app's. */
export class Hearer {
  private readonly heard = new Set<string>()
  private readonly waiting = new Map<string, Array<() => void>>()
  constructor (readonly isListening: () => boolean = () => true) {}

  record (payload: string): void {
    this.heard.add(payload)
    for (const resolve of this.waiting.get(payload) ?? []) resolve()
    this.waiting.delete(payload)
  }

  /** Resolves when the payload was heard; at once when not listening (an app whose listener is down hears nothing). */
  async heardOf (payload: string, timeoutMs = 5000): Promise<void> {
    if (this.heard.has(payload)) return
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => this.isListening() ? reject(new Error(`notification ${payload} not heard within ${timeoutMs} ms`)) : resolve(), timeoutMs)
      this.waiting.set(payload, [...(this.waiting.get(payload) ?? []), () => { clearTimeout(timer); resolve() }])
      if (!this.isListening()) {
        clearTimeout(timer)
        resolve()
      }
    })
  }
}

function withDatabase (url: string, database: string): string {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.toString()
}

/** This file's own listener on the invalidation channel. */
async function ownHearer (t: Teardown, url: string): Promise<Hearer> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  const hearer = new Hearer()
  client.on('notification', ({ payload }) => { if (payload !== undefined) hearer.record(payload) })
  await client.query(`LISTEN ${INVALIDATION_CHANNEL}`)
  t.teardown(() => client.end())
  return hearer
}

/** listen: false leaves out the file's own LISTEN connection (for a test that drops the database under it). */
export async function createTestDatabase (t: Teardown, options: { proxy?: boolean, seed?: boolean, migrate?: boolean, listen?: boolean } = {}): Promise<TestDatabase> {
  let directUrl: string
  if (serverUrl !== undefined) {
    const name = `battra_test_${process.pid}_${randomBytes(4).toString('hex')}`
    const admin = new pg.Client({ connectionString: serverUrl })
    await admin.connect()
    await admin.query(`CREATE DATABASE ${name}`)
    await admin.end()
    directUrl = withDatabase(serverUrl, name)
    t.teardown(async () => {
      const client = new pg.Client({ connectionString: serverUrl })
      await client.connect()
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await client.end()
    })
  } else {
    const embedded = await openEmbeddedDatabase({ dataDir: 'memory://', host: '127.0.0.1', port: 0 })
    directUrl = embedded.url
    t.teardown(() => embedded.stop())
  }
  const pool = createPool({ url: directUrl, max: 4, connectTimeoutMs: 5000, statementTimeoutMs: 30_000 }, { count: 0 })
  const prisma = createPrisma(pool)
  // Torn down in reverse order of registration: this runs before the database goes.
  t.teardown(async () => {
    await prisma.$disconnect()
    await pool.end()
  })
  if (options.migrate !== false) await migrate(pool)
  if (options.migrate !== false && options.seed !== false) await seedDevPersonas(prisma)
  const hearers: Hearer[] = serverUrl === undefined || options.listen === false ? [] : [await ownHearer(t, directUrl)]
  const notified = async (payload: string) => { await Promise.all(hearers.map((hearer) => hearer.heardOf(payload))) }
  const hear = (hearer: Hearer) => { if (serverUrl !== undefined) hearers.push(hearer) }
  let proxy: TcpProxy | undefined
  let url = directUrl
  if (options.proxy === true) {
    const target = new URL(directUrl)
    proxy = new TcpProxy({ host: target.hostname, port: Number(target.port || 5432) })
    await proxy.start()
    t.teardown(() => proxy!.cut())
    target.host = `127.0.0.1:${proxy.port}`
    url = target.toString()
  }
  return { url, prisma, pool, proxy, notified, hear }
}
