// How command-line tools (keys, db, bench) reach the database: PostgreSQL when DATABASE_URL is set; else
// the running service's embedded database through its socket (found through the data folder's lock);
// else the embedded data folder itself, locked, and (unless told not to) migrated and seeded exactly as a
// first start would.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type pg from 'pg'
import type { Config } from '#src/config.ts'
import { embeddedDatabaseUrl } from '#src/config.ts'
import { lockHolder } from './data-dir-lock.ts'
import { EmbeddedDatabaseError, openEmbeddedDatabase } from './embedded.ts'
import { migrate } from './migrate.ts'
import { createPool, createPrisma, type PrismaClient } from './pool.ts'
import { seedDevPersonas } from './seed.ts'

export interface ToolConnection {
  pool: pg.Pool
  prisma: PrismaClient
  /** For messages: which database this is. */
  where: string
  close: () => Promise<void>
}

export interface ToolOptions {
  /** Migrate and seed an embedded folder opened here, as a first start would (default true). */
  prepare?: boolean
  /**
   * Whether an embedded folder with no database yet may be created (default true). A command that only
   * reads refuses instead: a mistyped EMBEDDED_DATA_DIR would otherwise get a new, empty database and an
   * answer about it ("0 events verified") that looks like one about the service's. `quietly`: created
   * without the note on stderr, for a caller whose folder is meant to be new (the benchmark's).
   */
  create?: boolean | 'quietly'
}

/** Said on stderr when a tool has created the embedded database: the folder may not be the one meant. */
const createdNotice = (dataDir: string): string =>
  `note: there was no database in ${dataDir}: created one, migrated and seeded as a first start would (if you meant the service's folder, set EMBEDDED_DATA_DIR to it)`

export async function connectForTools (config: Config, options: ToolOptions = {}): Promise<ToolConnection> {
  const open = (url: string) => {
    const pool = createPool({ url, max: 2, connectTimeoutMs: config.databaseConnectTimeoutMs, statementTimeoutMs: 120_000 }, { count: 0 })
    return { pool, prisma: createPrisma(pool) }
  }
  const closeBoth = async ({ pool, prisma }: { pool: pg.Pool, prisma: PrismaClient }) => {
    await prisma.$disconnect()
    await pool.end()
  }
  if (config.databaseUrl !== undefined) {
    const connection = open(config.databaseUrl)
    return { ...connection, where: 'PostgreSQL', close: () => closeBoth(connection) }
  }
  const holder = config.embedded.dataDir.startsWith('memory://') ? undefined : await lockHolder(config.embedded.dataDir)
  if (holder?.port !== undefined) {
    const host = holder.host ?? config.embedded.host
    const connection = open(embeddedDatabaseUrl({ host, port: holder.port }))
    return { ...connection, where: `the running service's embedded database (${host}:${holder.port}, process ${holder.pid})`, close: () => closeBoth(connection) }
  }
  // Not running (or starting: then the lock refuses us with the holder's PID).
  const isNew = !config.embedded.dataDir.startsWith('memory://') && !existsSync(join(config.embedded.dataDir, 'PG_VERSION'))
  // A service holding the folder while it starts is said as such (the lock refuses below).
  if (isNew && options.create === false && holder === undefined) {
    throw new EmbeddedDatabaseError(`there is no database in ${config.embedded.dataDir} (EMBEDDED_DATA_DIR): set EMBEDDED_DATA_DIR to the service's data folder, or DATABASE_URL; nothing was created`)
  }
  const embedded = await openEmbeddedDatabase({ ...config.embedded, port: 0, role: 'tool' })
  if (isNew && options.create !== 'quietly') console.error(createdNotice(config.embedded.dataDir))
  const connection = open(embedded.url)
  const closeAll = async () => {
    await closeBoth(connection)
    await embedded.stop()
  }
  try {
    if (options.prepare !== false) {
      await migrate(connection.pool)
      await seedDevPersonas(connection.prisma)
    }
    // Another tool run meanwhile goes through this one's port.
    await embedded.announce()
  } catch (error) {
    await closeAll()
    throw error
  }
  return { ...connection, where: `the embedded database in ${config.embedded.dataDir}`, close: closeAll }
}
