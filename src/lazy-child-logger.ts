// Fastify gives every request a child logger carrying its request id. Making a pino child serialises
// its bindings: on a request that logs nothing (request logging off, no error) that was a fifth of the
// CPU of GET /health (README, Performance). This factory defers the child to the request's first log call.
import type { FastifyBaseLogger, FastifyServerOptions } from 'fastify'

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const
const METHODS = ['silent', 'child', 'bindings', 'setBindings', 'flush'] as const

/** pino's loggers have isLevelEnabled; a logger of another kind may not. */
type ParentLogger = FastifyBaseLogger & { isLevelEnabled?: (level: string) => boolean }

interface Lazy {
  parent: ParentLogger
  bindings: Record<string, unknown>
  made: FastifyBaseLogger | undefined
}

/** Methods on one shared prototype: a request costs one small object until it logs. */
const lazyPrototype: Record<string, unknown> = {}
function delegate (this: Lazy, method: string, args: unknown[]): unknown {
  this.made ??= this.parent.child(this.bindings)
  const target = this.made as unknown as Record<string, (...a: unknown[]) => unknown>
  return target[method](...args)
}
for (const method of METHODS) {
  lazyPrototype[method] = function (this: Lazy, ...args: unknown[]) { return delegate.call(this, method, args) }
}
for (const level of LEVELS) {
  lazyPrototype[level] = function (this: Lazy, ...args: unknown[]) {
    // A line below the level (the access log's arrival line at info) writes nothing: no child to make.
    if (this.made === undefined && this.parent.isLevelEnabled?.(level) === false) return
    return delegate.call(this, level, args)
  }
}
lazyPrototype.isLevelEnabled = function (this: Lazy, level: string) {
  return this.made === undefined ? this.parent.isLevelEnabled?.(level) : delegate.call(this, 'isLevelEnabled', [level])
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
