import fp from 'fastify-plugin'
import pg from 'pg'
import { INVALIDATION_CHANNEL, formatInvalidation, parseInvalidation } from '../../src/invalidation.ts'
import type { InvalidationTarget } from '../../src/key-resolver.ts'

export interface ListenerStats {
  /** 'listening': changes are pushed; 'disconnected': reconnecting; 'unsupported': embedded database. */
  state: 'listening' | 'disconnected' | 'unsupported'
  notifications: number
  reconnects: number
  /** Cache entries older than this are not trusted while nothing pushes changes; null while listening. */
  trustCapMs: number | null
  disconnectedSince: string | null
}

declare module 'fastify' {
  interface FastifyInstance {
    invalidation: {
      /**
       * Forgets what depends on the target here at once, and on every other instance through the
       * database. Resolves with the local count and whether the broadcast went out.
       */
      publish: (target: InvalidationTarget) => Promise<{ flushed: number, broadcast: boolean }>
      stats: () => ListenerStats
    }
  }
}

export default fp(async function invalidation (fastify) {
  const { config, database, apiKeyAuth, log } = fastify
  // PGlite's socket does not carry NOTIFY: there, only the trust cap bounds what outside writers change.
  let supported = database.embedded === undefined
  const { reconnectMinMs, reconnectMaxMs, heartbeatMs } = config.listener
  let client: pg.Client | undefined
  let closing = false
  let attempt = 0
  let reconnectTimer: NodeJS.Timeout | undefined
  let notifications = 0
  let connections = 0
  let disconnectedSince: number | null = Date.now()

  // Until the listener is up, nothing vouches for cached entries beyond the cap.
  apiKeyAuth.setTrustCap(config.cache.unverifiedTtlMs)

  function apply (payload: string): void {
    notifications++
    const message = parseInvalidation(payload)
    if (message.keyAdded) apiKeyAuth.forgetUnknownKeys()
    apiKeyAuth.invalidate(message.target)
  }

  async function connect (): Promise<void> {
    reconnectTimer = undefined
    const candidate = new pg.Client({
      connectionString: database.url,
      application_name: 'battra-auth-listener',
      keepAlive: true,
      keepAliveInitialDelayMillis: heartbeatMs,
      connectionTimeoutMillis: config.databaseConnectTimeoutMs,
      query_timeout: config.databaseStatementTimeoutMs
    })
    candidate.on('notification', (message) => {
      // Our own broadcasts are sent on this session and were applied locally when sent.
      if (message.processId === (candidate as pg.Client & { processID?: number }).processID) return
      apply(message.payload ?? 'all')
    })
    candidate.on('error', () => lost(candidate))
    candidate.on('end', () => lost(candidate))
    try {
      await candidate.connect()
      // A PGlite socket server reached by URL accepts LISTEN but never delivers: do not pretend.
      const { rows } = await candidate.query<{ version: string }>('SELECT version()')
      if (rows[0].version.includes('PGlite')) {
        supported = false
        candidate.removeAllListeners('end')
        await candidate.end().catch(() => {})
        log.info('the database is PGlite, which cannot notify: cache entries are trusted only for AUTH_CACHE_UNVERIFIED_TTL_MS')
        return
      }
      await candidate.query(`LISTEN ${INVALIDATION_CHANNEL}`)
    } catch (error) {
      candidate.removeAllListeners('end')
      candidate.end().catch(() => {})
      if (attempt === 0) log.warn({ err: error }, 'invalidation listener could not connect; retrying')
      scheduleReconnect()
      return
    }
    if (closing) {
      await candidate.end().catch(() => {})
      return
    }
    connections++
    client = candidate
    attempt = 0
    // Changes made while nobody listened were missed: start again from the database.
    const flushed = apiKeyAuth.invalidate({ all: true })
    apiKeyAuth.setTrustCap(undefined)
    log.info({ flushed, downMs: disconnectedSince === null ? 0 : Date.now() - disconnectedSince }, 'invalidation listener connected; cache flushed')
    disconnectedSince = null
  }

  function lost (lostClient: pg.Client): void {
    if (client !== lostClient) return
    client = undefined
    disconnectedSince = Date.now()
    apiKeyAuth.setTrustCap(config.cache.unverifiedTtlMs)
    lostClient.end().catch(() => {})
    if (closing) return
    log.warn({ trustCapMs: config.cache.unverifiedTtlMs }, 'invalidation listener disconnected; trusting cache entries only briefly until it is back')
    scheduleReconnect()
  }

  function scheduleReconnect (): void {
    if (closing || reconnectTimer !== undefined) return
    const backoff = Math.min(reconnectMaxMs, reconnectMinMs * 2 ** attempt)
    attempt++
    // Jitter spreads a fleet's reconnections after a database restart.
    reconnectTimer = setTimeout(() => { connect().catch(() => scheduleReconnect()) }, backoff * (0.5 + Math.random() / 2))
    reconnectTimer.unref()
  }

  // A connection can die silently (a network that drops packets): a regular query finds out.
  const heartbeat = setInterval(() => {
    const current = client
    current?.query('SELECT 1').catch(() => lost(current))
  }, heartbeatMs)
  heartbeat.unref()

  if (supported) await connect()
  if (!supported) clearInterval(heartbeat)

  async function publish (target: InvalidationTarget): Promise<{ flushed: number, broadcast: boolean }> {
    const flushed = apiKeyAuth.invalidate(target)
    if (!supported) return { flushed, broadcast: false }
    try {
      // Sent on the listener's session when it is up, so that its echo is recognised and skipped.
      await (client ?? database.pool).query('SELECT pg_notify($1, $2)', [INVALIDATION_CHANNEL, formatInvalidation(target)])
      return { flushed, broadcast: true }
    } catch (error) {
      log.warn({ err: error }, 'could not broadcast a cache flush; other instances rely on their TTL')
      return { flushed, broadcast: false }
    }
  }

  fastify.decorate('invalidation', {
    publish,
    stats: (): ListenerStats => ({
      state: !supported ? 'unsupported' : client !== undefined ? 'listening' : 'disconnected',
      notifications,
      reconnects: Math.max(0, connections - 1),
      trustCapMs: client !== undefined ? null : config.cache.unverifiedTtlMs,
      disconnectedSince: disconnectedSince === null || !supported ? null : new Date(disconnectedSince).toISOString()
    })
  })

  fastify.addHook('onClose', async () => {
    closing = true
    clearInterval(heartbeat)
    clearTimeout(reconnectTimer)
    const current = client
    client = undefined
    await current?.end().catch(() => {})
  })
}, { name: 'invalidation', dependencies: ['config', 'database', 'battra-auth'] })
