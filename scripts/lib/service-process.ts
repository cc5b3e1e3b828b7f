// Runs the service as a real process, for tests and the benchmark: from the sources (through tsx) or
// compiled (`npm start` without npm: plain node on dist/, built first when stale).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { PACKAGE_ROOT as ROOT } from '#src/paths.ts'

export interface StartOptions {
  nodeArgs?: string[]
  timeoutMs?: number
  /** Run dist/src/server.js with plain node, as `npm start` does. */
  compiled?: boolean
}

/** Rebuilds dist/ when a source is newer (scripts/build-if-stale.mjs); once per process. */
let built = false
export function ensureBuilt (): void {
  if (built) return
  const result = spawnSync(process.execPath, ['scripts/build-if-stale.mjs'], { cwd: ROOT, stdio: 'inherit' })
  if (result.status !== 0) throw new Error('the build failed')
  built = true
}

export interface ServiceProcess {
  child: ChildProcess
  baseUrl: string
  /** The embedded database's URL, when it runs on one. */
  databaseUrl: string | undefined
  output: () => string
  /** Sends the signal and resolves with the exit code (null when it had to be killed). */
  stop: (signal?: NodeJS.Signals, timeoutMs?: number) => Promise<number | null>
}

/**
 * The service on the embedded default unless env says otherwise, on a free port; not waited for (fault
 * tests watch its output and kill it where they choose).
 */
export function spawnService (env: Record<string, string>, options: StartOptions = {}): { child: ChildProcess, output: () => string } {
  if (options.compiled === true) ensureBuilt()
  const entry = options.compiled === true ? ['dist/src/server.js'] : ['--conditions=battra-source', '--import', 'tsx', '--require', 'tsx/cjs', 'src/server.ts']
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), ...entry], {
    cwd: ROOT,
    env: { ...process.env, DATABASE_URL: '', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout!.on('data', (chunk) => { output += chunk })
  child.stderr!.on('data', (chunk) => { output += chunk })
  return { child, output: () => output }
}

export async function startService (env: Record<string, string>, options: StartOptions = {}): Promise<ServiceProcess> {
  const timeoutMs = options.timeoutMs ?? 60_000
  const { child, output: read } = spawnService(env, options)
  const exited = once(child, 'exit')
  const deadline = Date.now() + timeoutMs
  let listening: RegExpMatchArray | null = null
  while ((listening = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(read())) === null) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`service did not start:\n${read()}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const embedded = /"url":"(postgresql:\/\/[^"]+)","msg":"embedded PostgreSQL/.exec(read())
  return {
    child,
    baseUrl: listening[1],
    databaseUrl: embedded?.[1],
    output: read,
    async stop (signal = 'SIGTERM', stopTimeoutMs = 20_000) {
      if (child.exitCode !== null) return child.exitCode
      child.kill(signal)
      const timer = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs)
      const [code] = await exited
      clearTimeout(timer)
      return code as number | null
    }
  }
}

/** Runs the service expecting it to exit by itself (bad configuration); returns code and output. */
export async function runServiceToExit (env: Record<string, string>, options: StartOptions = {}): Promise<{ code: number | null, output: string }> {
  const { child, output } = spawnService(env, options)
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 20_000)
  const [code] = await once(child, 'exit')
  clearTimeout(timer)
  return { code: code as number | null, output: output() }
}
