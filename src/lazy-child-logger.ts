// Fastify gives every request a child logger carrying its request id. Making a pino child serialises
// its bindings: on a request that logs nothing (request logging off, no error) that was a fifth of the
// CPU of GET /health (README, Performance). This factory defers the child to the request's first log call.
import type { FastifyBaseLogger, FastifyServerOptions } from 'fastify'

const METHODS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent', 'child', 'isLevelEnabled', 'bindings', 'setBindings', 'flush'] as const

interface Lazy {
  parent: FastifyBaseLogger
  bindings: Record<string, unknown>
  made: FastifyBaseLogger | undefined
}

/** Methods on one shared prototype: a request costs one small object until it logs. */
const lazyPrototype: Record<string, unknown> = {}
for (const method of METHODS) {
  lazyPrototype[method] = function (this: Lazy, ...args: unknown[]) {
    this.made ??= this.parent.child(this.bindings)
    const target = this.made as unknown as Record<string, (...a: unknown[]) => unknown>
    return target[method](...args)
  }
}
Object.defineProperty(lazyPrototype, 'level', {
  get (this: Lazy) { return (this.made ?? this.parent).level },
  set (this: Lazy, level: string) {
    this.made ??= this.parent.child(this.bindings)
    this.made.level = level
  }
})

/**
 * The parent is the instance's own `log`, not the logger Fastify passes: a Fastify created without a
 * logger passes its null logger, and src/app.ts sets the real one as `fastify.log` (createFastify).
 * With a logger of Fastify's own the two are the same.
 */
export const lazyChildLoggerFactory: NonNullable<FastifyServerOptions['childLoggerFactory']> = function (_logger, bindings, options) {
  const parent = this.log
  // A route's own log level or serializers: the child is made at once, as Fastify would.
  if (Object.keys(options).length > 0) return parent.child(bindings, options)
  const lazy: Lazy = Object.create(lazyPrototype)
  lazy.parent = parent
  lazy.bindings = bindings
  lazy.made = undefined
  return lazy as unknown as FastifyBaseLogger
}
