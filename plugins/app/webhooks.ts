import fp from 'fastify-plugin'
import { createPool, createPrisma } from '#src/db/pool.ts'
import { pulledCounter } from '#src/metrics.ts'
import { WebhookWorker, type DeliveryOutcome } from '#src/webhooks/worker.ts'

declare module 'fastify' {
  interface FastifyInstance {
    webhooks: {
      /** One delivery round now (what the worker does every WEBHOOK_POLL_INTERVAL_MS). */
      deliverDue: () => Promise<DeliveryOutcome[]>
      stats: () => { delivered: number, failures: number, gaveUp: number, failing: boolean, worker: boolean }
    }
  }
}

/** At most this long, a shutdown waits for sends under way to be answered before cutting them short. */
const SEND_GRACE_MS = 1000

export interface WebhooksPluginOptions {
  /** The scheduling clock (ms since epoch), for tests. */
  now?: () => number
}

export default fp<WebhooksPluginOptions>(async function webhooks (fastify, opts) {
  const { config, database, log } = fastify
  // A pool of its own (connecting only when used): polling the outbox neither takes the connections nor
  // counts in the statements of the auth path (battra_auth_db_statements_total).
  const background = { count: 0 }
  const pool = createPool({ url: database.url, max: 2, connectTimeoutMs: config.databaseConnectTimeoutMs, statementTimeoutMs: config.databaseStatementTimeoutMs }, background)
  const prisma = createPrisma(pool)
  const worker = new WebhookWorker({
    prisma,
    config: config.webhooks,
    now: opts.now,
    onError: (error) => log.warn({ err: error }, 'webhook delivery round failed; will retry'),
    onRecovered: () => log.info('webhook deliveries resumed')
  })
  pulledCounter(fastify.metrics, 'battra_auth_webhook_attempts_total', 'Webhook delivery attempts by this instance, each counted once, by outcome (error: failed, to be retried; failed: failed, retries exhausted).', ['outcome'], () => {
    const { delivered, failures, gaveUp } = worker.stats()
    return [[{ outcome: 'delivered' }, delivered], [{ outcome: 'error' }, failures], [{ outcome: 'failed' }, gaveUp]]
  })
  fastify.decorate('webhooks', {
    deliverDue: () => worker.runOnce(),
    stats: () => ({ ...worker.stats(), worker: config.webhooks.worker })
  })
  if (config.webhooks.worker) fastify.addHook('onReady', async () => worker.start())
  // Before the database closes (plugins close in reverse order): deliveries under way are handed back.
  fastify.addHook('onClose', async () => {
    await fastify.shutdown.waitForStep('webhook worker', async () => {
      // Sends under way get a moment to be answered: one cut short is sent again (at least once).
      await worker.stop({ graceMs: Math.min(SEND_GRACE_MS, config.webhooks.timeoutMs, config.shutdownTimeoutMs / 10) })
      await prisma.$disconnect()
      await pool.end()
    })
  })
}, { name: 'webhooks', dependencies: ['config', 'shutdown', 'database', 'metrics'] })
