// Every error the service answers with, created once. Fastify serialises them as
// { statusCode, code, error, message } and sets their `headers`.
import createError, { type FastifyError } from '@fastify/error'

export const WWW_AUTHENTICATE = 'ApiKey realm="battra"'

// Stack traces are not captured: these are answers, not bugs, and brute force must stay cheap.
const define = (code: string, message: string, statusCode: number) =>
  createError(code, message, statusCode, Error, false)

export const ApiKeyMissingError = define('API_KEY_MISSING', 'Missing API key: send X-API-Key: <key> or Authorization: ApiKey <key>', 401)
export const ApiKeyInvalidError = define('API_KEY_INVALID', 'Invalid API key', 401)
export const ApiKeyExpiredError = define('API_KEY_EXPIRED', 'API key has expired', 401)
export const UserDisabledError = define('USER_DISABLED', 'The user of this API key is disabled', 403)
export const OrgMembershipRequiredError = define('ORG_MEMBERSHIP_REQUIRED', "The user of this API key is not a member of the key's organization", 403)
export const ForbiddenError = define('FORBIDDEN', '%s', 403)
export const ApiKeyConflictError = define('API_KEY_CONFLICT', 'Conflicting or repeated API key headers: send one key, once', 400)
export const TooManyFailedAttemptsError = define('TOO_MANY_FAILED_ATTEMPTS', 'Too many failed authentication attempts; retry later', 429)
export const AuthUnavailableError = define('AUTH_UNAVAILABLE', 'Authentication is temporarily unavailable; retry later', 503)
export const NotFoundError = define('NOT_FOUND', '%s', 404)
export const BadRequestError = define('BAD_REQUEST', '%s', 400)

/** The rejections a key lookup can end in; each maps to one error of the spec's table. */
export type Rejection = 'API_KEY_INVALID' | 'API_KEY_EXPIRED' | 'USER_DISABLED' | 'ORG_MEMBERSHIP_REQUIRED'

const REJECTIONS: Record<Rejection, new () => FastifyError> = {
  API_KEY_INVALID: ApiKeyInvalidError,
  API_KEY_EXPIRED: ApiKeyExpiredError,
  USER_DISABLED: UserDisabledError,
  ORG_MEMBERSHIP_REQUIRED: OrgMembershipRequiredError
}

export type HttpError = FastifyError & { headers?: Record<string, string> }

function withHeaders (error: FastifyError, headers: Record<string, string>): HttpError {
  return Object.assign(error, { headers })
}

export function unauthorized (ErrorType: new () => FastifyError): HttpError {
  return withHeaders(new ErrorType(), { 'www-authenticate': WWW_AUTHENTICATE })
}

export function rejectionError (rejection: Rejection): HttpError {
  const error = new REJECTIONS[rejection]()
  return error.statusCode === 401 ? withHeaders(error, { 'www-authenticate': WWW_AUTHENTICATE }) : error
}

export function retryLater (ErrorType: new () => FastifyError, seconds: number): HttpError {
  return withHeaders(new ErrorType(), { 'retry-after': String(seconds) })
}
