// The public leak-report route, for other scanners and for people who find a key: no API key, limited per
// client, and the same answer (202, same body) whatever the key, before anything is looked up: the lookup
// and revocation run after the answer has gone (one report at a time), so neither the answer nor its
// timing tells whether the key existed. A malformed body is 400: that depends on the body alone.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { setTimeout as delay } from 'node:timers/promises'
import { parseJsonBody, refuseNonEmptyBody } from '#src/json-body.ts'
import { isDatabaseUnavailable } from '#src/db/failures.ts'
import { createPool, createPrisma } from '#src/db/pool.ts'
import { rateLimited } from '#src/errors.ts'
import { SerialQueue } from '#src/leaks/queue.ts'
import { handleLeakedTokens, reportedKey, reportedTokenForLog } from '#src/leaks/revoke.ts'
import { errorResponses } from '#src/schemas/common.ts'
import { LEAK_REPORT_ACCEPTED, LeakReportAcceptedSchema, LeakReportBodySchema, strictBodyValidator, type LeakReportBody } from '#src/schemas/leaks.ts'

/** Reports waiting for their turn; past this, a report is dropped (and logged) rather than kept in memory. */
const MAX_PENDING_REPORTS = 1000
/** A report already answered outlives a database blip: waits before each new attempt (about 15 s in all). */
const RETRY_DELAYS_MS = [1000, 2000, 4000, 8000]
/** While the service closes: tried again this often, until the shutdown stops waiting for the reports. */
const CLOSING_RETRY_MS = 250

const reportLeak: FastifyPluginAsyncTypebox = async (fastify) => {
  const { config, database, invalidation, keyRateLimits, log } = fastify
  // Reports are acted on through a connection of their own, outside battra_auth_db_statements_total: on the
  // public /metrics, the statements a report of a real key costs would tell it from an unknown one (an
  // outside probe used that to test keys of report-only organizations, which stay valid). Opened on first use.
  const reportPool = createPool({ url: database.url, max: 1, connectTimeoutMs: config.databaseConnectTimeoutMs, statementTimeoutMs: config.databaseStatementTimeoutMs }, { count: 0 })
  const prisma = createPrisma(reportPool)
  const { requests, windowSeconds } = config.leaks.reportRateLimit
  const queue = new SerialQueue({
    maxPending: MAX_PENDING_REPORTS,
    onError: (error) => log.error({ err: error }, 'leak report: the queue\'s task failed')
  })
  // Reports answered (202) and not yet acted on. The reporter will not send them again: one that is never
  // acted on (the database failed throughout, the shutdown could not wait) is logged at error with what
  // finds its key, once, to be acted on by hand (found by an outside probe: the line did not say which).
  const unsettled = new Set<LeakReportBody>()
  function tellUnsettled (body: LeakReportBody, err: unknown, why: string): void {
    if (!unsettled.delete(body)) return
    const token = reportedTokenForLog(body.key)
    if (token === undefined) return
    // It may have been applied after all (a shutdown stops waiting while its transaction commits), and a
    // report-only organization's key is flagged, not revoked: the operator checks the key before acting.
    log.error({ err, ...token }, `leak report: accepted and not acted on (${why}); find its key by api_keys.token_hash and, unless it is already revoked or flagged, revoke it by hand (or, in a report-only organization, tell its owner)`)
  }
  const tellAllUnsettled = (why: string) => { for (const body of [...unsettled]) tellUnsettled(body, undefined, why) }

  /** The body of each answered request, handed to the queue once the answer has gone. */
  const answered = new WeakMap<FastifyRequest, LeakReportBody>()

  // Closing cuts a long wait between attempts short, and from then on a report is tried again every
  // CLOSING_RETRY_MS for as long as the shutdown waits (found by an outside probe: a database blip during
  // a restart failed the reports at once). Abandoned: the shutdown stopped waiting; what is left is logged.
  const closing = new AbortController()
  const abandoned = new AbortController()

  async function actWithRetries (body: LeakReportBody): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await act(body)
      } catch (error) {
        const retriesLeft = closing.signal.aborted || attempt < RETRY_DELAYS_MS.length
        if (!isDatabaseUnavailable(error) || !retriesLeft || abandoned.signal.aborted) throw error
        if (!closing.signal.aborted) log.warn({ attempt: attempt + 1, err: error }, 'leak report: the database does not answer; trying again')
        const [wait, cutShortBy] = closing.signal.aborted ? [CLOSING_RETRY_MS, abandoned.signal] : [RETRY_DELAYS_MS[attempt], closing.signal]
        await delay(wait, undefined, { signal: cutShortBy }).catch(() => {})
        if (abandoned.signal.aborted) throw error
      }
    }
  }

  async function act ({ key, url, source }: LeakReportBody): Promise<void> {
    const outcome = await handleLeakedTokens(prisma, 'public', [{ token: key, locations: [{ url, source }] }])
    await Promise.all(outcome.revoked.map((keyId) => invalidation.publish({ keyId })))
    // Never the key itself: only what the key's owner may see.
    for (const keyId of outcome.revoked) log.warn({ keyId, reporter: 'public' }, 'leaked key revoked')
    for (const keyId of outcome.flagged) log.warn({ keyId, reporter: 'public' }, 'leaked key flagged, not revoked: its organization is report only')
  }

  // JSON only (415 otherwise), with the service's own JSON rules; an empty body is no body, as everywhere.
  fastify.removeAllContentTypeParsers()
  fastify.addContentTypeParser('application/json', { parseAs: 'buffer' }, parseJsonBody)
  fastify.addContentTypeParser('*', { parseAs: 'buffer' }, refuseNonEmptyBody)

  fastify.post('/', {
    config: { auth: false },
    bodyLimit: 16 * 1024,
    validatorCompiler: strictBodyValidator(LeakReportBodySchema),
    schema: {
      summary: 'Report a leaked key (no API key needed): it is revoked if it is one',
      description: `For scanners and for anyone who finds a Battra key. Always 202 with the same body, whether or not the key exists, so the route cannot test keys; the key is looked up and revoked (or flagged, for "report only" organizations) right after the answer. At most ${requests} reports per client per ${windowSeconds} s (LEAK_REPORT_RATE_LIMIT, LEAK_REPORT_RATE_WINDOW_S).`,
      body: LeakReportBodySchema,
      response: { 202: LeakReportAcceptedSchema, ...errorResponses(400, 429) }
    },
    // Counted before the body is read: malformed reports count too.
    onRequest: async (request) => {
      const decision = await keyRateLimits.consume(`leak-report:${request.ip}`, requests, windowSeconds)
      if (!decision.allowed) {
        throw rateLimited(`Too many leak reports from this client: at most ${requests} per ${windowSeconds} s; retry in ${decision.resetSeconds} s`, decision.limit, decision.resetSeconds)
      }
    },
    onResponse: async (request) => {
      const reported = answered.get(request)
      if (reported === undefined) return
      answered.delete(request)
      // A key pasted with the line's end or the header's scheme is the same key (found by an outside probe:
      // such reports were answered 202 and the key kept working).
      const body = { ...reported, key: reportedKey(reported.key) }
      unsettled.add(body)
      const queued = queue.push(async () => {
        try {
          await actWithRetries(body)
          unsettled.delete(body)
        } catch (error) {
          tellUnsettled(body, error, 'acting on it failed')
        }
      })
      if (!queued) tellUnsettled(body, undefined, `more than ${MAX_PENDING_REPORTS} reports were waiting`)
    }
  }, async (request, reply) => {
    answered.set(request, request.body)
    reply.code(202).header('cache-control', 'no-store')
    return LEAK_REPORT_ACCEPTED
  })

  fastify.shutdown.onCutShort((reason) => tellAllUnsettled(`shutdown cut short: ${reason}`))
  // Reports already answered are acted on before the database closes.
  fastify.addHook('onClose', async () => {
    closing.abort()
    await fastify.shutdown.waitForStep('leak reports', async () => {
      while (queue.stats().pending > 0) await queue.idle()
      await prisma.$disconnect()
      await reportPool.end()
    })
    abandoned.abort()
    tellAllUnsettled('the shutdown could not wait for them')
  })
}

export default reportLeak
