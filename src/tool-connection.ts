// How command-line tools (keys, db) reach the database: PostgreSQL when DATABASE_URL is set; else the
// running service's embedded database through its socket; else the embedded data folder itself
// (migrated, and seeded when new, exactly as the service's first start would).
import pg from 'pg'
import type { Config } from './config.ts'
import { embeddedDatabaseUrl } from './config.ts'
import { createPool, createPrisma, type PrismaClient } from './database.ts'
import { startEmbeddedDatabase } from './embedded-database.ts'
import { prepareEmbeddedDatabase } from './migrate.ts'

export interface ToolConnection {
  pool: pg.Pool
  prisma: PrismaClient
  /** For messages: which database this is. */
  where: string
  close: () => Promise<void>
}

async function reachable (url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 })
  try {
    await client.connect()
    return true
  } catch {
    return false
  } finally {
    await client.end().catch(() => {})
  }
}

export async function connectForTools (config: Config): Promise<ToolConnection> {
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
  const serviceUrl = embeddedDatabaseUrl(config.embedded)
  if (await reachable(serviceUrl)) {
    const connection = open(serviceUrl)
    return { ...connection, where: `the running service's embedded database (${config.embedded.host}:${config.embedded.port})`, close: () => closeBoth(connection) }
  }
  const embedded = await startEmbeddedDatabase({ ...config.embedded, port: 0 })
  const connection = open(embedded.url)
  try {
    await prepareEmbeddedDatabase(connection.pool, connection.prisma, embedded.created)
  } catch (error) {
    await closeBoth(connection)
    await embedded.stop()
    throw error
  }
  return {
    ...connection,
    where: `the embedded database in ${config.embedded.dataDir}`,
    async close () {
      await closeBoth(connection)
      await embedded.stop()
    }
  }
}
