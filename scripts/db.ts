// npm run db:migrate | db:seed — on PostgreSQL (DATABASE_URL) or the embedded database.
import { loadConfig, ConfigError } from '#src/config.ts'
import { migrate } from '#src/db/migrate.ts'
import { seedDevPersonas, PERSONAS } from '#src/db/seed.ts'
import { connectForTools } from '#src/db/tool-connection.ts'

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

const { pool, prisma, where, close } = await connectForTools(config)
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
  await close()
}
