// The only module that reads process.env. Every setting is validated once, at start.
import { resolve } from 'node:path'

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

export interface AuthCacheConfig {
  /** How long resolved claims are trusted without asking the database. */
  ttlMs: number
  maxEntries: number
  /** How long an unknown or rejected key is remembered. */
  negativeTtlMs: number
  negativeMaxEntries: number
  /** When the database fails, entries expired less than this long ago are still served. */
  staleIfErrorMs: number
  /** While no invalidation listener vouches for the cache, entries older than this are not trusted. */
  unverifiedTtlMs: number
}

export interface ListenerConfig {
  reconnectMinMs: number
  reconnectMaxMs: number
  /** How often the listener's connection is checked; a silent dead connection is found within this. */
  heartbeatMs: number
}

export interface Config {
  host: string
  port: number
  logLevel: LogLevel
  /** One log line per request and response (Fastify's request logging). */
  logRequests: boolean
  /** PostgreSQL URL; undefined means the embedded database. */
  databaseUrl: string | undefined
  databasePoolMax: number
  databaseConnectTimeoutMs: number
  databaseStatementTimeoutMs: number
  embedded: { dataDir: string, host: string, port: number }
  cache: AuthCacheConfig
  usageFlushIntervalMs: number
  listener: ListenerConfig
  /** How long a graceful shutdown may take before the process exits anyway. */
  shutdownTimeoutMs: number
  failedAttempts: { limit: number, windowMs: number, maxClients: number }
  /** Fastify's trustProxy: which proxies' X-Forwarded-For names the client. */
  trustProxy: boolean | number | string[]
  /** Seconds announced in Retry-After when the database is unavailable. */
  unavailableRetryAfterSeconds: number
}

export class ConfigError extends Error {
  constructor (public readonly problems: string[]) {
    super(`Invalid configuration:\n  - ${problems.join('\n  - ')}`)
    this.name = 'ConfigError'
  }
}

type Env = Record<string, string | undefined>

class Reader {
  readonly problems: string[] = []
  constructor (private readonly env: Env) {}

  private raw (name: string): string | undefined {
    const value = this.env[name]?.trim()
    return value === undefined || value === '' ? undefined : value
  }

  integer (name: string, fallback: number, min: number, max: number): number {
    const value = this.raw(name)
    if (value === undefined) return fallback
    const parsed = /^-?\d+$/.test(value) ? Number(value) : Number.NaN
    if (!Number.isSafeInteger(parsed) || parsed < min || parsed > max) {
      this.problems.push(`${name} must be an integer from ${min} to ${max} (got "${value}")`)
      return fallback
    }
    return parsed
  }

  string (name: string, fallback: string): string {
    return this.raw(name) ?? fallback
  }

  oneOf<T extends string> (name: string, allowed: readonly T[], fallback: T): T {
    const value = this.raw(name)
    if (value === undefined) return fallback
    if (!(allowed as readonly string[]).includes(value)) {
      this.problems.push(`${name} must be one of ${allowed.join(', ')} (got "${value}")`)
      return fallback
    }
    return value as T
  }

  /** false (default), true, a hop count, or a comma-separated list of addresses/CIDR ranges. */
  trustProxy (name: string): boolean | number | string[] {
    const value = this.raw(name)
    if (value === undefined || value === 'false') return false
    if (value === 'true') return true
    if (/^\d+$/.test(value)) return Number(value)
    const entries = value.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '')
    const address = /^(?:[0-9a-fA-F.:]+)(?:\/\d{1,3})?$|^(?:loopback|linklocal|uniquelocal)$/
    if (entries.length === 0 || !entries.every((entry) => address.test(entry))) {
      this.problems.push(`${name} must be true, false, a hop count, or comma-separated addresses/CIDR ranges (got "${value}")`)
      return false
    }
    return entries
  }

  postgresUrl (name: string): string | undefined {
    const value = this.raw(name)
    if (value === undefined) return undefined
    let url: URL | undefined
    try { url = new URL(value) } catch {}
    if (url === undefined || !['postgres:', 'postgresql:'].includes(url.protocol) || url.hostname === '') {
      // The value may hold a password: name the problem, never echo it.
      this.problems.push(`${name} must be a postgres:// or postgresql:// URL with a host`)
      return undefined
    }
    return value
  }
}

const HOUR_MS = 3_600_000

// memory:// is PGlite's in-memory database; anything else is a folder.
const dataDir = (value: string): string => value.startsWith('memory://') ? value : resolve(value)

export function loadConfig (env: Env = process.env): Config {
  const read = new Reader(env)
  const config: Config = {
    host: read.string('HOST', '127.0.0.1'),
    port: read.integer('PORT', 8000, 0, 65_535),
    logLevel: read.oneOf('LOG_LEVEL', LOG_LEVELS, 'info'),
    logRequests: read.oneOf('LOG_REQUESTS', ['true', 'false'], 'true') === 'true',
    databaseUrl: read.postgresUrl('DATABASE_URL'),
    databasePoolMax: read.integer('DATABASE_POOL_MAX', 10, 1, 1000),
    databaseConnectTimeoutMs: read.integer('DATABASE_CONNECT_TIMEOUT_MS', 2000, 100, 60_000),
    databaseStatementTimeoutMs: read.integer('DATABASE_STATEMENT_TIMEOUT_MS', 5000, 100, 600_000),
    embedded: {
      dataDir: dataDir(read.string('EMBEDDED_DATA_DIR', '.data/pglite')),
      host: read.string('EMBEDDED_DB_HOST', '127.0.0.1'),
      port: read.integer('EMBEDDED_DB_PORT', 54_329, 0, 65_535)
    },
    cache: {
      ttlMs: read.integer('AUTH_CACHE_TTL_MS', 60_000, 0, 24 * HOUR_MS),
      maxEntries: read.integer('AUTH_CACHE_MAX_ENTRIES', 50_000, 1, 10_000_000),
      negativeTtlMs: read.integer('AUTH_NEGATIVE_CACHE_TTL_MS', 5000, 0, HOUR_MS),
      negativeMaxEntries: read.integer('AUTH_NEGATIVE_CACHE_MAX_ENTRIES', 50_000, 1, 10_000_000),
      staleIfErrorMs: read.integer('AUTH_STALE_IF_ERROR_MS', 300_000, 0, 24 * HOUR_MS),
      unverifiedTtlMs: read.integer('AUTH_CACHE_UNVERIFIED_TTL_MS', 5000, 0, 24 * HOUR_MS)
    },
    listener: {
      reconnectMinMs: read.integer('AUTH_LISTENER_RECONNECT_MIN_MS', 100, 10, HOUR_MS),
      reconnectMaxMs: read.integer('AUTH_LISTENER_RECONNECT_MAX_MS', 5000, 10, HOUR_MS),
      heartbeatMs: read.integer('AUTH_LISTENER_HEARTBEAT_MS', 10_000, 100, HOUR_MS)
    },
    shutdownTimeoutMs: read.integer('SHUTDOWN_TIMEOUT_MS', 15_000, 1000, HOUR_MS),
    usageFlushIntervalMs: read.integer('USAGE_FLUSH_INTERVAL_MS', 5000, 10, HOUR_MS),
    failedAttempts: {
      limit: read.integer('AUTH_FAILURE_LIMIT', 20, 1, 1_000_000),
      windowMs: read.integer('AUTH_FAILURE_WINDOW_MS', 60_000, 1000, 24 * HOUR_MS),
      maxClients: read.integer('AUTH_FAILURE_MAX_CLIENTS', 100_000, 1, 10_000_000)
    },
    trustProxy: read.trustProxy('TRUST_PROXY'),
    unavailableRetryAfterSeconds: read.integer('AUTH_UNAVAILABLE_RETRY_AFTER_S', 5, 1, 3600)
  }
  if (read.problems.length > 0) throw new ConfigError(read.problems)
  return config
}

/**
 * The URL Prisma Studio opens: PostgreSQL when configured, else the embedded database's socket.
 * There Studio gets one connection (max=1): PGlite's socket runs every connection in one session, and
 * Studio's driver prepares an unnamed statement in one round trip and binds it in the next, which a
 * second connection of its own would overwrite in between.
 */
export function studioDatabaseUrl (env: Env = process.env): string {
  const config = loadConfig(env)
  return config.databaseUrl ?? `${embeddedDatabaseUrl(config.embedded)}&max=1`
}

export function embeddedDatabaseUrl ({ host, port }: { host: string, port: number }): string {
  return `postgresql://postgres:postgres@${host}:${port}/postgres?sslmode=disable`
}
