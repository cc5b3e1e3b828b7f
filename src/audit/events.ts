// The audit trail as the service reads and adds to it. Rows are written by the database (triggers and the
// function battra_audit_record, prisma/migrations/20261128000000_audit_events): the service only reads
// them, and records the few events no table change stands for (cache.flushed, and the sweeps' key.expired,
// key.expiring and key.idle) through the same function, so every row is chained alike.
import type { PrismaClient } from '#src/db/pool.ts'
import type { Prisma } from '#src/generated/prisma/client.ts'
import { BadRequestError } from '#src/errors.ts'
import { asActor, isAdmin, type Actor } from '#src/keys/management.ts'
import type { AuditAction, AuditEventPage, AuditEventView, ListAuditEventsQuery } from '#src/schemas/audit.ts'

export interface EventTargets {
  keyId?: string | null
  userId?: string | null
  organizationId?: string | null
}

/** Records one event in the actor's own transaction; returns its id. */
export async function recordEvent (prisma: PrismaClient, actor: Actor, action: AuditAction, targets: EventTargets, details: Record<string, unknown> | null = null): Promise<string> {
  return asActor(prisma, actor, async (tx) => {
    const rows = await tx.$queryRaw<Array<{ id: string }>>`
      SELECT battra_audit_record(${action}, ${targets.keyId ?? null}::uuid, ${targets.userId ?? null}::uuid,
                                 ${targets.organizationId ?? null}::uuid, NULL, ${details === null ? null : JSON.stringify(details)}::jsonb)::text AS id`
    return rows[0].id
  })
}

type EventRow = Prisma.AuditEventGetPayload<Record<string, never>>

const present = <T>(value: T | null): T | undefined => value === null ? undefined : value

export function toEventView (row: EventRow): AuditEventView {
  return {
    id: row.id,
    seq: row.seq.toString(),
    at: row.at.toISOString(),
    action: row.action,
    actor: row.actor as AuditEventView['actor'],
    keyId: present(row.keyId),
    userId: present(row.userId),
    organizationId: present(row.organizationId),
    address: present(row.address),
    userAgent: present(row.userAgent),
    changes: present(row.changes) as AuditEventView['changes'],
    details: present(row.details) as AuditEventView['details']
  }
}

/**
 * A page of events, newest first. auth:admin (and the command line) see every event; any other key those
 * of its own user (its keys, its memberships) and of its organization.
 */
export async function listEvents (prisma: PrismaClient, actor: Actor, query: Partial<ListAuditEventsQuery>): Promise<AuditEventPage> {
  const since = query.since ?? query.from
  const until = query.until ?? query.to
  if (query.since !== undefined && query.from !== undefined) throw new BadRequestError('Give since or from, not both')
  if (query.until !== undefined && query.to !== undefined) throw new BadRequestError('Give until or to, not both')
  if (since !== undefined && until !== undefined && Date.parse(since) > Date.parse(until)) {
    throw new BadRequestError('since must not be after until')
  }
  const limit = query.limit ?? 50
  const where: Prisma.AuditEventWhereInput = {
    keyId: query.keyId,
    userId: query.userId,
    organizationId: query.organizationId,
    action: query.action,
    at: since === undefined && until === undefined
      ? undefined
      : { ...(since === undefined ? {} : { gte: new Date(since) }), ...(until === undefined ? {} : { lt: new Date(until) }) },
    seq: query.cursor === undefined ? undefined : { lt: BigInt(query.cursor) }
  }
  if (actor.type === 'key' && !isAdmin(actor)) {
    const { userId, organizationId } = actor.claims
    where.OR = organizationId === null ? [{ userId }] : [{ userId }, { organizationId }]
  }
  const rows = await prisma.auditEvent.findMany({ where, orderBy: { seq: 'desc' }, take: limit + 1 })
  const page = rows.slice(0, limit)
  return { events: page.map(toEventView), nextCursor: rows.length > limit ? page[page.length - 1].seq.toString() : null }
}
