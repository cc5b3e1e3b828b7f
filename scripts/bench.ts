// npm run bench -- [--duration S] [--rounds N] [--connections N] [--misses N] [--out FILE] [--million]
//                   [--flood-duration S] [--only REGEX]  (only the scenarios whose name matches, e.g. '^(1|2|6) ')
//                   [--cpu-prof] [--source] [--redis URL|none] [--redis-mode exact|batched] [--no-pin]
// Starts the service compiled, as `npm start` runs it (--source: through tsx), on PostgreSQL when
// DATABASE_URL is set (in a database of its own) or else embedded, and drives it with autocannon on
// loopback. Each timed scenario is compared with a ceiling measured in the same run: a separate bare
// Fastify process answering the same bytes (scripts/bare/fastify.mjs), or for GET /api/v1/projects a
// bare Fastify + pg doing the same SELECT (scripts/bare/fastify-pg.mjs); ours and the ceiling alternate
// in short rounds, and each side's best of --rounds counts, beside the median of the rounds' ratios (each
// round's two runs side by side: the figure a machine whose speed drifts disturbs least). With two cores
// or more, the load generator (this process) and the servers run on cores of their own (taskset), so
// that neither side of a comparison is measured while the scheduler has put the load generator on its core.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import pg from 'pg'
import { generateApiKey, hashApiKey, hintFor } from '#src/auth/api-key.ts'
import { loadConfig } from '#src/config.ts'
import { connectForTools } from '#src/db/tool-connection.ts'
import { migrate } from '#src/db/migrate.ts'
import { seedDevPersonas } from '#src/db/seed.ts'
import { ensureBuilt, startService } from '#scripts/lib/service-process.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const { values: flags } = parseArgs({
  options: {
    duration: { type: 'string', default: '1' },
    // The floods of unknown and malformed keys have no ceiling: one run each, long enough to be past its start.
    'flood-duration': { type: 'string', default: '3' },
    rounds: { type: 'string', default: '18' },
    source: { type: 'boolean', default: false },
    connections: { type: 'string', default: '50' },
    misses: { type: 'string', default: '5000' },
    out: { type: 'string' },
    million: { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
    // Where the key-policy scenarios count rate limits: Redis (the default, the machine's), or none (in process).
    redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
    'redis-mode': { type: 'string', default: 'exact' },
    only: { type: 'string' },
    'no-pin': { type: 'boolean', default: false }
  }
})
const duration = Number(flags.duration)
const floodDuration = Number(flags['flood-duration'])
const rounds = Number(flags.rounds)
const connections = Number(flags.connections)
const missCount = Number(flags.misses)
const only = flags.only === undefined ? undefined : new RegExp(flags.only)
const selected = (name: string) => only === undefined || only.test(name)
const config = loadConfig()

// The load generator on the first core, every server (with all its threads) on the last one.
const LOAD_CORE = 0
const SERVER_CORE = cpus().length - 1
const pinning = !flags['no-pin'] && cpus().length >= 2 && spawnSync('taskset', ['--version']).status === 0
if (!flags['no-pin'] && !pinning) console.log('not pinning processes to cores: taskset is missing or there is one core')
/** Moves a process, all its threads, to one core. */
function pin (pid: number, core: number): void {
  if (!pinning) return
  const result = spawnSync('taskset', ['--all-tasks', '--cpu-list', '--pid', String(core), String(pid)], { encoding: 'utf8' })
  if (result.status !== 0) throw new Error(`taskset could not pin ${pid} to core ${core}: ${result.stderr}`)
}
pin(process.pid, LOAD_CORE)

// ---- a database of the benchmark's own, seeded, with keys for the miss scenarios ----
let serviceEnv: Record<string, string>
let cleanup: () => Promise<void>
let kind: string
if (config.databaseUrl !== undefined) {
  const name = `battra_bench_${process.pid}`
  const admin = new pg.Client({ connectionString: config.databaseUrl })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  await admin.end()
  const url = new URL(config.databaseUrl)
  url.pathname = `/${name}`
  serviceEnv = { DATABASE_URL: url.toString() }
  kind = `PostgreSQL (${url.host})`
  cleanup = async () => {
    const client = new pg.Client({ connectionString: config.databaseUrl })
    await client.connect()
    await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await client.end()
  }
} else {
  const dataDir = mkdtempSync(join(tmpdir(), 'battra-bench-'))
  serviceEnv = { DATABASE_URL: '', EMBEDDED_DATA_DIR: dataDir, EMBEDDED_DB_PORT: '0' }
  kind = 'embedded PGlite'
  cleanup = async () => rmSync(dataDir, { recursive: true, force: true })
}

// Its folder is new by design: no note that a database was created in it.
const prepared = await connectForTools(loadConfig({ ...process.env, ...serviceEnv }), { create: 'quietly' })
await migrate(prepared.pool)
await seedDevPersonas(prepared.prisma)
const owner = await prepared.prisma.user.findFirstOrThrow({ where: { email: 'dev+clerk_test@mock.com' }, include: { memberships: true } })
const missKeys = Array.from({ length: missCount + 5 }, () => generateApiKey())
for (let i = 0; i < missKeys.length; i += 1000) {
  const batch = missKeys.slice(i, i + 1000)
  await prepared.pool.query(
    `INSERT INTO api_keys (id, token_hash, hint, user_id, organization_id, description, scopes, updated_at)
     SELECT gen_random_uuid(), h, n, $3, $4, 'bench', '{}', now() FROM unnest($1::text[], $2::text[]) AS k(h, n)`,
    [batch.map(hashApiKey), batch.map(hintFor), owner.id, owner.memberships[0].organizationId]
  )
}
const burstKey = missKeys.pop()!
// The cached scenarios use a key of the current format, as the service issues them (checksum and all).
const cached = missKeys.pop()!
// Key policies: ten networks (the client, 127.0.0.1, in the last), a limit too large to refuse, and both.
const networks = [...Array.from({ length: 9 }, (_, i) => `10.${i}.0.0/16`), '127.0.0.0/8']
const withNetworks = missKeys.pop()!
const withLimit = missKeys.pop()!
const withBoth = missKeys.pop()!
for (const [key, cidrs, limited] of [[withNetworks, networks, false], [withLimit, [], true], [withBoth, networks, true]] as const) {
  await prepared.pool.query(
    'UPDATE api_keys SET allowed_cidrs = $2, rate_limit_requests = $3, rate_limit_window_seconds = $4 WHERE token_hash = $1',
    [hashApiKey(key), cidrs, limited ? 1_000_000_000 : null, limited ? 60 : null]
  )
}
const organizationId = owner.memberships[0].organizationId
await prepared.close()

// ---- the service, compiled unless --source, and the ceilings ----
const rateLimitEnv: Record<string, string> = flags.redis === 'none' ? { REDIS_URL: '' } : { REDIS_URL: flags.redis, REDIS_RATE_LIMIT_MODE: flags['redis-mode'] }
const nodeArgs = flags['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', join(ROOT, 'bench-results')] : []
const service = await startService(
  { ...serviceEnv, LOG_REQUESTS: 'false', AUTH_FAILURE_LIMIT: '1000000', ...rateLimitEnv },
  { nodeArgs, compiled: !flags.source }
)
const child = service.child
const base = service.baseUrl
pin(child.pid!, SERVER_CORE)

interface Bare { child: ChildProcess, baseUrl: string, stop: () => Promise<void> }

/** CPU time (user + system) a process has used, in µs: /proc counts in ticks of 10 ms. */
function cpuMicros (pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) * 10_000
}
/** A ceiling process: plain node on a script of scripts/bare, on a free loopback port. */
async function startBare (script: string, env: Record<string, string>): Promise<Bare> {
  ensureBuilt() // the ceilings import dist/src/tick-object-shape.js, also with --source
  const bare = spawn(process.execPath, [join(ROOT, 'scripts/bare', script)], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] })
  let output = ''
  bare.stdout!.on('data', (chunk) => { output += chunk })
  const deadline = Date.now() + 30_000
  let listening: RegExpExecArray | null = null
  while ((listening = /listening (http:\S+)/.exec(output)) === null) {
    if (bare.exitCode !== null || Date.now() > deadline) throw new Error(`${script} did not start: ${output}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  pin(bare.pid!, SERVER_CORE)
  return {
    child: bare,
    baseUrl: listening[1],
    async stop () {
      if (bare.exitCode !== null) return
      bare.kill('SIGTERM')
      await once(bare, 'exit')
    }
  }
}

/** What ours answers on a route, for the bare ceiling to answer byte for byte. */
async function recorded (path: string, headers: Record<string, string> = {}): Promise<{ path: string, status: number, headers: Record<string, string>, body: string }> {
  const response = await fetch(base + path, { headers })
  const kept: Record<string, string> = {}
  for (const [name, value] of response.headers) {
    if (!['date', 'connection', 'keep-alive', 'content-length', 'transfer-encoding'].includes(name)) kept[name] = value
  }
  return { path, status: response.status, headers: kept, body: await response.text() }
}

// ---- measurement ----
interface Target { pid: number, base: string }
const main: Target = { pid: child.pid!, base }

function rssBytes (field: 'VmRSS' | 'VmHWM', pid = main.pid): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]) * 1024
}

/**
 * The statement and usage-write counters, once they agree: a usage write counts as a statement when sent
 * and as a flush when answered, so a read between the two would move one statement to the next scenario.
 */
async function counters (target = main): Promise<{ statements: number, usageFlushes: number }> {
  const readOnce = async () => {
    const text = await (await fetch(`${target.base}/metrics`)).text()
    const read = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)![1])
    return { statements: read('battra_auth_db_statements_total'), usageFlushes: read('battra_auth_usage_flushes_total'), writing: read('battra_auth_usage_write_in_flight') }
  }
  // A usage write in flight has its statement counted and its flush not yet: read again once it is
  // answered, or it would count as a lookup of this scenario and its flush go to the next.
  let last = await readOnce()
  for (let attempt = 0; attempt < 250; attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    const now = await readOnce()
    if (now.writing === 0 && now.statements === last.statements && now.usageFlushes === last.usageFlushes) return now
    last = now
  }
  return last
}

interface Row {
  scenario: string
  requests: number
  rps: number
  p50: number
  p99: number
  /** The ceiling this scenario is compared with, its best of the rounds, and ours / it. */
  ceiling: string
  ceilingRps: number | null
  ceilingP99: number | null
  ratio: number | null
  /** Every round's requests/s, ours and the ceiling's, in order: how far the best round stands from the rest. */
  rpsRounds: number[]
  ceilingRpsRounds: number[]
  /** The median over the rounds of ours / the ceiling in the same round (its two runs side by side). */
  medianRatio: number | null
  /** The server process's CPU per request, µs (best round), ours and the ceiling's; and its / ours. */
  cpuUs: number
  ceilingCpuUs: number | null
  cpuRatio: number | null
  /** Ours / our own GET /health: what the auth layer costs on top of our HTTP stack. */
  ownHealthRatio: number | null
  non2xx: number
  errors: number
  statementsPerRequest: number
  lookupStatements: number
  usageWrites: number
  peakRssMB: number
  limit: string
}
const rows: Row[] = []
let ownHealthRps = 0

/** Lookups still queued when the load stops belong to the scenario that caused them: wait for quiet. */
async function quietCounters (target: Target): Promise<{ statements: number, usageFlushes: number }> {
  let after = await counters(target)
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 300))
    const again = await counters(target)
    if (again.statements === after.statements) return after
    after = again
  }
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

interface Ceiling { name: string, url: string, pid: number, options?: autocannon.Options }

interface Measured { result: autocannon.Result, cpuUs: number }
/** One autocannon run, with the CPU the server process spent on it per request. */
async function measure (pid: number, options: autocannon.Options): Promise<Measured> {
  const before = cpuMicros(pid)
  const result = await autocannon(options)
  return { result, cpuUs: (cpuMicros(pid) - before) / Math.max(1, result.requests.total) }
}

/**
 * One scenario: ours alone (amount-bounded floods), or ours and its ceiling alternating for --rounds
 * rounds of --duration seconds, each side's best round counting.
 */
async function scenario (name: string, limit: string, options: autocannon.Options, expectStatus = 200, ceiling?: Ceiling, target = main): Promise<Row | undefined> {
  if (!selected(name)) return undefined
  const before = await counters(target)
  let peak = rssBytes('VmRSS', target.pid)
  const sampler = setInterval(() => { peak = Math.max(peak, rssBytes('VmRSS', target.pid)) }, 100)
  const oursMeasured: Measured[] = []
  const bareMeasured: Measured[] = []
  const measureOurs = async () => oursMeasured.push(await measure(target.pid, { ...options, url: target.base + (options.url ?? ''), connections: options.connections ?? connections }))
  const measureCeiling = async () => bareMeasured.push(await measure(ceiling!.pid, { ...options, ...ceiling!.options, url: ceiling!.url, connections: options.connections ?? connections }))
  if (ceiling === undefined) await measureOurs()
  // Ours first in even rounds, the ceiling first in odd ones: a machine slowing down or speeding up
  // through a scenario favours neither side, and each round's pair ran side by side.
  const pairs = ceiling === undefined ? 0 : rounds
  for (let round = 0; round < pairs; round++) {
    if (round % 2 === 0) { await measureOurs(); await measureCeiling() } else { await measureCeiling(); await measureOurs() }
  }
  const ours = oursMeasured.map((m) => m.result)
  const bare = bareMeasured.map((m) => m.result)
  const leastCpu = (measured: Measured[]) => Math.min(...measured.map((m) => m.cpuUs))
  clearInterval(sampler)
  const after = await quietCounters(target)
  const best = (results: autocannon.Result[]) => results.reduce((a, b) => b.requests.average > a.requests.average ? b : a)
  const result = best(ours)
  const top = bare.length === 0 ? undefined : best(bare)
  const usageWrites = after.usageFlushes - before.usageFlushes
  const lookups = after.statements - before.statements - usageWrites
  const requests = ours.reduce((sum, r) => sum + r.requests.total, 0)
  const rps = result.requests.average
  const expected = (r: autocannon.Result) => expectStatus === 200 ? r['2xx'] : r.non2xx
  const round2 = (x: number) => Math.round(x * 100) / 100
  const row: Row = {
    scenario: name,
    requests,
    rps: Math.round(rps),
    p50: result.latency.p50,
    p99: result.latency.p99,
    ceiling: ceiling?.name ?? '',
    ceilingRps: top === undefined ? null : Math.round(top.requests.average),
    ceilingP99: top?.latency.p99 ?? null,
    ratio: top === undefined ? null : round2(rps / top.requests.average),
    rpsRounds: ours.map((r) => Math.round(r.requests.average)),
    ceilingRpsRounds: bare.map((r) => Math.round(r.requests.average)),
    medianRatio: top === undefined ? null : round2(median(ours.map((r, round) => r.requests.average / bare[round].requests.average))),
    cpuUs: Math.round(leastCpu(oursMeasured)),
    ceilingCpuUs: top === undefined ? null : Math.round(leastCpu(bareMeasured)),
    cpuRatio: top === undefined ? null : round2(leastCpu(bareMeasured) / leastCpu(oursMeasured)),
    ownHealthRatio: ownHealthRps === 0 ? null : round2(rps / ownHealthRps),
    non2xx: ours.reduce((sum, r) => sum + r.non2xx, 0),
    errors: ours.reduce((sum, r) => sum + r.errors + r.timeouts + (r.requests.total - expected(r) - (expectStatus === 200 ? r.non2xx : r['2xx'])), 0),
    statementsPerRequest: requests === 0 ? 0 : Math.round((lookups / requests) * 10_000) / 10_000,
    lookupStatements: lookups,
    usageWrites,
    peakRssMB: Math.round(peak / 1048576),
    limit
  }
  rows.push(row)
  const versus = top === undefined ? '' : ` vs ${row.ceilingRps} ${ceiling!.name} (×${row.ratio}, median of the rounds' ratios ×${row.medianRatio}, its p99 ${row.ceilingP99} ms; CPU ${row.cpuUs} vs ${row.ceilingCpuUs} µs/req, ×${row.cpuRatio})`
  console.log(`  ${name}: ${row.rps} req/s, p99 ${row.p99} ms${versus}; ${lookups} lookup statements, ${usageWrites} usage writes`)
  return row
}

function cycling (keys: string[]): autocannon.Request[] {
  let next = 0
  return [{ setupRequest: (request) => ({ ...request, headers: { ...request.headers, 'x-api-key': keys[next++ % keys.length] } }) }]
}

function perRequest (makeKey: () => string): autocannon.Request[] {
  return [{ setupRequest: (request) => ({ ...request, headers: { ...request.headers, 'x-api-key': makeKey() } }) }]
}

const badChecksum = () => { const key = generateApiKey(); return key.slice(0, -1) + (key.endsWith('A') ? 'B' : 'A') }
const randomLegacy = () => `legacy-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`

const started: Bare[] = []
let logged: Awaited<ReturnType<typeof startService>> | undefined
console.log(`battra-auth benchmark on ${kind}, ${flags.source ? 'from the sources (tsx)' : 'compiled (dist/, plain node)'}: ${cpus().length} cores (${cpus()[0].model}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}; ${rounds} alternating rounds of ${duration} s per timed scenario, ${connections} connections`)
try {
  const me = { 'x-api-key': cached }
  const routes = [
    await recorded('/health'),
    await recorded('/api/v1/auth/me', me),
    await recorded('/api/v1/auth/verify', me)
  ]
  const bareFastify = await startBare('fastify.mjs', { BARE_ROUTES: JSON.stringify(routes) })
  started.push(bareFastify)
  const bareDatabaseUrl = service.databaseUrl ?? serviceEnv.DATABASE_URL
  const barePg = await startBare('fastify-pg.mjs', { DATABASE_URL: bareDatabaseUrl, BARE_ORGANIZATION_ID: organizationId })
  started.push(barePg)
  const onBare = { name: 'bare Fastify', pid: bareFastify.child.pid! }
  const bareHealth: Ceiling = { ...onBare, url: bareFastify.baseUrl + '/health' }
  const bareMe: Ceiling = { ...onBare, url: bareFastify.baseUrl + '/api/v1/auth/me' }
  const bareVerify: Ceiling = { ...onBare, url: bareFastify.baseUrl + '/api/v1/auth/verify' }
  const bareProjects: Ceiling = { name: 'bare Fastify + pg', pid: barePg.child.pid!, url: barePg.baseUrl + '/api/v1/projects' }

  for (const url of [`${base}/health`, bareHealth.url, bareMe.url, bareProjects.url]) await autocannon({ url, connections, duration: 2 }) // warm-up (JIT)
  await autocannon({ url: `${base}/api/v1/auth/me`, connections, duration: 2, headers: me })
  await autocannon({ url: `${base}/api/v1/projects`, connections, duration: 2, headers: me })
  ownHealthRps = (await scenario('1 GET /health, no auth', 'the HTTP stack itself', { url: '/health', duration }, 200, bareHealth))?.rps ?? 0
  await scenario('2 GET /auth/me, cached key', 'cache hit (key checked and hashed once per connection) + a 420-byte JSON body', { url: '/api/v1/auth/me', duration, headers: me }, 200, bareMe)
  await scenario('6 GET /auth/verify, cached key', 'as 2, 8 identity headers, empty body', { url: '/api/v1/auth/verify', duration, headers: me }, 200, bareVerify)
  await scenario('9 GET /projects, cached key', 'cache hit + one parameterised SELECT', { url: '/api/v1/projects', duration, headers: me }, 200, bareProjects)
  for (const key of [withNetworks, withLimit, withBoth]) await fetch(`${base}/api/v1/auth/me`, { headers: { 'x-api-key': key } })
  const store = ((await (await fetch(`${base}/ready`, { headers: { accept: 'application/json' } })).json()) as { rateLimit: { store: string, backend: string, mode: string } }).rateLimit
  const counted = store.store === 'redis' ? `Redis ${store.mode}` : 'in process'
  await scenario('8a GET /auth/me, key with an IP policy (10 networks)', 'as 2 + the client address matched against the compiled networks', { url: '/api/v1/auth/me', duration, headers: { 'x-api-key': withNetworks } }, 200, bareMe)
  await scenario(`8b GET /auth/me, key with a rate limit (${counted})`, store.store !== 'redis' ? 'as 2 + an in-process counter' : store.mode === 'batched' ? 'as 2 + a Redis call per tenth of the limit (at most 100 requests)' : 'as 2 + a Redis round trip per request (one script, auto-pipelined)', { url: '/api/v1/auth/me', duration, headers: { 'x-api-key': withLimit } }, 200, bareMe)
  await scenario(`8c GET /auth/me, key with both (${counted})`, 'as 8a + 8b', { url: '/api/v1/auth/me', duration, headers: { 'x-api-key': withBoth } }, 200, bareMe)
  const after = ((await (await fetch(`${base}/ready`, { headers: { accept: 'application/json' } })).json()) as { rateLimit: { backend: string, fallbacks: number } }).rateLimit
  console.log(`  rate limits counted ${counted}; backend now ${after.backend}, ${after.fallbacks} fallbacks during the run`)
  await scenario(`3 cache misses: ${missCount} distinct keys, once each`, 'one SQL round trip per key', { url: '/api/v1/auth/me', amount: missCount, requests: cycling(missKeys) })
  await scenario('4 1000 concurrent first requests, one key', 'single-flight: one query for all', { url: '/api/v1/auth/me', amount: 1000, connections: 1000, requests: cycling([burstKey]) })
  await scenario('5a bad-checksum keys', 'format check only', { url: '/api/v1/auth/me', duration: floodDuration, requests: perRequest(badChecksum) }, 401)
  await scenario('5b one unknown legacy key repeated', 'negative cache', { url: '/api/v1/auth/me', duration: floodDuration, headers: { 'x-api-key': 'battra-nobody-key-1' } }, 401)
  await scenario('5c random unknown legacy keys', 'one SQL round trip per key', { url: '/api/v1/auth/me', duration: floodDuration, requests: perRequest(randomLegacy) }, 401)
  await scenario('2b GET /auth/me, cached key, after the floods', 'as 2, with full negative cache and heap', { url: '/api/v1/auth/me', duration, headers: me }, 200, bareMe)
  if (flags.million) {
    const before = rssBytes('VmRSS')
    await scenario('7 one million distinct random legacy keys', 'bounded caches', { url: '/api/v1/auth/me', amount: 1_000_000, requests: perRequest(randomLegacy) }, 401)
    console.log(`  RSS grew by ${Math.round((rssBytes('VmRSS') - before) / 1048576)} MB over one million distinct keys`)
  }
  // The default: a log line per request. Ours again with it on (a new process on the same database; the
  // embedded one admits one process at a time), its output read and dropped as a log shipper would.
  if (selected('2L')) {
    await service.stop('SIGTERM')
    logged = await startService({ ...serviceEnv, LOG_REQUESTS: 'true', AUTH_FAILURE_LIMIT: '1000000', ...rateLimitEnv }, { compiled: !flags.source })
    logged.child.stdout!.removeAllListeners('data').resume()
    pin(logged.child.pid!, SERVER_CORE)
    const loggedTarget = { pid: logged.child.pid!, base: logged.baseUrl }
    await autocannon({ url: `${loggedTarget.base}/api/v1/auth/me`, connections, duration: 2, headers: me })
    await scenario('2L GET /auth/me, cached key, request logging on (the default)', 'as 2 + one JSON log line per request (two with LOG_LEVEL=debug)', { url: '/api/v1/auth/me', duration, headers: me }, 200, bareMe, loggedTarget)
  }
} finally {
  await logged?.stop('SIGTERM')
  await service.stop('SIGTERM')
  for (const bare of started) await bare.stop()
  await cleanup()
}

const cell = (x: number | null) => x === null ? '' : String(x)
const table = [
  '| scenario | req/s | ceiling | its req/s | × ceiling | × ceiling, median round | × own /health | CPU µs/req | its CPU µs/req | × ceiling (CPU) | p99 ms | its p99 ms | non-2xx | lookup statements / req | usage writes | peak RSS MB | what limits it |',
  '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ...rows.map((r) => `| ${r.scenario} | ${r.rps} | ${r.ceiling} | ${cell(r.ceilingRps)} | ${cell(r.ratio)} | ${cell(r.medianRatio)} | ${cell(r.ownHealthRatio)} | ${r.cpuUs} | ${cell(r.ceilingCpuUs)} | ${cell(r.cpuRatio)} | ${r.p99} | ${cell(r.ceilingP99)} | ${r.non2xx} | ${r.statementsPerRequest} (${r.lookupStatements}) | ${r.usageWrites} | ${r.peakRssMB} | ${r.limit} |`)
].join('\n')
console.log(`\n${table}\n`)
const out = flags.out ?? join(ROOT, 'bench-results', `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
mkdirSync(join(out, '..'), { recursive: true })
writeFileSync(out, JSON.stringify({ database: kind, compiled: !flags.source, duration, floodDuration, rounds, connections, misses: missCount, node: process.version, cores: cpus().length, rows }, null, 2))
console.log(`written ${out}`)
