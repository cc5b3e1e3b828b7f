import fp from 'fastify-plugin'
import { settledWithin } from '#src/settled-within.ts'

declare module 'fastify' {
  interface FastifyInstance {
    shutdown: {
      /**
       * Waits for a close step that needs the database (a webhook round, a sweep, leak reports), but
       * only for the share of SHUTDOWN_TIMEOUT_MS that leaves the usage write its own: a hung database
       * must not spend it all first. Resolves false, with a warning, when the wait was cut short.
       */
      waitForStep: (step: string, run: () => Promise<unknown>) => Promise<boolean>
      /** When the usage write gives up: early enough that the uses it could not write are still logged. */
      usageGiveUpAt: () => number
      /**
       * Adds what to log, synchronously, when the shutdown is cut short (SHUTDOWN_TIMEOUT_MS reached, a
       * second signal) and the process exits at once: work accepted and not yet done, to be done by hand.
       */
      onCutShort: (tell: (reason: string) => void) => void
      /** Runs every onCutShort listener, once; the caller exits right after. */
      cutShort: (reason: string) => void
    }
  }
}

export default fp(async function shutdown (fastify) {
  const timeoutMs = fastify.config.shutdownTimeoutMs
  // The last share is for logging what usage could not write, the one before it for the usage write.
  const shareMs = Math.min(1000, timeoutMs / 4)
  // The clock starts when close does, before the in-flight requests finish.
  let closingSince = Date.now()
  fastify.addHook('preClose', async () => { closingSince = Date.now() })
  const cutShortListeners: Array<(reason: string) => void> = []

  fastify.decorate('shutdown', {
    async waitForStep (step: string, run: () => Promise<unknown>): Promise<boolean> {
      const began = Date.now()
      const work = run()
      if (await settledWithin(work, closingSince + timeoutMs - 2 * shareMs - began)) return true
      work.catch(() => {}) // settles after the process has moved on: nobody waits for it any more
      // waitedMs 0: the steps before it had spent the share.
      fastify.log.warn({ step, waitedMs: Date.now() - began }, 'shutdown: stopped waiting for a step that had not finished within its share of SHUTDOWN_TIMEOUT_MS')
      return false
    },
    usageGiveUpAt: () => closingSince + timeoutMs - shareMs,
    onCutShort (tell: (reason: string) => void): void {
      cutShortListeners.push(tell)
    },
    cutShort (reason: string): void {
      for (const tell of cutShortListeners.splice(0)) {
        try {
          tell(reason)
        } catch (error) {
          fastify.log.error({ err: error }, 'shutdown: a cut-short listener failed')
        }
      }
    }
  })
}, { name: 'shutdown', dependencies: ['config'] })
