// What a key resolves to: request.auth, /api/v1/auth/me.
import { Type, type Static } from 'typebox'
import { MembershipRole, UserRole } from '#src/generated/prisma/enums.ts'
import { DateTime, Nullable, Uuid } from './common.ts'

export { MembershipRole, UserRole }

export const ClaimsSchema = Type.Object({
  keyId: Uuid,
  userId: Uuid,
  userExternalId: Nullable(Type.String()),
  email: Type.String(),
  role: Type.Enum(UserRole),
  contextType: Type.Enum(['organization', 'personal']),
  organizationId: Nullable(Uuid),
  organizationExternalId: Nullable(Type.String()),
  organizationSlug: Nullable(Type.String()),
  organizationName: Nullable(Type.String()),
  orgRole: Nullable(Type.Enum(MembershipRole)),
  scopes: Type.Array(Type.String()),
  expiresAt: Nullable(DateTime)
}, { $id: 'Claims' })

export type Claims = Static<typeof ClaimsSchema>
