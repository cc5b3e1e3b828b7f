// npm run audit -- verify|list|prune, as an operator runs it.
import t from 'tap'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createTestDatabase, databaseKind, serverUrl } from '#test/helpers/database.ts'
import { runScript } from '#test/helpers/scripts.ts'
import { insertUserWithKey, testOrgId } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)

const audit = (env: Record<string, string>, ...args: string[]) => runScript('scripts/audit.ts', env, ...args)

t.test('verify, list, prune; verify names the row edited with SQL', async (t) => {
  const db = await createTestDatabase(t)
  const env = { DATABASE_URL: db.url }
  const orgId = await testOrgId(db)
  const { keyId } = await insertUserWithKey(db, { organizationId: orgId })

  const verified = await audit(env, 'verify')
  t.equal(verified.code, 0, verified.stderr)
  t.match(verified.stdout, /^ok: \d+ events verified/)

  const listed = await audit(env, 'list', '--key', keyId, '--json')
  t.equal(listed.code, 0, listed.stderr)
  t.same(JSON.parse(listed.stdout).events.map((e: { action: string }) => e.action), ['key.created'])
  const human = await audit(env, 'list', '--action', 'key.created', '--limit', '2')
  t.match(human.stdout, /\tkey\.created\tdatabase:/)
  t.match(human.stdout, /\(more: --cursor \d+\)/)

  const { rows: [{ at }] } = await db.pool.query<{ at: Date }>('SELECT at FROM audit_events WHERE key_id = $1', [keyId])
  const pruned = await audit(env, 'prune', '--before', at.toISOString())
  t.equal(pruned.code, 0, pruned.stderr)
  t.match(pruned.stdout, /^pruned \d+ events recorded before/)
  t.equal((await audit(env, 'verify')).code, 0, 'the pruned chain still verifies')

  const { rows: [victim] } = await db.pool.query<{ id: string, seq: string }>('SELECT id, seq::text FROM audit_events WHERE key_id = $1', [keyId])
  const client = await db.pool.connect()
  try {
    await client.query('BEGIN')
    await client.query('ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only')
    await client.query('UPDATE audit_events SET changes = NULL WHERE id = $1', [victim.id])
    await client.query('ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only')
    await client.query('COMMIT')
  } finally {
    client.release()
  }
  const broken = await audit(env, 'verify')
  t.equal(broken.code, 1)
  t.match(broken.stdout, `BROKEN at seq ${victim.seq} (event ${victim.id})`)

  const bad = await audit(env, 'prune')
  t.equal(bad.code, 1)
  t.match(bad.stderr, /prune needs --before/)
  const future = await audit(env, 'prune', '--before', '2099-01-01T00:00:00Z')
  t.equal(future.code, 1, 'a date in the future is refused (it would delete the whole trail)')
  t.match(future.stderr, /in the future/)
  t.equal((await audit(env, 'list', '--key', 'nope')).code, 1)
  t.equal((await audit(env, 'explode')).code, 1)
})

if (serverUrl === undefined) {
  t.test('on an embedded folder with no database, the audit commands refuse and create nothing', async (t) => {
    const parent = await mkdtemp(join(tmpdir(), 'battra-audit-'))
    t.teardown(() => rm(parent, { recursive: true, force: true }))
    const dataDir = join(parent, 'mistyped')
    for (const args of [['verify'], ['list']]) {
      const run = await audit({ DATABASE_URL: '', EMBEDDED_DATA_DIR: dataDir, EMBEDDED_DB_PORT: '0' }, ...args)
      t.equal(run.code, 1, args[0])
      t.equal(run.stderr.trim(), `error: there is no database in ${dataDir} (EMBEDDED_DATA_DIR): set EMBEDDED_DATA_DIR to the service's data folder, or DATABASE_URL; nothing was created`)
      t.equal(run.stdout, '', 'and says nothing of a trail')
    }
    t.same(await readdir(parent), [], 'no folder, no lock left')
  })
}
