// TypeBox schemas shared by routes: the error body and the claims.
import { Type } from 'typebox'

export const ErrorResponse = Type.Object({
  statusCode: Type.Integer(),
  code: Type.String(),
  error: Type.String(),
  message: Type.String()
}, { $id: 'ErrorResponse', description: "Fastify's error body; Battra's MCP server reads `message`." })

const NullableString = Type.Union([Type.String(), Type.Null()])

export const ClaimsSchema = Type.Object({
  keyId: Type.String({ format: 'uuid' }),
  userId: Type.String({ format: 'uuid' }),
  userExternalId: NullableString,
  email: Type.String(),
  role: Type.Union([Type.Literal('sponsor'), Type.Literal('product_owner'), Type.Literal('managing_contributor'), Type.Literal('contributor')]),
  contextType: Type.Union([Type.Literal('organization'), Type.Literal('personal')]),
  organizationId: NullableString,
  organizationExternalId: NullableString,
  organizationSlug: NullableString,
  organizationName: NullableString,
  orgRole: Type.Union([Type.Literal('owner'), Type.Literal('admin'), Type.Literal('member'), Type.Null()]),
  scopes: Type.Array(Type.String()),
  expiresAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()])
}, { $id: 'Claims' })

const errorRef = Type.Ref('ErrorResponse')

/** preValidation for routes whose body is all optional: no body at all means an empty object. */
export async function bodyMayBeEmpty (request: { body: unknown }): Promise<void> {
  request.body ??= {}
}

/** The error responses every authenticated route can give. */
export const authErrorResponses = {
  400: errorRef,
  401: errorRef,
  403: errorRef,
  429: errorRef,
  503: errorRef
}
