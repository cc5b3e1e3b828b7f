// The embedded default: PGlite persisted in a data folder, served on a local port so that the service,
// Prisma Studio and psql all reach the same database.
import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { PGlite } from '@electric-sql/pglite'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'
import { embeddedDatabaseUrl } from './config.ts'

export interface EmbeddedDatabase {
  url: string
  port: number
  /** The PGlite instance itself: in-process features (LISTEN) that the socket does not carry. */
  pglite: PGlite
  /** Whether the data folder held no database before this start. */
  created: boolean
  stop: () => Promise<void>
}

export async function startEmbeddedDatabase (options: { dataDir: string, host: string, port: number, maxConnections?: number }): Promise<EmbeddedDatabase> {
  const inMemory = options.dataDir.startsWith('memory://')
  let created = true
  if (!inMemory) {
    await mkdir(options.dataDir, { recursive: true })
    created = !existsSync(`${options.dataDir}/PG_VERSION`)
  }
  const pglite = await PGlite.create(options.dataDir)
  const server = new PGLiteSocketServer({
    db: pglite,
    host: options.host,
    port: options.port,
    maxConnections: options.maxConnections ?? 32
  })
  try {
    await server.start()
  } catch (error) {
    await pglite.close()
    throw error
  }
  const port = Number(server.getServerConn().split(':').pop())
  return {
    url: embeddedDatabaseUrl({ host: options.host, port }),
    port,
    pglite,
    created,
    async stop () {
      await server.stop()
      await pglite.close()
    }
  }
}
