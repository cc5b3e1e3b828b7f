// The embedded default: PGlite persisted in a data folder, served on a local port so that the service,
// Prisma Studio and psql all reach the same database. PGlite runs in a thread of its own
// (src/db/embedded-thread.ts); this side holds the folder's lock and the thread's life.
//
// A first start must not be able to leave a folder that later starts cannot use: the database is
// initialised in a temporary folder beside the data folder and renamed into place once complete (a
// rename is atomic), and only one process at a time opens a folder (DataDirLock).
import { constants, type Dirent } from 'node:fs'
import { access, mkdir, readdir, stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { embeddedDatabaseUrl } from '#src/config.ts'
import { listenError } from '#src/port-probe.ts'
import { DataDirLock, DataDirLockedError, ForeignLockError, type LockHolder } from './data-dir-lock.ts'
import type { EmbeddedThreadMessage, EmbeddedThreadOptions } from './embedded-thread.ts'

export interface EmbeddedDatabase {
  url: string
  port: number
  /**
   * Records the port in the folder's lock, where the command line and Prisma Studio find it: called once
   * the database is ready for them (migrated and seeded), since a tool that connects earlier sees a
   * half-made database (found by an outside probe: `unknown organization` during a first start).
   */
  announce: () => Promise<void>
  /** The holder of a stale lock taken over at open (a crash's, a PID reused since), for the log. */
  tookOverFrom: LockHolder | undefined
  /** Calls `listener` if the database's thread ends while open (it is gone: queries fail until a restart). */
  onFailure: (listener: (error: Error) => void) => void
  stop: () => Promise<void>
}

export interface EmbeddedOptions {
  dataDir: string
  host: string
  port: number
  maxConnections?: number
  /** Who opens it, as the lock tells others (default: the service). */
  role?: LockHolder['role']
}

export class EmbeddedDatabaseError extends Error {
  override name = 'EmbeddedDatabaseError'
}

/** An error of the embedded data folder whose message says what to change (its lock included): one line, no stack. */
export const isDataFolderError = (error: unknown): boolean =>
  error instanceof EmbeddedDatabaseError || error instanceof DataDirLockedError || error instanceof ForeignLockError

function portInUse (options: EmbeddedOptions): EmbeddedDatabaseError {
  return new EmbeddedDatabaseError(`EMBEDDED_DB_PORT ${options.port} on ${options.host} is already in use (another service, or another battra-auth): set EMBEDDED_DB_PORT to a free port, or to 0 to take any free one`)
}

// The thread's module as this module was loaded: compiled (dist/) or the sources (tests, npm run dev).
const THREAD_MODULE = new URL(import.meta.url.endsWith('.ts') ? './embedded-thread.ts' : './embedded-thread.js', import.meta.url)

function newThread (workerData: EmbeddedThreadOptions): Worker {
  if (!THREAD_MODULE.pathname.endsWith('.ts')) return new Worker(THREAD_MODULE, { workerData })
  // The sources: Node 20 does not give a worker's own module the parent's TypeScript loader (tsx), so the
  // thread loads it through tsx's API.
  const api = JSON.stringify(import.meta.resolve('tsx/esm/api'))
  const module = JSON.stringify(THREAD_MODULE.href)
  return new Worker(`import(${api}).then(({ tsImport }) => tsImport(${module}, ${module}))`, { eval: true, workerData })
}

/** A thread's `failed` message as the error it stands for. */
function threadError (options: EmbeddedOptions, failed: Extract<EmbeddedThreadMessage, { type: 'failed' }>): Error {
  // Taken since the check: the folder is complete, the next start uses it.
  if (failed.code === 'EADDRINUSE') return portInUse(options)
  if (failed.name === 'NotEmptyError') return new EmbeddedDatabaseError(failed.message)
  return Object.assign(new Error(failed.message), { name: failed.name, code: failed.code })
}

/** Fails before the folder is touched (creating a cluster takes seconds) when the port is taken. */
async function checkPortIsFree (options: EmbeddedOptions): Promise<void> {
  const error = await listenError(options.host, options.port)
  if (error !== undefined) throw error.code === 'EADDRINUSE' ? portInUse(options) : error
}

/** Starts the database's thread and waits for its answer: the port it serves on, or why it could not. */
function startThread (options: EmbeddedOptions): Promise<{ worker: Worker, port: number }> {
  const workerData: EmbeddedThreadOptions = { dataDir: options.dataDir, host: options.host, port: options.port, maxConnections: options.maxConnections ?? 32 }
  const worker = newThread(workerData)
  return new Promise((resolve, reject) => {
    const settle = (error: Error | undefined, port?: number): void => {
      worker.off('message', onMessage)
      worker.off('error', onError)
      worker.off('exit', onExit)
      if (error === undefined) resolve({ worker, port: port! })
      else reject(error)
    }
    const onMessage = (message: EmbeddedThreadMessage): void => {
      if (message.type === 'ready') settle(undefined, message.port)
      else if (message.type === 'failed') settle(threadError(options, message))
    }
    const onError = (error: Error): void => settle(error)
    const onExit = (code: number): void => settle(new EmbeddedDatabaseError(`the embedded database's thread ended (code ${code}) before it was open`))
    worker.on('message', onMessage)
    worker.on('error', onError)
    worker.on('exit', onExit)
  })
}

/**
 * Opens the embedded database (creating it when the folder is new) and serves it on host:port
 * (0: a free port). `memory://` is a throw-away database.
 */
export async function openEmbeddedDatabase (options: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const inMemory = options.dataDir.startsWith('memory://')
  // The lock file sits beside the folder: its parent must exist first (.data/ on a fresh clone does not).
  if (!inMemory) {
    await makeFolders(dirname(options.dataDir)).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOTDIR') throw besideFolderError(options.dataDir, error)
      throw new EmbeddedDatabaseError(`EMBEDDED_DATA_DIR ${options.dataDir}: a file stands where a folder on its path should be (${error.path ?? dirname(options.dataDir)}); set EMBEDDED_DATA_DIR to a folder`)
    })
  }
  const lock = inMemory ? undefined : await DataDirLock.acquire(options.dataDir, options.role).catch((error: unknown) => { throw besideFolderError(options.dataDir, error) })
  try {
    // PGlite says only that it "failed to initialize" on a folder it may not write (found by an outside probe).
    const missing = (error: NodeJS.ErrnoException): undefined => {
      if (error.code !== 'ENOENT') throw error
    }
    const found = inMemory ? undefined : await stat(options.dataDir).catch(missing)
    if (found !== undefined && !found.isDirectory()) throw Object.assign(new Error('not a folder'), { code: 'ENOTDIR' })
    if (found !== undefined) await access(options.dataDir, constants.R_OK | constants.W_OK | constants.X_OK)
    await checkPortIsFree(options)
    const { worker, port } = await startThread(options).catch(async (error: unknown) => { throw await databaseFolderError(options.dataDir, error) })
    let stopping = false
    let ended = false
    const failureListeners: Array<(error: Error) => void> = []
    const failed = (error: Error): void => {
      if (!stopping) for (const listener of failureListeners) listener(error)
    }
    worker.on('error', failed)
    worker.on('exit', (code) => {
      ended = true
      failed(new EmbeddedDatabaseError(`the embedded database's thread ended (code ${code})`))
    })
    return {
      url: embeddedDatabaseUrl({ host: options.host, port }),
      port,
      announce: async () => { await lock?.announce(options.host, port) },
      tookOverFrom: lock?.tookOverFrom,
      onFailure: (listener) => { failureListeners.push(listener) },
      async stop () {
        if (stopping) return
        stopping = true
        if (ended) return await lock?.release()
        const answered = new Promise<void>((resolve, reject) => {
          worker.on('message', (message: EmbeddedThreadMessage) => {
            if (message.type === 'stopped') resolve()
            else if (message.type === 'failed') reject(threadError(options, message))
          })
          worker.once('exit', () => resolve())
        })
        worker.postMessage('stop')
        try {
          await answered
        } finally {
          await worker.terminate()
          await lock?.release()
        }
      }
    }
  } catch (error) {
    await lock?.release()
    throw folderError(options.dataDir, error)
  }
}

/**
 * mkdir -p, one level at a time: Node's recursive mkdir spins for ever, at full CPU, where a folder on the
 * path cannot be made (under /proc, found by an outside probe: a start that never ended nor said why).
 */
async function makeFolders (path: string): Promise<void> {
  const missing: string[] = []
  for (let at = path; ; at = dirname(at)) {
    const found = await stat(at).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error
      return undefined
    })
    if (found !== undefined && !found.isDirectory()) throw Object.assign(new Error(`not a folder: ${at}`), { code: 'ENOTDIR', path: at })
    if (found !== undefined || dirname(at) === at) break
    missing.unshift(at)
  }
  for (const folder of missing) {
    await mkdir(folder).catch((error: NodeJS.ErrnoException) => { if (error.code !== 'EEXIST') throw error })
  }
}

/**
 * As folderError, for what this thread makes beside the folder (its parents, the lock): there ENOENT means a
 * folder on the path that cannot be made (found by an outside probe: under /proc).
 */
function besideFolderError (dataDir: string, error: unknown): unknown {
  const { code, path } = error as NodeJS.ErrnoException
  if (code === 'ENOENT') return new EmbeddedDatabaseError(`EMBEDDED_DATA_DIR ${dataDir}: a folder on its path cannot be made, or nothing can be written beside it (ENOENT${path !== undefined ? ` on ${path}` : ''}): set EMBEDDED_DATA_DIR to a folder it can write`)
  return folderError(dataDir, error)
}

/** The file system's refusal of the data folder, said with the setting to change (found by outside probes). */
function folderError (dataDir: string, error: unknown): unknown {
  const { code, path } = error as NodeJS.ErrnoException
  if (code === 'ENOTDIR') return new EmbeddedDatabaseError(`EMBEDDED_DATA_DIR ${dataDir} is a file, not a folder: set EMBEDDED_DATA_DIR to a folder`)
  // Found by an outside probe: the lock (`.lock.<pid>`) and a first start's folder (`.init-…-<pid>`) beside
  // it are named after it, up to 20 characters longer.
  if (code === 'ENAMETOOLONG') return new EmbeddedDatabaseError(`EMBEDDED_DATA_DIR ${dataDir}: its name is too long for the files made beside it (its lock, a first start's folder, up to 20 characters longer): set EMBEDDED_DATA_DIR to a folder with a shorter name`)
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
    // The lock beside the folder, or the folder itself.
    const where = path !== undefined && path !== dataDir ? ` on ${path}` : ''
    return new EmbeddedDatabaseError(`EMBEDDED_DATA_DIR ${dataDir}: this process may not write there or beside it (${code}${where}): set EMBEDDED_DATA_DIR to a folder it can write`)
  }
  return error
}

/**
 * Why the database's thread could not open the folder: the file system's refusal, or, since PGlite says
 * only "Aborted()" when a file inside the folder may not be opened (a root start left it root's), the
 * first such file. Only the thread's failures are looked into: a lock or a port refusal says it all.
 */
async function databaseFolderError (dataDir: string, error: unknown): Promise<unknown> {
  const said = folderError(dataDir, error)
  if (said !== error || error instanceof EmbeddedDatabaseError || dataDir.startsWith('memory://')) return said
  const refused = await firstInaccessible(dataDir)
  if (refused === undefined) return error
  return new EmbeddedDatabaseError(`EMBEDDED_DATA_DIR ${dataDir}: this process may not read and write ${refused} in it (the database said: ${(error as Error).message}): give the folder and everything in it to the user the service runs as`)
}

/** The first entry of the folder (depth first) this process may not read and write, as a path inside it. */
async function firstInaccessible (dataDir: string): Promise<string | undefined> {
  const pending = ['']
  for (let visited = 0; pending.length > 0 && visited < 100_000; visited++) {
    const inside = pending.pop()!
    let entries: Dirent[]
    try {
      entries = await readdir(join(dataDir, inside), { withFileTypes: true })
    } catch {
      return inside === '' ? undefined : inside
    }
    for (const entry of entries) {
      const relative = join(inside, entry.name)
      const mode = entry.isDirectory() ? constants.R_OK | constants.W_OK | constants.X_OK : constants.R_OK | constants.W_OK
      if (!await access(join(dataDir, relative), mode).then(() => true, () => false)) return relative
      if (entry.isDirectory()) pending.push(relative)
    }
  }
  return undefined
}
