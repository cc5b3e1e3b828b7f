// Applies prisma/migrations the way `prisma migrate deploy` does, recording each in _prisma_migrations,
// because Prisma's schema engine cannot be downloaded where this service runs.
import { createHash, randomUUID } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type pg from 'pg'
import { MIGRATIONS_DIR } from '#src/paths.ts'

export { MIGRATIONS_DIR }

// Prisma migrate's own advisory lock key, so this runner and Prisma's never migrate at the same time.
const PRISMA_ADVISORY_LOCK = 72707369

const CREATE_MIGRATIONS_TABLE = `CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)`

export interface Migration {
  name: string
  sql: string
  checksum: string
}

export class MigrationError extends Error {
  override name = 'MigrationError'
}

export async function readMigrations (dir = MIGRATIONS_DIR): Promise<Migration[]> {
  const entries = await readdir(dir, { withFileTypes: true })
  const names = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort()
  return Promise.all(names.map(async (name) => {
    const sql = await readFile(join(dir, name, 'migration.sql'), 'utf8')
    return { name, sql, checksum: createHash('sha256').update(sql).digest('hex') }
  }))
}

interface AppliedRow {
  id: string
  migration_name: string
  checksum: string
  finished_at: Date | null
  rolled_back_at: Date | null
}

/** Names of the migrations not yet applied. */
export async function pendingMigrations (pool: pg.Pool, dir = MIGRATIONS_DIR): Promise<string[]> {
  return pendingAmong(pool, await readMigrations(dir))
}

/** Names of these migrations (read once, e.g. at start) that the database has not applied. */
export async function pendingAmong (pool: pg.Pool, migrations: readonly Migration[]): Promise<string[]> {
  const exists = await pool.query<{ t: string | null }>('SELECT to_regclass(\'"_prisma_migrations"\')::text AS t')
  if (exists.rows[0].t === null) return migrations.map((m) => m.name)
  const { rows } = await pool.query<AppliedRow>('SELECT migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations"')
  const done = new Set(rows.filter((r) => r.finished_at !== null && r.rolled_back_at === null).map((r) => r.migration_name))
  return migrations.filter((m) => !done.has(m.name)).map((m) => m.name)
}

/**
 * Applies pending migrations, each in its own transaction together with its _prisma_migrations row: a
 * migration is applied and recorded, or neither. A failing one is rolled back whole, recorded as rolled
 * back with its error in `logs`, and stops the run. Returns the names applied.
 */
export async function migrate (pool: pg.Pool, dir = MIGRATIONS_DIR, log: (message: string) => void = () => {}): Promise<string[]> {
  const migrations = await readMigrations(dir)
  return withMigrationLock(pool, async (client) => {
    const applied: string[] = []
    const rows = await appliedRows(client)
    for (const migration of migrations) {
      const records = rows.filter((r) => r.migration_name === migration.name && r.rolled_back_at === null)
      // Under the lock nobody else migrates, and this runner records a migration in the migration's own
      // transaction: an unfinished row was left by a run that died before committing (this runner before
      // it recorded rows that way, or an interrupted `prisma migrate`). Nothing of it was applied.
      for (const unfinished of records.filter((r) => r.finished_at === null)) {
        await markRolledBack(client, unfinished.id, 'interrupted before it committed: found unfinished under the migration lock')
        log(`migration ${migration.name} had been interrupted before it committed: recorded as rolled back, applying it again`)
      }
      const done = records.find((r) => r.finished_at !== null)
      if (done !== undefined) {
        if (done.checksum !== migration.checksum) {
          throw new MigrationError(`migration ${migration.name} was modified after it was applied`)
        }
        continue
      }
      await applyOne(client, migration)
      applied.push(migration.name)
    }
    return applied
  })
}

/**
 * `prisma migrate resolve`: records a migration as rolled back (`--rolled-back`, so that it is applied
 * again) or as applied (`--applied`, after applying it by hand) without running it.
 */
export async function resolveMigration (pool: pg.Pool, name: string, as: 'rolled-back' | 'applied', dir = MIGRATIONS_DIR): Promise<void> {
  const migration = (await readMigrations(dir)).find((m) => m.name === name)
  if (migration === undefined) throw new MigrationError(`no migration named ${name} in ${dir}`)
  await withMigrationLock(pool, async (client) => {
    const records = (await appliedRows(client)).filter((r) => r.migration_name === name && r.rolled_back_at === null)
    if (as === 'rolled-back') {
      const open = records.filter((r) => r.finished_at === null)
      if (open.length === 0) throw new MigrationError(`migration ${name} is not in a failed state`)
      for (const record of open) await markRolledBack(client, record.id, 'resolved as rolled back by an operator')
    } else {
      if (records.some((r) => r.finished_at !== null)) throw new MigrationError(`migration ${name} is already recorded as applied`)
      for (const record of records) await markRolledBack(client, record.id, 'superseded: resolved as applied by an operator')
      await client.query(
        'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, finished_at, applied_steps_count, logs) VALUES ($1, $2, $3, now(), now(), 0, $4)',
        [randomUUID(), migration.checksum, name, 'resolved as applied by an operator']
      )
    }
  })
}

async function withMigrationLock<T> (pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect()
  try {
    // A migrator that dies while it waits (on a lock, say) must not keep the advisory lock: the server
    // checks the connection while the query runs (PostgreSQL 14+; ignored where unsupported).
    await client.query("SELECT set_config('client_connection_check_interval', '1000', false)").catch(() => {})
    await client.query('SELECT pg_advisory_lock($1)', [PRISMA_ADVISORY_LOCK])
    try {
      await client.query(CREATE_MIGRATIONS_TABLE)
      return await work(client)
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [PRISMA_ADVISORY_LOCK])
    }
  } finally {
    client.release()
  }
}

async function appliedRows (client: pg.PoolClient): Promise<AppliedRow[]> {
  const { rows } = await client.query<AppliedRow>('SELECT id, migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations" ORDER BY started_at')
  return rows
}

async function markRolledBack (client: pg.PoolClient, id: string, why: string): Promise<void> {
  await client.query('UPDATE "_prisma_migrations" SET rolled_back_at = now(), logs = concat_ws(E\'\\n\', logs, $2::text) WHERE id = $1', [id, why])
}

async function applyOne (client: pg.PoolClient, migration: Migration): Promise<void> {
  const id = randomUUID()
  try {
    await client.query('BEGIN')
    await client.query(
      'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, applied_steps_count) VALUES ($1, $2, $3, now(), 0)',
      [id, migration.checksum, migration.name]
    )
    await client.query(migration.sql)
    await client.query('UPDATE "_prisma_migrations" SET finished_at = clock_timestamp(), applied_steps_count = 1 WHERE id = $1', [id])
    await client.query('COMMIT')
  } catch (error) {
    await client.query('ROLLBACK')
    const message = error instanceof Error ? error.message : String(error)
    // Recorded after the rollback, as Prisma records a failed migration: rolled back, with its error.
    await client.query(
      'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, rolled_back_at, applied_steps_count, logs) VALUES ($1, $2, $3, now(), now(), 0, $4)',
      [id, migration.checksum, migration.name, message]
    )
    throw new MigrationError(`migration ${migration.name} failed and was rolled back: ${message}`)
  }
}
