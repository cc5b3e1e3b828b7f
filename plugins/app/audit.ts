import fp from 'fastify-plugin'
import { createPool, createPrisma } from '#src/db/pool.ts'
import { recordEvent, type EventTargets } from '#src/audit/events.ts'
import { sweepKeys, type SweepResult } from '#src/audit/sweep.ts'
import type { Actor } from '#src/keys/management.ts'
import type { AuditAction } from '#src/schemas/audit.ts'

declare module 'fastify' {
  interface FastifyInstance {
    audit: {
      /**
       * Records an event no table change stands for (cache.flushed). A database failure is logged, not
       * thrown: what the event records has happened already.
       */
      record: (actor: Actor, action: AuditAction, targets: EventTargets, details?: Record<string, unknown>) => Promise<string | undefined>
      /** Runs the sweep (key.expired, key.expiring, key.idle) now, at the plugin's clock. */
      sweep: () => Promise<SweepResult>
    }
  }
}

export interface AuditPluginOptions {
  /** The clock (ms since epoch), for tests. */
  now?: () => number
}

export default fp<AuditPluginOptions>(async function audit (fastify, opts) {
  const { config, database, log } = fastify
  const now = opts.now ?? Date.now
  const options = { expiringDays: config.audit.expiringDays, idleDays: config.audit.idleDays }
  // The sweep's own connection (opened only when it runs): it does not count among the auth path's statements.
  const pool = createPool({ url: database.url, max: 1, connectTimeoutMs: config.databaseConnectTimeoutMs, statementTimeoutMs: 60_000 }, { count: 0 })
  const sweepPrisma = createPrisma(pool)
  let timer: NodeJS.Timeout | undefined
  // Sweeps run one after another: each waits for the one before it.
  let last: Promise<unknown> = Promise.resolve()
  let stopped = false
  let failing = false

  const sweep = async (): Promise<SweepResult> => {
    const work = last.catch(() => {}).then(() => sweepKeys(sweepPrisma, new Date(now()), options))
    last = work
    return work
  }

  const schedule = () => {
    if (stopped) return
    timer = setTimeout(() => {
      sweep().then(
        (result) => {
          if (failing) log.info('audit sweep works again')
          failing = false
          if (result.expired + result.expiring + result.idle > 0) log.debug(result, 'audit sweep recorded events')
        },
        (error: unknown) => {
          // The database may be away: try again on the next interval, say so once.
          if (!failing) log.warn({ err: error }, 'audit sweep failed; will retry')
          failing = true
        }
      ).finally(schedule)
    }, config.audit.sweepIntervalMs)
    timer.unref()
  }

  fastify.decorate('audit', {
    async record (actor: Actor, action: AuditAction, targets: EventTargets, details?: Record<string, unknown>) {
      try {
        return await recordEvent(database.prisma, actor, action, targets, details ?? null)
      } catch (error) {
        log.error({ err: error, action }, 'could not record an audit event')
        return undefined
      }
    },
    sweep
  })

  if (config.audit.sweepIntervalMs > 0) fastify.addHook('onReady', async () => schedule())
  fastify.addHook('onClose', async () => {
    stopped = true
    clearTimeout(timer)
    await fastify.shutdown.waitForStep('audit sweep', async () => {
      await last.catch(() => {})
      await sweepPrisma.$disconnect()
      await pool.end()
    })
  })
}, { name: 'audit', dependencies: ['config', 'shutdown', 'database'] })
