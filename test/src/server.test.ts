import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import t from 'tap'
import { hashApiKey } from '#src/auth/api-key.ts'
import { PERSONAS } from '#src/db/seed.ts'
import { PACKAGE_ROOT } from '#src/paths.ts'
import { ensureBuilt, runServiceToExit, spawnService, startService } from '#scripts/lib/service-process.ts'
import { until } from '#test/helpers/wait.ts'

const workDir = await mkdtemp(join(tmpdir(), 'battra-embedded-'))
t.teardown(() => rm(workDir, { recursive: true, force: true }))
// As on a fresh clone (the default .data/pglite): no folder on the way exists yet (found by an outside probe).
const dataDir = join(workDir, '.data', 'pglite')
const env = { EMBEDDED_DATA_DIR: dataDir, EMBEDDED_DB_PORT: '0', USAGE_FLUSH_INTERVAL_MS: '3600000' }

async function query<T extends pg.QueryResultRow> (url: string, sql: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query<T>(sql, values)).rows
  } finally {
    await client.end()
  }
}

t.test('the embedded default: first start migrates and seeds, the seed curl examples work, SIGTERM flushes usage', async (t) => {
  const service = await startService(env)
  t.teardown(() => service.stop('SIGKILL'))
  t.ok(service.databaseUrl, 'the embedded database URL is logged at start')
  t.match(service.output(), /seeded the dev personas/)

  for (const header of ['battra-dev-key-1', 'ApiKey battra-dev-key-1']) {
    const response = await fetch(`${service.baseUrl}/api/v1/projects`, { headers: { 'X-API-Key': header } })
    t.equal(response.status, 200, `X-API-Key: ${header.replace('battra-dev-key-1', '<key>')}`)
    t.equal((await response.json()).length, 3)
  }
  t.equal(await (await fetch(`${service.baseUrl}/health`)).text(), 'OK')

  // psql or Prisma Studio can attach while the service runs.
  const keys = await query<{ hint: string, token_hash: string }>(service.databaseUrl!, 'SELECT hint, token_hash FROM api_keys')
  t.equal(keys.length, PERSONAS.length)
  t.notOk(keys.some((k) => PERSONAS.some((p) => k.hint === p.key)), 'no plaintext key stored')
  t.equal(await service.stop('SIGTERM'), 0, 'exits 0 on SIGTERM')
  const output = service.output()
  t.match(output, /"signal":"SIGTERM"/)
  const lastLine = JSON.parse(output.trim().split('\n').filter((line) => line.startsWith('{')).at(-1)!) as { msg: string, durationMs: number }
  t.equal(lastLine.msg, 'stopped', 'the last line says the service stopped, once everything is closed')
  t.type(lastLine.durationMs, 'number')
  for (const persona of PERSONAS) {
    t.notOk(output.includes(persona.key), 'no key in the logs')
    t.notOk(output.includes(hashApiKey(persona.key)), 'no key hash in the logs')
  }
})

t.test('the second start keeps the data: no new seed, usage written at the last shutdown is there', async (t) => {
  const service = await startService(env)
  t.teardown(() => service.stop('SIGKILL'))
  t.notMatch(service.output(), /seeded the dev personas/)
  const [dev] = await query<{ last_used_at: Date | null }>(service.databaseUrl!, 'SELECT last_used_at FROM api_keys WHERE token_hash = $1', [hashApiKey('battra-dev-key-1')])
  t.ok(dev.last_used_at instanceof Date, 'last_used_at survived SIGTERM')
  const [{ count }] = await query<{ count: string }>(service.databaseUrl!, 'SELECT count(*) FROM projects')
  t.equal(Number(count), 3, 'not seeded twice')
  t.equal(await service.stop('SIGINT'), 0, 'exits 0 on SIGINT')
})

t.test('a bad configuration stops the start with a clear message', async (t) => {
  const { code, output } = await runServiceToExit({ PORT: 'eighty', AUTH_CACHE_TTL_MS: 'soon' })
  t.equal(code, 1)
  t.match(output, /Invalid configuration/)
  t.match(output, /PORT must be an integer from 0 to 65535 \(got "eighty"\)/)
  t.match(output, /AUTH_CACHE_TTL_MS/)
  t.notMatch(output, /at .*\.ts:\d+/, 'no stack trace')
})

t.test('a data folder whose path runs through a file stops the start naming EMBEDDED_DATA_DIR (found by an outside probe)', async (t) => {
  const file = join(workDir, 'a-file')
  await writeFile(file, 'x')
  const { code, output } = await runServiceToExit({ EMBEDDED_DATA_DIR: join(file, 'pglite'), EMBEDDED_DB_PORT: '0' })
  t.equal(code, 1)
  t.match(output, /EMBEDDED_DATA_DIR .*a-file\/pglite: a file stands where a folder on its path should be/)
  t.notMatch(output, /"stack"/, 'one line, no stack trace (found by an outside probe)')
})

t.test('a failed start says why, naming the setting, even at LOG_LEVEL=fatal (found by an outside probe)', async (t) => {
  const taken = createServer()
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => taken.close(resolve)))
  const port = String((taken.address() as AddressInfo).port)
  for (const level of ['info', 'fatal', 'silent']) {
    const { code, output } = await runServiceToExit({ EMBEDDED_DATA_DIR: 'memory://', EMBEDDED_DB_PORT: '0', PORT: port, LOG_LEVEL: level })
    t.equal(code, 1, level)
    t.match(output, new RegExp(`PORT ${port} on HOST 127\\.0\\.0\\.1 is already in use .*set PORT to a free port`), `${level}: the port and the setting are named`)
    t.notMatch(output, /"stack"/, `${level}: one line, no stack trace (found by an outside probe)`)
  }
  // Said before the database's first start, not a minute later: the new data folder is not even made.
  const untouched = join(workDir, 'never-made', 'pglite')
  const early = await runServiceToExit({ EMBEDDED_DATA_DIR: untouched, EMBEDDED_DB_PORT: '0', PORT: port })
  t.equal(early.code, 1)
  t.notOk(existsSync(join(workDir, 'never-made')), 'a taken PORT stops the start before the database is opened')
  const { code, output } = await runServiceToExit({ EMBEDDED_DATA_DIR: 'memory://', EMBEDDED_DB_PORT: '0', HOST: '192.0.2.1', LOG_LEVEL: 'silent' })
  t.equal(code, 1)
  t.match(output, /HOST 192\.0\.2\.1 is not an address of this machine/, 'an address this machine does not have')
})

t.test('SIGTERM during a first start: a line says the start was interrupted, the exit is the signal\'s, and the next start completes it (found by an outside probe: no line at all)', async (t) => {
  const parent = await mkdtemp(join(tmpdir(), 'battra-interrupted-'))
  t.teardown(() => rm(parent, { recursive: true, force: true }))
  const folder = { EMBEDDED_DATA_DIR: join(parent, 'data'), EMBEDDED_DB_PORT: '0' }
  const first = spawnService(folder, { compiled: true })
  const exited = once(first.child, 'exit')
  // The staging folder of the first start: the database is being created.
  await until(async () => (await readdir(parent)).some((name) => name.startsWith('.init-')), 60_000, 'the first start began creating the database')
  first.child.kill('SIGTERM')
  const [code, signal] = await exited
  t.same([code, signal], [null, 'SIGTERM'], 'ended by the signal, as without the line')
  t.match(first.output(), /"signal":"SIGTERM".*"msg":"start-up interrupted: exiting; the next start resumes it"/)
  // Interrupted again once the database is open, while it is migrated and seeded and the plugins load:
  // the same, and no "Server listening" after it (found by an outside probe: "closing", then listening, exit 0).
  const second = spawnService(folder, { compiled: true })
  const secondExited = once(second.child, 'exit')
  await until(() => second.output().includes('"msg":"embedded PostgreSQL (PGlite) is open'), 60_000, 'the database is open')
  second.child.kill('SIGTERM')
  t.same((await secondExited).slice(0, 2), [null, 'SIGTERM'], 'ended by the signal')
  t.match(second.output(), /"msg":"start-up interrupted: exiting; the next start resumes it"/)
  t.notMatch(second.output(), /Server listening/, 'never said it listened')
  const next = await startService(folder, { compiled: true })
  t.teardown(() => next.stop('SIGKILL'))
  const me = await fetch(`${next.baseUrl}/api/v1/auth/me`, { headers: { 'x-api-key': PERSONAS[0].key } })
  t.equal(me.status, 200, 'the next start completed the database')
  t.equal(await next.stop(), 0)
})

t.test('a signal while the service is still loading its modules: the line reaches a log file, then the signal\'s exit (found by an outside probe)', async (t) => {
  const parent = await mkdtemp(join(tmpdir(), 'battra-signals-'))
  t.teardown(() => rm(parent, { recursive: true, force: true }))
  const logFile = join(parent, 'log')
  const log = await open(logFile, 'w')
  // The module as server.ts loads it second, then a wait standing for the slow imports after it.
  ensureBuilt()
  const module = new URL('dist/src/start-signals.js', `file://${PACKAGE_ROOT}/`).href
  const child = spawn(process.execPath, ['--input-type=module', '-e', `await import(${JSON.stringify(module)}); process.stderr.write('loaded\\n'); setInterval(() => {}, 1000)`], { stdio: ['ignore', log.fd, 'pipe'] })
  const exited = once(child, 'exit')
  await once(child.stderr!, 'data')
  child.kill('SIGTERM')
  t.same((await exited).slice(0, 2), [null, 'SIGTERM'], 'ended by the signal')
  await log.close()
  t.match(await readFile(logFile, 'utf8'), /^\{"level":40,.*"signal":"SIGTERM","msg":"start-up interrupted: exiting; the next start resumes it"\}\n$/, 'one warn line, in the log\'s format')
})

t.test('`npm start` (the README\'s command) hands SIGTERM to the service: it drains and exits, no orphan (found by an outside probe)', async (t) => {
  const npm = spawn('npm', ['start'], {
    cwd: PACKAGE_ROOT,
    env: { ...process.env, DATABASE_URL: '', PORT: '0', EMBEDDED_DATA_DIR: 'memory://', EMBEDDED_DB_PORT: '0', LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  npm.stdout.on('data', (chunk) => { output += chunk })
  npm.stderr.on('data', (chunk) => { output += chunk })
  const exited = once(npm, 'exit')
  t.teardown(() => { if (npm.exitCode === null) npm.kill('SIGKILL') })
  while (!/Server listening at/.test(output)) {
    if (npm.exitCode !== null) throw new Error(`npm start ended early:\n${output}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  const servicePid = Number(/"pid":(\d+)/.exec(output)![1])
  npm.kill('SIGTERM')
  await exited
  t.match(output, /"signal":"SIGTERM"/, 'the service itself received SIGTERM and closed')
  // The service was npm's child (sh exec'd into it): once npm is gone it must be gone too.
  const alive = (): boolean => { try { process.kill(servicePid, 0); return true } catch { return false } }
  for (let i = 0; i < 100 && alive(); i++) await new Promise((resolve) => setTimeout(resolve, 100))
  t.notOk(alive(), `no orphaned service process (pid ${servicePid})`)
})
