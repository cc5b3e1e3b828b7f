// GitHub secret scanning's partner endpoint: GitHub posts the Battra keys it finds in public places, signed;
// each one that is ours is revoked on every instance (or flagged, for "report only" organizations).
//
// The order of refusals: 415 (not JSON) and 413 (over the body limit) before anything is read; then the
// signature over the raw bytes as sent (401; 503 while GitHub's keys cannot be fetched); only a verified
// body is parsed (400 for malformed JSON or a report the schema refuses). So nothing about the body's
// handling is visible to anyone but GitHub, and a request that fails verification changes nothing.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { bodyHeadersRefusal, parseJsonBytes, refuseNonEmptyBody } from '#src/json-body.ts'
import { SecretScanningUnavailableError, retryLater, signatureRefused } from '#src/errors.ts'
import { GitHubKeyStore, signatureHeaders } from '#src/leaks/github-signature.ts'
import { distinctReportedTokens } from '#src/leaks/report.ts'
import { handleLeakedTokens } from '#src/leaks/revoke.ts'
import { errorRef } from '#src/schemas/common.ts'
import { GitHubReportAnswerSchema, GitHubReportSchema, REPORT_BODY_LIMIT_BYTES, strictBodyValidator, type GitHubReportAnswer } from '#src/schemas/leaks.ts'

const response = (description: string, headers?: Record<string, { type: string, description: string }>) =>
  ({ ...errorRef, description, ...(headers === undefined ? {} : { headers }) })

const githubSecretScanning: FastifyPluginAsyncTypebox<{ now?: () => number }> = async (fastify, opts) => {
  const { config, prisma, invalidation, log } = fastify
  const { keysUrl, keysToken } = config.leaks
  const store = keysUrl === undefined
    ? undefined
    : new GitHubKeyStore({
      url: keysUrl,
      // The app's clock (tests move it past the refetch interval).
      ...(opts.now === undefined ? {} : { now: opts.now }),
      ...(keysToken === undefined ? {} : { headers: { authorization: `Bearer ${keysToken}` } })
    })
  /** Requests whose raw body passed verification (the parser's verdict, checked again before validation). */
  const verified = new WeakSet<FastifyRequest>()
  let loggedFetch = 0

  async function verify (request: FastifyRequest, raw: Buffer): Promise<void> {
    if (store === undefined) throw retryLater(SecretScanningUnavailableError, config.unavailableRetryAfterSeconds)
    const { keyIdentifier, signature } = signatureHeaders(request.headers)
    const result = await store.verify(raw, keyIdentifier, signature)
    if (result.ok) {
      verified.add(request)
      return
    }
    if (result.reason === 'keys-unavailable') {
      // Once per failed fetch, however many reports arrive meanwhile.
      const { fetches, lastFetchError } = store.stats()
      if (fetches !== loggedFetch) {
        loggedFetch = fetches
        log.warn({ keysUrl, error: lastFetchError }, 'secret scanning: GitHub\'s public keys cannot be fetched; answering 503 so that GitHub retries')
      }
      throw retryLater(SecretScanningUnavailableError, store.retryAfterSeconds())
    }
    throw signatureRefused(result.reason)
  }

  // This plugin's own parsers (encapsulated): JSON only, read as the raw bytes GitHub signed.
  fastify.removeAllContentTypeParsers()
  fastify.addContentTypeParser('application/json', { parseAs: 'buffer', bodyLimit: REPORT_BODY_LIMIT_BYTES }, async (request: FastifyRequest, raw: Buffer) => {
    const refusal = bodyHeadersRefusal(request)
    if (refusal !== undefined) throw refusal
    await verify(request, raw)
    return parseJsonBytes(raw)
  })
  // An empty body of another type is no body, as on every route: answered as a request without one.
  fastify.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: REPORT_BODY_LIMIT_BYTES }, refuseNonEmptyBody)

  fastify.post('/', {
    config: { auth: false },
    bodyLimit: REPORT_BODY_LIMIT_BYTES,
    validatorCompiler: strictBodyValidator(GitHubReportSchema),
    schema: {
      summary: "GitHub secret scanning's partner endpoint: revokes the Battra keys GitHub found",
      description: 'No API key: the report is verified with the Github-Public-Key-Identifier and Github-Public-Key-Signature headers (ECDSA P-256, SHA-256, over the raw body) against GitHub\'s published keys (SECRET_SCANNING_KEYS_URL). Each reported token that is a Battra key is revoked on every instance, or only flagged when its organization is "report only"; the report is recorded on the key (revokedReason, leakReport).',
      body: GitHubReportSchema,
      response: {
        200: GitHubReportAnswerSchema,
        400: response('BAD_REQUEST (not JSON) or FST_ERR_VALIDATION (not a report: not an array, a missing or non-string token or type, more than 1000 matches)'),
        401: response('SECRET_SCANNING_SIGNATURE_INVALID: headers missing, signature malformed or wrong, or a key identifier GitHub does not publish', { 'www-authenticate': { type: 'string', description: 'ApiKey realm="battra"' } }),
        413: response('FST_ERR_CTP_BODY_TOO_LARGE: over 1 MiB'),
        415: response('FST_ERR_CTP_INVALID_MEDIA_TYPE: not application/json'),
        503: response("SERVICE_UNAVAILABLE: GitHub's keys cannot be fetched (or SECRET_SCANNING_KEYS_URL is none), or the database does not answer; GitHub retries", { 'retry-after': { type: 'string', description: 'Seconds to wait' } })
      }
    },
    // An empty body reaches no parser: it must be verified all the same.
    preValidation: async (request) => {
      if (!verified.has(request)) await verify(request, Buffer.alloc(0))
    }
  }, async (request): Promise<GitHubReportAnswer> => {
    const tokens = distinctReportedTokens(request.body)
    const outcome = await handleLeakedTokens(prisma, 'github', tokens)
    // At once here; the revocation's trigger tells the other instances too.
    await Promise.all(outcome.revoked.map((keyId) => invalidation.publish({ keyId })))
    for (const keyId of outcome.revoked) log.warn({ keyId, reporter: 'github' }, 'leaked key revoked')
    for (const keyId of outcome.flagged) log.warn({ keyId, reporter: 'github' }, 'leaked key flagged, not revoked: its organization is report only')
    return tokens.map((token) => ({ token_raw: token.token, token_type: token.type, label: outcome.labels.get(token.token) ?? 'false_positive' }))
  })
}

export default githubSecretScanning
