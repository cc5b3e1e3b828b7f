// The only module that reads process.env. One schema describes every variable (type, bounds, default);
// every problem is reported at once, and a value that may hold a secret is never echoed.
import { isIPv6 } from 'node:net'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import ipaddr from 'ipaddr.js'
import { Type, type Static, type TSchema } from 'typebox'
import { Value } from 'typebox/value'

const HOUR_MS = 3_600_000
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
const RATE_LIMIT_MODES = ['exact', 'batched'] as const

const int = (fallback: number, minimum: number, maximum: number, description: string) =>
  Type.Integer({ default: fallback, minimum, maximum, description })
const text = (fallback: string, description: string) => Type.String({ default: fallback, description })
/** Read by a parser of its own (below); `secret` values are never echoed in problems. */
const custom = (description: string, options: { secret?: boolean, default?: string } = {}) => Type.Optional(Type.String({ description, ...options, 'x-custom': true }))

/** Where GitHub publishes its secret-scanning keys (src/leaks/github-signature.ts repeats it: src/ has no cycle). */
const GITHUB_SECRET_SCANNING_KEYS_URL = 'https://api.github.com/meta/public_keys/secret_scanning'

/** Every environment variable the service reads. */
export const EnvSchema = Type.Object({
  PORT: int(8000, 0, 65_535, 'HTTP port'),
  HOST: text('127.0.0.1', 'HTTP bind address'),
  LOG_LEVEL: Type.Enum(LOG_LEVELS, { default: 'info' }),
  LOG_REQUESTS: Type.Boolean({ default: true, description: 'one log line per request and response' }),
  DATABASE_URL: custom('postgres:// or postgresql:// URL; unset: the embedded database', { secret: true }),
  DATABASE_POOL_MAX: int(10, 1, 1000, 'connections in the pool'),
  DATABASE_CONNECT_TIMEOUT_MS: int(2000, 100, 60_000, 'a longer connection attempt is a database failure'),
  DATABASE_STATEMENT_TIMEOUT_MS: int(5000, 100, 600_000, 'a longer statement is a database failure'),
  EMBEDDED_DATA_DIR: text('.data/pglite', 'embedded database folder (memory:// for a throw-away one)'),
  EMBEDDED_DB_HOST: text('127.0.0.1', 'where the embedded database listens'),
  EMBEDDED_DB_PORT: int(54_329, 0, 65_535, 'port of the embedded database (0: any free port)'),
  AUTH_CACHE_TTL_MS: int(60_000, 0, 24 * HOUR_MS, 'how long resolved claims are trusted'),
  AUTH_CACHE_MAX_ENTRIES: int(50_000, 1, 10_000_000, 'bound of the claims cache'),
  AUTH_NEGATIVE_CACHE_TTL_MS: int(5000, 0, HOUR_MS, 'how long an unknown or refused key is remembered'),
  AUTH_NEGATIVE_CACHE_MAX_ENTRIES: int(50_000, 1, 10_000_000, 'bound of the negative cache'),
  AUTH_STALE_IF_ERROR_MS: int(300_000, 0, 24 * HOUR_MS, 'entries expired less than this ago are served while the database fails'),
  AUTH_CACHE_UNVERIFIED_TTL_MS: int(5000, 0, 24 * HOUR_MS, 'trust bound of entries while no invalidation listener vouches for them'),
  AUTH_LISTENER_RECONNECT_MIN_MS: int(100, 10, HOUR_MS, 'reconnection backoff of the invalidation listener, first step'),
  AUTH_LISTENER_RECONNECT_MAX_MS: int(5000, 10, HOUR_MS, 'reconnection backoff of the invalidation listener, cap'),
  AUTH_LISTENER_HEARTBEAT_MS: int(10_000, 100, HOUR_MS, "how often the listener's connection is checked"),
  AUTH_UNAVAILABLE_RETRY_AFTER_S: int(5, 1, 3600, 'Retry-After of a 503'),
  USAGE_FLUSH_INTERVAL_MS: int(5000, 10, HOUR_MS, 'last_used_at is written once per interval'),
  AUTH_FAILURE_LIMIT: int(20, 1, 1_000_000, 'failed attempts allowed per client per window'),
  AUTH_FAILURE_WINDOW_MS: int(60_000, 1000, 24 * HOUR_MS, 'window of the failed-attempt limit'),
  AUTH_FAILURE_MAX_CLIENTS: int(100_000, 1, 10_000_000, 'bound of the failed-attempt table'),
  SHUTDOWN_TIMEOUT_MS: int(15_000, 1000, HOUR_MS, 'a graceful shutdown taking longer exits anyway'),
  TRUST_PROXY: custom('false, true, or comma-separated proxy addresses/CIDR ranges (not a hop count: Fastify ignores one, since a client connecting directly could spoof the hops)'),
  REDIS_URL: custom('a redis:// or rediss:// URL; unset: rate limits are counted in this process', { secret: true }),
  REDIS_RATE_LIMIT_MODE: Type.Enum(RATE_LIMIT_MODES, { default: 'exact', description: 'exact: one Redis call per admitted request; batched: an instance takes a tenth of a limit at once' }),
  REDIS_TIMEOUT_MS: int(50, 5, 60_000, 'a rate-limit check slower than this is answered in process, and the limiter falls back'),
  AUDIT_SWEEP_INTERVAL_MS: int(60_000, 0, 24 * HOUR_MS, 'how often key.expired, key.expiring and key.idle are looked for (0: never)'),
  WEBHOOK_EXPIRING_DAYS: int(7, 0, 365, 'key.expiring is sent this many days before a key expires (0: never)'),
  WEBHOOK_IDLE_DAYS: int(0, 0, 3650, 'key.idle is sent once a key has not been used for this many days (0: never)'),
  WEBHOOK_WORKER: Type.Boolean({ default: true, description: 'whether this instance delivers webhooks' }),
  WEBHOOK_POLL_INTERVAL_MS: int(1000, 10, HOUR_MS, 'how often the outbox is read for deliveries due'),
  WEBHOOK_TIMEOUT_MS: int(10_000, 100, 120_000, 'a delivery not answered within this is a failure'),
  WEBHOOK_RETRY_FOR_MS: int(24 * HOUR_MS, 1000, 7 * 24 * HOUR_MS, 'a delivery is retried for this long after its event, then marked failed'),
  WEBHOOK_BACKOFF_BASE_MS: int(5000, 10, HOUR_MS, 'delay before the first retry; doubled each time (with jitter)'),
  WEBHOOK_BACKOFF_MAX_MS: int(HOUR_MS, 10, 24 * HOUR_MS, 'longest delay between two attempts'),
  SECRET_SCANNING_KEYS_URL: custom('an http:// or https:// URL of GitHub\'s secret-scanning public keys, or none (the GitHub route then answers 503)', { default: GITHUB_SECRET_SCANNING_KEYS_URL }),
  SECRET_SCANNING_KEYS_TOKEN: custom('a GitHub token sent when fetching the keys (GitHub rate-limits anonymous calls)', { secret: true }),
  LEAK_REPORT_RATE_LIMIT: int(10, 1, 1_000_000, 'leak reports (POST /api/v1/api-keys/report-leak) allowed per client per window'),
  LEAK_REPORT_RATE_WINDOW_S: int(60, 1, 86_400, 'window of the leak-report limit, in seconds')
})
type Env = Static<typeof EnvSchema>
type EnvInput = Record<string, string | undefined>

export type LogLevel = typeof LOG_LEVELS[number]
export type RateLimitMode = typeof RATE_LIMIT_MODES[number]

export interface RateLimitConfig {
  /** Counters shared by every instance through this Redis; undefined: counted in this process. A secret. */
  redisUrl: string | undefined
  mode: RateLimitMode
  /** A check slower than this is answered in process (the limiter falls back until Redis answers again). */
  redisTimeoutMs: number
}

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

export interface AuditConfig {
  /** How often the sweep looks for expired, expiring and idle keys; 0: never. */
  sweepIntervalMs: number
  expiringDays: number
  idleDays: number
}

export interface WebhookConfig {
  /** Whether this instance delivers from the outbox. */
  worker: boolean
  pollIntervalMs: number
  timeoutMs: number
  retryForMs: number
  backoffBaseMs: number
  backoffMaxMs: number
}

export interface LeaksConfig {
  /** GitHub's secret-scanning public keys; undefined: the GitHub route answers 503. */
  keysUrl: string | undefined
  /** Sent as a bearer token when fetching the keys. A secret. */
  keysToken: string | undefined
  /** Leak reports accepted per client (address) per window on the public route. */
  reportRateLimit: { requests: number, windowSeconds: number }
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
  trustProxy: boolean | string[]
  /** Seconds announced in Retry-After when the database is unavailable. */
  unavailableRetryAfterSeconds: number
  /** Where the counters of key and organization rate limits live. */
  rateLimit: RateLimitConfig
  audit: AuditConfig
  webhooks: WebhookConfig,
  /** Leaked keys: GitHub secret scanning and the public leak-report route. */
  leaks: LeaksConfig
}

export class ConfigError extends Error {
  constructor (public readonly problems: string[]) {
    super(`Invalid configuration:\n  - ${problems.join('\n  - ')}`)
    this.name = 'ConfigError'
  }
}

/** What a value must be, in words, from its schema. */
function requirement (schema: TSchema & Record<string, unknown>): string {
  if ('enum' in schema) return `must be one of ${(schema.enum as string[]).join(', ')}`
  if (schema.type === 'integer') return `must be an integer from ${String(schema.minimum)} to ${String(schema.maximum)}`
  if (schema.type === 'boolean') return 'must be true or false'
  return `must be ${String(schema.description)}`
}

/** Strings to typed values by the schema; undefined when the text does not convert. */
function convert (schema: TSchema & Record<string, unknown>, raw: string): unknown {
  if (schema.type === 'integer') return /^-?\d+$/.test(raw) ? Number(raw) : undefined
  if (schema.type === 'boolean') return raw === 'true' ? true : raw === 'false' ? false : undefined
  return raw
}

const PROXY_ENTRY = /^(?:[0-9a-fA-F.:]+)(?:\/\d{1,3})?$|^(?:loopback|linklocal|uniquelocal)$/

/**
 * A TRUST_PROXY entry read as strictly as a key's allowed networks: Fastify's proxy-addr throws at start on
 * a prefix outside 1..32 (IPv4) or 1..128 (IPv6), and reads IPv4 leniently ("1" is 0.0.0.1, "0177.0.0.1"
 * is octal); an entry with host bits set ("10.0.0.5/8") would silently trust the whole /8.
 */
function validProxyEntry (entry: string): boolean {
  if (!PROXY_ENTRY.test(entry)) return false
  if (/^(?:loopback|linklocal|uniquelocal)$/.test(entry)) return true
  const slash = entry.lastIndexOf('/')
  const address = slash === -1 ? entry : entry.slice(0, slash)
  const family = ipaddr.IPv4.isValidFourPartDecimal(address) ? ipaddr.IPv4 : ipaddr.IPv6.isValid(address) ? ipaddr.IPv6 : undefined
  if (family === undefined) return false
  if (slash === -1) return true
  const prefixText = entry.slice(slash + 1)
  if (!/^[1-9]\d{0,2}$/.test(prefixText)) return false
  const prefix = Number(prefixText)
  if (!(prefix >= 1 && prefix <= (family === ipaddr.IPv4 ? 32 : 128))) return false
  return family.networkAddressFromCIDR(entry).toNormalizedString() === family.parse(address).toNormalizedString()
}

/** The variables with parsers of their own: their value, or a problem (without the value, when secret). */
const CUSTOM: Record<string, (raw: string) => unknown> = {
  DATABASE_URL (raw) {
    let url: URL | undefined
    try { url = new URL(raw) } catch {}
    return url !== undefined && ['postgres:', 'postgresql:'].includes(url.protocol) && url.hostname !== '' ? raw : undefined
  },
  TRUST_PROXY (raw) {
    if (raw === 'false') return false
    if (raw === 'true') return true
    const entries = raw.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '')
    return entries.length > 0 && entries.every(validProxyEntry) ? entries : undefined
  },
  REDIS_URL (raw) {
    let url: URL | undefined
    try { url = new URL(raw) } catch {}
    return url !== undefined && ['redis:', 'rediss:'].includes(url.protocol) && url.hostname !== '' ? raw : undefined
  },
  SECRET_SCANNING_KEYS_URL (raw) {
    // '' stands for none: the route exists and answers 503.
    if (raw === 'none') return ''
    let url: URL | undefined
    try { url = new URL(raw) } catch {}
    return url !== undefined && ['http:', 'https:'].includes(url.protocol) && url.hostname !== '' ? raw : undefined
  },
  SECRET_SCANNING_KEYS_TOKEN (raw) {
    // Sent in a header: visible ASCII only.
    return /^[\x21-\x7e]{1,512}$/.test(raw) ? raw : undefined
  }
}

/** Reads the variables of the schema from `input`, reporting every problem at once. */
export function readEnv (input: EnvInput = process.env): Env & { TRUST_PROXY: boolean | string[] } {
  const env: Record<string, unknown> = {}
  const problems: string[] = []
  for (const [name, property] of Object.entries(EnvSchema.properties) as unknown as Array<[string, TSchema & Record<string, unknown>]>) {
    const raw = input[name]?.trim()
    if (raw === undefined || raw === '') {
      if (property.default !== undefined) env[name] = property.default
      continue
    }
    const value = property['x-custom'] === true ? CUSTOM[name](raw) : convert(property, raw)
    if (value !== undefined && (property['x-custom'] === true || Value.Check(property, value))) {
      env[name] = value
    } else {
      // The value may hold a password: name the problem, never echo it.
      problems.push(`${name} ${requirement(property)}${property.secret === true ? '' : ` (got "${raw}")`}`)
    }
  }
  // Pairs whose order matters: a first step above its cap is a typo, not a policy.
  for (const [low, high] of ORDERED_PAIRS) {
    const [lowValue, highValue] = [env[low], env[high]] as [number | undefined, number | undefined]
    if (lowValue !== undefined && highValue !== undefined && lowValue > highValue) problems.push(`${low} must not exceed ${high} (got ${lowValue} > ${highValue})`)
  }
  if (problems.length > 0) throw new ConfigError(problems)
  return env as Env & { TRUST_PROXY: boolean | string[] }
}

const ORDERED_PAIRS: Array<[string, string]> = [
  ['AUTH_LISTENER_RECONNECT_MIN_MS', 'AUTH_LISTENER_RECONNECT_MAX_MS'],
  ['WEBHOOK_BACKOFF_BASE_MS', 'WEBHOOK_BACKOFF_MAX_MS']
]

// memory:// is PGlite's in-memory database; anything else is a folder.
const dataDir = (value: string): string => value.startsWith('memory://') ? value : resolve(value)

export function loadConfig (input: EnvInput = process.env): Config {
  const env = readEnv(input)
  return {
    host: env.HOST,
    port: env.PORT,
    logLevel: env.LOG_LEVEL,
    logRequests: env.LOG_REQUESTS,
    databaseUrl: env.DATABASE_URL,
    databasePoolMax: env.DATABASE_POOL_MAX,
    databaseConnectTimeoutMs: env.DATABASE_CONNECT_TIMEOUT_MS,
    databaseStatementTimeoutMs: env.DATABASE_STATEMENT_TIMEOUT_MS,
    embedded: { dataDir: dataDir(env.EMBEDDED_DATA_DIR), host: env.EMBEDDED_DB_HOST, port: env.EMBEDDED_DB_PORT },
    cache: {
      ttlMs: env.AUTH_CACHE_TTL_MS,
      maxEntries: env.AUTH_CACHE_MAX_ENTRIES,
      negativeTtlMs: env.AUTH_NEGATIVE_CACHE_TTL_MS,
      negativeMaxEntries: env.AUTH_NEGATIVE_CACHE_MAX_ENTRIES,
      staleIfErrorMs: env.AUTH_STALE_IF_ERROR_MS,
      unverifiedTtlMs: env.AUTH_CACHE_UNVERIFIED_TTL_MS
    },
    listener: {
      reconnectMinMs: env.AUTH_LISTENER_RECONNECT_MIN_MS,
      reconnectMaxMs: env.AUTH_LISTENER_RECONNECT_MAX_MS,
      heartbeatMs: env.AUTH_LISTENER_HEARTBEAT_MS
    },
    shutdownTimeoutMs: env.SHUTDOWN_TIMEOUT_MS,
    usageFlushIntervalMs: env.USAGE_FLUSH_INTERVAL_MS,
    failedAttempts: { limit: env.AUTH_FAILURE_LIMIT, windowMs: env.AUTH_FAILURE_WINDOW_MS, maxClients: env.AUTH_FAILURE_MAX_CLIENTS },
    trustProxy: env.TRUST_PROXY ?? false,
    unavailableRetryAfterSeconds: env.AUTH_UNAVAILABLE_RETRY_AFTER_S,
    rateLimit: { redisUrl: env.REDIS_URL, mode: env.REDIS_RATE_LIMIT_MODE, redisTimeoutMs: env.REDIS_TIMEOUT_MS },
    audit: { sweepIntervalMs: env.AUDIT_SWEEP_INTERVAL_MS, expiringDays: env.WEBHOOK_EXPIRING_DAYS, idleDays: env.WEBHOOK_IDLE_DAYS },
    webhooks: {
      worker: env.WEBHOOK_WORKER,
      pollIntervalMs: env.WEBHOOK_POLL_INTERVAL_MS,
      timeoutMs: env.WEBHOOK_TIMEOUT_MS,
      retryForMs: env.WEBHOOK_RETRY_FOR_MS,
      backoffBaseMs: env.WEBHOOK_BACKOFF_BASE_MS,
      backoffMaxMs: env.WEBHOOK_BACKOFF_MAX_MS
    },
    leaks: {
      keysUrl: env.SECRET_SCANNING_KEYS_URL === '' ? undefined : env.SECRET_SCANNING_KEYS_URL,
      keysToken: env.SECRET_SCANNING_KEYS_TOKEN,
      reportRateLimit: { requests: env.LEAK_REPORT_RATE_LIMIT, windowSeconds: env.LEAK_REPORT_RATE_WINDOW_S }
    }
  }
}

export function embeddedDatabaseUrl ({ host, port }: { host: string, port: number }): string {
  // An IPv6 address is bracketed in a URL (found by an outside probe: EMBEDDED_DB_HOST=:: failed the start).
  const where = isIPv6(host) ? `[${host}]` : host
  return `postgresql://postgres:postgres@${where}:${port}/postgres?sslmode=disable`
}

/**
 * The URL Prisma Studio opens: PostgreSQL when configured, else the running service's embedded database
 * (its port is in the data folder's lock, src/db/data-dir-lock.ts). There Studio gets one connection
 * (max=1): PGlite's socket runs every connection in one session, and Studio's driver prepares an unnamed
 * statement in one round trip and binds it in the next, which a second connection of its own would
 * overwrite in between.
 */
export function studioDatabaseUrl (input: EnvInput = process.env): string {
  const config = loadConfig(input)
  if (config.databaseUrl !== undefined) return config.databaseUrl
  let { host, port } = config.embedded
  try {
    const holder = JSON.parse(readFileSync(`${config.embedded.dataDir}.lock`, 'utf8')) as { host?: string, port?: number }
    if (typeof holder.port === 'number') ({ host = host, port } = holder)
  } catch {}
  return `${embeddedDatabaseUrl({ host, port })}&max=1`
}
