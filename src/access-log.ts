// Request logging as an access log: one line per request, written when it is answered.
import { LogController, type FastifyBaseLogger, type FastifyReply, type FastifyRequest } from 'fastify'
import { refusedByServer, type Refusal } from './http-server.ts'

/** The code of an error answer (handleError in src/app.ts), for its access line. */
const answerCodes = new WeakMap<FastifyRequest, string>()

export function noteAnswerCode (request: FastifyRequest, code: string): void {
  answerCodes.set(request, code)
}

/**
 * Fastify writes two lines per request, one on arrival and one on answer. Each line costs about as much
 * CPU as a third of a cached request (README, Performance), and the arrival line tells nothing the answer
 * line cannot: here the answer line carries the request too, as a gateway's access log does. The arrival
 * line stays at debug, for following a request that is never answered.
 */
export class AccessLogController extends LogController {
  override incomingRequest (request: FastifyRequest, reply: FastifyReply): void {
    if (this.isLogDisabled(request)) return
    request.log.debug({ req: request }, 'incoming request')
    // A client that leaves before its answer (a timeout of its own, a body cut off) gets no 'finish', so
    // Fastify never calls requestCompleted: its line is this one (found by an outside probe: none at info).
    // The address is read now: a closed socket no longer has it.
    const req = { method: request.method, url: request.url, ip: request.ip, socket: { remotePort: request.socket?.remotePort } }
    reply.raw.once('close', () => {
      // Answered (the answer ended; Fastify logs it on 'finish', or on 'error' if the write failed).
      if (reply.raw.writableEnded) return
      // After the request's own handling of the abort (its error answer names the code) and the HTTP
      // layer's (a body cut off or too slow, a bad encoding: its refusal, if written, has the line), which
      // Node starts in the same turn.
      setImmediate(() => {
        if (!refusedByServer(request.raw.socket)) reply.log.info({ req, code: answerCodes.get(request), responseTime: reply.elapsedTime }, 'request abandoned')
      })
    })
  }

  /**
   * What the HTTP layer answers by itself (src/http-server.ts), through the same serialiser (the URL masked
   * as ever), with the refusal's code. With request logging off, a 5xx among them (the drain's 503) is
   * still logged, as every 5xx is.
   */
  refused (log: FastifyBaseLogger, { error, request, socket }: Refusal): void {
    const req = { method: request?.method, url: request?.url, ip: socket.remoteAddress ?? '', socket }
    if (this.disableRequestLogging !== true) log.info({ req, res: { statusCode: error.statusCode }, code: error.code }, 'request completed')
    else if (error.statusCode >= 500) log.warn({ req, statusCode: error.statusCode, code: error.code }, 'request refused')
  }

  override requestCompleted (error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (this.isLogDisabled(request)) return
    if (error != null) reply.log.error({ req: request, res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored')
    else reply.log.info({ req: request, res: reply, code: answerCodes.get(request), responseTime: reply.elapsedTime }, 'request completed')
  }
}
