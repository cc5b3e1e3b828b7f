import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction, onRequestHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { Histogram } from 'prom-client'
import { TokenHasher } from '#src/auth/api-key.ts'
import type { Claims, KeyPolicy, Resolution } from '#src/auth/claims.ts'
import { FailureLimiter } from '#src/auth/failure-limiter.ts'
import { extractApiKey } from '#src/auth/key-headers.ts'
import { policyRefusal, routePolicy, type AuthPolicy } from '#src/auth/policy.ts'
import { UsageTracker } from '#src/auth/usage-tracker.ts'
import { LookupUnavailableError } from '#src/cache/key-resolver.ts'
import {
  ApiKeyConflictError, ApiKeyExpiredError, ApiKeyInvalidError, ApiKeyMissingError, AuthUnavailableError,
  TooManyFailedAttemptsError, ipNotAllowed, rateLimited, rejectionError, retryLater, unauthorized, type HttpError
} from '#src/errors.ts'
import { writeUsage } from '#src/keys/lookup.ts'
import { pulledCounter, pulledGauge } from '#src/metrics.ts'
import { hasRateLimit, type RateVerdict } from '#src/policy/key-policy.ts'
import type { UsageStats } from '#src/schemas/cache.ts'

export type { AuthPolicy, Claims }

declare module 'fastify' {
  interface FastifyContextConfig {
    /** `false`: no key needed. An object: a key with these scopes/roles. Absent: any valid key. */
    auth?: false | AuthPolicy
  }
  interface FastifyRequest {
    /** The key's claims; null only on routes with `config: { auth: false }`. */
    auth: Claims | null
    /** The key's network and rate policy, compiled; null when it has none (most keys) or without a key. */
    keyPolicy: KeyPolicy | null
  }
  interface FastifyInstance {
    apiKeyAuth: {
      /** The authentication hook, for handlers registered outside onRoute (the not-found handler). */
      hook: onRequestHookHandler
      /** Writes pending last_used_at updates now. */
      flushUsage: () => Promise<void>
      stats: () => UsageStats
    }
  }
}

export interface AuthPluginOptions {
  /** The clock (ms since epoch), for tests. */
  now?: () => number
}

export default fp<AuthPluginOptions>(async function battraAuth (fastify, opts) {
  const { config, database, authCache, metrics, keyRateLimits } = fastify
  const now = opts.now ?? Date.now
  // Answers of the hook: admitted keys in a plain number (the hot path), refusals by code; read at scrape time.
  let admitted = 0
  const refusals: Record<string, number> = Object.create(null)
  const usageFlushKeys = new Histogram({ name: 'battra_auth_usage_flush_keys', help: 'Keys written per last_used_at statement.', buckets: [1, 10, 100, 1000, 10_000, 100_000], registers: [metrics] })
  const usage = new UsageTracker({
    write: (uses) => writeUsage(database.prisma, uses),
    intervalMs: config.usageFlushIntervalMs,
    onError: (error, pendingKeys) => fastify.log.warn({ err: error, pendingKeys }, 'could not write key usage; will retry'),
    onFlushed: (keys) => usageFlushKeys.observe(keys)
  })
  const limiter = new FailureLimiter(config.failedAttempts)
  const tokenHasher = new TokenHasher()

  /** Every answer of the hook goes through here, to be counted. */
  function answer (done: HookHandlerDoneFunction, error: HttpError | undefined): void {
    if (error === undefined) admitted++
    else refusals[error.code] = (refusals[error.code] ?? 0) + 1
    done(error)
  }

  /**
   * Applies a resolution to the request: undefined when it may go on (to the rate limits, if the key has
   * any), else the error to answer. The client address is checked before the route's scopes and roles.
   */
  function admit (request: FastifyRequest, resolution: Resolution, at: number, demands: AuthPolicy | undefined): HttpError | undefined {
    if (!resolution.ok) return rejectionError(resolution.rejection)
    // Checked on every request, cached or not: a key stops working at its expiry, to the millisecond.
    if (resolution.expiresAtMs <= at) return unauthorized(ApiKeyExpiredError)
    const claims = resolution.claims
    request.auth = claims
    usage.record(claims.keyId, at)
    const keyPolicy = resolution.policy
    // Set even when null: a request of a context made before this plugin's decorators (the docs' static
    // files, reached through the not-found handler) has no keyPolicy of its own (found by an outside probe: a 500).
    request.keyPolicy = keyPolicy
    if (keyPolicy !== null) {
      // request.ip: the socket's address, or with TRUST_PROXY the client X-Forwarded-For names.
      if (keyPolicy.allowsAddress !== null && !keyPolicy.allowsAddress(request.ip)) return ipNotAllowed(request.ip)
    }
    return demands === undefined ? undefined : policyRefusal(claims, demands)
  }

  /** How every path ends: a key without a policy costs one property check here, nothing more. */
  function conclude (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction, error: HttpError | undefined): void {
    const keyPolicy = request.keyPolicy
    if (error !== undefined || keyPolicy === null || !hasRateLimit(keyPolicy)) return answer(done, error)
    const verdict = keyRateLimits.check(keyPolicy)
    if (verdict instanceof Promise) verdict.then((answered) => applyRateVerdict(reply, done, keyPolicy, answered), done)
    else applyRateVerdict(reply, done, keyPolicy, verdict)
  }

  /** Admitted: the RateLimit-* headers of the limit closest to refusing. Refused: 429 with those of the refusing one. */
  function applyRateVerdict (reply: FastifyReply, done: HookHandlerDoneFunction, keyPolicy: KeyPolicy, { decision, scope }: RateVerdict): void {
    if (!decision.allowed) {
      const limit = scope === 'key' ? keyPolicy.rateLimit! : keyPolicy.organizationRateLimit!
      const whose = scope === 'key' ? 'this API key' : "this API key's organization"
      const message = `Rate limit exceeded: ${whose} allows ${limit.requests} requests per ${limit.windowSeconds} s; retry in ${decision.resetSeconds} s`
      return answer(done, rateLimited(message, decision.limit, decision.resetSeconds))
    }
    reply.header('ratelimit-limit', decision.limit)
    reply.header('ratelimit-remaining', decision.remaining)
    reply.header('ratelimit-reset', decision.resetSeconds)
    answer(done, undefined)
  }

  /** Keys that do not work are what brute force produces: they count against the client. */
  function countFailure (request: FastifyRequest, error: HttpError | undefined, at: number): HttpError | undefined {
    if (error?.statusCode === 401) limiter.recordFailure(request.ip, at)
    return error
  }

  // Callback style: a cache hit completes synchronously, without a promise (a rate-limited key asking Redis
  // is the exception, and only it).
  function authenticate (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction, demands: AuthPolicy | undefined): void {
    const extraction = extractApiKey(request.raw.rawHeaders)
    if (extraction.outcome === 'missing') return answer(done, unauthorized(ApiKeyMissingError))
    if (extraction.outcome === 'conflict') return answer(done, new ApiKeyConflictError() as HttpError)
    const at = now()
    // Undefined: a key that cannot exist, refused after the limiter without any lookup.
    const tokenHash = tokenHasher.tokenHashOf(extraction.key, request.raw.socket)
    const cached = tokenHash === undefined ? undefined : authCache.cached(tokenHash, at)
    // A key known to be good never waits on the limiter, nor does one whose good entry has aged (it goes
    // to its lookup); everything else does, before any lookup.
    if (cached?.ok === true) return conclude(request, reply, done, countFailure(request, admit(request, cached, at, demands), at))
    const client = request.ip
    const knownGood = cached === undefined && tokenHash !== undefined && authCache.knownGood(tokenHash, at)
    const retryAfter = knownGood ? 0 : limiter.retryAfterSeconds(client, at)
    if (retryAfter > 0) return answer(done, retryLater(TooManyFailedAttemptsError, retryAfter))
    if (tokenHash === undefined) return answer(done, countFailure(request, unauthorized(ApiKeyInvalidError), at))
    if (cached !== undefined) return conclude(request, reply, done, countFailure(request, admit(request, cached, at, demands), at))
    // A lookup this request starts counts against the client's budget while it runs, so that a burst
    // of parallel guesses cannot start more lookups than the budget allows.
    const starts = !authCache.isLookingUp(tokenHash)
    if (starts) limiter.beginLookup(client, at)
    authCache.resolve(tokenHash).then(
      (resolution) => {
        const later = now()
        const error = admit(request, resolution, later, demands)
        if (starts) limiter.endLookup(client, error?.statusCode === 401, later)
        else countFailure(request, error, later)
        conclude(request, reply, done, error)
      },
      (error: unknown) => {
        if (starts) limiter.endLookup(client, false, now())
        if (!(error instanceof LookupUnavailableError)) return done(error as Error)
        // The lookup's failure (the driver's error) goes to the 5xx log line as the cause.
        answer(done, retryLater(AuthUnavailableError, config.unavailableRetryAfterSeconds, error))
      }
    )
  }

  /** The hook for a route with this policy; the policy is bound once, not looked up per request. */
  function hookFor (demands: AuthPolicy | undefined): onRequestHookHandler {
    return function apiKeyAuth (request, reply, done) { authenticate(request, reply, done, demands) }
  }
  const anyValidKey = hookFor(undefined)

  // Once their fate is told (written, or logged as not), the uses are not told of again.
  let usageSettled = false
  /** The shutdown's last word on usage: the uses not written, if any, logged once. */
  function settleUsage (unwritten: ReadonlyMap<string, number>, error: unknown, reason: string): void {
    if (usageSettled) return
    usageSettled = true
    if (unwritten.size === 0) return
    const lastUsedAt = Object.fromEntries([...unwritten].map(([keyId, at]) => [keyId, new Date(at).toISOString()]))
    fastify.log.error({ err: error, unwrittenKeys: unwritten.size, lastUsedAt }, `could not write key usage before shutdown (${reason}): these last_used_at times are not in the database`)
  }
  fastify.shutdown.onCutShort((reason) => settleUsage(usage.unwritten(), undefined, reason))

  fastify.decorateRequest('auth', null)
  fastify.decorateRequest('keyPolicy', null)
  // Like @fastify/rate-limit: every route registered after this plugin gets the hook, unless its
  // config says `auth: false`; a policy that is not valid fails the start. Register it before your routes.
  fastify.addHook('onRoute', (route) => {
    const policy = routePolicy((route.config as { auth?: unknown } | undefined)?.auth, `${String(route.method)} ${route.url}`)
    if (policy === false) return
    const hook = policy === undefined ? anyValidKey : hookFor(policy)
    route.onRequest = route.onRequest === undefined ? [hook] : [hook, ...[route.onRequest].flat()]
  })
  fastify.decorate('apiKeyAuth', {
    hook: anyValidKey,
    flushUsage: () => usage.flush(),
    stats: () => ({ usagePendingKeys: usage.pendingKeys, usageFlushes: usage.flushes, limitedClients: limiter.trackedClients })
  })

  pulledCounter(metrics, 'battra_auth_requests_total', 'Answers of the authentication hook by code (OK: admitted).', ['code'], () => [[{ code: 'OK' }, admitted], ...Object.entries(refusals).map(([code, value]): [{ code: string }, number] => [{ code }, value])])
  pulledCounter(metrics, 'battra_auth_usage_flushes_total', 'last_used_at writes (one statement each).', [], () => [[undefined, usage.flushes]])
  pulledGauge(metrics, 'battra_auth_usage_write_in_flight', 'A last_used_at write sent and not yet answered (1) or none (0).', [], () => [[undefined, usage.writing ? 1 : 0]])
  pulledGauge(metrics, 'battra_auth_usage_pending_keys', 'Keys whose use waits for the next write.', [], () => [[undefined, usage.pendingKeys]])
  pulledGauge(metrics, 'battra_auth_failure_limited_clients', 'Clients tracked by the failed-attempt limiter.', [], () => [[undefined, limiter.trackedClients]])

  fastify.addHook('onReady', async () => usage.start())
  // Runs after the server stopped taking requests and the in-flight ones finished. The write is retried
  // until shortly before SHUTDOWN_TIMEOUT_MS, so that a failure is still logged before the process is
  // made to exit; the uses it could not write are in that line, to be applied by hand.
  fastify.addHook('onClose', async () => {
    const unwritten = await usage.stop(fastify.shutdown.usageGiveUpAt())
    settleUsage(unwritten?.uses ?? new Map(), unwritten?.error, 'the database did not take them')
  })
}, { name: 'battra-auth', dependencies: ['config', 'shutdown', 'database', 'auth-cache', 'metrics', 'key-rate-limits'] })
