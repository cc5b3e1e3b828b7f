// The embedded database's socket shares PGlite's one session between connections. Transactions and
// parameterised statements from several connections at once must neither mix (another connection's
// Parse between one's Parse and Bind: "portal \"\" cannot be run", rows of another query) nor stall.
import pg from 'pg'
import t from 'tap'
import { openEmbeddedDatabase } from '#src/db/embedded.ts'

t.test('concurrent transactions and parameterised statements over several connections', async (t) => {
  const embedded = await openEmbeddedDatabase({ dataDir: 'memory://', host: '127.0.0.1', port: 0 })
  t.teardown(() => embedded.stop())
  const pool = new pg.Pool({ connectionString: embedded.url, max: 10, query_timeout: 20_000 })
  t.teardown(() => pool.end())
  await pool.query('CREATE TABLE items (id int PRIMARY KEY, label text)')
  await pool.query('INSERT INTO items SELECT g, $$item $$ || g FROM generate_series(1, 100) g')

  const errors: string[] = []
  let wrongRows = 0
  const writer = async () => {
    for (let i = 0; i < 40; i++) {
      const client = await pool.connect()
      try {
        await client.query('BEGIN')
        await client.query('UPDATE items SET label = label WHERE id = $1', [1 + (i % 100)])
        await client.query('COMMIT')
      } catch (error) {
        errors.push((error as Error).message)
        await client.query('ROLLBACK').catch(() => {})
      } finally {
        client.release()
      }
    }
  }
  const reader = async (offset: number) => {
    for (let i = 0; i < 40; i++) {
      const id = 1 + ((i + offset) % 100)
      try {
        const { rows } = await pool.query<{ label: string }>('SELECT label FROM items WHERE id = $1', [id])
        if (rows.length !== 1 || rows[0].label !== `item ${id}`) wrongRows++
      } catch (error) {
        errors.push((error as Error).message)
      }
    }
  }
  const inserter = async (base: number) => {
    for (let i = 0; i < 40; i++) {
      try {
        await pool.query('INSERT INTO items VALUES ($1, $2)', [base + i, `new ${base + i}`])
      } catch (error) {
        errors.push((error as Error).message)
      }
    }
  }
  await Promise.all([writer(), writer(), writer(), reader(0), reader(50), inserter(1000), inserter(2000)])
  t.same(errors, [], 'no statement failed')
  t.equal(wrongRows, 0, 'every read got its own rows')
  const { rows } = await pool.query<{ count: number }>('SELECT count(*)::int AS count FROM items WHERE id >= 1000')
  t.equal(rows[0].count, 80, 'every insert is there')
})
