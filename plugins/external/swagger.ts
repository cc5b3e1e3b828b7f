import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'

const DOCS_PREFIX = '/docs'

// The OpenAPI document of every route (at /docs/json) and its UI (at /docs). Readable without a key:
// it describes the API, it does not open it.
export default fp(async function openApi (fastify: FastifyInstance) {
  await fastify.register(swagger, {
    openapi: {
      info: { title: 'battra-auth', description: "API-key authentication for Battra's REST API", version: '0.1.0' },
      components: {
        securitySchemes: {
          apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'The key, optionally prefixed "ApiKey "; or Authorization: ApiKey <key>' }
        }
      },
      security: [{ apiKey: [] }]
    }
  })
  fastify.addHook('onRoute', (route) => {
    if (route.url === DOCS_PREFIX || route.url.startsWith(`${DOCS_PREFIX}/`)) route.config = { ...route.config, auth: false }
  })
  await fastify.register(swaggerUi, { routePrefix: DOCS_PREFIX })
}, { name: 'openapi' })
