import fp from 'fastify-plugin'
import pg from 'pg'
import { formatInvalidation, type InvalidationTarget } from '#src/cache/invalidation.ts'
import { InvalidationListener, type ListenerStats } from '#src/cache/listener.ts'
import { pulledGauge } from '#src/metrics.ts'

declare module 'fastify' {
  interface FastifyInstance {
    invalidation: {
      /**
       * Forgets what depends on the target here at once, and on every other instance through the
       * database. Resolves with the local count and whether the broadcast went out.
       */
      publish: (target: InvalidationTarget) => Promise<{ flushed: number, broadcast: boolean }>
      stats: () => ListenerStats
      /** Calls `listener` with each change announced to this instance, after the cache applied it. */
      onChange: (listener: (payload: string) => void) => void
    }
  }
}

export default fp(async function invalidation (fastify) {
  const { config, database, authCache, log } = fastify
  const changeListeners: Array<(payload: string) => void> = []
  const listener = new InvalidationListener({
    createClient: () => new pg.Client({
      connectionString: database.url,
      application_name: 'battra-auth-listener',
      keepAlive: true,
      keepAliveInitialDelayMillis: config.listener.heartbeatMs,
      connectionTimeoutMillis: config.databaseConnectTimeoutMs,
      query_timeout: config.databaseStatementTimeoutMs
    }),
    onMessage: (message, payload) => {
      authCache.apply(message)
      for (const listener of changeListeners) listener(payload)
    },
    onListening: () => {
      // Changes made while nobody listened were missed: start again from the database.
      authCache.invalidate({ all: true })
      authCache.setChangesPushed(true)
    },
    onDisconnected: () => authCache.setChangesPushed(false),
    closeTimeoutMs: config.databaseConnectTimeoutMs,
    ...config.listener,
    log
  })
  // A lookup that succeeds proves the database is back: listen again now, not on the backoff's schedule.
  authCache.onDatabaseAnswered(() => listener.reconnectNow())
  // PGlite's socket does not carry NOTIFY: there, only the trust cap bounds what outside writers change.
  if (database.embedded === undefined) await listener.start()
  else await listener.stop()

  pulledGauge(fastify.metrics, 'battra_auth_listener_up', '1 while the invalidation listener is connected.', ['state'], () => {
    const { state } = stats()
    return [[{ state }, state === 'listening' ? 1 : 0]]
  })

  const stats = (): ListenerStats => database.embedded === undefined
    ? listener.stats()
    : { state: 'unsupported', notifications: 0, reconnects: 0, disconnectedSince: null }

  fastify.decorate('invalidation', {
    async publish (target: InvalidationTarget) {
      const flushed = authCache.invalidate(target)
      if (database.embedded !== undefined || !listener.isSupported) return { flushed, broadcast: false }
      try {
        await listener.publish(formatInvalidation(target), database.pool)
        return { flushed, broadcast: true }
      } catch (error) {
        log.warn({ err: error }, 'could not broadcast a cache flush; other instances rely on their TTL')
        return { flushed, broadcast: false }
      }
    },
    stats,
    onChange: (listener: (payload: string) => void) => { changeListeners.push(listener) }
  })

  fastify.addHook('onClose', async () => { await fastify.shutdown.waitForStep('invalidation listener', () => listener.stop()) })
}, { name: 'invalidation', dependencies: ['config', 'shutdown', 'database', 'auth-cache', 'metrics'] })
