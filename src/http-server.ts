// The Node HTTP server under Fastify: request size and time limits, and a graceful drain.
//
// On shutdown Fastify stops accepting connections, but a client on a kept-alive connection may send its
// next request at any moment; closing that connection under it gives the client a reset. While the
// server drains, such requests are answered 503 SERVICE_UNAVAILABLE with `Connection: close` (so the
// client retries elsewhere and the connection ends cleanly), and connections that stay idle are closed
// after a short window.
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http'

/** Header block bound: an API key request is small; a large header block is abuse (431). */
export const MAX_HEADER_BYTES = 8 * 1024
/** A request must arrive whole within this (slow-loris); answered 408. */
export const REQUEST_TIMEOUT_MS = 10_000
/** How long kept-alive connections may stay idle once draining starts. */
export const IDLE_DRAIN_MS = 1000

const draining = new WeakSet<Server>()

const SHUTTING_DOWN = JSON.stringify({
  statusCode: 503,
  code: 'SERVICE_UNAVAILABLE',
  error: 'Service Unavailable',
  message: 'The service is shutting down; retry on a new connection'
})

function refuseWhileDraining (request: IncomingMessage, response: ServerResponse): void {
  // The body, if any, is not read: the connection closes after this answer.
  response.writeHead(503, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(SHUTTING_DOWN),
    'retry-after': '1',
    connection: 'close'
  })
  response.end(SHUTTING_DOWN)
  request.resume()
}

/** Fastify's serverFactory: the limits above, and the drain gate (one WeakSet lookup per request). */
export function createHttpServer (handler: RequestListener): Server {
  const server: Server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: REQUEST_TIMEOUT_MS }, (request, response) => {
    if (draining.has(server)) refuseWhileDraining(request, response)
    else handler(request, response)
  })
  return server
}

/** Starts draining: later requests get 503 and their connection closes; idle connections close soon. */
export function startDraining (server: Server): void {
  if (draining.has(server)) return
  draining.add(server)
  const reaper = setInterval(() => server.closeIdleConnections(), IDLE_DRAIN_MS)
  reaper.unref()
  server.once('close', () => clearInterval(reaper))
}
