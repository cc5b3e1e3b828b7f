// Listens on the invalidation channel for one instance: reconnects with jittered backoff, checks its
// connection with a heartbeat, skips the echo of its own broadcasts, and tells its owner when changes stop
// being pushed (so that the cache trusts its entries only briefly) and when they are pushed again (so
// that it forgets everything missed meanwhile). The client and the timers are injected: it is tested
// without PostgreSQL.
import type { Static } from 'typebox'
import type { ListenerStatsSchema } from '#src/schemas/cache.ts'
import { settledWithin } from '#src/settled-within.ts'
import { INVALIDATION_CHANNEL, parseInvalidation, type InvalidationMessage } from './invalidation.ts'

/** What the listener needs of a pg.Client. */
export interface ListenerClient {
  connect: () => Promise<unknown>
  query: (text: string, values?: unknown[]) => Promise<{ rows: Array<Record<string, unknown>> }>
  end: () => Promise<void>
  on: (event: 'notification' | 'error' | 'end', listener: (message?: unknown) => void) => unknown
  removeAllListeners: (event?: string) => unknown
  /** The server process of the session (pg sets it after connecting): own broadcasts carry it. */
  processID?: number | null
  /** pg's socket: dropped when the server does not answer the goodbye. */
  connection?: { stream: { destroy: () => void } }
}

export interface Timers {
  setTimeout: (fn: () => void, ms: number) => unknown
  clearTimeout: (handle: unknown) => void
  setInterval: (fn: () => void, ms: number) => unknown
  clearInterval: (handle: unknown) => void
}

const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
  setInterval: (fn, ms) => setInterval(fn, ms).unref(),
  clearInterval: (handle) => clearInterval(handle as NodeJS.Timeout)
}

/** state 'listening': changes are pushed; 'disconnected': reconnecting; 'unsupported': the database cannot notify (PGlite). */
export type ListenerStats = Static<typeof ListenerStatsSchema>

export interface ListenerLog {
  info: (object: object, message?: string) => void
  warn: (object: object, message?: string) => void
}

export interface InvalidationListenerOptions {
  /** A new, unconnected client for each attempt. */
  createClient: () => ListenerClient
  /** A change announced by the database or another instance (its payload as sent, and as read). */
  onMessage: (message: InvalidationMessage, payload: string) => void
  /** Changes are pushed again: whatever was missed while nobody listened must be forgotten. */
  onListening: () => void
  /** Changes are no longer pushed. */
  onDisconnected: () => void
  reconnectMinMs: number
  reconnectMaxMs: number
  heartbeatMs: number
  /** How long stop waits for the server to answer the goodbye before dropping the connection (default 2 s). */
  closeTimeoutMs?: number
  log: ListenerLog
  now?: () => number
  random?: () => number
  timers?: Timers
}

export class InvalidationListener {
  private client: ListenerClient | undefined
  private closing = false
  private supported = true
  private attempt = 0
  private reconnectTimer: unknown
  private heartbeat: unknown
  private connecting: Promise<void> | undefined
  private notifications = 0
  private connections = 0
  private disconnectedSince: number | null
  private readonly now: () => number
  private readonly random: () => number
  private readonly timers: Timers

  constructor (private readonly options: InvalidationListenerOptions) {
    this.now = options.now ?? Date.now
    this.random = options.random ?? Math.random
    this.timers = options.timers ?? realTimers
    this.disconnectedSince = this.now()
  }

  /** The first connection attempt; later ones follow by themselves. */
  async start (): Promise<void> {
    // A connection can die silently (a network that drops packets): a regular query finds out.
    this.heartbeat = this.timers.setInterval(() => {
      const current = this.client
      current?.query('SELECT 1').catch(() => this.lost(current))
    }, this.options.heartbeatMs)
    await this.connect()
  }

  /** Connects now instead of on the backoff's schedule (the database was just seen answering). */
  reconnectNow (): void {
    if (this.closing || !this.supported || this.client !== undefined || this.connecting !== undefined) return
    if (this.reconnectTimer !== undefined) this.timers.clearTimeout(this.reconnectTimer)
    this.reconnectTimer = undefined
    this.connect().catch(() => this.scheduleReconnect())
  }

  get listening (): boolean {
    return this.client !== undefined
  }

  get isSupported (): boolean {
    return this.supported
  }

  /** Sends a payload on the channel; on the listener's own session when it is up, so that its echo is skipped. */
  async publish (payload: string, fallback: { query: (text: string, values: unknown[]) => Promise<unknown> }): Promise<void> {
    await (this.client ?? fallback).query('SELECT pg_notify($1, $2)', [INVALIDATION_CHANNEL, payload])
  }

  private connect (): Promise<void> {
    this.connecting ??= this.attemptConnection().finally(() => { this.connecting = undefined })
    return this.connecting
  }

  private async attemptConnection (): Promise<void> {
    this.reconnectTimer = undefined
    const candidate = this.options.createClient()
    candidate.on('notification', (message) => {
      const { processId, payload } = message as { processId?: number, payload?: string }
      // Our own broadcasts are sent on this session and were applied locally when sent.
      if (processId !== undefined && processId === candidate.processID) return
      this.notifications++
      this.options.onMessage(parseInvalidation(payload ?? 'all'), payload ?? 'all')
    })
    candidate.on('error', () => this.lost(candidate))
    candidate.on('end', () => this.lost(candidate))
    try {
      await candidate.connect()
      // A PGlite socket server reached by URL accepts LISTEN but never delivers: do not pretend.
      const { rows } = await candidate.query('SELECT version()')
      if (String(rows[0]?.version).includes('PGlite')) {
        this.supported = false
        this.timers.clearInterval(this.heartbeat)
        candidate.removeAllListeners('end')
        await candidate.end().catch(() => {})
        this.options.log.info({}, 'the database is PGlite, which cannot notify: cache entries are trusted only for AUTH_CACHE_UNVERIFIED_TTL_MS')
        return
      }
      await candidate.query(`LISTEN ${INVALIDATION_CHANNEL}`)
    } catch (error) {
      candidate.removeAllListeners('end')
      candidate.end().catch(() => {})
      if (this.attempt === 0) this.options.log.warn({ err: error }, 'invalidation listener could not connect; retrying')
      this.scheduleReconnect()
      return
    }
    if (this.closing) {
      await candidate.end().catch(() => {})
      return
    }
    this.connections++
    this.client = candidate
    this.attempt = 0
    const downMs = this.disconnectedSince === null ? 0 : this.now() - this.disconnectedSince
    this.disconnectedSince = null
    this.options.onListening()
    this.options.log.info({ downMs }, 'invalidation listener connected; cache flushed')
  }

  private lost (lostClient: ListenerClient): void {
    if (this.client !== lostClient) return
    this.client = undefined
    this.disconnectedSince = this.now()
    this.options.onDisconnected()
    lostClient.end().catch(() => {})
    if (this.closing) return
    this.options.log.warn({}, 'invalidation listener disconnected; trusting cache entries only briefly until it is back')
    this.scheduleReconnect()
  }

  private scheduleReconnect (): void {
    if (this.closing || this.reconnectTimer !== undefined) return
    const backoff = Math.min(this.options.reconnectMaxMs, this.options.reconnectMinMs * 2 ** this.attempt)
    this.attempt++
    // Jitter spreads a fleet's reconnections after a database restart.
    this.reconnectTimer = this.timers.setTimeout(() => {
      this.connect().catch(() => this.scheduleReconnect())
    }, backoff * (0.5 + this.random() / 2))
  }

  stats (): ListenerStats {
    return {
      state: !this.supported ? 'unsupported' : this.client !== undefined ? 'listening' : 'disconnected',
      notifications: this.notifications,
      reconnects: Math.max(0, this.connections - 1),
      disconnectedSince: this.disconnectedSince === null || !this.supported ? null : new Date(this.disconnectedSince).toISOString()
    }
  }

  async stop (): Promise<void> {
    this.closing = true
    this.timers.clearInterval(this.heartbeat)
    if (this.reconnectTimer !== undefined) this.timers.clearTimeout(this.reconnectTimer)
    await this.connecting?.catch(() => {})
    const current = this.client
    this.client = undefined
    if (current === undefined) return
    // pg waits forever for the goodbye of a server that stopped answering; closing must not.
    const ended = current.end().catch(() => {})
    if (!await settledWithin(ended, this.options.closeTimeoutMs ?? 2000)) current.connection?.stream.destroy()
  }
}
