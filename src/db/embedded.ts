// The embedded default: PGlite persisted in a data folder, served on a local port so that the service,
// Prisma Studio and psql all reach the same database.
//
// A first start must not be able to leave a folder that later starts cannot use: the database is
// initialised in a temporary folder beside the data folder and renamed into place once complete (a
// rename is atomic), and only one process at a time opens a folder (DataDirLock).
import { mkdir, readdir, rename, rm } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'
import { keepBatchesWhole } from './socket-batches.ts'
import { embeddedDatabaseUrl } from '#src/config.ts'
import { DataDirLock } from './data-dir-lock.ts'
import { listenError } from '#src/port-probe.ts'

export interface EmbeddedDatabase {
  url: string
  port: number
  /** The PGlite instance itself: in-process features that the socket does not carry. */
  pglite: PGlite
  stop: () => Promise<void>
}

export interface EmbeddedOptions {
  dataDir: string
  host: string
  port: number
  maxConnections?: number
}

export class EmbeddedDatabaseError extends Error {
  override name = 'EmbeddedDatabaseError'
}

const INIT_PREFIX = '.init-'

/** Whether a folder holds a PostgreSQL cluster (PGlite's or not). */
async function holdsCluster (dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).includes('PG_VERSION')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw error
  }
}

/** Initialises a new cluster beside the data folder and renames it into place when it is complete. */
async function initialiseDataDir (dataDir: string): Promise<void> {
  const parent = dirname(dataDir)
  await mkdir(parent, { recursive: true })
  // Left by first starts of this folder that died (we hold its lock: nobody else is initialising it).
  // Exactly `.init-<name>-<pid>`: the staging folder of a sibling `<name>-2` is not ours to remove.
  const prefix = `${INIT_PREFIX}${basename(dataDir)}-`
  const leftovers = (await readdir(parent)).filter((name) => name.startsWith(prefix) && /^\d+$/.test(name.slice(prefix.length)))
  await Promise.all(leftovers.map((name) => rm(join(parent, name), { recursive: true, force: true })))

  const entries = await readdir(dataDir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined
    throw error
  })
  if (entries !== undefined && entries.length > 0) {
    throw new EmbeddedDatabaseError(`${dataDir} is not empty and holds no database: set EMBEDDED_DATA_DIR to a new or empty folder`)
  }
  const staging = join(parent, `${INIT_PREFIX}${basename(dataDir)}-${process.pid}`)
  const pglite = await PGlite.create(staging)
  await pglite.close()
  if (entries !== undefined) await rm(dataDir, { recursive: true })
  await rename(staging, dataDir)
}

function portInUse (options: EmbeddedOptions): EmbeddedDatabaseError {
  return new EmbeddedDatabaseError(`EMBEDDED_DB_PORT ${options.port} on ${options.host} is already in use (another service, or another battra-auth): set EMBEDDED_DB_PORT to a free port, or to 0 to take any free one`)
}

/** Fails before the folder is touched (creating a cluster takes seconds) when the port is taken. */
async function checkPortIsFree (options: EmbeddedOptions): Promise<void> {
  const error = await listenError(options.host, options.port)
  if (error !== undefined) throw error.code === 'EADDRINUSE' ? portInUse(options) : error
}

/**
 * Opens the embedded database (creating it when the folder is new) and serves it on host:port
 * (0: a free port). `memory://` is a throw-away database.
 */
export async function openEmbeddedDatabase (options: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const inMemory = options.dataDir.startsWith('memory://')
  // The lock file sits beside the folder: its parent must exist first (.data/ on a fresh clone does not).
  if (!inMemory) {
    await mkdir(dirname(options.dataDir), { recursive: true }).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST' && error.code !== 'ENOTDIR') throw error
      throw new EmbeddedDatabaseError(`EMBEDDED_DATA_DIR ${options.dataDir}: a file stands where a folder on its path should be (${error.path ?? dirname(options.dataDir)}); set EMBEDDED_DATA_DIR to a folder`)
    })
  }
  const lock = inMemory ? undefined : await DataDirLock.acquire(options.dataDir)
  let pglite: PGlite | undefined
  try {
    await checkPortIsFree(options)
    if (!inMemory && !(await holdsCluster(options.dataDir))) await initialiseDataDir(options.dataDir)
    pglite = await PGlite.create(options.dataDir)
    const server = new PGLiteSocketServer({ db: pglite, host: options.host, port: options.port, maxConnections: options.maxConnections ?? 32 })
    keepBatchesWhole(server)
    try {
      await server.start()
    } catch (error) {
      // Taken since the check: the folder is complete, the next start uses it.
      throw (error as NodeJS.ErrnoException).code === 'EADDRINUSE' ? portInUse(options) : error
    }
    const port = Number(server.getServerConn().split(':').pop())
    await lock?.announce(options.host, port)
    const opened = pglite
    return {
      url: embeddedDatabaseUrl({ host: options.host, port }),
      port,
      pglite: opened,
      async stop () {
        await server.stop()
        await opened.close()
        await lock?.release()
      }
    }
  } catch (error) {
    await pglite?.close().catch(() => {})
    await lock?.release()
    throw error
  }
}
