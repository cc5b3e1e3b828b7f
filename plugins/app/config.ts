import fp from 'fastify-plugin'
import { loadConfig, type Config } from '#src/config.ts'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
  }
}

export interface ConfigPluginOptions {
  /** Settings to use instead of the environment's (tests, embedding services). */
  config?: Config
}

export default fp<ConfigPluginOptions>(async function configPlugin (fastify, opts) {
  fastify.decorate('config', opts.config ?? loadConfig())
}, { name: 'config' })
