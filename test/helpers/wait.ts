// Waiting for something to happen, not for time to pass.

/** Polls `check` until it holds; returns the milliseconds it took, or throws after `timeoutMs`. */
export async function until (check: () => boolean | Promise<boolean>, timeoutMs = 3000, what = 'condition'): Promise<number> {
  const started = performance.now()
  while (!(await check())) {
    if (performance.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
  return performance.now() - started
}

/** For the few tests whose subject is real time passing (a process's timers, a real server's TTL). */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Whether `check` comes to hold within `timeoutMs`: for assertions (`t.ok(await eventually(...))`). */
export async function eventually (check: () => boolean | Promise<boolean>, timeoutMs = 3000): Promise<boolean> {
  return until(check, timeoutMs).then(() => true, () => false)
}
