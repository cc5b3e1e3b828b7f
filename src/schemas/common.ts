// TypeBox pieces every route shares: ids, dates, pagination, the error body and the error responses.
import { Type, type TSchema } from 'typebox'

/** A UUID, any case on input, lower case once validated (the `lowercase` keyword, src/schemas/ajv.ts). */
export const Uuid = Type.String({ format: 'uuid', lowercase: true })
/** An RFC 3339 instant that exists (no 02-30, no leap second): see src/schemas/ajv.ts. */
export const DateTime = Type.String({ format: 'date-time' })

export const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])

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

/** The error responses of the given statuses, for a route's `response` schema. */
export function errorResponses<S extends number> (...statuses: S[]): Record<S, typeof errorRef> {
  return Object.fromEntries(statuses.map((status) => [status, errorRef])) as Record<S, typeof errorRef>
}

/** The error responses every authenticated route can give. */
export const authErrorResponses = errorResponses(400, 401, 403, 429, 503)

/** preValidation for routes whose body is all optional: no body at all means an empty object. */
export async function bodyMayBeEmpty (request: { body: unknown }): Promise<void> {
  request.body ??= {}
}
