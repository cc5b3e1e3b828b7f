// Every error the service answers with, created once with @fastify/error. Fastify serialises them as
// { statusCode, code, error, message }; the `headers` some of them carry are set by the error handler
// (src/app.ts), and by Fastify's default handler in services that install the plugin.
import { STATUS_CODES } from 'node:http'
import createError, { type FastifyErrorConstructor } from '@fastify/error'

export const WWW_AUTHENTICATE = 'ApiKey realm="battra"'

/** The body of every refusal and failure, whoever answers it: exactly these four fields. */
export function errorBody (statusCode: number, code: string, message: string): { statusCode: number, code: string, error: string | undefined, message: string } {
  return { statusCode, code, error: STATUS_CODES[statusCode], message }
}

// Stack traces are not captured: these are answers, not bugs, and brute force must stay cheap.
const define = (code: string, message: string, statusCode: number) =>
  createError(code, message, statusCode, Error, false)

// Authentication (the spec's table).
export const ApiKeyMissingError = define('API_KEY_MISSING', 'Missing API key: send X-API-Key: <key> or Authorization: ApiKey <key>', 401)
export const ApiKeyInvalidError = define('API_KEY_INVALID', 'Invalid API key', 401)
export const ApiKeyExpiredError = define('API_KEY_EXPIRED', 'API key has expired', 401)
export const UserDisabledError = define('USER_DISABLED', 'The user of this API key is disabled', 403)
export const OrgMembershipRequiredError = define('ORG_MEMBERSHIP_REQUIRED', "The user of this API key is not a member of the key's organization", 403)
export const ForbiddenError = define('FORBIDDEN', '%s', 403)
export const ApiKeyConflictError = define('API_KEY_CONFLICT', 'Conflicting or repeated API key headers: send one key, once', 400)
export const TooManyFailedAttemptsError = define('TOO_MANY_FAILED_ATTEMPTS', 'Too many failed authentication attempts; retry later', 429)
export const AuthUnavailableError = define('AUTH_UNAVAILABLE', 'Authentication is temporarily unavailable; retry later', 503)
// Key policies (the spec's table too).
export const IpNotAllowedError = define('IP_NOT_ALLOWED', 'This API key may not be used from %s', 403)
export const RateLimitedError = define('RATE_LIMITED', '%s', 429)

// Key management.
export const ApiKeyNotFoundError = define('API_KEY_NOT_FOUND', 'API key not found', 404)
export const ApiKeyNotActiveError = define('API_KEY_NOT_ACTIVE', '%s', 409)
export const UserNotFoundError = define('USER_NOT_FOUND', 'User not found', 404)
export const TargetUserDisabledError = define('USER_DISABLED', 'The user is disabled', 409)
export const NotAMemberError = define('ORG_MEMBERSHIP_REQUIRED', 'The user is not a member of that organization', 403)
export const InvalidScopesError = define('INVALID_SCOPES', '%s', 400)
export const InvalidExpiryError = define('INVALID_EXPIRY', '%s', 400)
export const InvalidGracePeriodError = define('INVALID_GRACE_PERIOD', '%s', 400)
export const InvalidCidrError = define('INVALID_CIDR', '%s', 400)
export const InvalidRateLimitError = define('INVALID_RATE_LIMIT', '%s', 400)
export const OrganizationNotFoundError = define('ORGANIZATION_NOT_FOUND', 'Organization not found', 404)
/** A change that kept meeting a concurrent one on the same keys (deadlock or serialization failure) after its retries. */
export const ConcurrentChangeError = define('CONCURRENT_CHANGE', 'A concurrent change to the same keys prevented this one; retry', 409)

// Anything else.
export const BadRequestError = define('BAD_REQUEST', '%s', 400)
/** A refusal of the request's shape found outside the schema's validator, with the validator's code. */
export const ValidationError = define('FST_ERR_VALIDATION', '%s', 400)
export const RouteNotFoundError = define('NOT_FOUND', 'Route %s %s not found', 404)
// The code Fastify gives a body type it has no parser for, so that every 415 carries one code.
export const UnsupportedMediaTypeError = define('FST_ERR_CTP_INVALID_MEDIA_TYPE', '%s', 415)
// Answered by the HTTP layer before Fastify sees a request (src/http-server.ts).
export const RequestTimeoutError = define('REQUEST_TIMEOUT', 'The request did not arrive whole in time', 408)
export const HeadersTooLargeError = define('REQUEST_HEADER_FIELDS_TOO_LARGE', 'The request headers are too large', 431)
export const MalformedRequestError = define('BAD_REQUEST', 'The request is not valid HTTP', 400)
export const InvalidHostError = define('BAD_REQUEST', 'An HTTP/1.1 request must carry one Host header naming a host', 400)
export const ConnectNotAllowedError = define('METHOD_NOT_ALLOWED', 'CONNECT is not supported: this is not a proxy', 405)
export const ExpectationFailedError = define('EXPECTATION_FAILED', 'Expect: only 100-continue is supported', 417)
export const ServiceUnavailableError = define('SERVICE_UNAVAILABLE', 'The service is temporarily unavailable; retry later', 503)
export const ShuttingDownError = define('SERVICE_UNAVAILABLE', 'The service is shutting down; retry on a new connection', 503)
/** What a client sees of a failure of ours: the details stay in the log. */
export const InternalServerError = define('INTERNAL_SERVER_ERROR', STATUS_CODES[500]!, 500)

export type HttpError = Error & { code: string, statusCode: number, headers?: Record<string, string> }

/** The rejections a key lookup can end in; each maps to one error of the spec's table. */
export type Rejection = 'API_KEY_INVALID' | 'API_KEY_EXPIRED' | 'USER_DISABLED' | 'ORG_MEMBERSHIP_REQUIRED'

const REJECTIONS: Record<Rejection, FastifyErrorConstructor> = {
  API_KEY_INVALID: ApiKeyInvalidError,
  API_KEY_EXPIRED: ApiKeyExpiredError,
  USER_DISABLED: UserDisabledError,
  ORG_MEMBERSHIP_REQUIRED: OrgMembershipRequiredError
}

function withHeaders (error: HttpError, headers: Record<string, string>): HttpError {
  return Object.assign(error, { headers })
}

/** A 401 with its challenge. */
export function unauthorized (ErrorType: FastifyErrorConstructor): HttpError {
  return withHeaders(new ErrorType() as HttpError, { 'www-authenticate': WWW_AUTHENTICATE })
}

export function rejectionError (rejection: Rejection): HttpError {
  const error = new REJECTIONS[rejection]() as HttpError
  return error.statusCode === 401 ? withHeaders(error, { 'www-authenticate': WWW_AUTHENTICATE }) : error
}

/** A 403 naming the address the key was used from (the client's own, as the service sees it). */
export function ipNotAllowed (address: string): HttpError {
  return new IpNotAllowedError(address) as HttpError
}

/**
 * A 429 of a key's rate limit (or its organization's), with Retry-After and the RateLimit-* headers of
 * the limit that refused.
 */
export function rateLimited (message: string, limit: number, resetSeconds: number): HttpError {
  const seconds = String(resetSeconds)
  return withHeaders(new RateLimitedError(message) as HttpError, {
    'retry-after': seconds,
    'ratelimit-limit': String(limit),
    'ratelimit-remaining': '0',
    'ratelimit-reset': seconds
  })
}

/** A 429 or 503 telling the client when to come back; `cause`, if given, reaches the log line, never the answer. */
export function retryLater (ErrorType: FastifyErrorConstructor, seconds: number, cause?: unknown): HttpError {
  const error = (cause === undefined ? new ErrorType() : new ErrorType({ cause })) as HttpError
  return withHeaders(error, { 'retry-after': String(seconds) })
}

// Audit trail and webhooks.
export const InvalidWebhookError = define('INVALID_WEBHOOK', '%s', 400)
export const WebhookNotFoundError = define('WEBHOOK_NOT_FOUND', 'Webhook endpoint not found', 404)

// Leaked keys (GitHub secret scanning). Its 503 keeps the spec's code, SERVICE_UNAVAILABLE, with its own message.
export const SecretScanningSignatureError = define('SECRET_SCANNING_SIGNATURE_INVALID', 'The report is not signed by a known GitHub secret-scanning key (%s)', 401)
export const SecretScanningUnavailableError = define('SERVICE_UNAVAILABLE', "GitHub's secret-scanning keys cannot be fetched now; retry later", 503)

/** A 401 for a GitHub report that fails verification; `reason` says which check failed (nothing secret). */
export function signatureRefused (reason: string): HttpError {
  return withHeaders(new SecretScanningSignatureError(reason) as HttpError, { 'www-authenticate': WWW_AUTHENTICATE })
}
