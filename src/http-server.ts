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
import { ConnectNotAllowedError, ExpectationFailedError, HeadersTooLargeError, InvalidHostError, MalformedRequestError, RequestTimeoutError, ShuttingDownError, errorBody, retryLater, type HttpError } from './errors.ts'

/** Header block bound: an API key request is small; a large header block is abuse (431). */
export const MAX_HEADER_BYTES = 8 * 1024
/** A request must arrive whole within this (slow-loris); answered 408. */
export const REQUEST_TIMEOUT_MS = 10_000
/** How often Node checks that bound: its default, 30 s, let a request run to 40 s. */
const TIMEOUT_CHECK_EVERY_MS = 500
/** How long a kept-alive connection must have been quiet, once draining starts, before it is closed. */
export const IDLE_DRAIN_MS = 1000
const REAP_EVERY_MS = 100

/** An answer the HTTP layer gave by itself: Fastify never saw the request, and logs nothing of it. */
export interface Refusal {
  error: HttpError
  /** The request, when the parser read one (not for what it refused). */
  request: IncomingMessage | undefined
  socket: Socket
}

interface ServerState {
  draining: boolean
  /** Open connections: the reaper needs them all, and Node lists them to nobody. */
  sockets: Set<Socket>
  /** Told of every refusal, once it is written (the access log). */
  refused: (refusal: Refusal) => void
}

const states = new WeakMap<Server, ServerState>()

// Connections the HTTP layer refuses, which closes them: refused once (Node reports a broken connection's
// later bytes again, and pipelined requests after a refusal get no answer).
const refusedConnections = new WeakSet<Socket>()
// Those on which the refusal was written: what Fastify was still reading on them has that answer.
const answeredConnections = new WeakSet<Socket>()

/** Whether the HTTP layer wrote a refusal on this connection: a request Fastify had under way on it got that answer. */
export function refusedByServer (socket: Socket | null | undefined): boolean {
  return socket != null && answeredConnections.has(socket)
}

/** Calls `listener` with every answer the server's HTTP layer gives by itself (src/app.ts logs them). */
export function onRefusal (server: Server, listener: (refusal: Refusal) => void): void {
  const state = states.get(server)
  if (state !== undefined) state.refused = listener
}

/**
 * An answer of the HTTP layer itself, before Fastify sees the request: the same error body as every
 * refusal, and the connection closes (the request's body, if any, is not read).
 */
function refuse (state: ServerState, request: IncomingMessage, response: ServerResponse, error: HttpError): void {
  // Requests pipelined after a refusal get no answer (it closes the connection): only the first is told of.
  if (!refusedConnections.has(request.socket)) state.refused({ error, request, socket: request.socket })
  refusedConnections.add(request.socket)
  answeredConnections.add(request.socket)
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

// RFC 9112 §3.2: host [ ":" port ], the host a name, an IPv4 address or a bracketed IPv6 one.
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::\d*)?$/

/**
 * RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host, and a valid one (Node drops a repeated
 * one from `headers`, so the raw ones are counted). HTTP/1.0 needs none. Found by outside probes.
 */
function hostIsValid (request: IncomingMessage): boolean {
  const host = request.headers.host
  if (host === undefined) return request.httpVersionMajor === 1 && request.httpVersionMinor === 0
  const raw = request.rawHeaders
  let count = 0
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]
    if (name.length === 4 && (name === 'Host' || name === 'host' || name.toLowerCase() === 'host')) count++
  }
  return count === 1 && HOST.test(host)
}

/** Fastify's serverFactory: the limits above, and the drain gate (one lookup per request). */
export function createHttpServer (handler: RequestListener): Server {
  const state: ServerState = { draining: false, sockets: new Set(), refused: () => {} }
  // Node answers a missing Host and an Expect it does not know by itself, with an empty body: both are
  // answered here instead, with the error body (found by an outside probe), and a Host given twice or
  // not a host too.
  const server: Server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: REQUEST_TIMEOUT_MS, connectionsCheckingInterval: TIMEOUT_CHECK_EVERY_MS, requireHostHeader: false }, (request, response) => {
    if (state.draining) refuse(state, request, response, retryLater(ShuttingDownError, 1))
    else if (!hostIsValid(request)) refuse(state, request, response, new InvalidHostError() as HttpError)
    else handler(request, response)
  })
  server.on('checkExpectation', (request: IncomingMessage, response: ServerResponse) => refuse(state, request, response, new ExpectationFailedError() as HttpError))
  // Node hands CONNECT to this event, and without a listener closed the connection without a word. As a
  // refusal of the parser, it comes after the answers to the requests pipelined before it (found by an outside probe).
  server.on('connect', (request: IncomingMessage, socket: Socket) => afterAnswersUnderWay(socket as ServerSocket, () => writeRefusal(state, socket, new ConnectNotAllowedError() as HttpError, request)))
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

type ServerSocket = Socket & { _httpMessage?: ServerResponse | null, parser?: { incoming?: IncomingMessage | null } | null }

/** A connection with a response under way (Node's own test in closeIdleConnections). */
function answering (socket: Socket): boolean {
  const response = (socket as ServerSocket)._httpMessage
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

/** A refusal written on the connection itself (there is no response object), then the connection ends. */
function writeRefusal (state: ServerState | undefined, socket: Socket, answer: HttpError, request?: IncomingMessage): void {
  if (socket.writable) {
    state?.refused({ error: answer, request, socket })
    answeredConnections.add(socket)
    const status = answer.statusCode
    const body = JSON.stringify(errorBody(status, answer.code, answer.message))
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
  }
  socket.destroy()
}

/**
 * Calls `then` once the connection has answered every request that arrived whole before the one refused:
 * a pipelining client reads answers in order, and a refusal written first would be taken for the answer
 * to a request that did run (found by an outside probe: a key created, its creator told 400). A response
 * under way for an incomplete request is the refused request's own, and is not waited for.
 */
function afterAnswersUnderWay (socket: ServerSocket, then: () => void): void {
  const response = socket._httpMessage
  if (socket.destroyed || !answering(socket) || response?.req.complete !== true) return then()
  const next = (): void => {
    response.off('finish', next)
    response.off('close', next)
    // The next queued answer, if any, is given the connection in a listener of the same event.
    setImmediate(() => afterAnswersUnderWay(socket, then))
  }
  response.once('finish', next)
  response.once('close', next)
}

/**
 * Fastify's clientErrorHandler: what the HTTP parser refuses (a request too slow, headers too large, not
 * HTTP) gets the same error body as every other refusal, after the answers of the requests before it on
 * the connection, then the connection closes.
 */
export const answerClientError: NonNullable<FastifyServerOptions['clientErrorHandler']> = function (this: { server: Server }, error, socket) {
  const code = (error as NodeJS.ErrnoException).code
  if (code === 'ECONNRESET' || socket.destroyed || refusedConnections.has(socket)) return
  refusedConnections.add(socket)
  const answer = code === 'ERR_HTTP_REQUEST_TIMEOUT'
    ? new RequestTimeoutError()
    : code === 'HPE_HEADER_OVERFLOW' ? new HeadersTooLargeError() : new MalformedRequestError()
  // The request whose bytes broke, when the parser was in its body: Node had handed it on at its headers.
  const parsing = (socket as ServerSocket).parser?.incoming
  afterAnswersUnderWay(socket as ServerSocket, () => {
    if (parsing != null && !parsing.complete && answerBegun(socket as ServerSocket, parsing)) closeAfterAnswer(socket as ServerSocket)
    else writeRefusal(states.get(this.server), socket, answer as HttpError)
  })
}

/**
 * Whether a request's own answer has begun: written whole (Node detaches a finished response from its
 * connection), or its head written. A route that ignores the body (a GET) answers before the body ends;
 * a refusal written after that was a second answer to one request, and a pipelining client took it for
 * the next one's (found by an outside probe).
 */
function answerBegun (socket: ServerSocket, request: IncomingMessage): boolean {
  const response = socket._httpMessage
  return response == null || (response.req === request && response.headersSent)
}

/** The connection ends once the answer under way, if any, is written: nothing after it is read. */
function closeAfterAnswer (socket: ServerSocket): void {
  const response = socket._httpMessage
  if (response == null || response.writableFinished) {
    socket.destroy()
    return
  }
  const close = (): void => { socket.destroy() }
  response.once('finish', close)
  response.once('close', close)
}
