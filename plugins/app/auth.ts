import type { FastifyRequest, HookHandlerDoneFunction, onRequestHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { TokenHasher, extractApiKey } from '../../src/api-key.ts'
import { FailureLimiter } from '../../src/failure-limiter.ts'
import { Histogram } from '../../src/metrics.ts'
import type { Claims, Resolution } from '../../src/claims.ts'
import {
  ApiKeyConflictError, ApiKeyExpiredError, ApiKeyInvalidError, ApiKeyMissingError, AuthUnavailableError,
  ForbiddenError, TooManyFailedAttemptsError, rejectionError, retryLater, unauthorized, type HttpError
} from '../../src/errors.ts'
import { KeyResolver, LookupUnavailableError, type InvalidationTarget, type ResolverStats } from '../../src/key-resolver.ts'
import { lookUpKey, writeUsage } from '../../src/key-store.ts'
import { UsageTracker } from '../../src/usage-tracker.ts'

/** What a route demands beyond a valid key: every listed scope, and one of the listed roles. */
export interface AuthPolicy {
  scopes?: string[]
  roles?: Claims['role'][]
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** `false`: no key needed. An object: a key with these scopes/roles. Absent: any valid key. */
    auth?: false | AuthPolicy
  }
  interface FastifyRequest {
    /** The key's claims; null only on routes with `config: { auth: false }`. */
    auth: Claims | null
  }
  interface FastifyInstance {
    apiKeyAuth: {
      /** Forgets cached answers that depend on the target, in this process. */
      invalidate: (target: InvalidationTarget) => number
      /** Unknown keys cached negatively: forgotten when keys are added. */
      forgetUnknownKeys: () => number
      /** Entries older than this are not trusted (undefined: their TTL decides). See KeyResolver.trustCapMs. */
      setTrustCap: (ms: number | undefined) => void
      stats: () => ResolverStats & { usagePendingKeys: number, usageFlushes: number, limitedClients: number }
      /** The authentication hook, for handlers registered outside onRoute (the not-found handler). */
      hook: onRequestHookHandler
      /** Writes pending last_used_at updates now. */
      flushUsage: () => Promise<void>
      metrics: AuthMetrics
    }
  }
}

export interface AuthMetrics {
  /** Answers of the auth hook by code ('OK' for an admitted key). */
  results: Record<string, number>
  lookupSeconds: Histogram
  usageFlushKeys: Histogram
}

function policyError (claims: Claims, policy: AuthPolicy): HttpError | undefined {
  const missingScope = policy.scopes?.find((scope) => !claims.scopes.includes(scope))
  if (missingScope !== undefined) return new ForbiddenError(`This route requires the scope ${missingScope}`)
  if (policy.roles !== undefined && !policy.roles.includes(claims.role)) {
    return new ForbiddenError(`This route requires one of the roles ${policy.roles.join(', ')}`)
  }
  return undefined
}

export default fp(async function battraAuth (fastify) {
  const { config, prisma } = fastify
  const metrics: AuthMetrics = {
    results: Object.create(null) as Record<string, number>,
    lookupSeconds: new Histogram([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]),
    usageFlushKeys: new Histogram([1, 10, 100, 1000, 10_000, 100_000])
  }
  const resolver = new KeyResolver(async (tokenHash) => {
    const started = performance.now()
    try {
      return await lookUpKey(prisma, tokenHash)
    } finally {
      metrics.lookupSeconds.observe((performance.now() - started) / 1000)
    }
  }, config.cache)
  const usage = new UsageTracker({
    write: (uses) => writeUsage(prisma, uses),
    intervalMs: config.usageFlushIntervalMs,
    onError: (error, pendingKeys) => fastify.log.warn({ err: error, pendingKeys }, 'could not write key usage; will retry'),
    onFlushed: (keys) => metrics.usageFlushKeys.observe(keys)
  })

  /** Every answer of the hook goes through here, to be counted. */
  function answer (done: HookHandlerDoneFunction, error: HttpError | undefined): void {
    const code = error === undefined ? 'OK' : error.code
    metrics.results[code] = (metrics.results[code] ?? 0) + 1
    done(error)
  }

  const limiter = new FailureLimiter(config.failedAttempts)
  const tokenHasher = new TokenHasher()

  /** Applies a resolution to the request: undefined when it may go on, else the error to answer. */
  function admit (request: FastifyRequest, resolution: Resolution, now: number, policy: AuthPolicy | undefined): HttpError | undefined {
    if (!resolution.ok) return countFailure(request, rejectionError(resolution.rejection), now)
    // Checked on every request, cached or not: a key stops working at its expiry, to the millisecond.
    if (resolution.expiresAtMs <= now) return countFailure(request, unauthorized(ApiKeyExpiredError), now)
    const claims = resolution.claims
    request.auth = claims
    usage.record(claims.keyId, now)
    return policy === undefined ? undefined : policyError(claims, policy)
  }

  /** Keys that do not work are what brute force produces: they count against the client. */
  function countFailure (request: FastifyRequest, error: HttpError, now: number): HttpError {
    if (error.statusCode === 401) limiter.recordFailure(request.ip, now)
    return error
  }

  // Callback style: a cache hit completes synchronously, without a promise.
  function authenticate (request: FastifyRequest, done: HookHandlerDoneFunction, policy: AuthPolicy | undefined): void {
    const extraction = extractApiKey(request.raw.rawHeaders)
    if (extraction.outcome === 'missing') return answer(done, unauthorized(ApiKeyMissingError))
    if (extraction.outcome === 'conflict') return answer(done, new ApiKeyConflictError())
    const now = Date.now()
    // Undefined: a key that cannot exist, refused after the limiter without any lookup.
    const tokenHash = tokenHasher.tokenHashOf(extraction.key, request.raw.socket)
    const cached = tokenHash === undefined ? undefined : resolver.cached(tokenHash, now)
    // A key known to be good never waits on the limiter; everything else does, before any lookup.
    if (cached?.ok === true) return answer(done, admit(request, cached, now, policy))
    const retryAfter = limiter.retryAfterSeconds(request.ip, now)
    if (retryAfter > 0) return answer(done, retryLater(TooManyFailedAttemptsError, retryAfter))
    if (tokenHash === undefined) return answer(done, countFailure(request, unauthorized(ApiKeyInvalidError), now))
    if (cached !== undefined) return answer(done, admit(request, cached, now, policy))
    resolver.resolve(tokenHash).then(
      (resolution) => answer(done, admit(request, resolution, Date.now(), policy)),
      (error: unknown) => {
        if (!(error instanceof LookupUnavailableError)) return done(error as Error)
        request.log.warn({ err: error.cause }, 'key lookup failed: answering 503')
        answer(done, retryLater(AuthUnavailableError, config.unavailableRetryAfterSeconds))
      }
    )
  }

  /** The hook for a route with this policy; the policy is bound once, not looked up per request. */
  function hookFor (policy: AuthPolicy | undefined): onRequestHookHandler {
    return function apiKeyAuth (request, _reply, done) { authenticate(request, done, policy) }
  }
  const anyValidKey = hookFor(undefined)

  fastify.decorateRequest('auth', null)
  // Like @fastify/rate-limit: every route registered after this plugin gets the hook, unless its
  // config says `auth: false`. Register the plugin before your routes.
  fastify.addHook('onRoute', (route) => {
    const policy = (route.config as { auth?: false | AuthPolicy } | undefined)?.auth
    if (policy === false) return
    const hook = policy === undefined ? anyValidKey : hookFor(policy)
    route.onRequest = route.onRequest === undefined ? [hook] : [hook, ...[route.onRequest].flat()]
  })
  fastify.decorate('apiKeyAuth', {
    invalidate: (target: InvalidationTarget) => resolver.invalidate(target),
    forgetUnknownKeys: () => resolver.forgetUnknownKeys(),
    setTrustCap: (ms: number | undefined) => { resolver.trustCapMs = ms },
    stats: () => ({ ...resolver.stats(), usagePendingKeys: usage.pendingKeys, usageFlushes: usage.flushes, limitedClients: limiter.trackedClients }),
    flushUsage: () => usage.flush(),
    metrics,
    hook: anyValidKey
  })

  fastify.addHook('onReady', async () => usage.start())
  // Runs after the server stopped taking requests and the in-flight ones finished: nothing is lost.
  fastify.addHook('onClose', async () => {
    try {
      await usage.stop()
    } catch (error) {
      fastify.log.error({ err: error, pendingKeys: usage.pendingKeys }, 'could not write key usage before shutdown')
    }
  })
}, { name: 'battra-auth', dependencies: ['config', 'database'] })
