import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { authErrorResponses, errorResponses } from '#src/schemas/common.ts'
import { CreateWebhookBodySchema, CreatedWebhookSchema, DeliveryViewSchema, ListDeliveriesQuerySchema, WebhookIdParamsSchema, WebhookViewSchema } from '#src/schemas/webhooks.ts'
import { createEndpoint, getEndpoint, listDeliveries, listEndpoints, removeEndpoint } from '#src/webhooks/endpoints.ts'

const adminOnly = { auth: { scopes: ['auth:admin'] } }

const webhooks: FastifyPluginAsyncTypebox = async (fastify) => {
  const { prisma } = fastify

  fastify.post('/', {
    config: adminOnly,
    schema: {
      summary: 'Register a webhook endpoint for some event types, of one organization or of all; its signing secret is in this answer only',
      description: 'Deliveries are signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature) with the secret returned here, at least once, retried with exponential backoff for WEBHOOK_RETRY_FOR_MS. 400 INVALID_WEBHOOK: a URL that is not http(s), carries credentials, or an unknown event type.',
      body: CreateWebhookBodySchema,
      response: { 201: CreatedWebhookSchema, ...errorResponses(404), ...authErrorResponses }
    }
  }, async (request, reply) => {
    const created = await createEndpoint(prisma, request.body)
    reply.code(201).header('cache-control', 'no-store')
    return created
  })

  fastify.get('/', {
    config: adminOnly,
    schema: {
      summary: 'Registered webhook endpoints (never their secrets), with their pending and failed deliveries',
      querystring: Type.Object({ organizationId: Type.Optional(WebhookIdParamsSchema.properties.id) }, { additionalProperties: false }),
      response: { 200: Type.Array(WebhookViewSchema), ...authErrorResponses }
    }
  }, async (request) => listEndpoints(prisma, request.query))

  fastify.get('/:id', {
    config: adminOnly,
    schema: {
      summary: 'One webhook endpoint (never its secret), with its pending and failed deliveries',
      params: WebhookIdParamsSchema,
      response: { 200: WebhookViewSchema, ...errorResponses(404), ...authErrorResponses }
    }
  }, async (request) => getEndpoint(prisma, request.params.id))

  fastify.get('/:id/deliveries', {
    config: adminOnly,
    schema: {
      summary: "An endpoint's deliveries, newest first (status=failed: those given up)",
      params: WebhookIdParamsSchema,
      querystring: ListDeliveriesQuerySchema,
      response: { 200: Type.Array(DeliveryViewSchema), ...errorResponses(404), ...authErrorResponses }
    }
  }, async (request) => listDeliveries(prisma, request.params.id, request.query))

  fastify.delete('/:id', {
    config: adminOnly,
    schema: {
      summary: 'Remove an endpoint: nothing more is queued or sent to it',
      params: WebhookIdParamsSchema,
      response: { 204: Type.Null(), ...errorResponses(404), ...authErrorResponses }
    }
  }, async (request, reply) => {
    await removeEndpoint(prisma, request.params.id)
    reply.code(204)
  })
}

export default webhooks
