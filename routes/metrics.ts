import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { renderFamilies, renderHistogram, type Sample } from '../src/metrics.ts'

// Prometheus text format. Open like most exporters: counts, no identities; restrict it at the network
// (or scrape through a gateway) if that matters where you run it.
const metrics: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/metrics', {
    config: { auth: false },
    schema: { summary: 'Prometheus metrics', response: { 200: Type.String() } }
  }, async (_request, reply) => {
    const { apiKeyAuth, invalidation, database } = fastify
    const stats = apiKeyAuth.stats()
    const listener = invalidation.stats()
    const results: Sample[] = Object.entries(apiKeyAuth.metrics.results).map(([code, value]) => [{ code }, value])
    reply.type('text/plain; version=0.0.4; charset=utf-8')
    return renderFamilies([
      { name: 'battra_auth_requests_total', help: 'Answers of the authentication hook by code (OK: admitted).', type: 'counter', samples: results },
      { name: 'battra_auth_cache_hits_total', help: 'Requests answered from the cache.', type: 'counter', samples: [[{ cache: 'positive' }, stats.hits], [{ cache: 'negative' }, stats.negativeHits]] },
      { name: 'battra_auth_cache_misses_total', help: 'Requests that needed a lookup (concurrent misses of one key count once).', type: 'counter', samples: [[undefined, stats.misses]] },
      { name: 'battra_auth_cache_evictions_total', help: 'Entries pushed out by the size bound.', type: 'counter', samples: [[undefined, stats.evictions]] },
      { name: 'battra_auth_cache_invalidations_total', help: 'Invalidations applied (notifications, flushes, own writes).', type: 'counter', samples: [[undefined, stats.invalidations]] },
      { name: 'battra_auth_cache_stale_served_total', help: 'Answers served stale because the database failed.', type: 'counter', samples: [[undefined, stats.staleServed]] },
      { name: 'battra_auth_cache_entries', help: 'Entries in the cache.', type: 'gauge', samples: [[{ cache: 'positive' }, stats.entries], [{ cache: 'negative' }, stats.negativeEntries]] },
      { name: 'battra_auth_lookup_failures_total', help: 'Key lookups that failed (database errors).', type: 'counter', samples: [[undefined, stats.lookupFailures]] },
      { name: 'battra_auth_db_statements_total', help: 'Statements sent to the database by this process.', type: 'counter', samples: [[undefined, database.statements.count]] },
      { name: 'battra_auth_usage_flushes_total', help: 'last_used_at writes (one statement each).', type: 'counter', samples: [[undefined, stats.usageFlushes]] },
      { name: 'battra_auth_usage_pending_keys', help: 'Keys whose use waits for the next write.', type: 'gauge', samples: [[undefined, stats.usagePendingKeys]] },
      { name: 'battra_auth_failure_limited_clients', help: 'Clients tracked by the failed-attempt limiter.', type: 'gauge', samples: [[undefined, stats.limitedClients]] },
      { name: 'battra_auth_listener_up', help: '1 while the invalidation listener is connected.', type: 'gauge', samples: [[{ state: listener.state }, listener.state === 'listening' ? 1 : 0]] },
      { name: 'process_resident_memory_bytes', help: 'Resident memory.', type: 'gauge', samples: [[undefined, process.memoryUsage.rss()]] }
    ]) +
      renderHistogram('battra_auth_db_lookup_duration_seconds', 'Duration of key lookups in the database.', apiKeyAuth.metrics.lookupSeconds) +
      renderHistogram('battra_auth_usage_flush_keys', 'Keys written per last_used_at statement.', apiKeyAuth.metrics.usageFlushKeys)
  })
}

export default metrics
