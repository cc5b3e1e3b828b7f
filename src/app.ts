// The application is a plugin: the error handler first, then external plugin wrappers, our own
// plugins, and the routes (folders are URL prefixes).
import { STATUS_CODES } from 'node:http'
import { isIP } from 'node:net'
import { join } from 'node:path'
import { AjvCompiler, type BuildCompilerFromPool } from '@fastify/ajv-compiler'
import autoload from '@fastify/autoload'
import Fastify, { type FastifyError, type FastifyInstance, type preValidationHookHandler, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import { pino, type DestinationStream, type LoggerOptions } from 'pino'
import { AccessLogController, noteAnswerCode } from './access-log.ts'
import type { Config } from './config.ts'
import type { Database } from './db/database.ts'
import { isDatabaseUnavailable } from './db/failures.ts'
import { BadRequestError, InternalServerError, RouteNotFoundError, ServiceUnavailableError, ValidationError, errorBody, retryLater, type HttpError } from './errors.ts'
import { answerClientError, createHttpServer, onRefusal } from './http-server.ts'
import { parseJsonBody, refuseNonEmptyBody } from './json-body.ts'
import { lazyChildLoggerFactory } from './lazy-child-logger.ts'
import { CODE_ROOT } from './paths.ts'
import { DECIMAL_NUMBER, configureAjv, numericPropertyNames, requireFiniteNumbers } from './schemas/ajv.ts'
import { ClaimsSchema } from './schemas/claims.ts'
import { ErrorResponse, isUuid } from './schemas/common.ts'

/**
 * A URL as request logs show it, with no key in it (found by outside probes): only the path segments
 * the routes are made of (`api`, `v1`, `api-keys`, …) and ids are kept; any other segment is masked, as
 * is the whole query. Clients put keys in paths and queries by mistake, and a legacy key can be any
 * string, so no pattern could tell a key from a word.
 */
export function urlForLog (url: string, routeWords: RouteWords): string {
  const start = url.indexOf('?')
  const segments = (start === -1 ? url : url.slice(0, start)).split('/')
  const path = segments
    .map((segment, i) => segment === '' || routeWords.words.has(segment) || (isUuid(segment) && routeWords.beforeIds.has(segments[i - 1])) ? segment : '[redacted]')
    .join('/')
  return start === -1 ? path : `${path}?[redacted]`
}

/**
 * The path segments routes are made of, and those a route parameter follows: a UUID is kept only after
 * one of these (`/api/v1/api-keys/<id>`), as any string elsewhere, since a legacy key may be a UUID too
 * (found by an outside probe).
 */
export interface RouteWords {
  words: ReadonlySet<string>
  beforeIds: ReadonlySet<string>
}

/**
 * The address as logged: one that is not an address (a forwarded value) says so, and an IPv6 zone is
 * masked, since a zone can be any word, a legacy key too (found by an outside probe).
 */
export function addressForLog (ip: string): string {
  if (isIP(ip) === 0) return '[not an address]'
  const zone = ip.indexOf('%')
  return zone === -1 ? ip : `${ip.slice(0, zone)}%[redacted]`
}

/** The service's log lines: its level, and keys never in them (even if a serializer starts logging headers). */
function loggerOptions (config: Config, routeWords: RouteWords): LoggerOptions {
  return {
    level: config.logLevel,
    redact: { paths: ['req.headers["x-api-key"]', 'req.headers.authorization', 'headers["x-api-key"]', 'headers.authorization'], censor: '[redacted]' },
    // Fastify's own request serialiser, but for the URL's query.
    serializers: {
      req: (request: FastifyRequest) => ({
        method: request.method,
        // Undefined for what the HTTP parser refused: there is no request line to show.
        url: request.url === undefined ? undefined : urlForLog(request.url, routeWords),
        // No Host: like the path, it is whatever the client wrote, and a key can be any string. Behind a
        // trusted proxy the address is what X-Forwarded-For says, not necessarily an address (found by an outside probe).
        remoteAddress: addressForLog(request.ip),
        remotePort: request.socket?.remotePort
      })
    }
  }
}

/** Longest path parameter the router reads (a key id is 36 characters); longer is a 414. */
const MAX_PARAM_LENGTH = 200

// Fastify's own messages repeat the path, which is whatever the client wrote (the log masks it).
const FRAMEWORK_MESSAGES: Record<string, string> = {
  FST_ERR_BAD_URL: 'The URL is not valid: a part of it does not decode (malformed percent-encoding)',
  FST_ERR_MAX_PARAM_LENGTH: `A part of the path is longer than ${MAX_PARAM_LENGTH} characters`
}

const ajvFromPool = AjvCompiler()

/**
 * Fastify's Ajv coerces types everywhere: right for a query string or path, where everything is text, but
 * in a JSON body it turned `{"description": 1e309}` into "Infinity" and `true` into "true" (found by an
 * outside probe). Bodies are validated as sent; the other parts keep their coercion.
 */
const bodiesAsSent: BuildCompilerFromPool = (externalSchemas, ajvOptions) => {
  const coercing = ajvFromPool(externalSchemas, ajvOptions)
  // Never the JTD mode here: the service's schemas are JSON Schema.
  const exact = ajvFromPool(externalSchemas, { ...ajvOptions, customOptions: { ...ajvOptions?.customOptions, coerceTypes: false } } as Parameters<BuildCompilerFromPool>[1])
  return (route) => route.httpPart === 'body' ? exact(route) : coercing(route)
}

/** Server options of the service, its logger apart (createFastify). */
export function serverOptions (config: Config): FastifyServerOptions {
  const logController = new AccessLogController({ disableRequestLogging: !config.logRequests })
  return {
    logController,
    childLoggerFactory: lazyChildLoggerFactory,
    // Auth requests are small: a large header block (src/http-server.ts) or body is abuse, not a key.
    bodyLimit: 64 * 1024,
    serverFactory: createHttpServer,
    clientErrorHandler: answerClientError,
    frameworkErrors: (error, request, reply) => {
      answerFrameworkError(error, request, reply)
      // Fastify logs no answer for what it refuses before routing: the access log has its line all the same.
      logController.requestCompleted(null, request, reply)
    },
    // Shutdown drains kept-alive connections itself (src/http-server.ts) instead of resetting them.
    forceCloseConnections: false,
    return503OnClosing: false,
    // A first start on a busy machine can be slow (the embedded database, compiling schemas): slow is
    // not stuck. src/server.ts opens the database before any plugin's clock starts.
    pluginTimeout: 60_000,
    trustProxy: config.trustProxy,
    // Unknown body properties are refused, not silently dropped: a misspelt flush target must not flush all.
    ajv: { customOptions: { removeAdditional: false }, onCreate: configureAjv } as FastifyServerOptions['ajv'],
    schemaController: { compilersFactory: { buildValidator: bodiesAsSent } },
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: MAX_PARAM_LENGTH }
  }
}

/**
 * The service's Fastify instance (src/server.ts and the tests), logging to `destination` (stdout when
 * not given). With request logging on, Fastify makes the logger from the options. With it off, Fastify
 * is given no logger and ours becomes `fastify.log` afterwards: a Fastify without a logger skips, on
 * every request, the response listeners and clock reads it keeps only to log the response (README,
 * Performance); request loggers are made from `fastify.log` (src/lazy-child-logger.ts), so
 * `request.log` logs as before.
 */
export function createFastify (config: Config, destination?: DestinationStream): FastifyInstance {
  const options = serverOptions(config)
  const routeWords = { words: new Set<string>(), beforeIds: new Set<string>() }
  let app: FastifyInstance
  if (config.logRequests) {
    app = Fastify({ ...options, logger: { ...loggerOptions(config, routeWords), stream: destination } })
  } else {
    app = Fastify(options)
    app.log = pino(loggerOptions(config, routeWords), destination)
  }
  app.addHook('onRoute', (route) => {
    const segments = route.url.split('/')
    segments.forEach((segment, i) => {
      if (segment.startsWith(':')) routeWords.beforeIds.add(segments[i - 1])
      else if (segment !== '' && !segment.includes('*')) routeWords.words.add(segment)
    })
  })
  // What the HTTP layer answers by itself has its access line too.
  onRefusal(app.server, (refusal) => (options.logController as AccessLogController).refused(app.log, refusal))
  return app
}

export interface AppOptions {
  config: Config
  /** Opened beforehand by src/server.ts; the database plugin opens it otherwise. */
  database?: Database
  /** The clock (ms since epoch) of the cache and the auth hook, for tests. */
  now?: () => number
}

/** A code in the house style for an error that brought none: 403 → FORBIDDEN. */
const codeOf = (statusCode: number): string => (STATUS_CODES[statusCode] ?? 'ERROR').toUpperCase().replace(/[^A-Z0-9]+/g, '_')

/** The answer to any error: the error's own status, code, message and headers; a 5xx tells nothing more. */
function handleError (this: FastifyInstance, error: FastifyError & { headers?: Record<string, string> }, request: FastifyRequest, reply: FastifyReply) {
  let answer: HttpError = error as HttpError
  // Our own 503s stand as they are, though their cause (kept for the log) is a database failure.
  const unavailableAnswer = error.code === 'AUTH_UNAVAILABLE' || error.code === 'SERVICE_UNAVAILABLE'
  // A refusal already (a 4xx) is the client's doing, whatever its code says: a client that closes the
  // connection mid-body is an ECONNRESET too, and was logged as a database outage (found by an outside probe).
  const refusal = error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500
  if (!unavailableAnswer && !refusal && isDatabaseUnavailable(error)) {
    answer = retryLater(ServiceUnavailableError, this.config.unavailableRetryAfterSeconds)
  } else if (error.statusCode === undefined || error.statusCode < 400 || error.statusCode >= 600) {
    answer = new InternalServerError() as HttpError
  } else if (error.statusCode >= 500 && !unavailableAnswer) {
    answer = new InternalServerError() as HttpError
  }
  const statusCode = answer.statusCode
  if (statusCode >= 500) {
    // Every 5xx is logged, request logging or not; the details stay here, never in the answer.
    request.log.error({ err: error, statusCode, code: answer.code }, 'request failed')
  } else if (this.config.logRequests) {
    // Refusals are request logs: under a flood they must not become a flood of log lines. The code goes
    // into the access line (src/access-log.ts).
    noteAnswerCode(request, answer.code)
  }
  if (answer.headers !== undefined) reply.headers(answer.headers)
  reply.code(statusCode)
  return errorBody(statusCode, answer.code ?? codeOf(statusCode), answer.message)
}

/**
 * Fastify's frameworkErrors: what it refuses before routing (a URL that does not decode, a parameter over
 * maxParamLength) gets the house body and code, as every other refusal, instead of Fastify's own.
 */
function answerFrameworkError (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const refusal = error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500
  const body = refusal ? errorBody(error.statusCode!, codeOf(error.statusCode!), FRAMEWORK_MESSAGES[error.code] ?? error.message) : errorBody(500, 'INTERNAL_SERVER_ERROR', new InternalServerError().message)
  noteAnswerCode(request, body.code)
  reply.code(body.statusCode).type('application/json; charset=utf-8').send(body)
}

/**
 * What the validator cannot see of a URL, checked before it runs: a NUL character, and numbers of the
 * query string not written in decimal. Callback style: a promise per request for a check that never
 * waits is not free on the read routes.
 */
function urlTextCheck (numberNames: readonly string[]): preValidationHookHandler {
  return function checkUrlText (request, _reply, done) {
    if (request.url.includes('%00')) return done(new BadRequestError('NUL characters are not allowed in the URL'))
    const query = request.query as Record<string, unknown>
    for (const name of numberNames) {
      const value = query[name]
      for (const text of Array.isArray(value) ? value : [value]) {
        if (typeof text === 'string' && !DECIMAL_NUMBER.test(text)) return done(new ValidationError(`querystring/${name} must be a number written in decimal`))
      }
    }
    done()
  }
}

export default async function battraAuthService (fastify: FastifyInstance, opts: AppOptions): Promise<void> {
  // Before any route exists: a route keeps the error handler in force when it was added.
  fastify.setErrorHandler(handleError)
  // JSON is the only body the API reads: any other type (text/plain included, which Fastify would pass to
  // the route as a string) is a 415. An empty body is no body, whatever type it says: clients send one
  // with a POST that carries nothing (fetch: text/plain, curl -d '': a form), found by an outside probe.
  fastify.removeAllContentTypeParsers()
  fastify.addContentTypeParser('application/json', { parseAs: 'buffer' }, parseJsonBody)
  fastify.addContentTypeParser('*', { parseAs: 'buffer' }, refuseNonEmptyBody)
  // Rules that hold on every route, applied as each route is added.
  fastify.addHook('onRoute', (route) => {
    const schema = route.schema as { querystring?: unknown, params?: unknown, body?: unknown, headers?: unknown } | undefined
    for (const part of [schema?.querystring, schema?.params, schema?.body, schema?.headers]) requireFiniteNumbers(part)
    if (schema?.querystring === undefined && schema?.params === undefined) return
    const checkUrlText = urlTextCheck(numericPropertyNames(schema?.querystring))
    route.preValidation = route.preValidation === undefined ? [checkUrlText] : [checkUrlText, ...[route.preValidation].flat()]
  })
  fastify.addSchema(ErrorResponse)
  fastify.addSchema(ClaimsSchema)

  await fastify.register(autoload, { dir: join(CODE_ROOT, 'plugins/external'), options: { ...opts } })
  await fastify.register(autoload, { dir: join(CODE_ROOT, 'plugins/app'), options: { ...opts } })
  await fastify.register(autoload, { dir: join(CODE_ROOT, 'routes'), options: { ...opts } })

  // Unknown routes are not revealed to callers without a valid key.
  fastify.setNotFoundHandler({ preHandler: fastify.apiKeyAuth.hook }, (request) => {
    throw new RouteNotFoundError(request.method, request.url.split('?')[0])
  })
}
