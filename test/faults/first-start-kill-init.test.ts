// kill -9 of the embedded database's first start while PGlite creates the cluster and opens it: the
// next start completes the work (creates, migrates, seeds) and serves every persona. A killed first start
// leaves a staging folder; the next start of that folder removes it, and only it.
import t from 'tap'
import { readMigrations } from '#src/db/migrate.ts'
import { PERSONAS } from '#src/db/seed.ts'
import { serverUrl } from '#test/helpers/database.ts'
import { existsSync } from 'node:fs'
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { DataDirLock } from '#src/db/data-dir-lock.ts'
import { completedByStart, newFolder, nextStartServesEveryone, spawnFirstStart, stagingFolders, stagingWithVersion, untilFiles } from './first-start.ts'

// Bounded, with room for a loaded machine: each case is two real first starts.
t.setTimeout(360_000)

const skip = serverUrl === undefined ? false : 'the embedded database only: with DATABASE_URL there is no first start of a data folder'
if (skip !== false) t.comment(skip)

const migrations = (await readMigrations()).map((m) => m.name)
const EVERYTHING_SEEDED = 2 + PERSONAS.length // the organization, each persona, the projects

t.test('killed while PGlite starts, before the cluster has any file: the next start begins again', { skip }, async (t) => {
  const folder = await newFolder(t)
  const first = spawnFirstStart(t, folder)
  await untilFiles(first, () => existsSync(join(folder.parent, `.init-data-${first.child.pid}`)), 'the staging folder appears')
  // PGlite's files are writable by everyone: the folder they are made in is closed to others (found by an outside probe).
  t.equal((await stat(join(folder.parent, `.init-data-${first.child.pid}`))).mode & 0o777, 0o700, 'the staging folder is its owner\'s alone')
  await first.kill()
  t.same(await stagingFolders(folder), [`.init-data-${first.child.pid}`], 'killed with its staging folder there')
  t.notOk(existsSync(folder.dataDir), 'and no data folder')
  const next = completedByStart(await nextStartServesEveryone(t, folder))
  t.same(next.applied, migrations, 'the next start applied every migration')
  t.equal(next.seeded.length, EVERYTHING_SEEDED, 'and seeded everything')
})

t.test('killed while PGlite creates the cluster (PG_VERSION written, more to come): the next start begins again', { skip }, async (t) => {
  const folder = await newFolder(t)
  const first = spawnFirstStart(t, folder)
  await untilFiles(first, () => stagingWithVersion(folder, first.child.pid!), 'PG_VERSION appears in the staging folder')
  await first.kill()
  t.notOk(existsSync(folder.dataDir), 'killed before the data folder existed')
  const next = completedByStart(await nextStartServesEveryone(t, folder))
  t.same(next.applied, migrations)
  t.equal(next.seeded.length, EVERYTHING_SEEDED)
})

t.test('killed as the new cluster is renamed into place and opened: the next start migrates and seeds it', { skip }, async (t) => {
  const folder = await newFolder(t)
  const first = spawnFirstStart(t, folder)
  await untilFiles(first, () => existsSync(join(folder.dataDir, 'PG_VERSION')), 'the data folder appears')
  await first.kill()
  t.notMatch(first.output(), /applied migrations/, 'killed before it migrated')
  const next = completedByStart(await nextStartServesEveryone(t, folder))
  t.same(next.applied, migrations)
  t.equal(next.seeded.length, EVERYTHING_SEEDED)
})

t.test('a first start removes its own dead staging folders, never those of a sibling folder starting beside it', { skip }, async (t) => {
  const folder = await newFolder(t)
  // `data-2`, beside `data`, is in the middle of its own first start (this process holds its lock).
  const siblingLock = await DataDirLock.acquire(`${folder.dataDir}-2`)
  t.teardown(() => siblingLock.release())
  const siblingStaging = join(folder.parent, `.init-data-2-${process.pid}`)
  await mkdir(siblingStaging)
  await writeFile(join(siblingStaging, 'PG_VERSION'), '17\n')
  // And `data` itself has one left by a first start that was killed.
  const deadStaging = join(folder.parent, '.init-data-999999')
  await mkdir(deadStaging)
  await nextStartServesEveryone(t, folder)
  t.notOk(existsSync(deadStaging), 'its own dead staging folder is gone')
  t.ok(existsSync(join(siblingStaging, 'PG_VERSION')), 'the sibling\'s staging folder is untouched')
})

t.test('an existing empty folder (a mounted volume, say): killed while PGlite creates the cluster inside it, the next start clears it and begins again; the folder itself is kept', { skip }, async (t) => {
  const folder = await newFolder(t)
  await mkdir(folder.dataDir)
  const { ino } = await stat(folder.dataDir)
  const first = spawnFirstStart(t, folder)
  await untilFiles(first, () => existsSync(join(folder.dataDir, `.init-${first.child.pid}`, 'PG_VERSION')), 'PG_VERSION appears in the staging folder inside the data folder')
  await first.kill()
  t.equal((await stat(join(folder.dataDir, `.init-${first.child.pid}`))).mode & 0o777, 0o700, 'the staging folder is its owner\'s alone')
  t.equal((await stat(folder.dataDir)).mode & 0o777, 0o700, 'and so is the data folder, before any file is moved into it')
  t.notOk(existsSync(join(folder.dataDir, 'PG_VERSION')), 'killed before the cluster was in place')
  const next = completedByStart(await nextStartServesEveryone(t, folder))
  t.same(next.applied, migrations)
  t.equal(next.seeded.length, EVERYTHING_SEEDED)
  t.equal((await stat(folder.dataDir)).ino, ino, 'the same folder, not one renamed over it')
  t.same((await readdir(folder.dataDir)).filter((name) => name.startsWith('.')), [], 'no staging folder or marker left inside')
})
