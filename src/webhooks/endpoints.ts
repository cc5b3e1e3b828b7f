// Registering, listing and removing webhook endpoints. Each endpoint has its own Standard Webhooks secret
// (whsec_ + base64 of 32 random bytes), returned once by createEndpoint and kept in a table Prisma does
// not map (webhook_endpoint_secrets, so Prisma Studio does not show it), for the worker to sign with. Removing an endpoint disables
// it: nothing more is queued or sent to it, and its delivery history stays.
import { randomBytes } from 'node:crypto'
import type { PrismaClient } from '#src/db/pool.ts'
import { InvalidWebhookError, OrganizationNotFoundError, ValidationError, WebhookNotFoundError } from '#src/errors.ts'
import { WEBHOOK_EVENT_TYPES, type CreatedWebhook, type DeliveryView, type ListDeliveriesQuery, type WebhookView } from '#src/schemas/webhooks.ts'

const KNOWN = new Set<string>(WEBHOOK_EVENT_TYPES)

/** The URL as it will be called, or 400 INVALID_WEBHOOK saying what is wrong. */
export function validateWebhookUrl (raw: string): string {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new InvalidWebhookError('url is not a valid absolute URL')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new InvalidWebhookError('url must use http or https')
  if (url.username !== '' || url.password !== '') throw new InvalidWebhookError('url must not carry credentials')
  if (url.hostname === '') throw new InvalidWebhookError('url must name a host')
  if (url.hash !== '') throw new InvalidWebhookError('url must not have a fragment')
  return url.toString()
}

export function validateEventTypes (events: readonly string[]): string[] {
  const unique = [...new Set(events)]
  const unknown = unique.find((event) => !KNOWN.has(event))
  if (unknown !== undefined) throw new InvalidWebhookError(`Unknown event type "${unknown}"; known: ${WEBHOOK_EVENT_TYPES.join(', ')}`)
  return unique
}

export const newWebhookSecret = (): string => `whsec_${randomBytes(32).toString('base64')}`

interface EndpointRow {
  id: string
  url: string
  events: string[]
  organization_id: string | null
  description: string | null
  created_at: Date
}

export async function createEndpoint (prisma: PrismaClient, spec: { url: string, events: readonly string[], organizationId?: string | null, description?: string }): Promise<CreatedWebhook> {
  const url = validateWebhookUrl(spec.url)
  const events = validateEventTypes(spec.events)
  const organizationId = spec.organizationId ?? null
  if (organizationId !== null && await prisma.organization.findUnique({ where: { id: organizationId }, select: { id: true } }) === null) {
    throw new OrganizationNotFoundError()
  }
  const secret = newWebhookSecret()
  const [row] = await prisma.$queryRaw<EndpointRow[]>`
    WITH endpoint AS (
      INSERT INTO webhook_endpoints (url, events, organization_id, description)
      VALUES (${url}, ${events}::text[], ${organizationId}::uuid, ${spec.description ?? null})
      RETURNING id, url, events, organization_id, description, created_at
    ), secret AS (INSERT INTO webhook_endpoint_secrets (endpoint_id, secret) SELECT id, ${secret} FROM endpoint)
    SELECT id::text, url, events, organization_id::text, description, created_at FROM endpoint`
  return { id: row.id, url: row.url, events: row.events, organizationId: row.organization_id, description: row.description, createdAt: row.created_at.toISOString(), secret }
}

export async function listEndpoints (prisma: PrismaClient, filter: { organizationId?: string, id?: string } = {}): Promise<WebhookView[]> {
  const rows = await prisma.webhookEndpoint.findMany({
    where: { disabledAt: null, organizationId: filter.organizationId, id: filter.id },
    orderBy: [{ createdAt: 'asc' }, { id: 'asc' }],
    select: { id: true, url: true, events: true, organizationId: true, description: true, createdAt: true }
  })
  const counts = await prisma.webhookDelivery.groupBy({
    by: ['endpointId', 'status'],
    where: { endpointId: { in: rows.map((row) => row.id) }, status: { in: ['pending', 'failed'] } },
    _count: { _all: true }
  })
  const count = (endpointId: string, status: string) => counts.find((c) => c.endpointId === endpointId && c.status === status)?._count._all ?? 0
  return rows.map((row) => ({ ...row, createdAt: row.createdAt.toISOString(), pending: count(row.id, 'pending'), failed: count(row.id, 'failed') }))
}

/** One endpoint as the list shows it. 404 when absent or removed. */
export async function getEndpoint (prisma: PrismaClient, id: string): Promise<WebhookView> {
  const [endpoint] = await listEndpoints(prisma, { id })
  if (endpoint === undefined) throw new WebhookNotFoundError()
  return endpoint
}

/**
 * Disables the endpoint: nothing more is queued or sent to it, and what was waiting for it is marked failed
 * (last_error "endpoint removed"). 404 when absent or already removed.
 */
export async function removeEndpoint (prisma: PrismaClient, id: string, now = new Date()): Promise<void> {
  await prisma.$transaction(async (tx) => {
    const { count } = await tx.webhookEndpoint.updateMany({ where: { id, disabledAt: null }, data: { disabledAt: now } })
    if (count === 0) throw new WebhookNotFoundError()
    await tx.webhookDelivery.updateMany({ where: { endpointId: id, status: 'pending' }, data: { status: 'failed', lastError: 'endpoint removed' } })
  })
}

export async function listDeliveries (prisma: PrismaClient, endpointId: string, query: Partial<ListDeliveriesQuery>): Promise<DeliveryView[]> {
  if (await prisma.webhookEndpoint.findFirst({ where: { id: endpointId, disabledAt: null }, select: { id: true } }) === null) throw new WebhookNotFoundError()
  const after = query.after
  if (after !== undefined && await prisma.webhookDelivery.findFirst({ where: { id: after, endpointId }, select: { id: true } }) === null) {
    throw new ValidationError('querystring/after must be the id of one of this endpoint\'s deliveries (the last of the previous page)')
  }
  const rows = await prisma.webhookDelivery.findMany({
    where: { endpointId, status: query.status },
    orderBy: [{ createdAt: 'desc' }, { id: 'asc' }],
    // Prisma compares with the cursor's row in SQL, at the column's full precision (µs; a Date holds ms).
    ...(after === undefined ? {} : { cursor: { id: after }, skip: 1 }),
    take: query.limit ?? 50
  })
  return rows.map((row) => ({
    id: row.id,
    eventId: row.eventId,
    eventType: row.eventType,
    status: row.status as DeliveryView['status'],
    attempts: row.attempts,
    createdAt: row.createdAt.toISOString(),
    nextAttemptAt: row.status === 'pending' ? row.nextAttemptAt.toISOString() : null,
    deliveredAt: row.deliveredAt?.toISOString() ?? null,
    lastStatus: row.lastStatus,
    lastError: row.lastError
  }))
}
