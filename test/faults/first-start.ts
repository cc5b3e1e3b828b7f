// First starts of the embedded database, for the fault tests: a new data folder, a first start watched
// through its output and the file system (and paused inside a transaction by pause-at.mjs when asked),
// and the check that matters after any fault: the next start serves every persona, and nothing left
// behind (staging folder, lock) is in its way.
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import { PERSONAS } from '#src/db/seed.ts'
import { spawnService, startService } from '#scripts/lib/service-process.ts'
import type { Teardown } from '#test/helpers/database.ts'
import { watch, type Watched } from './processes.ts'

/** A first start on a busy 2-core machine takes seconds; far more when other test files run beside it. */
export const START_TIMEOUT_MS = 180_000

const PAUSE_HOOK = join(import.meta.dirname, 'pause-at.mjs')

export interface Folder {
  parent: string
  dataDir: string
  env: Record<string, string>
}

/** A data folder that does not exist yet, in a parent of its own. */
export async function newFolder (t: Teardown, name = 'data'): Promise<Folder> {
  const parent = await mkdtemp(join(tmpdir(), 'battra-first-start-'))
  t.teardown(() => rm(parent, { recursive: true, force: true }))
  const dataDir = join(parent, name)
  return { parent, dataDir, env: { EMBEDDED_DATA_DIR: dataDir, EMBEDDED_DB_PORT: '0', USAGE_FLUSH_INTERVAL_MS: '3600000' } }
}

export interface PausePoint {
  /** Regular expression matched against each SQL statement the service sends. */
  statement: string
  occurrence: number
}

/** Starts the service on the folder without waiting for it; paused at `pause` when given. */
export function spawnFirstStart (t: Teardown, folder: Folder, pause?: PausePoint): Watched {
  const env = pause === undefined
    ? folder.env
    : { ...folder.env, BATTRA_TEST_PAUSE_AT: pause.statement, BATTRA_TEST_PAUSE_OCCURRENCE: String(pause.occurrence) }
  return watch(t, spawnService(env, { nodeArgs: pause === undefined ? [] : ['--import', PAUSE_HOOK] }))
}

/** Polls the file system (every 5 ms) until `check` holds; fails if the process exits first. */
export async function untilFiles (process: Watched, check: () => boolean, what: string, timeoutMs = START_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (process.child.exitCode !== null) throw new Error(`exited before ${what}:\n${process.output()}`)
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}\n${process.output()}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/** Staging folders of first starts of this data folder (`.init-<name>-<pid>`). */
export async function stagingFolders (folder: Folder): Promise<string[]> {
  const prefix = `.init-${folder.dataDir.slice(folder.parent.length + 1)}-`
  return (await readdir(folder.parent)).filter((entry) => entry.startsWith(prefix) && /^\d+$/.test(entry.slice(prefix.length)))
}

export const stagingWithVersion = (folder: Folder, pid: number): boolean =>
  existsSync(join(folder.parent, `.init-${folder.dataDir.slice(folder.parent.length + 1)}-${pid}`, 'PG_VERSION'))

/** The next start: serves every persona at /api/v1/auth/me, holds the lock itself, left no staging folder; stops cleanly. */
export async function nextStartServesEveryone (t: Test, folder: Folder): Promise<string> {
  const service = await startService(folder.env, { timeoutMs: START_TIMEOUT_MS })
  t.teardown(() => service.stop('SIGKILL'))
  for (const persona of PERSONAS) {
    const response = await fetch(`${service.baseUrl}/api/v1/auth/me`, { headers: { 'x-api-key': persona.key } })
    const body = await response.json() as { email?: string }
    t.equal(response.status, 200, `${persona.key}: 200`)
    t.equal(body.email, persona.email, `${persona.key}: ${persona.email}`)
  }
  const projects = await fetch(`${service.baseUrl}/api/v1/projects`, { headers: { 'x-api-key': 'battra-dev-key-1' } })
  t.equal((await projects.json() as unknown[]).length, 3, 'the seeded projects, once')
  t.same(await stagingFolders(folder), [], 'no staging folder left beside the data folder')
  const lock = JSON.parse(await readFile(`${folder.dataDir}.lock`, 'utf8')) as { pid: number }
  t.equal(lock.pid, service.child.pid, 'the lock names the new process')
  const output = service.output()
  t.equal(await service.stop('SIGTERM'), 0, 'stops cleanly')
  t.notOk(existsSync(`${folder.dataDir}.lock`), 'and releases the lock')
  return output
}

/** What a start's log says it completed: the migrations it applied and the things it seeded. */
export function completedByStart (output: string): { applied: string[], seeded: string[] } {
  const applied = /"applied":(\[[^\]]*\])/.exec(output)
  const seeded = /"seeded":(\[[^\]]*\])/.exec(output)
  return { applied: applied === null ? [] : JSON.parse(applied[1]), seeded: seeded === null ? [] : JSON.parse(seeded[1]) }
}
