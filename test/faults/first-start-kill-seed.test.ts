// kill -9 of the embedded database's first start while it seeds, and right after it listens: the seed
// commits whole or not at all (decided from seed_markers, not from files), and the next start serves
// every persona.
import t from 'tap'
import { PERSONAS } from '#src/db/seed.ts'
import { serverUrl } from '#test/helpers/database.ts'
import { completedByStart, newFolder, nextStartServesEveryone, spawnFirstStart } from './first-start.ts'

// Bounded, with room for a loaded machine: each case is two real first starts.
t.setTimeout(360_000)

const skip = serverUrl === undefined ? false : 'the embedded database only: with DATABASE_URL there is no first start of a data folder'
if (skip !== false) t.comment(skip)

const EVERYTHING_SEEDED = 2 + PERSONAS.length // the organization, each persona, the projects

t.test('killed inside the seed\'s transaction (the organization and half the personas written): the next start seeds everything', { skip }, async (t) => {
  const folder = await newFolder(t)
  const first = spawnFirstStart(t, folder, { statement: 'INSERT INTO "public"."seed_markers"', occurrence: 5 })
  await first.waitFor(/PAUSED AT: INSERT INTO "public"\."seed_markers"/, 180_000)
  await first.kill()
  t.match(first.output(), /applied migrations/, 'killed after migrating')
  const next = completedByStart(await nextStartServesEveryone(t, folder))
  t.same(next.applied, [], 'nothing left to migrate')
  t.equal(next.seeded.length, EVERYTHING_SEEDED, 'the interrupted seed left nothing: the next start seeded everything')
})

t.test('killed the moment migrations are done, while the seed runs: the next start seeds everything', { skip }, async (t) => {
  const folder = await newFolder(t)
  const first = spawnFirstStart(t, folder)
  await first.waitFor(/applied migrations/, 180_000)
  await first.kill()
  const next = completedByStart(await nextStartServesEveryone(t, folder))
  t.same(next.applied, [])
  t.ok([0, EVERYTHING_SEEDED].includes(next.seeded.length), `the seed was whole or absent (the next start seeded ${next.seeded.length})`)
})

t.test('killed right after it listens: the next start has nothing to do and serves everyone', { skip }, async (t) => {
  const folder = await newFolder(t)
  const first = spawnFirstStart(t, folder)
  await first.waitFor(/Server listening at/, 180_000)
  await first.kill()
  const next = completedByStart(await nextStartServesEveryone(t, folder))
  t.same(next, { applied: [], seeded: [] })
})
