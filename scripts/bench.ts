// npm run bench -- [--duration S] [--connections N] [--misses N] [--out FILE] [--million] [--cpu-prof]
//                   [--redis URL|none] [--redis-mode exact|batched]
// Starts the service (PostgreSQL when DATABASE_URL is set, in a database of its own; else embedded) and
// drives it with autocannon on loopback, one scenario after another, in one run.
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
import { startService } from '#scripts/lib/service-process.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const { values: flags } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    connections: { type: 'string', default: '50' },
    misses: { type: 'string', default: '5000' },
    out: { type: 'string' },
    million: { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
    // Where the key-policy scenarios count rate limits: Redis (the default, the machine's), or none (in process).
    redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
    'redis-mode': { type: 'string', default: 'exact' }
  }
})
const duration = Number(flags.duration)
const connections = Number(flags.connections)
const missCount = Number(flags.misses)
const config = loadConfig()

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

const prepared = await connectForTools(loadConfig({ ...process.env, ...serviceEnv }))
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
await prepared.close()

// ---- the service ----
const rateLimitEnv: Record<string, string> = flags.redis === 'none' ? { REDIS_URL: '' } : { REDIS_URL: flags.redis, REDIS_RATE_LIMIT_MODE: flags['redis-mode'] }
const service = await startService(
  { ...serviceEnv, LOG_REQUESTS: 'false', AUTH_FAILURE_LIMIT: '1000000', ...rateLimitEnv },
  { nodeArgs: flags['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', join(ROOT, 'bench-results')] : [] }
)
const child = service.child
const base = service.baseUrl

// ---- measurement ----
function rssBytes (field: 'VmRSS' | 'VmHWM'): number {
  const status = readFileSync(`/proc/${child.pid}/status`, 'utf8')
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]) * 1024
}

async function counters (): Promise<{ statements: number, usageFlushes: number }> {
  const text = await (await fetch(`${base}/metrics`)).text()
  const read = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)![1])
  return { statements: read('battra_auth_db_statements_total'), usageFlushes: read('battra_auth_usage_flushes_total') }
}

interface Row {
  scenario: string
  requests: number
  rps: number
  ratio: number
  p50: number
  p99: number
  non2xx: number
  errors: number
  statementsPerRequest: number
  lookupStatements: number
  usageWrites: number
  peakRssMB: number
  limit: string
}
const rows: Row[] = []
let ceiling = 0

async function scenario (name: string, limit: string, options: autocannon.Options, expectStatus = 200): Promise<Row> {
  const before = await counters()
  let peak = rssBytes('VmRSS')
  const sampler = setInterval(() => { peak = Math.max(peak, rssBytes('VmRSS')) }, 100)
  const result = await autocannon({ ...options, url: base + (options.url ?? ''), connections: options.connections ?? connections })
  clearInterval(sampler)
  // Lookups still queued when the load stops belong to this scenario, not the next: wait for quiet.
  let after = await counters()
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 300))
    const again = await counters()
    if (again.statements === after.statements) break
    after = again
  }
  const usageWrites = after.usageFlushes - before.usageFlushes
  const lookups = after.statements - before.statements - usageWrites
  const requests = result.requests.total
  const rps = result.requests.average
  if (ceiling === 0) ceiling = rps
  const expected = expectStatus === 200 ? result['2xx'] : result.non2xx
  const row: Row = {
    scenario: name,
    requests,
    rps: Math.round(rps),
    ratio: Math.round((rps / ceiling) * 100) / 100,
    p50: result.latency.p50,
    p99: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts + (requests - expected - (expectStatus === 200 ? result.non2xx : result['2xx'])),
    statementsPerRequest: requests === 0 ? 0 : Math.round((lookups / requests) * 10_000) / 10_000,
    lookupStatements: lookups,
    usageWrites,
    peakRssMB: Math.round(peak / 1048576),
    limit
  }
  rows.push(row)
  console.log(`  ${name}: ${row.rps} req/s (×${row.ratio}), p99 ${row.p99} ms, ${lookups} lookup statements, ${usageWrites} usage writes`)
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

console.log(`battra-auth benchmark on ${kind}: ${cpus().length} cores (${cpus()[0].model}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}; ${duration} s per timed scenario, ${connections} connections`)
try {
  await fetch(`${base}/api/v1/auth/me`, { headers: { 'x-api-key': cached } })
  await fetch(`${base}/api/v1/auth/verify`, { headers: { 'x-api-key': cached } })
  await autocannon({ url: `${base}/health`, connections, duration: 2 }) // warm-up (JIT)
  await scenario('1 ceiling: GET /health, no auth', 'the HTTP stack itself', { url: '/health', duration })
  await scenario('2 GET /auth/me, cached key', 'cache hit (key checked and hashed once per connection) + a 420-byte JSON body', { url: '/api/v1/auth/me', duration, headers: { 'x-api-key': cached } })
  await scenario('6 GET /auth/verify, cached key', 'as 2, 8 identity headers, empty body', { url: '/api/v1/auth/verify', duration, headers: { 'x-api-key': cached } })
  for (const key of [withNetworks, withLimit, withBoth]) await fetch(`${base}/api/v1/auth/me`, { headers: { 'x-api-key': key } })
  const store = ((await (await fetch(`${base}/ready`, { headers: { accept: 'application/json' } })).json()) as { rateLimit: { store: string, backend: string, mode: string } }).rateLimit
  const counted = store.store === 'redis' ? `Redis ${store.mode}` : 'in process'
  await scenario('8a GET /auth/me, key with an IP policy (10 networks)', 'as 2 + the client address matched against the compiled networks', { url: '/api/v1/auth/me', duration, headers: { 'x-api-key': withNetworks } })
  await scenario(`8b GET /auth/me, key with a rate limit (${counted})`, store.store !== 'redis' ? 'as 2 + an in-process counter' : store.mode === 'batched' ? 'as 2 + a Redis call per tenth of the limit (at most 100 requests)' : 'as 2 + a Redis round trip per request (one script, auto-pipelined)', { url: '/api/v1/auth/me', duration, headers: { 'x-api-key': withLimit } })
  await scenario(`8c GET /auth/me, key with both (${counted})`, 'as 8a + 8b', { url: '/api/v1/auth/me', duration, headers: { 'x-api-key': withBoth } })
  const after = ((await (await fetch(`${base}/ready`, { headers: { accept: 'application/json' } })).json()) as { rateLimit: { backend: string, fallbacks: number } }).rateLimit
  console.log(`  rate limits counted ${counted}; backend now ${after.backend}, ${after.fallbacks} fallbacks during the run`)
  await scenario(`3 cache misses: ${missCount} distinct keys, once each`, 'one SQL round trip per key', { url: '/api/v1/auth/me', amount: missCount, requests: cycling(missKeys) })
  await scenario('4 1000 concurrent first requests, one key', 'single-flight: one query for all', { url: '/api/v1/auth/me', amount: 1000, connections: 1000, requests: cycling([burstKey]) })
  await scenario('5a bad-checksum keys', 'format check only', { url: '/api/v1/auth/me', duration, requests: perRequest(badChecksum) }, 401)
  await scenario('5b one unknown legacy key repeated', 'negative cache', { url: '/api/v1/auth/me', duration, headers: { 'x-api-key': 'battra-nobody-key-1' } }, 401)
  await scenario('5c random unknown legacy keys', 'one SQL round trip per key', { url: '/api/v1/auth/me', duration, requests: perRequest(randomLegacy) }, 401)
  await scenario('1b ceiling again, after the floods', 'the HTTP stack itself', { url: '/health', duration })
  await scenario('2b GET /auth/me, cached key, after the floods', 'as 2, with full negative cache and heap', { url: '/api/v1/auth/me', duration, headers: { 'x-api-key': cached } })
  if (flags.million) {
    const before = rssBytes('VmRSS')
    await scenario('7 one million distinct random legacy keys', 'bounded caches', { url: '/api/v1/auth/me', amount: 1_000_000, requests: perRequest(randomLegacy) }, 401)
    console.log(`  RSS grew by ${Math.round((rssBytes('VmRSS') - before) / 1048576)} MB over one million distinct keys`)
  }
} finally {
  await service.stop('SIGTERM')
  await cleanup()
}

const table = [
  '| scenario | req/s | × ceiling | p50 ms | p99 ms | non-2xx | lookup statements / req | usage writes | peak RSS MB | what limits it |',
  '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ...rows.map((r) => `| ${r.scenario} | ${r.rps} | ${r.ratio} | ${r.p50} | ${r.p99} | ${r.non2xx} | ${r.statementsPerRequest} (${r.lookupStatements}) | ${r.usageWrites} | ${r.peakRssMB} | ${r.limit} |`)
].join('\n')
console.log(`\n${table}\n`)
const out = flags.out ?? join(ROOT, 'bench-results', `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
mkdirSync(join(out, '..'), { recursive: true })
writeFileSync(out, JSON.stringify({ database: kind, duration, connections, misses: missCount, node: process.version, cores: cpus().length, rows }, null, 2))
console.log(`written ${out}`)
