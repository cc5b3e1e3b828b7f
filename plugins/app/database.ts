import fp from 'fastify-plugin'
import { openDatabase, type Database } from '#src/db/database.ts'
import type { PrismaClient } from '#src/db/pool.ts'

declare module 'fastify' {
  interface FastifyInstance {
    prisma: PrismaClient
    database: Omit<Database, 'close'>
  }
}

export interface DatabasePluginOptions {
  /**
   * A database opened before the plugin loads (src/server.ts does, so that a slow first start of the
   * embedded database is not cut short by Fastify's plugin timeout). Closed with the app.
   */
  database?: Database
}

export default fp<DatabasePluginOptions>(async function database (fastify, opts) {
  const database = opts.database ?? await openDatabase(fastify.config, fastify.log)
  fastify.decorate('prisma', database.prisma)
  fastify.decorate('database', database)
  // Registered first, closed last: the auth plugin flushes usage through this pool before it ends.
  fastify.addHook('onClose', () => database.close())
}, { name: 'database', dependencies: ['config'] })
