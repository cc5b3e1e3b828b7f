// Starts the service; everything else is in src/app.ts.
// First: it must hold the shape before the other imports allocate (src/tick-object-shape.ts).
import './tick-object-shape.ts'
import closeWithGrace from 'close-with-grace'
import fp from 'fastify-plugin'
import battraAuthService, { createFastify } from './app.ts'
import { ConfigError, loadConfig, type Config } from './config.ts'
import { openDatabase, type Database } from './db/database.ts'
import { startDraining } from './http-server.ts'

let config: Config
try {
  config = loadConfig()
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  console.error(error.message)
  process.exit(1)
}

const app = createFastify(config)

// Opened before the plugins load: a first start of the embedded database on a busy machine may take
// longer than any plugin should, and what it does (lock, create, migrate, seed) is bounded and resumable.
let database: Database
try {
  database = await openDatabase(config, app.log)
} catch (error) {
  app.log.error({ err: error }, `could not open the database: ${error instanceof Error ? error.message : String(error)}`)
  process.exit(1)
}
app.register(fp(battraAuthService), { config, database })

// SIGTERM/SIGINT: stop accepting, answer kept-alive clients 503 with Connection: close, let in-flight
// requests finish, flush usage, close the database.
closeWithGrace({ delay: config.shutdownTimeoutMs }, async ({ signal, err }) => {
  if (err !== undefined) app.log.error({ err }, 'closing after an uncaught error')
  else app.log.info({ signal }, 'closing')
  startDraining(app.server)
  await app.close()
})

try {
  await app.listen({ host: config.host, port: config.port })
} catch (error) {
  app.log.error({ err: error }, 'could not start')
  await app.close().catch(() => {})
  process.exit(1)
}
