// Coalesces key uses in memory and writes them in one statement per interval, never on the request path.
import { settledWithin } from '#src/settled-within.ts'

export type UsageWriter = (uses: ReadonlyMap<string, number>) => Promise<void>

export interface UsageTrackerOptions {
  write: UsageWriter
  intervalMs: number
  onError: (error: unknown, pendingKeys: number) => void
  /** Called after each successful write with the number of keys it carried. */
  onFlushed?: (keys: number) => void
}

/** What stop could not write by its deadline: the uses themselves, and the last failure. */
export interface UnwrittenUsage {
  uses: ReadonlyMap<string, number>
  error: unknown
}

export class UsageTracker {
  // keyId → latest use (ms since epoch). Only the latest matters: last_used_at only moves forward.
  private pending = new Map<string, number>()
  // The batch a write is carrying: not pending, not yet written.
  private inFlight: ReadonlyMap<string, number> | undefined
  private timer: NodeJS.Timeout | undefined
  private flushing: Promise<void> | undefined
  flushes = 0
  lastFlushSize = 0

  constructor (private readonly options: UsageTrackerOptions) {}

  get pendingKeys (): number {
    return this.pending.size
  }

  /** A write sent and not yet answered: its statement is counted, its flush not yet. */
  get writing (): boolean {
    return this.inFlight !== undefined
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
    this.inFlight = batch
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
    ).finally(() => {
      this.flushing = undefined
      this.inFlight = undefined
    })
    return this.flushing
  }

  /**
   * Stops the timer and writes what is left, retrying a failing database until `giveUpAt` (ms since
   * epoch). A write still unanswered then is not waited for: a hung database must not hold the
   * shutdown past its own deadline. Resolves with what was not written (undefined when all was).
   */
  async stop (giveUpAt: number, retryEveryMs = 250): Promise<UnwrittenUsage | undefined> {
    clearInterval(this.timer)
    this.timer = undefined
    for (;;) {
      const flushing = this.flush()
      let failure: unknown
      if (!await settledWithin(flushing, giveUpAt - Date.now())) {
        flushing.catch(() => {}) // answered after the deadline: nobody waits for it any more
        failure = new Error('the usage write was still unanswered at the shutdown deadline')
      } else {
        try {
          await flushing
          return undefined
        } catch (error) {
          failure = error
        }
      }
      if (Date.now() + retryEveryMs > giveUpAt) return { uses: this.unwritten(), error: failure }
      await new Promise((resolve) => setTimeout(resolve, retryEveryMs))
    }
  }

  /** Every use not yet in the database: pending, and carried by a write not yet answered. */
  unwritten (): Map<string, number> {
    const uses = new Map(this.inFlight)
    for (const [keyId, at] of this.pending) {
      const carried = uses.get(keyId)
      if (carried === undefined || carried < at) uses.set(keyId, at)
    }
    return uses
  }
}
