// npm run db:migrate | db:seed — for PostgreSQL (DATABASE_URL) or the embedded database.
// On the embedded database, run these while the service is stopped, or use the service, which
// migrates and seeds the embedded database itself.
import { loadConfig, ConfigError } from '../src/config.ts'
import { createPool, createPrisma } from '../src/database.ts'
import { startEmbeddedDatabase } from '../src/embedded-database.ts'
import { migrate } from '../src/migrate.ts'
import { seedDevPersonas, PERSONAS } from '../src/seed.ts'

const command = process.argv[2]
if (command !== 'migrate' && command !== 'seed') {
  console.error('usage: db.ts migrate|seed')
  process.exit(2)
}

let config
try {
  config = loadConfig()
} catch (error) {
  console.error(error instanceof ConfigError ? error.message : error)
  process.exit(1)
}

const embedded = config.databaseUrl === undefined
  ? await startEmbeddedDatabase({ ...config.embedded, port: 0 })
  : undefined
const pool = createPool({
  url: config.databaseUrl ?? embedded!.url,
  max: 2,
  connectTimeoutMs: config.databaseConnectTimeoutMs,
  statementTimeoutMs: 120_000
}, { count: 0 })
const prisma = createPrisma(pool)
const where = embedded === undefined ? 'PostgreSQL' : `the embedded database in ${config.embedded.dataDir}`

try {
  if (command === 'migrate') {
    const applied = await migrate(pool)
    console.log(applied.length === 0 ? `${where}: no pending migrations` : `${where}: applied ${applied.join(', ')}`)
  } else {
    await migrate(pool)
    await seedDevPersonas(prisma)
    console.log(`${where}: seeded the dev personas (${PERSONAS.map((p) => p.key).join(', ')})`)
  }
} catch (error) {
  console.error(`${command} failed: ${error instanceof Error ? error.message : String(error)}`)
  process.exitCode = 1
} finally {
  await prisma.$disconnect()
  await pool.end()
  await embedded?.stop()
}
