// Counts failed authentications per client in fixed windows, and the lookups a client has under way, so
// that a burst of parallel guesses cannot start more lookups than the budget allows. Memory is bounded:
// past maxClients, the client seen least recently is forgotten first (lru-cache: O(1) per failure even
// when full, where a Map evicting its oldest key slows down with the table under a flood of addresses).
import { LRUCache } from 'lru-cache'

interface Window {
  failures: number
  /** Lookups started for this client and not finished: each may become a failure. */
  pending: number
  endsAt: number
}

export interface FailureLimiterOptions {
  /** Failures allowed per window; the next attempt is refused. */
  limit: number
  windowMs: number
  maxClients: number
}

export class FailureLimiter {
  private readonly windows: LRUCache<string, Window>

  constructor (private readonly options: FailureLimiterOptions) {
    this.windows = new LRUCache<string, Window>({ max: options.maxClients })
  }

  get trackedClients (): number {
    return this.windows.size
  }

  /** Seconds until the client may try again, or 0 when it may try now. */
  retryAfterSeconds (client: string, now: number): number {
    const window = this.windows.peek(client)
    if (window === undefined) return 0
    if (window.endsAt <= now) {
      window.failures = 0
      window.endsAt = now + this.options.windowMs
    }
    if (window.failures + window.pending < this.options.limit) return 0
    return Math.max(1, Math.ceil((window.endsAt - now) / 1000))
  }

  /** A lookup starts for the client: it counts against the budget until it ends. */
  beginLookup (client: string, now: number): void {
    this.windowOf(client, now).pending++
  }

  /** The lookup ended; `failed` when it ended in a failed authentication. */
  endLookup (client: string, failed: boolean, now: number): void {
    const window = this.windows.get(client)
    if (window === undefined) {
      if (failed) this.recordFailure(client, now)
      return
    }
    window.pending = Math.max(0, window.pending - 1)
    if (failed) this.recordFailure(client, now)
    else if (window.pending === 0 && window.failures === 0) this.windows.delete(client)
  }

  recordFailure (client: string, now: number): void {
    const window = this.windowOf(client, now)
    if (window.endsAt <= now) {
      window.failures = 0
      window.endsAt = now + this.options.windowMs
    }
    window.failures++
  }

  private windowOf (client: string, now: number): Window {
    let window = this.windows.get(client)
    if (window === undefined) {
      window = { failures: 0, pending: 0, endsAt: now + this.options.windowMs }
      this.windows.set(client, window)
    }
    return window
  }
}
