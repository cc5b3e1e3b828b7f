// SIGTERM while clients keep sending on kept-alive connections: every request sent on an open connection
// gets a whole HTTP answer (200 while the service still serves, then 503 with Connection: close), never
// a reset; the process exits 0 in time, and the uses it answered are written.
import http from 'node:http'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import pg from 'pg'
import { hashApiKey } from '#src/auth/api-key.ts'
import { openEmbeddedDatabase } from '#src/db/embedded.ts'
import { PERSONAS } from '#src/db/seed.ts'
import { createTestDatabase, databaseKind, serverUrl } from '#test/helpers/database.ts'
import { until } from '#test/helpers/wait.ts'
import { startService } from '#scripts/lib/service-process.ts'

t.comment(`database: ${databaseKind}`)

const SHUTDOWN_TIMEOUT_MS = 8000

interface Answer {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
  sentAt: number
}

/** One request; resolves with the answer or rejects with the client's error and whether the socket was reused. */
function request (agent: http.Agent, baseUrl: string, key: string): Promise<Answer> {
  const sentAt = Date.now()
  return new Promise((resolve, reject) => {
    const req = http.get(`${baseUrl}/api/v1/auth/me`, { agent, headers: { 'x-api-key': key } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => { body += chunk })
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body, sentAt }))
      res.on('error', (error) => reject(Object.assign(error, { reused: req.reusedSocket })))
    })
    req.on('error', (error) => reject(Object.assign(error, { reused: req.reusedSocket })))
  })
}

t.test('SIGTERM under keep-alive traffic: in-flight requests answered, later ones 503 + Connection: close, no reset, usage written', async (t) => {
  let env: Record<string, string>
  let readUsage: () => Promise<Map<string, Date | null>>
  const usageQuery = 'SELECT token_hash, last_used_at FROM api_keys'
  const toMap = (rows: Array<{ token_hash: string, last_used_at: Date | null }>) => new Map(rows.map((r) => [r.token_hash, r.last_used_at]))
  if (serverUrl === undefined) {
    const parent = await mkdtemp(join(tmpdir(), 'battra-drain-'))
    t.teardown(() => rm(parent, { recursive: true, force: true }))
    const dataDir = join(parent, 'data')
    env = { EMBEDDED_DATA_DIR: dataDir, EMBEDDED_DB_PORT: '0' }
    readUsage = async () => {
      // The service has exited and released the folder: open it as the next start would.
      const embedded = await openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 })
      try {
        const client = new pg.Client({ connectionString: embedded.url })
        await client.connect()
        try {
          return toMap((await client.query<{ token_hash: string, last_used_at: Date | null }>(usageQuery)).rows)
        } finally {
          await client.end()
        }
      } finally {
        await embedded.stop()
      }
    }
  } else {
    const db = await createTestDatabase(t)
    env = { DATABASE_URL: db.url }
    readUsage = async () => toMap((await db.pool.query(usageQuery)).rows)
  }
  const service = await startService({ ...env, USAGE_FLUSH_INTERVAL_MS: '3600000', SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) })
  t.teardown(() => service.stop('SIGKILL'))

  // Two connections that stay idle: the drain must close them (else the exit waits for the timeout, code 1).
  const idle: Socket[] = []
  for (let i = 0; i < 2; i++) {
    const socket = connect(Number(new URL(service.baseUrl).port), '127.0.0.1')
    await once(socket, 'connect')
    socket.on('error', () => {})
    idle.push(socket)
  }
  t.teardown(() => idle.forEach((socket) => socket.destroy()))

  // One kept-alive connection per persona, each sending its next request as soon as the last is answered.
  // Read by the loops while they run (an object, so that linting sees the later write).
  const signal: { sentAt?: number } = {}
  const failures: string[] = []
  const refused: string[] = []
  const served = new Set<string>()
  const loops = PERSONAS.map(async (persona) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const answers: Answer[] = []
    try {
      while (signal.sentAt === undefined || Date.now() - signal.sentAt < 5000) {
        let answer: Answer
        try {
          answer = await request(agent, service.baseUrl, persona.key)
        } catch (error) {
          const { code, message, reused } = error as NodeJS.ErrnoException & { reused: boolean }
          // A new connection after the listener closed is refused: the client knows nothing was sent.
          if (!reused && code === 'ECONNREFUSED' && signal.sentAt !== undefined) refused.push(persona.key)
          else failures.push(`${persona.key}: ${code ?? message} on a ${reused ? 'kept-alive' : 'new'} connection`)
          break
        }
        answers.push(answer)
        served.add(persona.key)
        if (answer.headers.connection === 'close') break
      }
    } finally {
      agent.destroy()
    }
    return { persona, answers }
  })

  await until(() => served.size === PERSONAS.length, 60_000, 'every connection answered')
  const sigtermAt = signal.sentAt = Date.now()
  const code = await service.stop('SIGTERM', SHUTDOWN_TIMEOUT_MS + 5000)
  const took = Date.now() - sigtermAt
  const results = await Promise.all(loops)

  t.equal(code, 0, 'exits 0')
  t.ok(took < SHUTDOWN_TIMEOUT_MS, `exited within SHUTDOWN_TIMEOUT_MS (${took} ms)`)
  t.same(failures, [], 'no reset or hang-up: every request sent on an open connection got an answer')
  let refusals = 0
  for (const { persona, answers } of results) {
    const statuses = answers.map((a) => a.status)
    const firstRefusal = statuses.indexOf(503)
    t.ok(statuses.filter((s) => s === 200).length > 0, `${persona.key}: answered 200 before the signal`)
    t.ok(answers.filter((a) => a.sentAt < sigtermAt).every((a) => a.status === 200), `${persona.key}: every request sent before the signal answered 200`)
    t.ok(statuses.every((s, i) => firstRefusal === -1 || i < firstRefusal ? s === 200 : s === 503), `${persona.key}: 200s, then 503s only`)
    const last = answers.at(-1)!
    t.equal(last.headers.connection, 'close', `${persona.key}: the connection ends with an answer saying Connection: close (${last.status})`)
    for (const refusal of answers.filter((a) => a.status === 503)) {
      refusals++
      t.equal(refusal.headers['retry-after'], '1', 'Retry-After')
      t.same(Object.keys(JSON.parse(refusal.body)).sort(), ['code', 'error', 'message', 'statusCode'])
      t.match(JSON.parse(refusal.body), { statusCode: 503, code: 'SERVICE_UNAVAILABLE', error: 'Service Unavailable' })
    }
  }
  t.ok(refusals > 0, `requests that arrived while draining were answered 503 (${refusals})`)
  t.comment(`${refusals} answered 503, ${refused.length} new connections refused after the listener closed`)
  // Answered by the HTTP layer, not Fastify: each has its access line all the same.
  const accessLines = service.output().split('\n').filter((line) => line.includes('"msg":"request completed"') && line.includes('"code":"SERVICE_UNAVAILABLE"'))
  t.equal(accessLines.length, refusals, 'one access line per 503 of the drain')

  // Usage answered before the signal was written at shutdown: last_used_at is not before the last 200.
  const usage = await readUsage()
  for (const { persona, answers } of results) {
    const lastServed = answers.filter((a) => a.status === 200).at(-1)!
    const lastUsed = usage.get(hashApiKey(persona.key))
    t.ok(lastUsed instanceof Date && lastUsed.getTime() >= lastServed.sentAt,
      `${persona.key}: last_used_at ${lastUsed?.toISOString()} not before the last answered 200 (sent ${new Date(lastServed.sentAt).toISOString()})`)
  }
})
