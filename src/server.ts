// Starts the service; everything else is in src/app.ts.
import closeWithGrace from 'close-with-grace'
import Fastify from 'fastify'
import fp from 'fastify-plugin'
import battraAuthService, { serverOptions } from './app.ts'
import { ConfigError, loadConfig, type Config } from './config.ts'

let config: Config
try {
  config = loadConfig()
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  console.error(error.message)
  process.exit(1)
}

const app = Fastify(serverOptions(config))
app.register(fp(battraAuthService), { config })

// SIGTERM/SIGINT: stop accepting, let in-flight requests finish, flush usage, close the database.
closeWithGrace({ delay: config.shutdownTimeoutMs }, async ({ signal, err }) => {
  if (err !== undefined) app.log.error({ err }, 'closing after an uncaught error')
  else app.log.info({ signal }, 'closing')
  await app.close()
})

try {
  await app.listen({ host: config.host, port: config.port })
} catch (error) {
  app.log.error({ err: error }, 'could not start')
  await app.close().catch(() => {})
  process.exit(1)
}
