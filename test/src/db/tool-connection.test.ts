// The command-line tools' connection to an embedded data folder: what it says when it creates the database.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { loadConfig } from '#src/config.ts'
import { connectForTools } from '#src/db/tool-connection.ts'

/** What `fn` wrote with console.error, kept from the test's own output. */
async function stderrOf (fn: () => Promise<void>): Promise<string[]> {
  const said: string[] = []
  const original = console.error
  console.error = (...args: unknown[]) => { said.push(args.join(' ')) }
  try {
    await fn()
  } finally {
    console.error = original
  }
  return said
}

t.test('a folder meant to be new (the benchmark\'s) is created quietly; the note is for a folder that may be the wrong one', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'battra-tool-'))
  t.teardown(() => Promise.all([rm(dataDir, { recursive: true, force: true }), rm(`${dataDir}.lock`, { force: true })]))
  const config = loadConfig({ DATABASE_URL: '', EMBEDDED_DATA_DIR: dataDir })
  const said = await stderrOf(async () => {
    const connection = await connectForTools(config, { create: 'quietly' })
    t.same((await connection.pool.query('SELECT count(*)::int AS n FROM organizations')).rows, [{ n: 1 }], 'created, migrated and seeded')
    await connection.close()
  })
  t.same(said, [], 'nothing said on stderr')
})
