// battra-auth for any Fastify service, in one line:
//   await app.register(battraAuth)                      // settings from the environment (see README)
//   await app.register(battraAuth, { config })          // or given explicitly
// Register it before the routes it protects. Every route then requires a key (opt out with
// `config: { auth: false }`) and sees `request.auth`; changes to keys, users, organizations and
// memberships reach its cache through the database (see README, Invalidation across instances).
import fp from 'fastify-plugin'
import authPlugin from '../plugins/app/auth.ts'
import configPlugin, { type ConfigPluginOptions } from '../plugins/app/config.ts'
import databasePlugin from '../plugins/app/database.ts'
import invalidationPlugin from '../plugins/app/invalidation.ts'

export type { AuthPolicy } from '../plugins/app/auth.ts'
export type { Claims } from './claims.ts'

export default fp<ConfigPluginOptions>(async function battraAuth (fastify, opts) {
  await fastify.register(configPlugin, opts)
  await fastify.register(databasePlugin)
  await fastify.register(authPlugin)
  await fastify.register(invalidationPlugin)
}, { name: 'battra-auth-bundle', fastify: '5.x' })
