// Counts failed authentications per client in fixed windows. Memory is bounded: past maxClients, the
// client seen least recently is forgotten first.

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
  private readonly windows = new Map<string, Window>()

  constructor (private readonly options: FailureLimiterOptions) {}

  get trackedClients (): number {
    return this.windows.size
  }

  /** Seconds until the client may try again, or 0 when it may try now. */
  retryAfterSeconds (client: string, now: number): number {
    const window = this.windows.get(client)
    if (window === undefined || window.failures < this.options.limit) return 0
    if (window.endsAt <= now) {
      this.windows.delete(client)
      return 0
    }
    return Math.ceil((window.endsAt - now) / 1000)
  }

  recordFailure (client: string, now: number): void {
    let window = this.windows.get(client)
    if (window === undefined || window.endsAt <= now) {
      window = { failures: 0, endsAt: now + this.options.windowMs }
    }
    window.failures++
    this.windows.delete(client)
    this.windows.set(client, window)
    if (this.windows.size > this.options.maxClients) {
      this.windows.delete(this.windows.keys().next().value as string)
    }
  }
}
