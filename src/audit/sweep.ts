// The events no table change stands for, found by a periodic sweep (never by the request path):
// key.expired (a key passed its expires_at), key.expiring (N days before it, once per key and expiry) and
// key.idle (not used for N days, once per idle spell; off unless configured). One instance sweeps at a
// time (an advisory lock); each event once, however many instances run.
import type { PrismaClient } from '#src/db/pool.ts'

/** pg_advisory_xact_lock key of the sweep ("battra-a" as an integer). */
const SWEEP_LOCK = 0x6261747472612d61n
const SYSTEM_ACTOR = JSON.stringify({ type: 'system', task: 'sweep' })
const BATCH = 500

export interface SweepOptions {
  /** key.expiring this many days before expires_at; 0: never. */
  expiringDays: number
  /** key.idle after this many days without use; 0: never. */
  idleDays: number
}

export interface SweepResult { expired: number, expiring: number, idle: number, skipped: boolean }

const DAY_MS = 86_400_000

/** One sweep at `now` (the service's clock). */
export async function sweepKeys (prisma: PrismaClient, now: Date, options: SweepOptions): Promise<SweepResult> {
  return prisma.$transaction(async (tx) => {
    const [{ locked }] = await tx.$queryRaw<Array<{ locked: boolean }>>`SELECT pg_try_advisory_xact_lock(${SWEEP_LOCK}) AS locked`
    if (!locked) return { expired: 0, expiring: 0, idle: 0, skipped: true }
    await tx.$executeRaw`SELECT set_config('battra.actor', ${SYSTEM_ACTOR}, true)`
    const expired = await tx.$executeRaw`
      SELECT battra_audit_record('key.expired', k.id, k.user_id, k.organization_id, NULL, jsonb_build_object('expiresAt', k.expires_at))
        FROM (SELECT k.id, k.user_id, k.organization_id, k.expires_at FROM api_keys k
               WHERE k.expires_at <= ${now} AND (k.revoked_at IS NULL OR k.revoked_at > k.expires_at)
                 AND NOT EXISTS (SELECT 1 FROM audit_events e WHERE e.key_id = k.id AND e.action = 'key.expired')
               ORDER BY k.expires_at LIMIT ${BATCH}) k`
    let expiring = 0
    if (options.expiringDays > 0) {
      const horizon = new Date(now.getTime() + options.expiringDays * DAY_MS)
      expiring = await tx.$executeRaw`
        SELECT battra_audit_record('key.expiring', k.id, k.user_id, k.organization_id, NULL,
                                   jsonb_build_object('expiresAt', k.expires_at, 'days', ${options.expiringDays}::int))
          FROM (SELECT k.id, k.user_id, k.organization_id, k.expires_at FROM api_keys k
                 WHERE k.expires_at > ${now} AND k.expires_at <= ${horizon} AND k.revoked_at IS NULL AND k.replaced_by_id IS NULL
                   AND NOT EXISTS (SELECT 1 FROM audit_events e WHERE e.key_id = k.id AND e.action = 'key.expiring'
                                      AND e.details->'expiresAt' = to_jsonb(k.expires_at))
                 ORDER BY k.expires_at LIMIT ${BATCH}) k`
    }
    let idle = 0
    if (options.idleDays > 0) {
      const cutoff = new Date(now.getTime() - options.idleDays * DAY_MS)
      idle = await tx.$executeRaw`
        SELECT battra_audit_record('key.idle', k.id, k.user_id, k.organization_id, NULL,
                                   jsonb_build_object('since', k.since, 'days', ${options.idleDays}::int))
          FROM (SELECT k.id, k.user_id, k.organization_id, coalesce(k.last_used_at, k.created_at) AS since FROM api_keys k
                 WHERE coalesce(k.last_used_at, k.created_at) <= ${cutoff} AND k.revoked_at IS NULL
                   AND (k.expires_at IS NULL OR k.expires_at > ${now})
                   AND NOT EXISTS (SELECT 1 FROM audit_events e WHERE e.key_id = k.id AND e.action = 'key.idle'
                                      AND e.details->'since' = to_jsonb(coalesce(k.last_used_at, k.created_at)))
                 ORDER BY 4 LIMIT ${BATCH}) k`
    }
    return { expired, expiring, idle, skipped: false }
  }, { maxWait: 10_000, timeout: 60_000 })
}
