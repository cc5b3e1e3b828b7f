// kill -9 of the embedded database's first start while it migrates: each migration commits whole with
// its _prisma_migrations row or not at all, and the next start applies the rest, seeds, and serves every
// persona.
import t from 'tap'
import { readMigrations } from '#src/db/migrate.ts'
import { PERSONAS } from '#src/db/seed.ts'
import { serverUrl } from '#test/helpers/database.ts'
import { completedByStart, newFolder, nextStartServesEveryone, spawnFirstStart } from './first-start.ts'

// Bounded, with room for a loaded machine: each case is two real first starts.
t.setTimeout(360_000)

const skip = serverUrl === undefined ? false : 'the embedded database only: with DATABASE_URL there is no first start of a data folder'
if (skip !== false) t.comment(skip)

const migrations = (await readMigrations()).map((m) => m.name)
const EVERYTHING_SEEDED = 2 + PERSONAS.length // the organization, each persona, the projects

t.test('killed inside the third migration\'s transaction (its SQL run, not committed): the next start applies it and what follows', { skip }, async (t) => {
  const folder = await newFolder(t)
  // Paused just before the statement that marks the third migration finished, then killed.
  const first = spawnFirstStart(t, folder, { statement: 'SET finished_at', occurrence: 3 })
  await first.waitFor(/PAUSED AT: UPDATE "_prisma_migrations" SET finished_at/, 180_000)
  await first.kill()
  const next = completedByStart(await nextStartServesEveryone(t, folder))
  t.same(next.applied, migrations.slice(2), 'the first two had committed; the third and the rest were applied by the next start')
  t.equal(next.seeded.length, EVERYTHING_SEEDED)
})

t.test('killed the moment the database opens, as migrations begin: what committed stays, the next start applies the rest', { skip }, async (t) => {
  const folder = await newFolder(t)
  const first = spawnFirstStart(t, folder)
  await first.waitFor(/embedded PostgreSQL \(PGlite\) is open/, 180_000)
  await first.kill()
  const next = completedByStart(await nextStartServesEveryone(t, folder))
  t.same(next.applied, migrations.slice(migrations.length - next.applied.length), `the next start applied the migrations not committed before the kill (${next.applied.length} of ${migrations.length})`)
  t.equal(next.seeded.length, EVERYTHING_SEEDED)
})
