// The database side of authentication: the one-query key lookup and the coalesced usage write.
import type { PrismaClient } from '#src/db/pool.ts'
import { resolveRow, type KeyRow, type Resolution } from '#src/auth/claims.ts'

/**
 * Resolves a key hash with ONE statement joining the key, its user, its organization and the membership,
 * with the key's and the organization's policy columns.
 */
export async function lookUpKey (prisma: PrismaClient, tokenHash: string, now: number): Promise<Resolution> {
  const rows = await prisma.$queryRaw<KeyRow[]>`
    SELECT k.id AS key_id, k.revoked_at, k.expires_at, k.scopes,
           k.allowed_cidrs, k.rate_limit_requests, k.rate_limit_window_seconds, k.rate_limit_bucket_id,
           u.id AS user_id, u.external_id AS user_external_id, u.email, u.role::text AS user_role, u.disabled_at,
           k.organization_id AS key_organization_id,
           o.id AS organization_id, o.external_id AS organization_external_id,
           o.slug AS organization_slug, o.name AS organization_name,
           o.rate_limit_requests AS organization_rate_limit_requests,
           o.rate_limit_window_seconds AS organization_rate_limit_window_seconds,
           m.role::text AS membership_role
      FROM api_keys k
      JOIN users u ON u.id = k.user_id
      LEFT JOIN organizations o ON o.id = k.organization_id
      LEFT JOIN organization_memberships m ON m.organization_id = k.organization_id AND m.user_id = k.user_id
     WHERE k.token_hash = ${tokenHash}`
  return resolveRow(rows[0], now)
}

const USAGE_ACTOR = JSON.stringify({ type: 'system', task: 'usage' })

/**
 * Writes every pending use in one statement; last_used_at only moves forward. The statement names its
 * actor (the service itself) for the audit trail, whose trigger records a key's first use (key.first_used).
 */
export async function writeUsage (prisma: PrismaClient, uses: ReadonlyMap<string, number>): Promise<void> {
  const ids = [...uses.keys()]
  const times = [...uses.values()].map((ms) => new Date(ms).toISOString())
  await prisma.$executeRaw`
    WITH actor AS (SELECT set_config('battra.actor', ${USAGE_ACTOR}, true) AS actor)
    UPDATE api_keys AS k SET last_used_at = u.used_at
      FROM unnest(${ids}::uuid[], ${times}::timestamptz[]) AS u(id, used_at), actor
     WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.used_at)`
}
