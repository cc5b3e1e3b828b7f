// The pool's statement timeout (DATABASE_STATEMENT_TIMEOUT_MS), enforced by the client without a timer
// per statement: a statement whose answer does not come fails as a database failure (503) soon after the
// timeout, its connection is replaced, and a slow statement within the timeout is left alone.
import t from 'tap'
import { isDatabaseUnavailable } from '#src/db/failures.ts'
import { createPool } from '#src/db/pool.ts'
import { createTestDatabase, databaseKind } from '#test/helpers/database.ts'

t.comment(`database: ${databaseKind}`)
const TIMEOUT_MS = 400

t.test('a statement the database never answers fails after the timeout, and the pool recovers', async (t) => {
  const db = await createTestDatabase(t, { proxy: true, seed: false })
  const counter = { count: 0 }
  const pool = createPool({ url: db.url, max: 2, connectTimeoutMs: 2000, statementTimeoutMs: TIMEOUT_MS }, counter)
  t.teardown(() => pool.end())
  // Both connections open and idle, then one checked out: the statements below go to open connections.
  await Promise.all([pool.query('SELECT pg_sleep(0.05)'), pool.query('SELECT pg_sleep(0.05)')])
  const client = await pool.connect()
  db.proxy!.freeze()
  const started = performance.now()
  // Both forms pg takes: a promise (Prisma's adapter) and a callback (pool.query).
  const byPromise = client.query('SELECT 2').then(() => undefined, (error: unknown) => ({ error, ms: performance.now() - started }))
  const byCallback = new Promise<{ error: unknown, ms: number } | undefined>((resolve) => {
    pool.query('SELECT 3', [], (error) => resolve(error === undefined || error === null ? undefined : { error, ms: performance.now() - started }))
  })
  for (const [form, failure] of [['promise', await byPromise], ['callback', await byCallback]] as const) {
    if (failure === undefined) {
      t.fail(`${form}: answered while the database was stalled`)
      continue
    }
    t.ok(isDatabaseUnavailable(failure.error), `${form}: a database failure (503), not a bug: ${String(failure.error)}`)
    // Between the timeout and a quarter of it later, with room for a busy machine.
    t.ok(failure.ms >= TIMEOUT_MS - 20 && failure.ms < TIMEOUT_MS * 1.25 + 1500, `${form}: failed after ${Math.round(failure.ms)} ms (timeout ${TIMEOUT_MS} ms)`)
  }
  client.release(true)
  await db.proxy!.restore()
  t.same((await pool.query<{ one: number }>('SELECT 1 AS one')).rows, [{ one: 1 }], 'a new connection answers')
  t.equal(counter.count, 5, 'every statement counted, the failed ones too')
})

t.test('a statement slower than a sweep but within the timeout is answered', async (t) => {
  const db = await createTestDatabase(t, { seed: false })
  // Long enough for a busy machine: the statements queued behind the slow one count their wait too.
  const timeoutMs = 2000
  const pool = createPool({ url: db.url, max: 1, connectTimeoutMs: 2000, statementTimeoutMs: timeoutMs }, { count: 0 })
  t.teardown(() => pool.end())
  // A sweep (one each quarter of the timeout) passes while it runs.
  const rows = (await pool.query<{ done: boolean }>('SELECT pg_sleep(0.6) IS NOT NULL AS done')).rows
  t.same(rows, [{ done: true }])
  // And statements queued behind it on the one connection wait their turn without being ended.
  const answers = await Promise.all([1, 2, 3].map(async (n) => (await pool.query<{ n: number }>('SELECT $1::int AS n', [n])).rows[0].n))
  t.same(answers, [1, 2, 3])
})
