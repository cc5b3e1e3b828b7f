import fp from 'fastify-plugin'
import { Registry } from 'prom-client'
import { pulledGauge } from '#src/metrics.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** The Prometheus registry that GET /metrics renders; plugins add their collectors to it. */
    metrics: Registry
  }
}

export default fp(async function metrics (fastify) {
  const registry = new Registry()
  pulledGauge(registry, 'process_resident_memory_bytes', 'Resident memory.', [], () => [[undefined, process.memoryUsage.rss()]])
  fastify.decorate('metrics', registry)
}, { name: 'metrics' })
