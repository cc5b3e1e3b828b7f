// TypeBox pieces every route shares: ids, dates, pagination, the error body and the error responses.
import { Type, type Static, type TSchema, type TUnsafe } from 'typebox'

/** A UUID, any case on input, lower case once validated (the `lowercase` keyword, src/schemas/ajv.ts). */
export const Uuid = Type.String({ format: 'uuid', lowercase: true })

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
/** Whether a string is a UUID in any case, where no schema checks it (ids in payloads, paths, log lines). */
export const isUuid = (text: string): boolean => UUID.test(text)
/** An RFC 3339 instant that exists (no 02-30, no leap second): see src/schemas/ajv.ts. */
export const DateTime = Type.String({ format: 'date-time' })

/**
 * The schema, or null. Said as a type list (`type: ['string', 'null']`; an enum gains null), not as anyOf:
 * fast-json-stringify serialises an anyOf by running an Ajv validator on its branches for every value,
 * three times per project row (README, Performance). @fastify/swagger writes either as OpenAPI 3.0's
 * `nullable: true`. A schema without one type of its own (or with an $id) stays an anyOf.
 */
export function Nullable<T extends TSchema> (schema: T): TUnsafe<Static<T> | null> {
  const { type, enum: values, $id } = schema as { type?: unknown, enum?: unknown[], $id?: unknown }
  if ($id === undefined) {
    if (typeof type === 'string' && values === undefined) return Type.Unsafe<Static<T> | null>({ ...schema, type: [type, 'null'] })
    if (type === undefined && values?.every((value) => typeof value === 'string') === true) {
      return Type.Unsafe<Static<T> | null>({ ...schema, type: ['string', 'null'], enum: [...values, null] })
    }
  }
  return Type.Unsafe<Static<T> | null>(Type.Union([schema, Type.Null()]))
}
/**
 * For request bodies: null tried first, because Ajv's type coercion (Fastify's default) would otherwise
 * turn null into "" for a string schema that accepts it, and `description: null` would store "".
 */
export const NullableInput = <T extends TSchema>(schema: T) => Type.Union([Type.Null(), schema])

export const Pagination = {
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 50 }),
  offset: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 0 })
}

export const ErrorResponse = Type.Object({
  statusCode: Type.Integer(),
  code: Type.String(),
  error: Type.String(),
  message: Type.String()
}, { $id: 'ErrorResponse', description: "Fastify's error body; Battra's MCP server reads `message`." })

export const errorRef = Type.Ref('ErrorResponse')

const header = (description: string) => ({ type: 'string', description })
const RATE_LIMIT_HEADERS = {
  'ratelimit-limit': header('RATE_LIMITED: the limit that refused (requests per window)'),
  'ratelimit-remaining': header('RATE_LIMITED: 0'),
  'ratelimit-reset': header('RATE_LIMITED: seconds until the window ends')
}

/** The headers a limited key's answers carry, successes included (for a route's 200 schema). */
export const RATE_LIMIT_SUCCESS_HEADERS = {
  'ratelimit-limit': header("Keys with a rate limit (their own or their organization's): the limit closest to refusing"),
  'ratelimit-remaining': header('Requests left in the current window'),
  'ratelimit-reset': header('Seconds until the window ends')
}

/** What each error status of the API means: its codes (src/errors.ts) and headers, for the OpenAPI document. */
const ERROR_STATUSES: Record<number, { description: string, headers?: Record<string, { type: string, description: string }> }> = {
  400: { description: 'API_KEY_CONFLICT (conflicting or repeated key headers), FST_ERR_VALIDATION or BAD_REQUEST (the request), INVALID_SCOPES, INVALID_EXPIRY, INVALID_GRACE_PERIOD, INVALID_CIDR (names the bad network), INVALID_RATE_LIMIT' },
  401: { description: 'API_KEY_MISSING, API_KEY_INVALID or API_KEY_EXPIRED', headers: { 'www-authenticate': header('ApiKey realm="battra"') } },
  403: { description: "FORBIDDEN (a scope or role the route requires, or a rule of key management), USER_DISABLED, ORG_MEMBERSHIP_REQUIRED, or IP_NOT_ALLOWED (the client address is outside the key's allowedCidrs)" },
  404: { description: "API_KEY_NOT_FOUND (another user's key too), USER_NOT_FOUND, ORGANIZATION_NOT_FOUND" },
  409: { description: 'API_KEY_NOT_ACTIVE (revoked, expired, or already rotated), USER_DISABLED (the target user)' },
  429: {
    description: "TOO_MANY_FAILED_ATTEMPTS (this client), or RATE_LIMITED (the key's rate limit or its organization's)",
    headers: { 'retry-after': header('Seconds to wait'), ...RATE_LIMIT_HEADERS }
  },
  503: { description: 'AUTH_UNAVAILABLE or SERVICE_UNAVAILABLE: the database does not answer', headers: { 'retry-after': header('Seconds to wait') } }
}

/** The error responses of the given statuses, for a route's `response` schema. */
export function errorResponses<S extends number> (...statuses: S[]): Record<S, typeof errorRef> {
  return Object.fromEntries(statuses.map((status) => [status, { ...errorRef, ...ERROR_STATUSES[status] }])) as unknown as Record<S, typeof errorRef>
}

/** The error responses every authenticated route can give. */
export const authErrorResponses = errorResponses(400, 401, 403, 429, 503)

/**
 * preValidation for routes whose body is all optional: no body at all means an empty object. A JSON
 * `null` is a body, and refused by the schema (found by an outside probe: it flushed the whole cache).
 */
export async function bodyMayBeEmpty (request: { body: unknown }): Promise<void> {
  if (request.body === undefined) request.body = {}
}
