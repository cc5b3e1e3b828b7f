// npm run db:seed, as an operator runs it: it says what it seeded, and nothing when there is nothing to.
import t from 'tap'
import { createTestDatabase, databaseKind } from '#test/helpers/database.ts'
import { runScript } from '#test/helpers/scripts.ts'

t.comment(`database: ${databaseKind}`)

t.test('db:seed on a seeded database seeds nothing and says so; a persona deleted since is not brought back', async (t) => {
  const db = await createTestDatabase(t)
  await db.pool.query("DELETE FROM api_keys WHERE hint LIKE 'battra-q%'")
  const seeded = await runScript('scripts/db.ts', { DATABASE_URL: db.url }, 'seed')
  t.equal(seeded.code, 0, seeded.stderr)
  t.match(seeded.stdout, /: nothing to seed: every dev persona was seeded before/)
  t.notMatch(seeded.stdout, /battra-qa-key-1/, 'not listed as seeded (found by an outside probe: every key was)')
  t.equal((await db.pool.query("SELECT 1 FROM api_keys WHERE hint LIKE 'battra-q%'")).rowCount, 0, 'the deleted key stays deleted')
})
