// One embedded data folder, one process. The lock is a file beside the folder (`<folder>.lock`), created
// with link(2), which fails if it exists: two starters cannot both succeed. It names the holder's PID and,
// once the embedded database listens, its host and port, so the command line and Prisma Studio can reach
// a running service's database. A lock whose PID is gone (a crash, kill -9), or now names a process
// started after the lock was taken (its PID reused), or that no holder of ours wrote (dated later than
// now, or made by another user), is stale and taken over.
import { constants, readFileSync } from 'node:fs'
import { link, lstat, open, readdir, rename, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

export interface LockHolder {
  pid: number
  host?: string
  port?: number
  startedAt?: string
  /** What holds it: the service, or a command-line tool (npm run keys, db:*, audit) working on the folder. */
  role?: 'service' | 'tool'
  /** Set on reading a lock file another user made (see trustedOwner): its uid. Such a lock holds nothing. */
  foreignOwner?: number
}

export class DataDirLockedError extends Error {
  override name = 'DataDirLockedError'
  constructor (readonly dataDir: string, readonly holder: LockHolder) {
    super(`the embedded data folder ${dataDir} is in use by process ${holder.pid}` +
      (holder.role === 'tool'
        // Found by an outside probe: a start refused by a CLI run was told of "a service still starting".
        ? ', a command-line tool (npm run keys, db:* or audit) working on it: try again once it ends'
        : holder.port === undefined
        // A service holds the folder before its database listens (found by an outside probe: the advice was only to stop it or delete the lock).
          ? ': it may be a service still starting (try again once it listens), or stop that process, or set EMBEDDED_DATA_DIR to another folder'
          : ` (its database listens on ${holder.host ?? '127.0.0.1'}:${holder.port}): stop that process, or set EMBEDDED_DATA_DIR to another folder`) +
      `. If no such process runs, delete ${dataDir}.lock`)
  }
}

/** A lock beside the folder that another user made, and this user may not remove. */
export class ForeignLockError extends Error {
  override name = 'ForeignLockError'
  constructor (readonly dataDir: string, readonly ownerUid: number) {
    super(`the lock ${dataDir}.lock beside the embedded data folder was made by another user (uid ${ownerUid}), not by this one or root, and this user may not remove it: have root delete it, or set EMBEDDED_DATA_DIR to a folder whose parent only this user can write`)
  }
}

export const lockPathOf = (dataDir: string): string => `${dataDir}.lock`

/** `fields`: the process's /proc stat fields, when the caller has read them already. */
function isAlive (pid: number, fields?: string[]): boolean {
  try {
    process.kill(pid, 0)
  } catch (error) {
    // EPERM: it exists, owned by someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
  return !isZombie(fields ?? statFields(pid))
}

/**
 * The fields of /proc/<pid>/stat after the command (field 3, the state, first), or undefined where there is
 * no /proc (not Linux) or the process has just gone. "pid (command) state …": the command may hold spaces
 * and parentheses.
 */
function statFields (pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  } catch {
    return undefined
  }
}

/**
 * A process killed (kill -9) whose parent has not collected it yet still answers signal 0: it is dead all
 * the same, and holds nothing (found by an outside probe: a start refused until a wrapper reaped it).
 */
const isZombie = (fields: string[] | undefined): boolean => fields?.[0] === 'Z'

/** /proc's clock ticks (USER_HZ): 100 on every Linux that Node runs on. */
const TICKS_PER_SECOND = 100
/** /proc/stat's boot time is in whole seconds, and the lock's time is taken after its process started. */
const START_TIME_SLACK_MS = 2000

/** When a process started (ms since epoch): field 22, starttime, in ticks since boot. */
function startedAtMs (fields: string[] | undefined): number | undefined {
  if (fields === undefined) return undefined
  try {
    const ticks = Number(fields[19])
    const bootSeconds = Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1])
    return Number.isFinite(ticks) && Number.isFinite(bootSeconds) ? bootSeconds * 1000 + ticks * 1000 / TICKS_PER_SECOND : undefined
  } catch {
    return undefined
  }
}

/**
 * Whether the holder named in a lock still holds it: its PID lives, and is the same process, not a later
 * one given the PID after a crash or a reboot (a container's service is often PID 1 at every start).
 */
function holds (holder: LockHolder): boolean {
  if (holder.pid <= 0) return false
  const locked = holder.startedAt === undefined ? NaN : Date.parse(holder.startedAt)
  // Taken in the future: no lock this code wrote (found by an outside probe: another user's planted lock
  // naming PID 1 and the year 2099 outlived every check below).
  if (locked > Date.now() + START_TIME_SLACK_MS) return false
  const fields = statFields(holder.pid)
  if (!isAlive(holder.pid, fields)) return false
  const started = startedAtMs(fields)
  return Number.isNaN(locked) || started === undefined || started <= locked + START_TIME_SLACK_MS
}

/**
 * Writes a draft of the lock beside it, never through what stands at its name: created exclusively
 * (O_EXCL does not follow a symbolic link), after removing whatever was there. In a parent others may
 * write (/tmp), another user could plant a link at the predictable name and have the draft overwrite a
 * file of ours (found by an outside probe).
 */
async function writeDraft (draft: string, holder: LockHolder): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await writeFile(draft, JSON.stringify(holder), { flag: 'wx', mode: 0o644 })
      return
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 3) throw error
      // unlink removes a link itself, not what it points to.
      await unlink(draft).catch(() => {})
    }
  }
}

/**
 * Whether a lock file's owner may speak for the folder: this process's user, root, or the folder's own
 * owner. In a parent others may write (/tmp), another user could plant a lock naming a live PID and a
 * port of theirs: the service refused to start, and the command line sent its connection to that port
 * (found by an outside probe). Such a lock holds nothing, and is taken over where this user may remove it.
 */
async function trustedOwner (uid: number, dataDir: string): Promise<boolean> {
  const own = process.getuid?.()
  if (own === undefined || uid === own || uid === 0) return true
  return uid === (await stat(dataDir).catch(() => undefined))?.uid
}

/** A lock is a small file: this is far more than one holds. */
const MAX_LOCK_BYTES = 4096

async function readHolder (path: string, dataDir: string): Promise<LockHolder | undefined> {
  let handle: FileHandle
  try {
    // Never blocking, never through a link: a FIFO planted at the name blocked a plain read until its maker
    // wrote to it, and a link to /dev/zero would never end (found by an outside probe: a start hung silently).
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    // A link (ELOOP) or anything else that cannot be opened: nobody can hold it; whose it is, for the log.
    const uid = (await lstat(path).catch(() => undefined))?.uid
    return uid !== undefined && !(await trustedOwner(uid, dataDir)) ? { pid: -1, foreignOwner: uid } : { pid: -1 }
  }
  try {
    const found = await handle.stat()
    if (!(await trustedOwner(found.uid, dataDir))) return { pid: -1, foreignOwner: found.uid }
    if (!found.isFile() || found.size > MAX_LOCK_BYTES) return { pid: -1 }
    const holder = JSON.parse(await handle.readFile('utf8')) as LockHolder
    return Number.isInteger(holder.pid) ? holder : { pid: -1 }
  } catch {
    // Unreadable (a crash while it was being written): nobody can hold it.
    return { pid: -1 }
  } finally {
    await handle.close()
  }
}

/** The live holder of the folder's lock, if any. */
export async function lockHolder (dataDir: string): Promise<LockHolder | undefined> {
  const holder = await readHolder(lockPathOf(dataDir), dataDir)
  return holder !== undefined && holds(holder) ? holder : undefined
}

/**
 * The drafts (`<lock>.<pid>`) and set-aside stale locks (`<lock>.stale.<pid>`) of processes gone, which a
 * signal or a crash at the wrong moment leaves beside the folder: they block nothing, but nothing else
 * would ever remove them. A live process's are its own business.
 */
async function removeDeadDrafts (path: string): Promise<void> {
  const prefix = `${basename(path)}.`
  const names = await readdir(dirname(path)).catch(() => [] as string[])
  for (const name of names) {
    const pid = /^(?:stale\.)?(\d+)$/.exec(name.startsWith(prefix) ? name.slice(prefix.length) : '')?.[1]
    if (pid !== undefined && Number(pid) !== process.pid && !isAlive(Number(pid))) await unlink(join(dirname(path), name)).catch(() => {})
  }
}

export class DataDirLock {
  /** The holder of a lock this one took over (gone, or its PID now another process's): the start logs it. */
  tookOverFrom: LockHolder | undefined

  private constructor (readonly dataDir: string, private holder: LockHolder) {}

  private get path (): string {
    return lockPathOf(this.dataDir)
  }

  /** Takes the folder's lock, or throws DataDirLockedError naming the process that holds it. */
  static async acquire (dataDir: string, role: LockHolder['role'] = 'service'): Promise<DataDirLock> {
    const path = lockPathOf(dataDir)
    const mine: LockHolder = { pid: process.pid, startedAt: new Date().toISOString(), role }
    let stale: LockHolder | undefined
    const draft = `${path}.${process.pid}`
    await writeDraft(draft, mine)
    try {
      for (let attempt = 0; attempt < 5; attempt++) {
        try {
          await link(draft, path)
          await removeDeadDrafts(path)
          const lock = new DataDirLock(dataDir, mine)
          lock.tookOverFrom = stale
          return lock
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
        }
        const holder = await readHolder(path, dataDir)
        if (holder !== undefined && holder.pid !== process.pid && holds(holder)) {
          throw new DataDirLockedError(dataDir, holder)
        }
        // Stale: move it aside under a name of our own (atomic), so that of two starters taking over at
        // once only one removes it. If what was moved is a live lock taken meanwhile, put it back.
        const aside = `${path}.stale.${process.pid}`
        try {
          await rename(path, aside)
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code
          if (holder?.foreignOwner !== undefined && (code === 'EPERM' || code === 'EACCES')) throw new ForeignLockError(dataDir, holder.foreignOwner)
          continue
        }
        const moved = await readHolder(aside, dataDir)
        if (moved !== undefined && moved.pid !== process.pid && holds(moved)) {
          await link(aside, path).catch(() => {})
          await unlink(aside).catch(() => {})
          throw new DataDirLockedError(dataDir, moved)
        }
        await unlink(aside).catch(() => {})
        stale = moved ?? { pid: -1 }
      }
      throw new DataDirLockedError(dataDir, (await readHolder(path, dataDir)) ?? { pid: -1 })
    } finally {
      await unlink(draft).catch(() => {})
    }
  }

  /** Records where the embedded database listens, for the command line and Prisma Studio. */
  async announce (host: string, port: number): Promise<void> {
    this.holder = { ...this.holder, host, port }
    const draft = `${this.path}.${process.pid}`
    await writeDraft(draft, this.holder)
    await rename(draft, this.path)
  }

  async release (): Promise<void> {
    const holder = await readHolder(this.path, this.dataDir)
    if (holder?.pid === process.pid) await unlink(this.path).catch(() => {})
  }
}
