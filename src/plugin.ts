// battra-auth for any Fastify service, in one line:
//   await app.register(battraAuth)                      // settings from the environment (see README)
//   await app.register(battraAuth, { config })          // or given explicitly
// Every route then requires a key (opt out with `config: { auth: false }`) and sees `request.auth`.
import fp from 'fastify-plugin'
import authPlugin from '../plugins/app/auth.ts'
import configPlugin, { type ConfigPluginOptions } from '../plugins/app/config.ts'
import databasePlugin from '../plugins/app/database.ts'

export type { AuthPolicy } from '../plugins/app/auth.ts'
export type { Claims } from './claims.ts'

export default fp<ConfigPluginOptions>(async function battraAuth (fastify, opts) {
  await fastify.register(configPlugin, opts)
  await fastify.register(databasePlugin)
  await fastify.register(authPlugin)
}, { name: 'battra-auth-bundle', fastify: '5.x' })
