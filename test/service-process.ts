// Runs the service as a real process (`npm start` without npm), for tests whose subject is the process.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

export interface ServiceProcess {
  child: ChildProcess
  baseUrl: string
  /** The embedded database's URL, when it runs on one. */
  databaseUrl: string | undefined
  output: () => string
  /** Sends the signal and resolves with the exit code (null when it had to be killed). */
  stop: (signal?: NodeJS.Signals, timeoutMs?: number) => Promise<number | null>
}

/** `node src/server.ts` on the embedded default unless env says otherwise, on a free port. */
function spawnService (env: Record<string, string>, nodeArgs: string[] = []): { child: ChildProcess, output: () => string } {
  const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', '--require', 'tsx/cjs', 'src/server.ts'], {
    cwd: ROOT,
    env: { ...process.env, DATABASE_URL: '', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout!.on('data', (chunk) => { output += chunk })
  child.stderr!.on('data', (chunk) => { output += chunk })
  return { child, output: () => output }
}

export async function startService (env: Record<string, string>, options: { nodeArgs?: string[], timeoutMs?: number } = {}): Promise<ServiceProcess> {
  const timeoutMs = options.timeoutMs ?? 30_000
  const { child, output: read } = spawnService(env, options.nodeArgs)
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
export async function runServiceToExit (env: Record<string, string>): Promise<{ code: number | null, output: string }> {
  const { child, output } = spawnService(env)
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
  const [code] = await once(child, 'exit')
  clearTimeout(timer)
  return { code: code as number | null, output: output() }
}
