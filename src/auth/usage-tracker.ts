// Coalesces key uses in memory and writes them in one statement per interval, never on the request path.

export type UsageWriter = (uses: ReadonlyMap<string, number>) => Promise<void>

export interface UsageTrackerOptions {
  write: UsageWriter
  intervalMs: number
  onError: (error: unknown, pendingKeys: number) => void
  /** Called after each successful write with the number of keys it carried. */
  onFlushed?: (keys: number) => void
}

export class UsageTracker {
  // keyId → latest use (ms since epoch). Only the latest matters: last_used_at only moves forward.
  private pending = new Map<string, number>()
  private timer: NodeJS.Timeout | undefined
  private flushing: Promise<void> | undefined
  flushes = 0
  lastFlushSize = 0

  constructor (private readonly options: UsageTrackerOptions) {}

  get pendingKeys (): number {
    return this.pending.size
  }

  record (keyId: string, at: number): void {
    const previous = this.pending.get(keyId)
    if (previous === undefined || previous < at) this.pending.set(keyId, at)
  }

  start (): void {
    this.timer ??= setInterval(() => {
      this.flush().catch((error) => this.options.onError(error, this.pending.size))
    }, this.options.intervalMs)
    this.timer.unref()
  }

  /** Writes what is pending; on failure the uses are kept for the next attempt. One flush at a time. */
  async flush (): Promise<void> {
    while (this.flushing !== undefined) await this.flushing
    if (this.pending.size === 0) return
    const batch = this.pending
    this.pending = new Map()
    this.flushing = this.options.write(batch).then(
      () => {
        this.flushes++
        this.lastFlushSize = batch.size
        this.options.onFlushed?.(batch.size)
      },
      (error: unknown) => {
        for (const [keyId, at] of batch) this.record(keyId, at)
        throw error
      }
    ).finally(() => { this.flushing = undefined })
    return this.flushing
  }

  /** Stops the timer and writes what is left, retrying a failing database until the deadline. */
  async stop (deadlineMs = 10_000, retryEveryMs = 250): Promise<void> {
    clearInterval(this.timer)
    this.timer = undefined
    const giveUpAt = Date.now() + deadlineMs
    for (;;) {
      try {
        await this.flush()
        return
      } catch (error) {
        if (Date.now() + retryEveryMs > giveUpAt) throw error
        await new Promise((resolve) => setTimeout(resolve, retryEveryMs))
      }
    }
  }
}
