// Migrations that are interrupted: a migrator killed while its migration waits on a lock, rows left
// unfinished by the previous runner, and `npm run db:migrate -- resolve` for what remains.
import { randomBytes, randomUUID } from 'node:crypto'
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import t, { type Test } from 'tap'
import { openEmbeddedDatabase } from '#src/db/embedded.ts'
import { MIGRATIONS_DIR, migrate, pendingMigrations, readMigrations, type Migration } from '#src/db/migrate.ts'
import { createPool } from '#src/db/pool.ts'
import { databaseKind, serverUrl, type Teardown } from '#test/helpers/database.ts'
import { until } from '#test/helpers/wait.ts'
import { runScript, spawnScript } from './processes.ts'

t.comment(`database: ${databaseKind}`)

const PRISMA_ADVISORY_LOCK = 72707369
const migrations = await readMigrations()
const last = migrations.at(-1)!

interface Scratch {
  /** Environment for the command-line tools on this database. */
  env: Record<string, string>
  /** A pool on it for fn (on the embedded database: the folder is opened, and closed again after). */
  use: <T>(fn: (pool: pg.Pool) => Promise<T>) => Promise<T>
}

/** A new, empty database: on PostgreSQL a database of its own, else an embedded data folder. */
async function scratchDatabase (t: Teardown): Promise<Scratch & { url?: string }> {
  if (serverUrl !== undefined) {
    const name = `battra_faults_${process.pid}_${randomBytes(4).toString('hex')}`
    const admin = new pg.Client({ connectionString: serverUrl })
    await admin.connect()
    await admin.query(`CREATE DATABASE ${name}`)
    await admin.end()
    const url = new URL(serverUrl)
    url.pathname = `/${name}`
    const pool = createPool({ url: url.toString(), max: 3, connectTimeoutMs: 5000, statementTimeoutMs: 30_000 }, { count: 0 })
    t.teardown(async () => {
      await pool.end()
      const client = new pg.Client({ connectionString: serverUrl })
      await client.connect()
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await client.end()
    })
    return { url: url.toString(), env: { DATABASE_URL: url.toString() }, use: (fn) => fn(pool) }
  }
  const parent = await mkdtemp(join(tmpdir(), 'battra-migrations-'))
  t.teardown(() => rm(parent, { recursive: true, force: true }))
  const dataDir = join(parent, 'data')
  return {
    env: { DATABASE_URL: '', EMBEDDED_DATA_DIR: dataDir, EMBEDDED_DB_PORT: '0' },
    async use (fn) {
      const embedded = await openEmbeddedDatabase({ dataDir, host: '127.0.0.1', port: 0 })
      const pool = createPool({ url: embedded.url, max: 1, connectTimeoutMs: 5000, statementTimeoutMs: 30_000 }, { count: 0 })
      try {
        return await fn(pool)
      } finally {
        await pool.end()
        await embedded.stop()
      }
    }
  }
}

/** A copy of prisma/migrations, without the last `drop` migrations and with `extra` ones added. */
async function migrationsDir (t: Teardown, { drop = 0, extra = {} }: { drop?: number, extra?: Record<string, string> } = {}): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'battra-migrations-dir-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await cp(MIGRATIONS_DIR, dir, { recursive: true })
  for (const migration of migrations.slice(migrations.length - drop)) await rm(join(dir, migration.name), { recursive: true })
  for (const [name, sql] of Object.entries(extra)) {
    await mkdir(join(dir, name))
    await writeFile(join(dir, name, 'migration.sql'), sql)
  }
  return dir
}

interface Row { id: string, migration_name: string, checksum: string, finished_at: Date | null, rolled_back_at: Date | null, applied_steps_count: number, logs: string | null }

async function rows (pool: pg.Pool, name: string): Promise<Row[]> {
  return (await pool.query<Row>('SELECT id, migration_name, checksum, finished_at, rolled_back_at, applied_steps_count, logs FROM "_prisma_migrations" WHERE migration_name = $1 ORDER BY started_at', [name])).rows
}

/** What `prisma migrate status` checks: each migration of the folder has exactly one applied row with its checksum. */
async function upToDate (t: Test, pool: pg.Pool, all: Migration[]): Promise<void> {
  const { rows: applied } = await pool.query<Row>('SELECT migration_name, checksum FROM "_prisma_migrations" WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL')
  t.same(applied.map((r) => r.migration_name).sort(), all.map((m) => m.name), 'one applied row per migration, nothing else applied')
  t.ok(all.every((m) => applied.some((r) => r.migration_name === m.name && r.checksum === m.checksum)), 'with the checksum of its migration.sql')
  const { rows: open } = await pool.query('SELECT migration_name FROM "_prisma_migrations" WHERE finished_at IS NULL AND rolled_back_at IS NULL')
  t.same(open, [], 'no migration left in a failed state')
}

/** An unfinished row as the previous runner left one (written before the migration's transaction), or Prisma after a failure. */
async function insertUnfinishedRow (pool: pg.Pool, migration: Migration, logs: string | null = null): Promise<string> {
  const id = randomUUID()
  await pool.query(
    'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, applied_steps_count, logs) VALUES ($1, $2, $3, now() - interval \'1 hour\', 0, $4)',
    [id, migration.checksum, migration.name, logs]
  )
  return id
}

const dbMigrate = (t: Teardown, env: Record<string, string>, ...args: string[]) => runScript(t, ['scripts/db.ts', 'migrate', ...args], env)

t.test('a migrator SIGKILLed while its migration waits on a lock: the lock and the session go, nothing is recorded, the next run applies it', {
  skip: serverUrl === undefined ? 'PostgreSQL only: PGlite runs every connection in one session, so no second session can hold a lock that a migration waits on' : false
}, async (t) => {
  const db = await scratchDatabase(t)
  const extraName = '29991231000000_archive_projects'
  const dir = await migrationsDir(t, { extra: { [extraName]: 'ALTER TABLE "projects" ADD COLUMN "archived_at" TIMESTAMPTZ;\n' } })
  const all = await readMigrations(dir)
  // Everything but the extra migration first: the table to lock must exist.
  await db.use((pool) => migrate(pool))

  const blocker = new pg.Client({ connectionString: db.url })
  await blocker.connect()
  t.teardown(() => blocker.end())
  await blocker.query('BEGIN')
  await blocker.query('LOCK TABLE "projects" IN ACCESS EXCLUSIVE MODE')

  const appName = `battra-test-migrator-${randomBytes(3).toString('hex')}`
  const runnerUrl = `${db.url}?application_name=${appName}`
  const runner = spawnScript(t, ['test/faults/migrate-runner.ts', runnerUrl, dir])
  // Watched from a third session: inside the blocker's transaction pg_stat_activity would not change.
  const observer = new pg.Client({ connectionString: db.url })
  await observer.connect()
  t.teardown(() => observer.end())
  const backends = async () => (await observer.query<{ pid: number, wait_event_type: string | null, query: string }>(
    'SELECT pid, wait_event_type, query FROM pg_stat_activity WHERE application_name = $1', [appName])).rows
  await until(async () => {
    if (runner.child.exitCode !== null) throw new Error(`the migrator exited: ${runner.output()}`)
    return (await backends()).some((b) => b.wait_event_type === 'Lock' && /ALTER TABLE "projects"/.test(b.query))
  }, 60_000, 'the migration waits on the lock')
  await runner.kill()

  // PostgreSQL notices the vanished client while its backend still waits (client_connection_check_interval):
  // the backend ends, its transaction and the migration advisory lock with it, though the table lock is still held.
  const gone = await until(async () => (await backends()).length === 0, 10_000, 'the killed migrator\'s backend ends')
  t.ok(gone < 10_000, `the killed migrator's backend ended ${Math.round(gone)} ms after the kill, while the lock was still held`)
  const [{ free }] = (await observer.query<{ free: boolean }>('SELECT pg_try_advisory_lock($1) AS free', [PRISMA_ADVISORY_LOCK])).rows
  t.ok(free, 'the migration advisory lock was released')
  await observer.query('SELECT pg_advisory_unlock($1)', [PRISMA_ADVISORY_LOCK])
  await blocker.query('ROLLBACK') // releases the table lock

  await db.use(async (pool) => {
    t.same(await rows(pool, extraName), [], 'the interrupted migration left no row: its row was in its own transaction')
    t.same(await pendingMigrations(pool, dir), [extraName], 'still pending')
  })
  const again = await runScript(t, ['test/faults/migrate-runner.ts', db.url!, dir])
  t.equal(again.code, 0, again.output)
  t.same(JSON.parse(again.output.trim().split('\n').at(-1)!), { applied: [extraName] }, 'the next run applies it')
  await db.use(async (pool) => {
    const [row] = await rows(pool, extraName)
    t.match(row, { finished_at: Date, rolled_back_at: null, applied_steps_count: 1, logs: null })
    await upToDate(t, pool, all)
    const { rows: columns } = await pool.query("SELECT 1 FROM information_schema.columns WHERE table_name = 'projects' AND column_name = 'archived_at'")
    t.equal(columns.length, 1, 'the column exists')
  })
})

t.test('an unfinished row left by the previous runner is recorded as rolled back and the migration applied by `npm run db:migrate`', async (t) => {
  const db = await scratchDatabase(t)
  const partial = await migrationsDir(t, { drop: 1 })
  const oldRow = await db.use(async (pool) => {
    await migrate(pool, partial)
    return insertUnfinishedRow(pool, last)
  })

  const run = await dbMigrate(t, db.env)
  t.equal(run.code, 0, run.output)
  t.match(run.output, `migration ${last.name} had been interrupted before it committed: recorded as rolled back, applying it again`)
  t.match(run.output, `applied ${last.name}`)
  await db.use(async (pool) => {
    const [old, applied, ...more] = await rows(pool, last.name)
    t.match(old, { id: oldRow, finished_at: null, rolled_back_at: Date, logs: /interrupted before it committed/ }, 'the old row: rolled back, as `prisma migrate resolve --rolled-back` records it')
    t.match(applied, { finished_at: Date, rolled_back_at: null, applied_steps_count: 1, checksum: last.checksum }, 'a new row: applied')
    t.same(more, [])
    await upToDate(t, pool, migrations)
  })
  const second = await dbMigrate(t, db.env)
  t.equal(second.code, 0)
  t.match(second.output, 'no pending migrations')
})

t.test('`npm run db:migrate -- resolve --rolled-back | --applied`: Prisma\'s resolve, with clear refusals', async (t) => {
  const db = await scratchDatabase(t)
  const partial = await migrationsDir(t, { drop: 1 })
  // A migration recorded as failed and not rolled back, as Prisma records one.
  await db.use(async (pool) => {
    await migrate(pool, partial)
    await insertUnfinishedRow(pool, last, 'ERROR: canceling statement due to lock timeout')
  })

  const rolledBack = await dbMigrate(t, db.env, 'resolve', '--rolled-back', last.name)
  t.equal(rolledBack.code, 0, rolledBack.output)
  t.match(rolledBack.output, `migration ${last.name} recorded as rolled back; \`npm run db:migrate\` applies it again`)
  await db.use(async (pool) => {
    const [row] = await rows(pool, last.name)
    t.match(row, { finished_at: null, rolled_back_at: Date, logs: /lock timeout\nresolved as rolled back by an operator/ })
    t.same(await pendingMigrations(pool), [last.name], 'pending again')
    // The operator then applies it by hand, to record it with --applied.
    await pool.query(last.sql)
  })
  const twice = await dbMigrate(t, db.env, 'resolve', '--rolled-back', last.name)
  t.equal(twice.code, 1)
  t.match(twice.output, `migrate resolve failed: migration ${last.name} is not in a failed state`)

  const applied = await dbMigrate(t, db.env, 'resolve', '--applied', last.name)
  t.equal(applied.code, 0, applied.output)
  t.match(applied.output, `migration ${last.name} recorded as applied, without running it`)
  await db.use(async (pool) => {
    const [old, resolved, ...more] = await rows(pool, last.name)
    t.match(old, { rolled_back_at: Date })
    t.match(resolved, { finished_at: Date, rolled_back_at: null, checksum: last.checksum })
    t.same(more, [])
    await upToDate(t, pool, migrations)
  })
  const after = await dbMigrate(t, db.env)
  t.equal(after.code, 0, after.output)
  t.match(after.output, 'no pending migrations', 'the resolved migration is not run again')
  const appliedTwice = await dbMigrate(t, db.env, 'resolve', '--applied', last.name)
  t.equal(appliedTwice.code, 1)
  t.match(appliedTwice.output, `migration ${last.name} is already recorded as applied`)
  const unknown = await dbMigrate(t, db.env, 'resolve', '--rolled-back', '20990101000000_no_such')
  t.equal(unknown.code, 1)
  t.match(unknown.output, /no migration named 20990101000000_no_such in .*prisma\/migrations/)

  const mistakes = [['resolve'], ['resolve', '--rolled-back', 'a', '--applied', 'b'], ['--applied', last.name]]
  const usages = await Promise.all(mistakes.map((args) => dbMigrate(t, db.env, ...args)))
  for (const [i, args] of mistakes.entries()) {
    const usage = usages[i]
    t.equal(usage.code, 2, `migrate ${args.join(' ')}: usage error`)
    t.match(usage.output, /error: .*\n\nusage: npm run db:migrate/)
    t.notMatch(usage.output, /\n\s+at /, 'no stack trace')
  }
})
