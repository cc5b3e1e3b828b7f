// Opening the service's database: PostgreSQL when DATABASE_URL is set, else the embedded PGlite
// (migrated and seeded at every start: both decide from the database what is left to do).
import { statSync } from 'node:fs'
import type pg from 'pg'
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '#src/config.ts'
import { openEmbeddedDatabase, type EmbeddedDatabase } from './embedded.ts'
import { migrate, pendingAmong, readMigrations, type Migration } from './migrate.ts'
import { createPool, createPrisma, endPool, type PrismaClient, type StatementCounter } from './pool.ts'
import { seedDevPersonas } from './seed.ts'

export interface Database {
  /** Connection URL (may hold a password: never logged). */
  url: string
  pool: pg.Pool
  prisma: PrismaClient
  /** Every statement sent, counted: the query budgets of the spec are checked against it. */
  statements: StatementCounter
  /** Set when running on the embedded PGlite database. */
  embedded: EmbeddedDatabase | undefined
  /**
   * Migrations of this build not applied to the database now (PostgreSQL: `npm run db:migrate` applies
   * them, perhaps from elsewhere while the service runs; the embedded database is migrated at start).
   * Asked of the database every time (two statements): a database replaced, restored or rolled back
   * under a running service must not stay "ready".
   */
  pendingMigrations: () => Promise<string[]>
  close: () => Promise<void>
}

type Log = Pick<FastifyBaseLogger, 'info' | 'warn' | 'error'>

/** The owner of the data folder when this process is root and it is not root's; else undefined. */
function rootInAnotherUsersFolder (dataDir: string): number | undefined {
  if (process.getuid?.() !== 0 || dataDir.startsWith('memory://')) return undefined
  const owner = statSync(dataDir, { throwIfNoEntry: false })?.uid
  return owner === undefined || owner === 0 ? undefined : owner
}

export async function openDatabase (config: Config, log: Log): Promise<Database> {
  const embedded = config.databaseUrl === undefined ? await openEmbeddedDatabase(config.embedded) : undefined
  if (embedded !== undefined) {
    const stale = embedded.tookOverFrom
    if (stale !== undefined) {
      // Found by an outside probe: a lock taken over left no trace.
      const previousHolder = stale.foreignOwner !== undefined ? { madeByUid: stale.foreignOwner } : stale.pid > 0 ? { pid: stale.pid, startedAt: stale.startedAt } : 'unreadable'
      log.warn({ dataDir: config.embedded.dataDir, previousHolder }, 'took over the data folder\'s lock: its holder is gone (a crash, kill -9), or its PID is now another process\'s, or another user made it')
    }
    const owner = rootInAnotherUsersFolder(config.embedded.dataDir)
    if (owner !== undefined) {
      // Found by an outside probe: the folder's owner, starting the service later, was refused on root's files.
      log.warn({ dataDir: config.embedded.dataDir, folderOwnerUid: owner }, `the service runs as root in a data folder owned by uid ${owner}: the files the database writes now are root's, and a start as that user will be refused on them (run the service as the folder's owner, or chown -R the folder back to it)`)
    }
    log.info({ dataDir: config.embedded.dataDir, url: embedded.url }, 'embedded PostgreSQL (PGlite) is open to psql and Prisma Studio at this URL')
    // Its queries fail from then on (503, /ready says so): a restart opens the folder again.
    embedded.onFailure((error) => log.error({ err: error }, 'the embedded database stopped: restart the service'))
  }
  const url = config.databaseUrl ?? embedded!.url
  const statements: StatementCounter = { count: 0 }
  const pool = createPool({
    url,
    max: config.databasePoolMax,
    connectTimeoutMs: config.databaseConnectTimeoutMs,
    statementTimeoutMs: config.databaseStatementTimeoutMs
  }, statements)
  const prisma = createPrisma(pool)
  const close = async () => {
    await prisma.$disconnect()
    await endPool(pool, config.databaseConnectTimeoutMs)
    await embedded?.stop()
  }
  // The build's migrations are read once; the database is asked each time.
  let ofThisBuild: Promise<Migration[]> | undefined
  const pending = async (): Promise<string[]> => pendingAmong(pool, await (ofThisBuild ??= readMigrations()))
  try {
    if (embedded !== undefined) {
      const applied = await migrate(pool, undefined, (message) => log.warn(message))
      if (applied.length > 0) log.info({ applied }, 'applied migrations to the embedded database')
      const seeded = await seedDevPersonas(prisma)
      if (seeded.length > 0) log.info({ seeded }, 'seeded the dev personas into the embedded database')
      // Only now do the command line and Prisma Studio find its port: what they see is complete.
      await embedded.announce()
    } else {
      await warnAboutPendingMigrations(pending, log)
    }
  } catch (error) {
    await close().catch(() => {})
    throw error
  }
  return { url, pool, prisma, statements, embedded, pendingMigrations: pending, close }
}

async function warnAboutPendingMigrations (pendingOf: () => Promise<string[]>, log: Log): Promise<void> {
  try {
    const pending = await pendingOf()
    // The service starts (a migration job may be about to run) but is not ready: /ready says so.
    if (pending.length > 0) log.warn({ pending }, 'PostgreSQL has pending migrations: run `npm run db:migrate`; /ready answers 503 until they are applied')
  } catch (error) {
    // The service still starts: cached keys are served and /ready reports the outage until it ends.
    log.error({ err: error }, 'PostgreSQL is unreachable at start')
  }
}
