// The application is a plugin: external plugin wrappers, then our own, then the routes.
import { STATUS_CODES } from 'node:http'
import { join } from 'node:path'
import autoload from '@fastify/autoload'
import { LogController, type FastifyError, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { Config } from './config.ts'
import { ErrorResponse, ClaimsSchema } from './schemas.ts'

const ROOT = join(import.meta.dirname, '..')

/** Server options shared by src/server.ts and the tests. */
export function serverOptions (config: Config): FastifyServerOptions {
  return {
    logger: {
      level: config.logLevel,
      // Keys never reach the logs, even if a serializer starts logging headers.
      redact: { paths: ['req.headers["x-api-key"]', 'req.headers.authorization', 'headers["x-api-key"]', 'headers.authorization'], censor: '[redacted]' }
    },
    // Auth requests are small: a large header block or body is abuse, not a key.
    logController: new LogController({ disableRequestLogging: !config.logRequests }),
    bodyLimit: 64 * 1024,
    // A hop count is supported at run time (proxy-addr) though Fastify's types omit it.
    trustProxy: config.trustProxy as FastifyServerOptions['trustProxy'],
    // Unknown body properties are refused, not silently dropped: a misspelt flush target must not flush all.
    ajv: { customOptions: { removeAdditional: false } },
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 200 }
  }
}

export interface AppOptions {
  config: Config
}

export default async function battraAuthService (fastify: FastifyInstance, opts: AppOptions): Promise<void> {
  fastify.addSchema(ErrorResponse)
  fastify.addSchema(ClaimsSchema)

  await fastify.register(autoload, { dir: join(ROOT, 'plugins/external'), options: { ...opts } })
  await fastify.register(autoload, { dir: join(ROOT, 'plugins/app'), options: { ...opts } })
  await fastify.register(autoload, { dir: join(ROOT, 'routes'), options: { ...opts } })

  fastify.setErrorHandler((error: FastifyError & { headers?: Record<string, string> }, request, reply) => {
    const statusCode = error.statusCode !== undefined && error.statusCode >= 400 ? error.statusCode : 500
    if (error.headers !== undefined) reply.headers(error.headers)
    reply.code(statusCode)
    if (statusCode >= 500 && error.code !== 'AUTH_UNAVAILABLE') {
      // Details of a failure stay in the log; the client learns only that it happened.
      request.log.error({ err: error }, 'request failed')
      return { statusCode: 500, code: 'INTERNAL_SERVER_ERROR', error: STATUS_CODES[500], message: 'Internal Server Error' }
    }
    // Refusals are request logs: under a flood they must not become a flood of log lines.
    if (fastify.config.logRequests) request.log.info({ code: error.code, statusCode }, 'request refused')
    return { statusCode, code: error.code ?? STATUS_CODES[statusCode], error: STATUS_CODES[statusCode], message: error.message }
  })

  // Unknown routes are not revealed to callers without a valid key.
  fastify.setNotFoundHandler({ preHandler: fastify.apiKeyAuth.hook }, (request, reply) => {
    reply.code(404)
    return { statusCode: 404, code: 'NOT_FOUND', error: STATUS_CODES[404], message: `Route ${request.method} ${request.url.split('?')[0]} not found` }
  })
}
