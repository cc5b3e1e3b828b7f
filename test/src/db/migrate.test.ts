import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { readFileSync } from 'node:fs'
import internals from '@prisma/internals'
import t from 'tap'
import { PACKAGE_ROOT } from '#src/paths.ts'
import { MIGRATIONS_DIR, MigrationError, migrate, pendingMigrations, readMigrations } from '#src/db/migrate.ts'
import { createTestDatabase, databaseKind } from '#test/helpers/database.ts'

t.comment(`database: ${databaseKind}`)

interface Column { table_name: string, column_name: string, data_type: string, udt_name: string, is_nullable: 'YES' | 'NO' }

const PG_TYPES: Record<string, string> = { Uuid: 'uuid', Timestamptz: 'timestamptz' }
const SCALAR_TYPES: Record<string, string> = { String: 'text', DateTime: 'timestamp', Int: 'int4', Boolean: 'bool', BigInt: 'int8', Json: 'jsonb' }

t.test('schema.prisma and the migrations agree: every field has its column, type and nullability', async (t) => {
  const db = await createTestDatabase(t, { seed: false })
  const { datamodel } = await internals.getDMMF({ datamodel: readFileSync(join(PACKAGE_ROOT, 'prisma', 'schema.prisma'), 'utf8') })
  const { rows } = await db.pool.query<Column>("SELECT table_name, column_name, data_type, udt_name, is_nullable FROM information_schema.columns WHERE table_schema = 'public'")
  const enums = new Map(datamodel.enums.map((e) => [e.name, e.dbName ?? e.name]))
  let checked = 0
  for (const model of datamodel.models) {
    const table = model.dbName ?? model.name
    for (const field of model.fields.filter((f) => f.kind !== 'object')) {
      const columnName = field.dbName ?? field.name
      const column = rows.find((r) => r.table_name === table && r.column_name === columnName)
      if (!t.ok(column, `${table}.${columnName} exists`) || column === undefined) continue
      const nativeType = Array.isArray(field.nativeType) ? PG_TYPES[field.nativeType[0] as string] : undefined
      const expected = field.kind === 'enum' ? enums.get(field.type) : nativeType ?? SCALAR_TYPES[field.type]
      t.equal(field.isList ? column.udt_name.replace(/^_/, '') : column.udt_name, expected, `${table}.${columnName} type`)
      t.equal(column.data_type === 'ARRAY', field.isList, `${table}.${columnName} list`)
      // Prisma leaves scalar lists nullable in PostgreSQL; every other required field is NOT NULL.
      if (!field.isList) t.equal(column.is_nullable, field.isRequired ? 'NO' : 'YES', `${table}.${columnName} nullability`)
      checked++
    }
    const modelColumns = rows.filter((r) => r.table_name === table).map((r) => r.column_name).sort()
    const fieldColumns = model.fields.filter((f) => f.kind !== 'object').map((f) => f.dbName ?? f.name).sort()
    t.same(modelColumns, fieldColumns, `${table}: no column without a field`)
  }
  t.ok(checked >= 35, `checked ${checked} fields`)

  const { rows: uniques } = await db.pool.query<{ indexdef: string }>("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND indexdef LIKE 'CREATE UNIQUE INDEX%'")
  for (const [table, column] of [['api_keys', 'token_hash'], ['organizations', 'slug'], ['organizations', 'external_id'], ['users', 'external_id'], ['organization_memberships', 'organization_id, user_id']]) {
    t.ok(uniques.some((u) => u.indexdef.includes(`ON public.${table} USING btree (${column})`)), `unique ${table}(${column})`)
  }
})

t.test('migrations are recorded in _prisma_migrations as Prisma records them', async (t) => {
  const db = await createTestDatabase(t, { seed: false })
  const migrations = await readMigrations()
  const { rows } = await db.pool.query('SELECT migration_name, checksum, finished_at, rolled_back_at, applied_steps_count FROM "_prisma_migrations" ORDER BY migration_name')
  t.same(rows.map((r) => r.migration_name), migrations.map((m) => m.name))
  for (const [i, row] of rows.entries()) {
    t.equal(row.checksum, migrations[i].checksum, 'sha256 of migration.sql')
    t.ok(row.finished_at instanceof Date)
    t.equal(row.rolled_back_at, null)
    t.equal(row.applied_steps_count, 1)
  }
  t.same(await migrate(db.pool), [], 'a second run applies nothing')
  t.same(await pendingMigrations(db.pool), [])
})

t.test('a failing migration is rolled back whole, recorded, and stops the run', async (t) => {
  const db = await createTestDatabase(t, { seed: false })
  const dir = await mkdtemp(join(tmpdir(), 'battra-migrations-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await cp(MIGRATIONS_DIR, dir, { recursive: true })
  await mkdir(join(dir, '29991231000000_broken'))
  await writeFile(join(dir, '29991231000000_broken', 'migration.sql'), 'CREATE TABLE "half_done" (id int);\nSELECT * FROM no_such_table;\n')
  t.same(await pendingMigrations(db.pool, dir), ['29991231000000_broken'])
  await t.rejects(migrate(db.pool, dir), MigrationError)
  const { rows: tables } = await db.pool.query("SELECT to_regclass('half_done')::text AS t")
  t.equal(tables[0].t, null, 'nothing of it remains')
  const { rows } = await db.pool.query('SELECT rolled_back_at, logs FROM "_prisma_migrations" WHERE migration_name = \'29991231000000_broken\'')
  t.ok(rows[0].rolled_back_at instanceof Date)
  t.match(rows[0].logs, /no_such_table/)
  t.same(await pendingMigrations(db.pool, dir), ['29991231000000_broken'], 'still pending, retried on the next run')
})

t.test('a migration changed after it was applied is refused', async (t) => {
  const db = await createTestDatabase(t, { seed: false })
  const dir = await mkdtemp(join(tmpdir(), 'battra-migrations-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await cp(MIGRATIONS_DIR, dir, { recursive: true })
  const [first] = await readMigrations(dir)
  await writeFile(join(dir, first.name, 'migration.sql'), first.sql + '\n-- edited\n')
  await t.rejects(migrate(db.pool, dir), /modified after it was applied/)
})
