// Waiting on what may never answer (a database that stopped responding), for a bounded time.

/**
 * Resolves true when `promise` settles (either way) within `ms`, false when it has not by then; the
 * promise's own rejection is the caller's to handle.
 */
export async function settledWithin (promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<false>((resolve) => { timer = setTimeout(resolve, Math.max(0, ms), false) })
  try {
    return await Promise.race([promise.then(() => true, () => true), late])
  } finally {
    clearTimeout(timer)
  }
}
