// Real processes for the fault tests: spawned, watched through their output, killed where a test
// chooses, and always killed at teardown. Every wait has a deadline.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { PACKAGE_ROOT } from '#src/paths.ts'
import type { Teardown } from '#test/helpers/database.ts'

export interface Watched {
  child: ChildProcess
  output: () => string
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>
  /** Resolves with the first match of `pattern` in the output; rejects at the deadline or if the process exits first. */
  waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<RegExpMatchArray>
  /** SIGKILL, resolved once the process is gone. */
  kill: () => Promise<void>
}

export function watch (t: Teardown, { child, output }: { child: ChildProcess, output: () => string }): Watched {
  const exited = child.exitCode !== null
    ? Promise.resolve(child.exitCode)
    : once(child, 'exit').then(([code]) => code as number | null)
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  }
  t.teardown(kill)
  const waitFor = async (pattern: RegExp, timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const match = pattern.exec(output())
      if (match !== null) return match
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`exited before ${pattern}:\n${output()}`)
      if (Date.now() > deadline) throw new Error(`no ${pattern} within ${timeoutMs} ms:\n${output()}`)
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  }
  return { child, output, exited, waitFor, kill }
}

/** A TypeScript script of this package in its own node process (as `npm run` would run it). */
export function spawnScript (t: Teardown, args: string[], env: Record<string, string> = {}, nodeArgs: string[] = []): Watched {
  const child = spawn(process.execPath, [...nodeArgs, '--conditions=battra-source', '--import', 'tsx', ...args], {
    cwd: PACKAGE_ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout!.on('data', (chunk) => { output += chunk })
  child.stderr!.on('data', (chunk) => { output += chunk })
  return watch(t, { child, output: () => output })
}

/** Runs a script to its end (killed after `timeoutMs`); code and output. */
export async function runScript (t: Teardown, args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<{ code: number | null, output: string }> {
  const script = spawnScript(t, args, env)
  const timer = setTimeout(() => { script.child.kill('SIGKILL') }, timeoutMs)
  const code = await script.exited
  clearTimeout(timer)
  return { code, output: script.output() }
}
