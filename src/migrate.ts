// Applies prisma/migrations the way `prisma migrate deploy` does, recording each in _prisma_migrations,
// because Prisma's schema engine cannot be downloaded where this service runs.
import { createHash, randomUUID } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type pg from 'pg'
import type { PrismaClient } from './database.ts'
import { seedDevPersonas } from './seed.ts'

export const MIGRATIONS_DIR = fileURLToPath(new URL('../prisma/migrations', import.meta.url))
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
  migration_name: string
  checksum: string
  finished_at: Date | null
  rolled_back_at: Date | null
}

/** Names of the migrations not yet applied. */
export async function pendingMigrations (pool: pg.Pool, dir = MIGRATIONS_DIR): Promise<string[]> {
  const exists = await pool.query<{ t: string | null }>(`SELECT to_regclass('"_prisma_migrations"')::text AS t`)
  const migrations = await readMigrations(dir)
  if (exists.rows[0].t === null) return migrations.map((m) => m.name)
  const { rows } = await pool.query<AppliedRow>('SELECT migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations"')
  const done = new Set(rows.filter((r) => r.finished_at !== null && r.rolled_back_at === null).map((r) => r.migration_name))
  return migrations.filter((m) => !done.has(m.name)).map((m) => m.name)
}

/**
 * Applies pending migrations, each in its own transaction: a failing one leaves no half-applied schema,
 * is recorded as rolled back with its error in `logs`, and stops the run. Returns the names applied.
 */
export async function migrate (pool: pg.Pool, dir = MIGRATIONS_DIR): Promise<string[]> {
  const migrations = await readMigrations(dir)
  const client = await pool.connect()
  const applied: string[] = []
  try {
    await client.query('SELECT pg_advisory_lock($1)', [PRISMA_ADVISORY_LOCK])
    try {
      await client.query(CREATE_MIGRATIONS_TABLE)
      const { rows } = await client.query<AppliedRow>('SELECT migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations"')
      for (const migration of migrations) {
        const records = rows.filter((r) => r.migration_name === migration.name && r.rolled_back_at === null)
        if (records.some((r) => r.finished_at === null)) {
          throw new MigrationError(`migration ${migration.name} failed earlier and was not rolled back; resolve it before starting`)
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
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [PRISMA_ADVISORY_LOCK])
    }
  } finally {
    client.release()
  }
  return applied
}

async function applyOne (client: pg.PoolClient, migration: Migration): Promise<void> {
  const id = randomUUID()
  await client.query(
    'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, applied_steps_count) VALUES ($1, $2, $3, now(), 0)',
    [id, migration.checksum, migration.name]
  )
  try {
    await client.query('BEGIN')
    await client.query(migration.sql)
    await client.query('UPDATE "_prisma_migrations" SET finished_at = now(), applied_steps_count = 1 WHERE id = $1', [id])
    await client.query('COMMIT')
  } catch (error) {
    await client.query('ROLLBACK')
    const message = error instanceof Error ? error.message : String(error)
    await client.query('UPDATE "_prisma_migrations" SET rolled_back_at = now(), logs = $2 WHERE id = $1', [id, message])
    throw new MigrationError(`migration ${migration.name} failed and was rolled back: ${message}`)
  }
}

/** The embedded database's start: migrated every time, seeded with the dev personas when new. */
export async function prepareEmbeddedDatabase (pool: pg.Pool, prisma: PrismaClient, created: boolean): Promise<{ applied: string[], seeded: boolean }> {
  const applied = await migrate(pool)
  if (created) await seedDevPersonas(prisma)
  return { applied, seeded: created }
}
