// From the moment the process's modules run until the service listens, a SIGTERM or SIGINT ends the start: one warn
// line on stdout, written at once in the log's format (the logger may not exist yet, and pino writes
// later), then the signal's own exit. Such a signal during the imports, the database's first start or the
// plugins' loading left no line at all, or a "Server listening" after "closing" (found by outside
// probes). What the start had done is resumable (README, Failure and recovery).
import { hostname } from 'node:os'

const QUIET_LEVELS = new Set(['error', 'fatal', 'silent'])

function interruptedStart (signal: NodeJS.Signals): void {
  if (!QUIET_LEVELS.has(process.env.LOG_LEVEL ?? '')) {
    const line = { level: 40, time: Date.now(), pid: process.pid, hostname: hostname(), signal, msg: 'start-up interrupted: exiting; the next start resumes it' }
    process.stdout.write(`${JSON.stringify(line)}\n`)
  }
  process.kill(process.pid, signal)
}
process.once('SIGTERM', interruptedStart)
process.once('SIGINT', interruptedStart)

/** The service listens: from now on its graceful shutdown answers signals. */
export function startIsOver (): void {
  process.off('SIGTERM', interruptedStart)
  process.off('SIGINT', interruptedStart)
}
