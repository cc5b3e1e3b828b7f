// Counts failed authentications per client in fixed windows. Memory is bounded: past maxClients, the
// client seen least recently is forgotten first (lru-cache: O(1) per failure even when full, where a
// Map evicting its oldest key slows down with the table under a flood of addresses).
import { LRUCache } from 'lru-cache'

interface Window {
  failures: number
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
    if (window === undefined || window.failures < this.options.limit) return 0
    if (window.endsAt <= now) {
      this.windows.delete(client)
      return 0
    }
    return Math.ceil((window.endsAt - now) / 1000)
  }

  recordFailure (client: string, now: number): void {
    const window = this.windows.get(client)
    if (window === undefined || window.endsAt <= now) {
      this.windows.set(client, { failures: 1, endsAt: now + this.options.windowMs })
    } else {
      window.failures++
    }
  }
}
