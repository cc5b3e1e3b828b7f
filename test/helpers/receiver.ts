// A local webhook receiver (node:http on 127.0.0.1) that records what it gets and answers as told.
import { once } from 'node:events'
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Teardown } from './database.ts'

export interface Received { path: string, headers: IncomingHttpHeaders, body: string, at: number }

/** What to answer the nth request (0-based): a status, or 'hang' (never answer). */
export type Answer = number | 'hang'

export interface Receiver {
  url: string
  received: Received[]
  /** Sets how requests are answered from now on. */
  answer: (fn: (request: Received, index: number) => Answer | Promise<Answer>) => void
  close: () => Promise<void>
}

export async function startReceiver (t: Teardown, path = '/hooks/battra'): Promise<Receiver> {
  const received: Received[] = []
  const hanging = new Set<ServerResponse>()
  let respond: (request: Received, index: number) => Answer | Promise<Answer> = () => 204
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const request = { path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() }
      const index = received.push(request) - 1
      Promise.resolve(respond(request, index)).then((answer) => {
        if (answer === 'hang') {
          hanging.add(res)
          res.on('close', () => hanging.delete(res))
          return
        }
        res.writeHead(answer).end()
      }, () => res.writeHead(500).end())
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    for (const res of hanging) res.destroy()
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  }
  t.teardown(close)
  return { url: `http://127.0.0.1:${port}${path}`, received, answer: (fn) => { respond = fn }, close }
}
