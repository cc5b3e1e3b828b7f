// The embedded database's own thread: PGlite, and the socket it is served on, live here, off the service's
// event loop and heap. Loaded in the service's thread, an idle PGlite cost each cached request about 1 µs
// of CPU (README, Performance); here its queries may also run on another core.
//
// Started by openEmbeddedDatabase (src/db/embedded.ts), which holds the data folder's lock; it tells its
// parent `ready` with the port, or `failed` with the error's name, code and message, and on `stop` closes
// the socket and the database and says `stopped`.
import { chmod, mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { parentPort, workerData } from 'node:worker_threads'
import { PGlite } from '@electric-sql/pglite'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'
import { keepBatchesWhole } from './socket-batches.ts'
import { refuseOtherUsers } from './socket-peers.ts'

export interface EmbeddedThreadOptions {
  dataDir: string
  host: string
  port: number
  maxConnections: number
}

export type EmbeddedThreadMessage =
  | { type: 'ready', port: number }
  | { type: 'failed', name: string, code: string | undefined, message: string }
  | { type: 'stopped' }

/** The prefix of a first start's staging folder (`.init-<name>-<pid>`, beside the data folder). */
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

/** A folder that holds something other than a database; the parent tells it by its name. */
class NotEmptyError extends Error {
  override name = 'NotEmptyError'
}

/**
 * In a data folder that existed before its first start: says that what else is in it is a first start's
 * work, to be cleared if that start died before the cluster was whole.
 */
const INITIALISING = '.battra-initialising'
/** What an empty file system holds at its root: a volume mounted as the data folder has it. */
const FILE_SYSTEM_ENTRIES = new Set(['lost+found'])

/**
 * Initialises a new cluster and puts it in place only when it is complete. A new folder: made beside it
 * and renamed into place. A folder that exists (perhaps a mounted volume, which can be neither removed
 * nor replaced, and the operator's owner and mode, which a rename would lose): made inside it and moved
 * into place entry by entry, PG_VERSION last, since PG_VERSION is what says a folder holds a cluster.
 */
async function initialiseDataDir (dataDir: string): Promise<void> {
  const parent = dirname(dataDir)
  await mkdir(parent, { recursive: true })
  // Left by first starts of this folder that died (the parent holds its lock: nobody else is initialising
  // it). Exactly `.init-<name>-<pid>`: the staging folder of a sibling `<name>-2` is not ours to remove.
  const prefix = `${INIT_PREFIX}${basename(dataDir)}-`
  const leftovers = (await readdir(parent)).filter((name) => name.startsWith(prefix) && /^\d+$/.test(name.slice(prefix.length)))
  await Promise.all(leftovers.map((name) => rm(join(parent, name), { recursive: true, force: true })))

  const entries = await readdir(dataDir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined
    throw error
  })
  if (entries === undefined) {
    const staging = join(parent, `${prefix}${process.pid}`)
    await makePrivateFolder(staging)
    const pglite = await PGlite.create(staging)
    await pglite.close()
    await rename(staging, dataDir)
    return
  }
  const ours = entries.filter((name) => !FILE_SYSTEM_ENTRIES.has(name))
  if (ours.includes(INITIALISING)) {
    // A first start that died in this folder: what it left is cleared, the marker kept.
    await Promise.all(ours.filter((name) => name !== INITIALISING).map((name) => rm(join(dataDir, name), { recursive: true, force: true })))
  } else if (ours.length > 0) {
    throw new NotEmptyError(`${dataDir} is not empty and holds no database: set EMBEDDED_DATA_DIR to a new or empty folder`)
  } else {
    await writeFile(join(dataDir, INITIALISING), '')
  }
  // Closed before the cluster's files (0666) are moved into it.
  await closeToOthers(dataDir)
  const staging = join(dataDir, `${INIT_PREFIX}${process.pid}`)
  await makePrivateFolder(staging)
  const pglite = await PGlite.create(staging)
  await pglite.close()
  const made = await readdir(staging)
  for (const name of made.filter((entry) => entry !== 'PG_VERSION')) await rename(join(staging, name), join(dataDir, name))
  await rename(join(staging, 'PG_VERSION'), join(dataDir, 'PG_VERSION'))
  await finishInitialisation(dataDir)
}

/**
 * The staging folder, made by us and closed to other users before PGlite writes its files (0666) in it:
 * while open, another user could edit the cluster that was to become the data folder (found by an
 * outside probe). Whatever stands at its name (a link planted there) is removed first.
 */
async function makePrivateFolder (staging: string): Promise<void> {
  await rm(staging, { recursive: true, force: true })
  await mkdir(staging, { mode: 0o700 })
  await chmod(staging, 0o700)
}

/**
 * PGlite makes its files readable and writable by everyone (0666): the data folder is closed to other
 * users, as PostgreSQL requires of its own (found by an outside probe). A folder of another owner stays
 * as it is.
 */
async function closeToOthers (dataDir: string): Promise<void> {
  await chmod(dataDir, 0o700).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPERM') throw error
  })
}

/** Once PG_VERSION is in place: the marker and the emptied staging folder go (a start killed before that left them). */
async function finishInitialisation (dataDir: string): Promise<void> {
  const names = await readdir(dataDir)
  const staging = names.filter((name) => name.startsWith(INIT_PREFIX) && /^\d+$/.test(name.slice(INIT_PREFIX.length)))
  for (const name of staging) await rm(join(dataDir, name), { recursive: true, force: true })
  // The marker last: while it is there, a later start knows the rest is ours.
  if (names.includes(INITIALISING)) await rm(join(dataDir, INITIALISING), { force: true })
}

async function open (options: EmbeddedThreadOptions): Promise<{ port: number, stop: () => Promise<void> }> {
  const inMemory = options.dataDir.startsWith('memory://')
  if (!inMemory) {
    if (!(await holdsCluster(options.dataDir))) await initialiseDataDir(options.dataDir)
    else await finishInitialisation(options.dataDir)
    await closeToOthers(options.dataDir)
  }
  const pglite = await PGlite.create(options.dataDir)
  try {
    const server = new PGLiteSocketServer({ db: pglite, host: options.host, port: options.port, maxConnections: options.maxConnections })
    keepBatchesWhole(server)
    refuseOtherUsers(server)
    await server.start()
    return {
      port: Number(server.getServerConn().split(':').pop()),
      async stop () {
        await server.stop()
        await pglite.close()
      }
    }
  } catch (error) {
    await pglite.close().catch(() => {})
    throw error
  }
}

if (parentPort !== null) {
  const parent = parentPort
  const tell = (message: EmbeddedThreadMessage): void => parent.postMessage(message)
  open(workerData as EmbeddedThreadOptions).then((database) => {
    parent.on('message', (message: unknown) => {
      if (message !== 'stop') return
      database.stop().then(() => tell({ type: 'stopped' }), (error: unknown) => {
        tell({ type: 'failed', name: 'Error', code: undefined, message: `could not close the embedded database: ${(error as Error).message}` })
      }).finally(() => parent.close())
    })
    tell({ type: 'ready', port: database.port })
  }, (error: unknown) => {
    const { name, code, message } = error as NodeJS.ErrnoException
    tell({ type: 'failed', name: name ?? 'Error', code, message: message ?? String(error) })
    parent.close()
  })
}
