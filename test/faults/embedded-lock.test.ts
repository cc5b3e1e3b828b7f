// One embedded data folder, one process: a second instance is refused with the folder and the holder's
// PID; the keys CLI goes through the running service's database; a lock left by kill -9 is taken over;
// a taken EMBEDDED_DB_PORT is named and leaves nothing half done.
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { once } from 'node:events'
import t from 'tap'
import { DataDirLock } from '#src/db/data-dir-lock.ts'
import { PERSONAS } from '#src/db/seed.ts'
import { serverUrl } from '#test/helpers/database.ts'
import { runServiceToExit, startService } from '#scripts/lib/service-process.ts'
import { START_TIMEOUT_MS, completedByStart, newFolder, nextStartServesEveryone, spawnFirstStart, stagingFolders } from './first-start.ts'
import { runScript } from './processes.ts'

// Bounded, with room for a loaded machine: several real starts per case.
t.setTimeout(360_000)

const skip = serverUrl === undefined ? false : 'the embedded database only: a data folder and its lock exist only without DATABASE_URL'
if (skip !== false) t.comment(skip)

const me = async (baseUrl: string, key: string) => {
  const response = await fetch(`${baseUrl}/api/v1/auth/me`, { headers: { 'x-api-key': key } })
  return { status: response.status, body: await response.json() as { email?: string } }
}

t.test('a second instance on the folder is refused; the keys CLI goes through the running service; after kill -9 a new start takes over', { skip }, async (t) => {
  const folder = await newFolder(t)
  const first = await startService(folder.env, { timeoutMs: START_TIMEOUT_MS })
  t.teardown(() => first.stop('SIGKILL'))
  const pid = first.child.pid!

  const second = await runServiceToExit(folder.env, { timeoutMs: START_TIMEOUT_MS })
  t.not(second.code, 0, 'the second instance exits non-zero')
  t.match(second.output, `the embedded data folder ${folder.dataDir} is in use by process ${pid}`, 'naming the folder and the PID that holds it')
  t.notMatch(second.output, /Server listening/)
  t.notMatch(second.output, /"stack"/, 'one line, no stack trace (found by an outside probe)')
  t.equal((await me(first.baseUrl, 'battra-dev-key-1')).status, 200, 'the first instance still serves')

  const created = await runScript(t, ['scripts/keys.ts', 'create', '--user', 'qa+clerk_test@mock.com', '--org', 'test-org', '--description', 'made while the service runs'], { DATABASE_URL: '', ...folder.env }, START_TIMEOUT_MS)
  t.equal(created.code, 0, created.output)
  t.match(created.output, new RegExp(`in the running service's embedded database \\(127\\.0\\.0\\.1:\\d+, process ${pid}\\)`), 'the CLI names the running service it went through')
  const key = /^\s+(battra_\w+)$/m.exec(created.output)![1]
  t.match(await me(first.baseUrl, key), { status: 200, body: { email: 'qa+clerk_test@mock.com' } }, 'the key works on the service at once')

  await first.stop('SIGKILL')
  const stale = JSON.parse(await readFile(`${folder.dataDir}.lock`, 'utf8')) as { pid: number }
  t.equal(stale.pid, pid, 'kill -9 leaves the lock behind, naming a dead process')
  const next = await startService(folder.env, { timeoutMs: START_TIMEOUT_MS })
  t.teardown(() => next.stop('SIGKILL'))
  t.equal(JSON.parse(await readFile(`${folder.dataDir}.lock`, 'utf8')).pid, next.child.pid, 'the new start took the stale lock over')
  t.match(next.output(), new RegExp(`"previousHolder":\\{"pid":${pid},[^}]*\\},"msg":"took over the data folder's lock`), 'and says so, naming the dead holder (found by an outside probe: no trace)')
  t.match(await me(next.baseUrl, key), { status: 200, body: { email: 'qa+clerk_test@mock.com' } }, 'the key made through the first service is in the folder')
  for (const persona of PERSONAS) t.equal((await me(next.baseUrl, persona.key)).body.email, persona.email, persona.key)
  t.equal(await next.stop('SIGTERM'), 0)
})

t.test('the keys CLI on a folder held by a process not serving it yet: a clear refusal naming the folder and the PID, no stack trace', { skip }, async (t) => {
  const folder = await newFolder(t)
  // As a service holds it while PGlite initialises, before it announces its port.
  const lock = await DataDirLock.acquire(folder.dataDir)
  t.teardown(() => lock.release())
  const listed = await runScript(t, ['scripts/keys.ts', 'list'], { DATABASE_URL: '', ...folder.env }, START_TIMEOUT_MS)
  t.equal(listed.code, 1)
  t.match(listed.output, `error: the embedded data folder ${folder.dataDir} is in use by process ${process.pid}: it may be a service still starting (try again once it listens)`)
  t.notMatch(listed.output, /\n\s+at /, 'no stack trace')
})

t.test('during a first start the port is announced only once the database is migrated and seeded: the keys CLI meanwhile is told to wait, not "unknown organization"', { skip }, async (t) => {
  const folder = await newFolder(t)
  // Paused inside the seed: migrated, nothing seeded yet.
  const first = spawnFirstStart(t, folder, { statement: 'FROM "public"\\."seed_markers"', occurrence: 1 })
  await first.waitFor(/PAUSED AT: .*FROM "public"\."seed_markers"/, START_TIMEOUT_MS)
  const holder = JSON.parse(await readFile(`${folder.dataDir}.lock`, 'utf8')) as { pid: number, port?: number }
  t.equal(holder.pid, first.child.pid, 'the starting service holds the folder')
  t.equal(holder.port, undefined, 'and names no port yet: nothing may connect to a half-made database')
  const created = await runScript(t, ['scripts/keys.ts', 'create', '--user', 'qa+clerk_test@mock.com', '--org', 'test-org'], { DATABASE_URL: '', ...folder.env }, 60_000)
  t.equal(created.code, 1)
  t.match(created.output, `is in use by process ${first.child.pid}: it may be a service still starting (try again once it listens)`)
  t.notMatch(created.output, /unknown organization/)
  await first.kill()
})

t.test('a start on a folder a command-line tool is working on: refused, naming the tool, not "a service still starting" (found by an outside probe)', { skip }, async (t) => {
  const folder = await newFolder(t)
  const lock = await DataDirLock.acquire(folder.dataDir, 'tool')
  t.teardown(() => lock.release())
  const refused = await runServiceToExit(folder.env, { timeoutMs: START_TIMEOUT_MS })
  t.equal(refused.code, 1)
  t.match(refused.output, `is in use by process ${process.pid}, a command-line tool (npm run keys, db:* or audit) working on it: try again once it ends`)
  t.notMatch(refused.output, /still starting/)
})

t.test('EMBEDDED_DB_PORT taken: a clear message naming it, a non-zero exit, and nothing half done for the next start', { skip }, async (t) => {
  const folder = await newFolder(t)
  const squatter = createServer()
  squatter.listen(0, '127.0.0.1')
  await once(squatter, 'listening')
  t.teardown(() => squatter.close())
  const port = (squatter.address() as { port: number }).port

  const refused = await runServiceToExit({ ...folder.env, EMBEDDED_DB_PORT: String(port) }, { timeoutMs: START_TIMEOUT_MS })
  t.equal(refused.code, 1, 'exits 1')
  t.match(refused.output, `EMBEDDED_DB_PORT ${port} on 127.0.0.1 is already in use`, 'names EMBEDDED_DB_PORT and the port')
  t.match(refused.output, /set EMBEDDED_DB_PORT to a free port, or to 0/, 'says what to change')
  t.notMatch(refused.output, /EADDRINUSE/, 'not a bare EADDRINUSE')
  t.notOk(existsSync(`${folder.dataDir}.lock`), 'the lock is released')
  t.notOk(existsSync(folder.dataDir), 'refused before the folder was created')
  t.same(await stagingFolders(folder), [], 'no staging folder either')

  const next = completedByStart(await nextStartServesEveryone(t, folder))
  t.equal(next.seeded.length, 2 + PERSONAS.length, 'the next start (a free port) migrated and seeded the folder')
})
