// The embedded database in its own thread: the service's event loop runs while PGlite works, and what
// the thread refuses at open reaches the caller as the error it is, the folder's lock released.
import { chmod, chown, mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import t from 'tap'
import { EmbeddedDatabaseError, openEmbeddedDatabase } from '#src/db/embedded.ts'
import { MAX_REFUSED_OPEN } from '#src/db/socket-peers.ts'
import { openDatabase } from '#src/db/database.ts'
import { loadConfig } from '#src/config.ts'
import { DataDirLock, lockHolder, lockPathOf } from '#src/db/data-dir-lock.ts'
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { existsSync, readFileSync } from 'node:fs'
import { sleep, until } from '#test/helpers/wait.ts'
import { PACKAGE_ROOT } from '#src/paths.ts'
import type { Teardown } from '#test/helpers/database.ts'
import { ensureBuilt } from '#scripts/lib/service-process.ts'

/** A folder of its own for a test's data folder and what stands beside it, removed afterwards. */
/** A throw-away embedded database, stopped at the test's end, and the port it listens on. */
async function throwAwayDatabase (t: Teardown) {
  const embedded = await openEmbeddedDatabase({ dataDir: 'memory://', host: '127.0.0.1', port: 0 })
  t.teardown(() => embedded.stop())
  return { embedded, port: Number(new URL(embedded.url).port) }
}

async function newParent (t: Teardown): Promise<string> {
  const parent = await mkdtemp(join(tmpdir(), 'battra-embedded-'))
  t.teardown(() => rm(parent, { recursive: true, force: true }))
  return parent
}

const asNobody = process.getuid?.() === 0 && spawnSync('runuser', ['--version']).status === 0

/** Runs an ES module script as the user nobody, its output collected; `timeoutMs` bounds it. */
const runAsNobody = (script: string, timeoutMs?: number) =>
  spawnSync('runuser', ['-u', 'nobody', '--', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, HOME: '/tmp', NODE_OPTIONS: '' } })

/** Opens the data folder as nobody through the compiled module: prints `opened`, or the error's message. */
function openAsNobody (dataDir: string) {
  const module = new URL('dist/src/db/embedded.js', `file://${PACKAGE_ROOT}/`).href
  return runAsNobody(`const { openEmbeddedDatabase } = await import(${JSON.stringify(module)}); await openEmbeddedDatabase({ dataDir: ${JSON.stringify(dataDir)}, host: '127.0.0.1', port: 0 }).then(() => console.log('opened'), (error) => console.log(error.message))`)
}
t.test('a slow statement of the embedded database does not hold up the event loop', async (t) => {
  const embedded = await openEmbeddedDatabase({ dataDir: 'memory://', host: '127.0.0.1', port: 0 })
  t.teardown(() => embedded.stop())
  const client = new pg.Client({ connectionString: embedded.url })
  await client.connect()
  t.teardown(() => client.end())
  // About a second of PGlite's CPU: in the service's thread, a timer waited for all of it.
  const began = performance.now()
  let tookMs = 0
  const slow = client.query('SELECT sum(g) FROM generate_series(1, 3000000) AS g').then(() => { tookMs = performance.now() - began })
  await sleep(20)
  const timerMs = performance.now() - began
  await slow
  t.ok(timerMs < tookMs / 2, `a 20 ms timer fired after ${Math.round(timerMs)} ms, while the statement took ${Math.round(tookMs)} ms`)
})

t.test('a folder that holds something else: a clear error naming the setting, and the folder free for the next try', async (t) => {
  const parent = await newParent(t)
  const dataDir = join(parent, 'data')
  await mkdir(dataDir)
  await writeFile(join(dataDir, 'notes.txt'), 'not a database')
  await t.rejects(openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 }), new EmbeddedDatabaseError(`${dataDir} is not empty and holds no database: set EMBEDDED_DATA_DIR to a new or empty folder`))
  t.notOk(existsSync(lockPathOf(dataDir)), 'the lock released')
  await rm(join(dataDir, 'notes.txt'))
  const embedded = await openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 })
  const client = new pg.Client({ connectionString: embedded.url })
  await client.connect()
  t.same((await client.query('SELECT 1 AS one')).rows, [{ one: 1 }], 'the emptied folder opens')
  // Its files are made readable and writable by everyone: the folder keeps other users out (found by an outside probe).
  t.equal((await stat(dataDir)).mode & 0o777, 0o700, 'the data folder is its owner\'s alone')
  await client.end()
  await embedded.stop()
  t.notOk(existsSync(lockPathOf(dataDir)), 'stop releases the lock')
})

t.test('a lock held by a killed process its parent has not collected yet (a zombie) is taken over (found by an outside probe)', async (t) => {
  const parent = await newParent(t)
  const dataDir = join(parent, 'data')
  // A parent that never collects the child it killed (perl, Essential on Debian). A shell did the same
  // with `exec sleep`, but at times collected the child first, before its exec.
  const reaper = spawn('perl', ['-e', '$| = 1; my $child = fork; if (!$child) { sleep 60; exit } print "$child\\n"; kill 9, $child; sleep 60'], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { reaper.kill('SIGKILL') })
  const [line] = await once(reaper.stdout, 'data') as [Buffer]
  const pid = Number(String(line).trim())
  await until(() => readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z '), 5000, 'the child is a zombie')
  await writeFile(lockPathOf(dataDir), JSON.stringify({ pid }))
  const embedded = await openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 })
  t.equal(JSON.parse(readFileSync(lockPathOf(dataDir), 'utf8')).pid, process.pid, 'the lock is this process\'s')
  await embedded.stop()
})

t.test('a lock naming a live process that started after the lock was taken (its PID reused after a crash or a reboot) is taken over', async (t) => {
  const parent = await newParent(t)
  const dataDir = join(parent, 'data')
  const later = spawn('sleep', ['60'], { stdio: 'ignore' })
  t.teardown(() => { later.kill('SIGKILL') })
  // The lock of a service that crashed an hour ago, whose PID the sleep has now.
  await writeFile(lockPathOf(dataDir), JSON.stringify({ pid: later.pid, startedAt: new Date(Date.now() - 3_600_000).toISOString() }))
  const embedded = await openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 })
  t.equal(JSON.parse(readFileSync(lockPathOf(dataDir), 'utf8')).pid, process.pid, 'the lock is this process\'s')
  await embedded.stop()

  // The same process named by a lock taken after it started still holds the folder.
  await writeFile(lockPathOf(dataDir), JSON.stringify({ pid: later.pid, startedAt: new Date().toISOString() }))
  await t.rejects(openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 }), { name: 'DataDirLockedError', message: new RegExp(`is in use by process ${later.pid}`) })
})

t.test('a lock taken "in the future" holds nothing: taken over, and its port never used (found by an outside probe: a planted lock naming PID 1 and 2099 kept the service out)', async (t) => {
  const dataDir = join(await newParent(t), 'data')
  const live = spawn('sleep', ['60'], { stdio: 'ignore' })
  t.teardown(() => { live.kill('SIGKILL') })
  await writeFile(lockPathOf(dataDir), JSON.stringify({ pid: live.pid, startedAt: '2099-01-01T00:00:00.000Z', role: 'service', host: '127.0.0.1', port: 1 }))
  t.equal(await lockHolder(dataDir), undefined, 'the command line finds no holder (and no port to connect to)')
  const lock = await DataDirLock.acquire(dataDir)
  t.teardown(() => lock.release())
  t.equal(lock.tookOverFrom?.pid, live.pid, 'the start takes it over, and says whose it was')
})

t.test('a lock another user made beside the folder holds nothing: root takes it over, that user\'s own start is told to have it removed (found by an outside probe: a planted lock sent the CLI to another user\'s port)', {
  skip: asNobody ? false : 'needs root and runuser, to make the lock another user\'s'
}, async (t) => {
  const uidOf = (user: string) => Number(spawnSync('id', ['-u', user], { encoding: 'utf8' }).stdout.trim())
  const parent = await newParent(t)
  // A parent every user may write, as /tmp.
  await chmod(parent, 0o1777)
  const dataDir = join(parent, 'data')
  const live = spawn('sleep', ['60'], { stdio: 'ignore' })
  t.teardown(() => { live.kill('SIGKILL') })
  const plant = async (owner: string) => {
    await writeFile(lockPathOf(dataDir), JSON.stringify({ pid: live.pid, startedAt: new Date().toISOString(), role: 'service', host: '127.0.0.1', port: 1 }))
    await chown(lockPathOf(dataDir), uidOf(owner), uidOf(owner))
  }
  await plant('nobody')
  t.equal(await lockHolder(dataDir), undefined, 'root\'s command line finds no holder, and no port to connect to')
  const lock = await DataDirLock.acquire(dataDir)
  t.same(lock.tookOverFrom, { pid: -1, foreignOwner: uidOf('nobody') }, 'root\'s start takes it over, naming who made it')
  await lock.release()

  // The folder's own owner speaks for it: its lock holds.
  await mkdir(dataDir)
  await chown(dataDir, uidOf('nobody'), uidOf('nobody'))
  await plant('nobody')
  t.equal((await lockHolder(dataDir))?.pid, live.pid, 'a lock of the folder\'s owner is its holder\'s')

  // A third user's lock, which nobody may not remove from a sticky parent.
  await plant('daemon')
  const module = new URL('dist/src/db/data-dir-lock.js', `file://${PACKAGE_ROOT}/`).href
  const run = runAsNobody(`const { DataDirLock } = await import(${JSON.stringify(module)}); await DataDirLock.acquire(${JSON.stringify(dataDir)}).then(() => console.log('acquired'), (error) => console.log(error.name, error.message))`)
  t.equal(run.stdout.trim(), `ForeignLockError the lock ${dataDir}.lock beside the embedded data folder was made by another user (uid ${uidOf('daemon')}), not by this one or root, and this user may not remove it: have root delete it, or set EMBEDDED_DATA_DIR to a folder whose parent only this user can write`, run.stderr)
})

t.test('a FIFO planted at the lock\'s name holds nothing, and does not stall the start (found by an outside probe: a start waited on it, silently, until its maker wrote to it)', async (t) => {
  const dataDir = join(await newParent(t), 'data')
  t.equal(spawnSync('mkfifo', [lockPathOf(dataDir)]).status, 0)
  t.equal(await lockHolder(dataDir), undefined, 'the command line finds no holder')
  const lock = await DataDirLock.acquire(dataDir)
  t.teardown(() => lock.release())
  t.same(lock.tookOverFrom, { pid: -1 }, 'the start takes it over')
})

t.test('a data folder under /proc: a clear error naming EMBEDDED_DATA_DIR, at once (found by an outside probe: Node\'s recursive mkdir spun at full CPU for ever, and a lock that could not be written was a stack trace)', async (t) => {
  await t.rejects(openEmbeddedDatabase({ dataDir: '/proc/nonexistent/data', host: '127.0.0.1', port: 0 }), { name: 'EmbeddedDatabaseError', message: /^EMBEDDED_DATA_DIR \/proc\/nonexistent\/data: a folder on its path cannot be made, or nothing can be written beside it \(ENOENT on \/proc\/nonexistent\): set EMBEDDED_DATA_DIR to a folder it can write$/ })
  await t.rejects(openEmbeddedDatabase({ dataDir: '/proc/self/data', host: '127.0.0.1', port: 0 }), { name: 'EmbeddedDatabaseError', message: /^EMBEDDED_DATA_DIR \/proc\/self\/data: a folder on its path cannot be made, or nothing can be written beside it \(ENOENT on \/proc\/self\/data\.lock\.\d+\)/ })
})

t.test('drafts of the lock left by processes gone are removed by the next start; a live process\'s draft is left alone', async (t) => {
  const parent = await newParent(t)
  const dataDir = join(parent, 'data')
  const gone = spawn('true')
  await once(gone, 'exit')
  const live = spawn('sleep', ['60'], { stdio: 'ignore' })
  t.teardown(() => { live.kill('SIGKILL') })
  const lock = lockPathOf(dataDir)
  for (const name of [`${lock}.${gone.pid}`, `${lock}.stale.${gone.pid}`, `${lock}.${live.pid}`]) await writeFile(name, '{}')
  const embedded = await openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 })
  t.teardown(() => embedded.stop())
  t.notOk(existsSync(`${lock}.${gone.pid}`), 'a dead process\'s draft is removed')
  t.notOk(existsSync(`${lock}.stale.${gone.pid}`), 'and its set-aside stale lock')
  t.ok(existsSync(`${lock}.${live.pid}`), 'a live process\'s draft stays')
})

t.test('a data folder that is a file: a clear error naming EMBEDDED_DATA_DIR, the lock released (found by an outside probe: the bare ENOTDIR)', async (t) => {
  const parent = await newParent(t)
  const dataDir = join(parent, 'a-file')
  await writeFile(dataDir, 'x')
  await t.rejects(openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 }), new EmbeddedDatabaseError(`EMBEDDED_DATA_DIR ${dataDir} is a file, not a folder: set EMBEDDED_DATA_DIR to a folder`))
  t.notOk(existsSync(lockPathOf(dataDir)), 'the lock released')
})

// Root writes anywhere: the refusal needs another user, which only root can become.
t.test('a data folder this process may not write: a clear error naming EMBEDDED_DATA_DIR (found by an outside probe: "PGlite failed to initialize properly")', {
  skip: asNobody ? false : 'needs root and runuser, to open the folder as the user nobody'
}, async (t) => {
  ensureBuilt()
  const parent = await newParent(t)
  await chmod(parent, 0o777)
  // A database folder that nobody may read but not write (its parent nobody may write: the lock goes there).
  const dataDir = join(parent, 'db')
  await mkdir(dataDir, { mode: 0o755 })
  await writeFile(join(dataDir, 'PG_VERSION'), '17\n')
  const run = openAsNobody(dataDir)
  t.equal(run.stdout.trim(), `EMBEDDED_DATA_DIR ${dataDir}: this process may not write there or beside it (EACCES): set EMBEDDED_DATA_DIR to a folder it can write`, run.stderr)
  t.notOk(existsSync(lockPathOf(dataDir)), 'the lock released')
})

t.test('root starting in another user\'s data folder is warned that the files it writes will be root\'s (found by an outside probe: the owner\'s next start was refused on them)', {
  skip: process.getuid?.() === 0 ? false : 'needs root, to start in a folder another user owns'
}, async (t) => {
  const nobody = Number(spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout.trim())
  const warnings: Array<{ fields: Record<string, unknown>, message: string }> = []
  const log = { info: () => {}, error: () => {}, warn: (fields: Record<string, unknown>, message: string) => { warnings.push({ fields, message }) } } as unknown as Parameters<typeof openDatabase>[1]
  const openIn = async (dataDir: string) => {
    const database = await openDatabase(loadConfig({ DATABASE_URL: '', EMBEDDED_DATA_DIR: dataDir, EMBEDDED_DB_PORT: '0' }), log)
    await database.close()
  }
  const dataDir = join(await newParent(t), 'db')
  await openIn(dataDir)
  t.same(warnings, [], 'none in root\'s own folder')
  // The same folder given to another user, as when root starts in the folder of the service's user.
  t.equal(spawnSync('chown', ['-R', 'nobody', dataDir]).status, 0)
  await openIn(dataDir)
  t.same(warnings.map((warning) => warning.fields), [{ dataDir, folderOwnerUid: nobody }])
  t.match(warnings[0]?.message, `runs as root in a data folder owned by uid ${nobody}`)
})

t.test('a file inside the data folder this process may not open: a clear error naming the file and EMBEDDED_DATA_DIR (found by an outside probe: PGlite\'s "Aborted()")', {
  skip: asNobody ? false : 'needs root and runuser, to open the folder as the user nobody'
}, async (t) => {
  ensureBuilt()
  const parent = await newParent(t)
  const dataDir = join(parent, 'db')
  const made = await openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 })
  await made.stop()
  // The folder given to nobody, but for one file a root start left root's.
  const nobody = Number(spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout.trim())
  await chmod(parent, 0o777)
  t.equal(spawnSync('chown', ['-R', 'nobody', dataDir]).status, 0)
  const kept = join('global', 'pg_control')
  await chown(join(dataDir, kept), 0, 0)
  await chmod(join(dataDir, kept), 0o600)
  t.equal((await stat(dataDir)).uid, nobody)
  const run = openAsNobody(dataDir)
  t.match(run.stdout.trim(), `EMBEDDED_DATA_DIR ${dataDir}: this process may not read and write ${kept} in it (the database said: `, run.stderr)
  t.match(run.stdout.trim(), /give the folder and everything in it to the user the service runs as$/)
  t.notOk(existsSync(lockPathOf(dataDir)), 'the lock released')
})

t.test('a data folder that exists (made by the operator, or a mounted volume with lost+found): the cluster is made inside it, the folder and its owner kept', async (t) => {
  const parent = await newParent(t)
  const dataDir = join(parent, 'volume')
  await mkdir(join(dataDir, 'lost+found'), { recursive: true })
  const before = await stat(dataDir)
  const embedded = await openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 })
  const client = new pg.Client({ connectionString: embedded.url })
  await client.connect()
  t.same((await client.query('SELECT 1 AS one')).rows, [{ one: 1 }], 'it opens')
  await client.end()
  await embedded.stop()
  const after = await stat(dataDir)
  t.equal(after.ino, before.ino, 'the same folder, not one renamed over it')
  t.equal(after.uid, before.uid, 'its owner kept')
  t.ok(existsSync(join(dataDir, 'lost+found')), 'lost+found left alone')
  t.same((await readdir(dataDir)).filter((name) => name.startsWith('.')), [], 'no staging folder or marker left inside')
})

t.test('a folder a first start died in (its marker, a partial cluster, its staging folder) is cleared and initialised again; the same without the marker is refused', async (t) => {
  const parent = await newParent(t)
  const dataDir = join(parent, 'data')
  await mkdir(join(dataDir, '.init-999999', 'base'), { recursive: true })
  await mkdir(join(dataDir, 'global'))
  await writeFile(join(dataDir, 'global', 'pg_control'), 'half moved')
  await t.rejects(openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 }), new EmbeddedDatabaseError(`${dataDir} is not empty and holds no database: set EMBEDDED_DATA_DIR to a new or empty folder`), 'without the marker, what is there is not ours to clear')
  await writeFile(join(dataDir, '.battra-initialising'), '')
  const embedded = await openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 })
  await embedded.stop()
  t.ok(existsSync(join(dataDir, 'PG_VERSION')), 'a cluster is in place')
  t.same((await readdir(dataDir)).filter((name) => name.startsWith('.')), [], 'the dead start\'s staging folder and the marker are gone')
})

// Only root mounts: the case of a volume mounted as the data folder, which can be neither removed nor replaced.
const mountable = process.getuid?.() === 0 && spawnSync('mount', ['--version']).status === 0
t.test('a mounted file system as the data folder: the first start works (found: EBUSY, it tried to remove the mount point)', { skip: mountable ? false : 'needs root, to mount a tmpfs' }, async (t) => {
  const parent = await newParent(t)
  const dataDir = join(parent, 'volume')
  await mkdir(dataDir)
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=128m', 'tmpfs', dataDir], { encoding: 'utf8' })
  if (mounted.status !== 0) {
    t.comment(`skipped: this machine does not let root mount a tmpfs (${mounted.stderr.trim()})`)
    return
  }
  t.teardown(() => { spawnSync('umount', [dataDir]) })
  const embedded = await openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 })
  await embedded.stop()
  t.ok(existsSync(join(dataDir, 'PG_VERSION')), 'the cluster is on the mounted file system')
  const again = await openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 })
  await again.stop()
  t.pass('and opens again')
})

t.test('a link planted at the lock draft\'s name is replaced, never written through (found by an outside probe: it overwrote a file of the service\'s user)', async (t) => {
  const parent = await newParent(t)
  const dataDir = join(parent, 'data')
  const victim = join(parent, 'victim.conf')
  await writeFile(victim, 'keep me\n')
  // The draft's name is the lock's and this process's PID (the database opens in this process here).
  await symlink(victim, `${lockPathOf(dataDir)}.${process.pid}`)
  const embedded = await openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 })
  await embedded.announce()
  await embedded.stop()
  t.equal(readFileSync(victim, 'utf8'), 'keep me\n', 'the file the link pointed at is untouched')
  t.notOk(existsSync(`${lockPathOf(dataDir)}.${process.pid}`), 'and no draft or link is left')
})

t.test('the embedded database\'s port answers only its own user: another user gets a PostgreSQL error, with no password to try (found by an outside probe: any local user could add an auth:admin key)', async (t) => {
  const embedded = await openEmbeddedDatabase({ dataDir: 'memory://', host: '127.0.0.1', port: 0 })
  t.teardown(() => embedded.stop())
  const own = new pg.Client({ connectionString: embedded.url })
  await own.connect()
  t.same((await own.query('SELECT 1 AS one')).rows, [{ one: 1 }], 'this process\'s user connects')
  await own.end()
  if (!asNobody) {
    t.comment('skipped the other user\'s connection: it needs root and runuser, to connect as the user nobody')
    return
  }
  const pgModule = JSON.stringify(import.meta.resolve('pg'))
  const script = `const { default: pg } = await import(${pgModule}); const c = new pg.Client({ connectionString: ${JSON.stringify(embedded.url.replace('postgres:postgres@', 'intruder:guess@'))} }); await c.connect().then(() => c.query("SELECT count(*) FROM pg_class")).then((r) => console.log('connected', r.rows[0].count), (e) => console.log(e.message)).finally(() => c.end().catch(() => {}))`
  const run = runAsNobody(script, 20_000)
  t.match(run.stdout.trim(), /^the embedded database accepts connections only from the user the service runs as \(uid \d+\), not the user with uid \d+: it has no password$/, run.stderr)
})

t.test('peerUid names the user at the other end of a loopback connection', async (t) => {
  const { peerUid } = await import('#src/db/socket-peers.ts')
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const accepted = once(server, 'connection')
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1')
  t.teardown(() => client.destroy())
  const [socket] = await accepted as [Socket]
  t.teardown(() => socket.destroy())
  t.equal(peerUid(socket), process.getuid!())
})

t.test('peerUid names no one for a connection whose client reset it, though a new connection took its address and port (found by an outside probe: 13 of 300 statements of another user ran as root\'s)', async (t) => {
  const { peerUid } = await import('#src/db/socket-peers.ts')
  // Paused: the server's sockets read nothing, so the reset goes unnoticed by Node and their descriptors
  // stay open, as a connection waiting for its first byte does.
  const server = createServer({ pauseOnConnect: true })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const port = (server.address() as AddressInfo).port
  const first = once(server, 'connection')
  const resetting = connect(port, '127.0.0.1')
  await once(resetting, 'connect')
  const [stale] = await first as [Socket]
  t.teardown(() => stale.destroy())
  const clientPort = resetting.localPort!
  // Read while the connection stands, as the check itself reads it on arrival (Node keeps it).
  t.equal(stale.remotePort, clientPort, 'the server\'s end knows its client\'s port')
  resetting.resetAndDestroy()
  await once(resetting, 'close')
  // The same client address and port again, a second connection to the same server port.
  const second = once(server, 'connection')
  const reusing = connect({ port, host: '127.0.0.1', localPort: clientPort, localAddress: '127.0.0.1' })
  t.teardown(() => reusing.destroy())
  await once(reusing, 'connect')
  const [fresh] = await second as [Socket]
  t.teardown(() => fresh.destroy())
  t.equal(fresh.remotePort, clientPort, 'the new connection has the reset one\'s address and port')
  t.equal(peerUid(fresh), process.getuid!(), 'the new connection is its user\'s')
  t.equal(peerUid(stale), undefined, 'the reset one is no one\'s: the new connection\'s row is not its')
})

t.test('a data folder whose name leaves no room for the lock beside it: a clear error naming EMBEDDED_DATA_DIR (found by an outside probe: a bare ENAMETOOLONG)', async (t) => {
  const parent = await newParent(t)
  // 250 characters: a folder may have this name, its lock draft (`.lock.<pid>`) may not.
  const dataDir = join(parent, 'd'.repeat(250))
  await t.rejects(openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 }), new EmbeddedDatabaseError(`EMBEDDED_DATA_DIR ${dataDir}: its name is too long for the files made beside it (its lock, a first start's folder, up to 20 characters longer): set EMBEDDED_DATA_DIR to a folder with a shorter name`))
  t.same(await readdir(parent), [], 'nothing left beside it')
})

t.test('another user\'s connections that send nothing are closed within seconds, and never keep the owner out (found by outside probes: a burst of them shut the owner, its tools and the service out)', {
  skip: asNobody ? false : 'needs root and runuser, to connect as the user nobody'
}, async (t) => {
  const { embedded, port } = await throwAwayDatabase(t)
  // More connections than the port admits (32) and than it keeps open to refuse, each silent until closed.
  const script = `import { connect } from 'node:net'
const started = Date.now()
const sockets = Array.from({ length: ${MAX_REFUSED_OPEN + 44} }, () => connect(${port}, '127.0.0.1').on('error', () => {}))
await Promise.all(sockets.map((socket) => new Promise((resolve) => { socket.once('connect', resolve); socket.once('close', resolve) })))
console.log('open')
const closed = await Promise.all(sockets.map((socket) => socket.destroyed ? Date.now() - started : new Promise((resolve) => socket.once('close', () => resolve(Date.now() - started)))))
console.log('closed', Math.max(...closed))`
  // Not spawnSync: this test's process answers for the database meanwhile.
  const child = spawn('runuser', ['-u', 'nobody', '--', process.execPath, '--input-type=module', '-e', script], { env: { ...process.env, HOME: '/tmp', NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'inherit'] })
  let output = ''
  child.stdout.on('data', (chunk) => { output += chunk })
  const killer = setTimeout(() => child.kill('SIGKILL'), 20_000)
  await until(() => output.includes('open'), 20_000)
  // While they are open, the owner gets in at its first attempt.
  const own = new pg.Client({ connectionString: embedded.url })
  await own.connect()
  t.same((await own.query('SELECT 1 AS one')).rows, [{ one: 1 }], 'the owner is answered during the burst')
  await own.end()
  t.notOk(output.includes('closed'), 'the burst\'s connections were still being refused meanwhile')
  await once(child, 'close')
  clearTimeout(killer)
  const slowest = Number(/^closed (\d+)$/m.exec(output)?.[1])
  t.ok(slowest < 10_000, `every silent connection was closed by the server, the last after ${slowest} ms (refused ones after 1 s)`)
})

t.test('another user\'s connection that sends its queries and closes at once (its end orphaned, listed as root\'s) runs nothing (found by an outside probe: 289 of 300 such statements ran)', {
  skip: asNobody ? false : 'needs root and runuser, to connect as the user nobody'
}, async (t) => {
  const { embedded, port } = await throwAwayDatabase(t)
  // A startup message and a simple query in one write, then close(): 20 times.
  const script = `import { connect } from 'node:net'
const body = Buffer.from('user\\0postgres\\0database\\0postgres\\0\\0')
const startup = Buffer.alloc(8); startup.writeInt32BE(body.length + 8, 0); startup.writeInt32BE(196608, 4)
for (let i = 0; i < 20; i++) {
  const sql = Buffer.from('CREATE TABLE intruder_' + i + ' (x int)\\0')
  const query = Buffer.alloc(5); query.write('Q', 0); query.writeInt32BE(sql.length + 4, 1)
  const socket = connect(${port}, '127.0.0.1')
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write(Buffer.concat([startup, body, query, sql]))
  socket.destroy()
}
console.log('sent')`
  const run = runAsNobody(script, 30_000)
  t.match(run.stdout, /^sent$/m, 'the 20 connections were made')
  const own = new pg.Client({ connectionString: embedded.url })
  await own.connect()
  t.teardown(() => own.end())
  await sleep(500)
  const { rows } = await own.query("SELECT count(*)::int AS n FROM pg_tables WHERE tablename LIKE 'intruder_%'")
  t.equal(rows[0].n, 0, 'none of the 20 statements ran')
})
