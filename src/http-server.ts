// The Node HTTP server under Fastify: request size and time limits, and a graceful drain.
//
// On shutdown Fastify stops accepting connections, but a client on a kept-alive connection may send its
// next request at any moment; closing that connection under it gives the client a reset. While the
// server drains, such requests are answered 503 SERVICE_UNAVAILABLE with `Connection: close` (so the
// client retries elsewhere and the connection ends cleanly), and connections that stay quiet are closed
// after a short window.
import { STATUS_CODES, createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyServerOptions } from 'fastify'
import { ExpectationFailedError, HeadersTooLargeError, MalformedRequestError, MissingHostError, RequestTimeoutError, ShuttingDownError, errorBody, retryLater, type HttpError } from './errors.ts'

/** Header block bound: an API key request is small; a large header block is abuse (431). */
export const MAX_HEADER_BYTES = 8 * 1024
/** A request must arrive whole within this (slow-loris); answered 408. */
export const REQUEST_TIMEOUT_MS = 10_000
/** How often Node checks that bound: its default, 30 s, let a request run to 40 s. */
const TIMEOUT_CHECK_EVERY_MS = 500
/** How long a kept-alive connection must have been quiet, once draining starts, before it is closed. */
export const IDLE_DRAIN_MS = 1000
const REAP_EVERY_MS = 100

interface DrainState {
  draining: boolean
  /** Open connections: the reaper needs them all, and Node lists them to nobody. */
  sockets: Set<Socket>
}

const states = new WeakMap<Server, DrainState>()

/**
 * An answer of the HTTP layer itself, before Fastify sees the request: the same error body as every
 * refusal, and the connection closes (the request's body, if any, is not read).
 */
function refuse (request: IncomingMessage, response: ServerResponse, error: HttpError): void {
  const body = JSON.stringify(errorBody(error.statusCode, error.code, error.message))
  response.writeHead(error.statusCode, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    ...error.headers,
    connection: 'close'
  })
  response.end(body)
  request.resume()
}

/** Fastify's serverFactory: the limits above, and the drain gate (one lookup per request). */
export function createHttpServer (handler: RequestListener): Server {
  const state: DrainState = { draining: false, sockets: new Set() }
  // Node answers a missing Host and an Expect it does not know by itself, with an empty body: both are
  // answered here instead, with the error body (found by an outside probe).
  const server: Server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: REQUEST_TIMEOUT_MS, connectionsCheckingInterval: TIMEOUT_CHECK_EVERY_MS, requireHostHeader: false }, (request, response) => {
    if (state.draining) refuse(request, response, retryLater(ShuttingDownError, 1))
    else if (request.headers.host === undefined && request.httpVersionMajor === 1 && request.httpVersionMinor === 1) refuse(request, response, new MissingHostError() as HttpError)
    else handler(request, response)
  })
  server.on('checkExpectation', (request: IncomingMessage, response: ServerResponse) => refuse(request, response, new ExpectationFailedError() as HttpError))
  states.set(server, state)
  server.on('connection', (socket: Socket) => {
    state.sockets.add(socket)
    socket.once('close', () => state.sockets.delete(socket))
  })
  // server.close() (Node 19+) closes every idle kept-alive connection at once. Idle, to Node, includes a
  // connection whose client has just sent its next request, still unread in the socket's buffer: that
  // client gets a reset instead of an answer. While draining, the reaper closes quiet connections instead.
  const closeIdleConnections = server.closeIdleConnections.bind(server)
  server.closeIdleConnections = () => {
    if (!state.draining) closeIdleConnections()
  }
  return server
}

/** A connection with a response under way (Node's own test in closeIdleConnections). */
function answering (socket: Socket): boolean {
  const response = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage
  return response != null && !response.writableFinished
}

/**
 * Starts draining: later requests get 503 and their connection closes; a connection with no answer
 * under way that has read and written nothing for IDLE_DRAIN_MS is closed.
 */
export function startDraining (server: Server): void {
  const state = states.get(server)
  if (state === undefined || state.draining) return
  state.draining = true
  const seen = new WeakMap<Socket, { bytes: number, since: number }>()
  const reaper = setInterval(() => {
    const now = performance.now()
    for (const socket of state.sockets) {
      const bytes = socket.bytesRead + socket.bytesWritten
      const last = seen.get(socket)
      if (last === undefined || last.bytes !== bytes || answering(socket)) {
        seen.set(socket, { bytes, since: now })
      } else if (now - last.since >= IDLE_DRAIN_MS) {
        socket.destroy()
      }
    }
  }, REAP_EVERY_MS)
  reaper.unref()
  server.once('close', () => clearInterval(reaper))
}

/**
 * Fastify's clientErrorHandler: what the HTTP parser refuses (a request too slow, headers too large, not
 * HTTP) gets the same error body as every other refusal, then the connection closes.
 */
export const answerClientError: NonNullable<FastifyServerOptions['clientErrorHandler']> = function (error, socket) {
  const code = (error as NodeJS.ErrnoException).code
  if (code === 'ECONNRESET' || socket.destroyed) return
  const answer = code === 'ERR_HTTP_REQUEST_TIMEOUT'
    ? new RequestTimeoutError()
    : code === 'HPE_HEADER_OVERFLOW' ? new HeadersTooLargeError() : new MalformedRequestError()
  const status = answer.statusCode!
  const body = JSON.stringify(errorBody(status, answer.code, answer.message))
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
  }
  socket.destroy()
}
