// Starts the service; everything else is in src/app.ts.
// First: it must hold the shape before the other imports allocate (src/tick-object-shape.ts).
import './tick-object-shape.ts'
// Second: a signal while the modules after it run their top-level code is answered too (Node reads every
// module before it runs any: a signal before that ends the process without a line).
import { startIsOver } from './start-signals.ts'
import closeWithGrace from 'close-with-grace'
import fp from 'fastify-plugin'
import battraAuthService, { createFastify } from './app.ts'
import { ConfigError, loadConfig, type Config } from './config.ts'
import { openDatabase, type Database } from './db/database.ts'
import { isDataFolderError } from './db/embedded.ts'
import { startDraining } from './http-server.ts'
import { listenError } from './port-probe.ts'

let config: Config
try {
  config = loadConfig()
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  console.error(error.message)
  process.exit(1)
}

const app = createFastify(config)

/**
 * A start that fails says why, whatever LOG_LEVEL hides: at `fatal` or `silent` the reason goes to stderr
 * as one line, as a bad configuration does (found by an outside probe: an exit 1 with no output at all).
 */
function startFailed (error: unknown, reason: string, explained = isDataFolderError(error)): never {
  // A failure the reason explains (a setting to change) is that one line; an unforeseen one keeps its stack,
  // for a bug report (found by an outside probe: the folder's plain message came with internal frames).
  if (explained) app.log.error(reason)
  else app.log.error({ err: error }, reason)
  if (config.logLevel === 'fatal' || config.logLevel === 'silent') console.error(reason)
  process.exit(1)
}

/** A listen error whose reason names the setting to change; the others keep their stack in the log. */
function listenFailed (error: unknown): never {
  const explained = explainedListenFailure(error)
  return startFailed(error, explained ?? `could not start: ${error instanceof Error ? error.message : String(error)}`, explained !== undefined)
}

/** What a listen error means, in the settings an operator can change; undefined for one it cannot explain. */
function explainedListenFailure (error: unknown): string | undefined {
  const code = (error as NodeJS.ErrnoException).code
  const where = `PORT ${config.port} on HOST ${config.host}`
  if (code === 'EADDRINUSE') return `could not start: ${where} is already in use (another service, or another battra-auth): set PORT to a free port, or to 0 to take any free one`
  if (code === 'EACCES') return `could not start: ${where} needs privileges this process does not have: set PORT above 1023`
  const setHost = 'set HOST to an address of this machine (127.0.0.1, or 0.0.0.0 for every interface)'
  if (code === 'EADDRNOTAVAIL') return `could not start: HOST ${config.host} is not an address of this machine: ${setHost}`
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `could not start: HOST ${config.host} does not resolve to an address: ${setHost}`
  return undefined
}

// A taken PORT or a HOST not of this machine is said at once, before the database's slow first start.
const listenProblem = await listenError(config.host, config.port)
if (listenProblem !== undefined) listenFailed(listenProblem)

// Opened before the plugins load: a first start of the embedded database on a busy machine may take
// longer than any plugin should, and what it does (lock, create, migrate, seed) is bounded and resumable.
let database: Database
try {
  database = await openDatabase(config, app.log)
} catch (error) {
  startFailed(error, `could not open the database: ${error instanceof Error ? error.message : String(error)}`)
}
app.register(fp(battraAuthService), { config, database })

// Once listening, SIGTERM/SIGINT: stop accepting, answer kept-alive clients 503 with Connection: close, let in-flight
// requests finish, flush usage, close the database.
// Cut short (SHUTDOWN_TIMEOUT_MS reached, or a second signal), it exits at once: the key usage not yet
// written is logged first, so that it is recorded somewhere (found by an outside probe: it was lost
// without a line when other closing steps waited on a hung database).
function cutShort (reason: string): void {
  app.log.error(`shutdown cut short: ${reason}; exiting`)
  // What is still to be done and will not be (the key usage not written, leak reports not acted on).
  if (app.hasDecorator('shutdown')) app.shutdown.cutShort(reason)
}
try {
  await app.listen({ host: config.host, port: config.port })
} catch (error) {
  await app.close().catch(() => {})
  listenFailed(error)
}

startIsOver()
closeWithGrace({
  delay: config.shutdownTimeoutMs,
  onTimeout: (delay) => cutShort(`still closing after SHUTDOWN_TIMEOUT_MS (${delay} ms)`),
  onSecondSignal: (signal) => cutShort(`a second signal (${signal})`)
}, async ({ signal, err }) => {
  const began = Date.now()
  if (err !== undefined) app.log.error({ err }, 'closing after an uncaught error')
  else app.log.info({ signal }, 'closing')
  startDraining(app.server)
  await app.close()
  // The operator's sign that the shutdown ended by itself: a cut-short one ends on its error line instead.
  app.log.info({ durationMs: Date.now() - began }, 'stopped')
})
