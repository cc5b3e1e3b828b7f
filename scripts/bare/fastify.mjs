// The benchmark's ceiling: a bare Fastify 5 (logger off, no plugins) answering fixed responses, the same
// status, headers and body bytes as the routes of ours it is compared with. Plain node, no TypeScript.
// BARE_ROUTES: JSON array of { path, status, headers, body }; prints "listening <url>".
// The same kept nextTick entry shape as ours (src/tick-object-shape.ts): without it an idle spell costs
// a bare process too about 2 µs per request at random, and the ceiling would move with it.
import '../../dist/src/tick-object-shape.js'
import Fastify from 'fastify'

const routes = JSON.parse(process.env.BARE_ROUTES ?? '[]')
const app = Fastify({ logger: false })
for (const { path, status, headers, body } of routes) {
  app.get(path, async (_request, reply) => {
    reply.code(status).headers(headers)
    return body
  })
}
const url = await app.listen({ host: '127.0.0.1', port: 0 })
console.log(`listening ${url}`)
process.on('SIGTERM', () => app.close().then(() => process.exit(0)))
