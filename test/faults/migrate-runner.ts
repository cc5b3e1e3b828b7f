// A migrator in a process of its own, so that a test can kill it in the middle of a migration:
//   node --conditions=battra-source --import tsx test/faults/migrate-runner.ts <database url> <migrations dir>
// Prints {"applied":[...]} and exits 0, or prints the error and exits 1.
import { migrate } from '#src/db/migrate.ts'
import { createPool } from '#src/db/pool.ts'

const [url, dir] = process.argv.slice(2)
const pool = createPool({ url, max: 1, connectTimeoutMs: 5000, statementTimeoutMs: 120_000 }, { count: 0 })
try {
  const applied = await migrate(pool, dir, (message) => console.error(message))
  console.log(JSON.stringify({ applied }))
} catch (error) {
  console.error(`migrate failed: ${error instanceof Error ? error.message : String(error)}`)
  process.exitCode = 1
} finally {
  await pool.end()
}
