// What a route demands beyond a valid key (its `config.auth`), checked once when the route is added: a
// policy that is not exactly `false` or `{ scopes?, roles? }` with known values fails the start, as a
// misspelt property must never mean "any key".
import { Type, type Static } from 'typebox'
import { Value } from 'typebox/value'
import { ForbiddenError, type HttpError } from '#src/errors.ts'
import { UserRole, type Claims } from '#src/schemas/claims.ts'
import { SCOPE_PATTERN } from '#src/schemas/keys.ts'

export const AuthPolicySchema = Type.Object({
  /** Every listed scope is required. */
  scopes: Type.Optional(Type.Array(Type.String({ pattern: SCOPE_PATTERN }), { minItems: 1 })),
  /** One of the listed roles is required. */
  roles: Type.Optional(Type.Array(Type.Enum(UserRole), { minItems: 1 }))
}, { additionalProperties: false })

/** What a route demands beyond a valid key: every listed scope, and one of the listed roles. */
export type AuthPolicy = Static<typeof AuthPolicySchema>

export class InvalidAuthPolicyError extends Error {
  override name = 'InvalidAuthPolicyError'
}

/**
 * The route's policy, validated: `false` (no key needed), undefined (any valid key) or a policy.
 * Throws InvalidAuthPolicyError naming the route and the problem.
 */
export function routePolicy (auth: unknown, route: string): false | AuthPolicy | undefined {
  if (auth === undefined || auth === false) return auth
  if (!Value.Check(AuthPolicySchema, auth)) {
    const problems = [...Value.Errors(AuthPolicySchema, auth)].map((error) => `${error.instancePath === '' ? 'config.auth' : `config.auth${error.instancePath.replaceAll('/', '.')}`} ${error.message}`)
    throw new InvalidAuthPolicyError(`${route}: config.auth must be false or { scopes?: string[], roles?: (${Object.values(UserRole).join(' | ')})[] }: ${problems.join('; ')}`)
  }
  return auth
}

/** The refusal a key's claims get from a policy, or undefined when they satisfy it. */
export function policyRefusal (claims: Claims, policy: AuthPolicy): HttpError | undefined {
  const missingScope = policy.scopes?.find((scope) => !claims.scopes.includes(scope))
  if (missingScope !== undefined) return new ForbiddenError(`This route requires the scope ${missingScope}`) as HttpError
  if (policy.roles !== undefined && !policy.roles.includes(claims.role)) {
    return new ForbiddenError(`This route requires one of the roles ${policy.roles.join(', ')}`) as HttpError
  }
  return undefined
}
