// battra-auth for any Fastify service, in one line:
//   await app.register(battraAuth)                      // settings from the environment (see README)
//   await app.register(battraAuth, { config })          // or given explicitly
// Register it before the routes it protects. Every route then requires a key (opt out with
// `config: { auth: false }`) and sees `request.auth`; changes to keys, users, organizations and
// memberships reach its cache through the database (see README, Invalidation across instances).
import '#src/tick-object-shape.ts'
import fp from 'fastify-plugin'
import authPlugin, { type AuthPluginOptions } from './app/auth.ts'
import cachePlugin from './app/cache.ts'
import configPlugin, { type ConfigPluginOptions } from './app/config.ts'
import databasePlugin, { type DatabasePluginOptions } from './app/database.ts'
import invalidationPlugin from './app/invalidation.ts'
import metricsPlugin from './app/metrics.ts'
import shutdownPlugin from './app/shutdown.ts'
import rateLimitPlugin, { type RateLimitPluginOptions } from './app/rate-limit.ts'

export type { AuthPolicy } from '#src/auth/policy.ts'
export type { Claims } from '#src/auth/claims.ts'
export type { Config } from '#src/config.ts'
export { loadConfig } from '#src/config.ts'

export type BattraAuthOptions = ConfigPluginOptions & DatabasePluginOptions & AuthPluginOptions & RateLimitPluginOptions

const battraAuth = fp<BattraAuthOptions>(async function battraAuth (fastify, opts) {
  await fastify.register(configPlugin, opts)
  await fastify.register(shutdownPlugin)
  await fastify.register(databasePlugin, opts)
  await fastify.register(metricsPlugin)
  await fastify.register(cachePlugin, opts)
  await fastify.register(rateLimitPlugin, opts)
  await fastify.register(authPlugin, opts)
  await fastify.register(invalidationPlugin)
}, { name: 'battra-auth-bundle', fastify: '5.x' })

export default battraAuth
export { battraAuth }
