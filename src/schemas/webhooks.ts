// The shapes of webhook endpoints and their deliveries (/api/v1/webhooks).
import { Type, type Static } from 'typebox'
import { AUDIT_ACTIONS } from './audit.ts'
import { DateTime, Nullable, Uuid } from './common.ts'

/** What an endpoint can subscribe to: every audit action, the sweep's key.expiring and key.idle, or '*'. */
export const WEBHOOK_EVENT_TYPES = [...AUDIT_ACTIONS, '*'] as const
export const MAX_WEBHOOK_URL_LENGTH = 2048

const EventTypes = Type.Array(Type.String({ maxLength: 64 }), {
  minItems: 1,
  maxItems: WEBHOOK_EVENT_TYPES.length,
  description: `Event types: ${WEBHOOK_EVENT_TYPES.join(', ')} (* for all)`
})

export const CreateWebhookBodySchema = Type.Object({
  url: Type.String({ minLength: 1, maxLength: MAX_WEBHOOK_URL_LENGTH, description: 'http:// or https:// URL, without credentials' }),
  events: EventTypes,
  organizationId: Type.Optional(Type.Union([Uuid, Type.Null()], { description: "One organization's events; absent or null: every event (global)" })),
  description: Type.Optional(Type.String({ maxLength: 200 }))
}, { additionalProperties: false })
export type CreateWebhookBody = Static<typeof CreateWebhookBodySchema>

/** An endpoint as listed: never its secret. */
export const WebhookViewSchema = Type.Object({
  id: Uuid,
  url: Type.String(),
  events: Type.Array(Type.String()),
  organizationId: Nullable(Uuid),
  description: Nullable(Type.String()),
  createdAt: DateTime,
  pending: Type.Integer({ description: 'Deliveries waiting (first attempt or retry)' }),
  failed: Type.Integer({ description: 'Deliveries given up after retrying for WEBHOOK_RETRY_FOR_MS' })
})
export type WebhookView = Static<typeof WebhookViewSchema>

export const CreatedWebhookSchema = Type.Object({
  ...Type.Pick(WebhookViewSchema, ['id', 'url', 'events', 'organizationId', 'description', 'createdAt']).properties,
  secret: Type.String({ description: 'whsec_…: the Standard Webhooks signing secret. Shown in this response only: store it now.' })
})
export type CreatedWebhook = Static<typeof CreatedWebhookSchema>

export const WebhookIdParamsSchema = Type.Object({ id: Uuid })

export const DeliveryStatus = Type.Union([Type.Literal('pending'), Type.Literal('delivered'), Type.Literal('failed')])

export const DeliveryViewSchema = Type.Object({
  id: Type.String({ description: 'The webhook-id header: the same on every attempt' }),
  eventId: Uuid,
  eventType: Type.String(),
  status: DeliveryStatus,
  attempts: Type.Integer(),
  createdAt: DateTime,
  nextAttemptAt: Nullable(DateTime),
  deliveredAt: Nullable(DateTime),
  lastStatus: Nullable(Type.Integer({ description: 'HTTP status of the last attempt' })),
  lastError: Nullable(Type.String())
})
export type DeliveryView = Static<typeof DeliveryViewSchema>

export const ListDeliveriesQuerySchema = Type.Object({
  status: Type.Optional(DeliveryStatus),
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 50 }),
  after: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'The id of the last delivery of the previous page: the next page starts after it' }))
}, { additionalProperties: false })
export type ListDeliveriesQuery = Static<typeof ListDeliveriesQuerySchema>
