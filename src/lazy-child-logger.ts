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

export const lazyChildLoggerFactory: NonNullable<FastifyServerOptions['childLoggerFactory']> = function (logger, bindings, options) {
  // A route's own log level or serializers: the child is made at once, as Fastify would.
  if (Object.keys(options).length > 0) return logger.child(bindings, options)
  const lazy: Lazy = Object.create(lazyPrototype)
  lazy.parent = logger
  lazy.bindings = bindings
  lazy.made = undefined
  return lazy as unknown as FastifyBaseLogger
}
