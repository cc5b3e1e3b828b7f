// Turns the one row the key lookup returns into claims, or into the rejection the spec's table names.
import type { Rejection } from '#src/errors.ts'
import { compileKeyPolicy, rateLimitOf, type KeyPolicy } from '#src/policy/key-policy.ts'
import type { Claims, MembershipRole, UserRole } from '#src/schemas/claims.ts'

export type { Claims, KeyPolicy }

/** The columns of the lookup query (src/keys/lookup.ts), one row per key hash. */
export interface KeyRow {
  key_id: string
  revoked_at: Date | null
  expires_at: Date | null
  scopes: string[] | null
  user_id: string
  user_external_id: string | null
  email: string
  user_role: UserRole
  disabled_at: Date | null
  key_organization_id: string | null
  organization_id: string | null
  organization_external_id: string | null
  organization_slug: string | null
  organization_name: string | null
  membership_role: MembershipRole | null
  allowed_cidrs: string[] | null
  rate_limit_requests: number | null
  rate_limit_window_seconds: number | null
  rate_limit_bucket_id: string | null
  organization_rate_limit_requests: number | null
  organization_rate_limit_window_seconds: number | null
}

/**
 * What a key resolves to. Who it concerns is kept on rejections too, so that invalidation reaches them.
 * An admitted key carries its policy compiled (null when it has none): once per cache entry, not per request.
 * The policy is not part of the claims, whose shape the spec fixes.
 */
export type Resolution =
  | { ok: true, claims: Claims, expiresAtMs: number, policy: KeyPolicy | null }
  | { ok: false, rejection: Rejection, keyId?: string, userId?: string, organizationId?: string | null }

export const UNKNOWN_KEY: Resolution = Object.freeze({ ok: false, rejection: 'API_KEY_INVALID' })

export function resolveRow (row: KeyRow | undefined, now: number): Resolution {
  if (row === undefined) return UNKNOWN_KEY
  const subject = { keyId: row.key_id, userId: row.user_id, organizationId: row.key_organization_id }
  const expiresAtMs = row.expires_at === null ? Number.POSITIVE_INFINITY : row.expires_at.getTime()
  if (row.revoked_at !== null) return { ok: false, rejection: 'API_KEY_INVALID', ...subject }
  if (expiresAtMs <= now) return { ok: false, rejection: 'API_KEY_EXPIRED', ...subject }
  if (row.disabled_at !== null) return { ok: false, rejection: 'USER_DISABLED', ...subject }
  if (row.key_organization_id !== null) {
    // The organization row is joined: without it the key points nowhere.
    if (row.organization_id === null) return { ok: false, rejection: 'API_KEY_INVALID', ...subject }
    if (row.membership_role === null) return { ok: false, rejection: 'ORG_MEMBERSHIP_REQUIRED', ...subject }
  }
  const organization = row.key_organization_id !== null
  return {
    ok: true,
    expiresAtMs,
    policy: compileKeyPolicy(
      row.key_id,
      row.key_organization_id,
      row.allowed_cidrs ?? [],
      rateLimitOf(row.rate_limit_requests, row.rate_limit_window_seconds),
      rateLimitOf(row.organization_rate_limit_requests, row.organization_rate_limit_window_seconds),
      row.rate_limit_bucket_id
    ),
    claims: {
      keyId: row.key_id,
      userId: row.user_id,
      userExternalId: row.user_external_id,
      email: row.email,
      role: row.user_role,
      contextType: organization ? 'organization' : 'personal',
      organizationId: organization ? row.organization_id : null,
      organizationExternalId: organization ? row.organization_external_id : null,
      organizationSlug: organization ? row.organization_slug : null,
      organizationName: organization ? row.organization_name : null,
      orgRole: organization ? row.membership_role : null,
      scopes: row.scopes ?? [],
      expiresAt: row.expires_at === null ? null : row.expires_at.toISOString()
    }
  }
}

export function subjectOf (resolution: Resolution): { keyId?: string, userId?: string, organizationId?: string | null } {
  return resolution.ok ? resolution.claims : resolution
}
