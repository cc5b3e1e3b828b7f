import fp from 'fastify-plugin'
import type pg from 'pg'
import { createPool, createPrisma, type PrismaClient, type StatementCounter } from '../../src/database.ts'
import { startEmbeddedDatabase, type EmbeddedDatabase } from '../../src/embedded-database.ts'
import { pendingMigrations, prepareEmbeddedDatabase } from '../../src/migrate.ts'

declare module 'fastify' {
  interface FastifyInstance {
    prisma: PrismaClient
    database: {
      /** Connection URL (may hold a password: never logged). */
      url: string
      pool: pg.Pool
      /** Every statement sent, counted: the query budgets of the spec are checked against it. */
      statements: StatementCounter
      /** Set when running on the embedded PGlite database. */
      embedded: EmbeddedDatabase | undefined
    }
  }
}

export default fp(async function database (fastify) {
  const { config } = fastify
  let embedded: EmbeddedDatabase | undefined
  if (config.databaseUrl === undefined) {
    embedded = await startEmbeddedDatabase(config.embedded)
    fastify.log.info({ dataDir: config.embedded.dataDir, url: embedded.url }, 'embedded PostgreSQL (PGlite) is open to psql and Prisma Studio at this URL')
  }
  const statements: StatementCounter = { count: 0 }
  const url = config.databaseUrl ?? embedded!.url
  const pool = createPool({
    url,
    max: config.databasePoolMax,
    connectTimeoutMs: config.databaseConnectTimeoutMs,
    statementTimeoutMs: config.databaseStatementTimeoutMs
  }, statements)
  const prisma = createPrisma(pool)

  try {
    if (embedded !== undefined) {
      const { applied, seeded } = await prepareEmbeddedDatabase(pool, prisma, embedded.created)
      if (applied.length > 0) fastify.log.info({ applied }, 'applied migrations to the embedded database')
      if (seeded) fastify.log.info('seeded the dev personas into the new embedded database')
    } else {
      await warnAboutPendingMigrations()
    }
  } catch (error) {
    await pool.end()
    await embedded?.stop()
    throw error
  }

  async function warnAboutPendingMigrations (): Promise<void> {
    try {
      const pending = await pendingMigrations(pool)
      if (pending.length > 0) fastify.log.warn({ pending }, 'PostgreSQL has pending migrations: run `npm run db:migrate`')
    } catch (error) {
      // The service still starts: cached keys are served and /ready reports the outage until it ends.
      fastify.log.error({ err: error }, 'PostgreSQL is unreachable at start')
    }
  }

  fastify.decorate('prisma', prisma)
  fastify.decorate('database', { url, pool, statements, embedded })

  // Registered first, closed last: the auth plugin flushes usage through this pool before it ends.
  fastify.addHook('onClose', async () => {
    await prisma.$disconnect()
    await pool.end()
    await embedded?.stop()
  })
}, { name: 'database', dependencies: ['config'] })
