// Builds the app against a real database of its own and tears both down.
// DATABASE_URL set: a fresh PostgreSQL database per test file on that server; unset: in-memory PGlite.
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import pg from 'pg'
import battraAuthService, { serverOptions } from '../src/app.ts'
import { loadConfig, type Config } from '../src/config.ts'
import { createPool, createPrisma, type PrismaClient } from '../src/database.ts'
import { startEmbeddedDatabase } from '../src/embedded-database.ts'
import { migrate } from '../src/migrate.ts'
import { generateApiKey, hashApiKey, hintFor } from '../src/api-key.ts'
import { PERSONAS, TEST_ORG, seedDevPersonas } from '../src/seed.ts'

interface Teardown { teardown: (fn: () => unknown) => void }

export const serverUrl = loadConfig().databaseUrl
export const databaseKind = serverUrl === undefined ? 'embedded PGlite' : 'PostgreSQL'

export interface TestDatabase {
  /** Where the app should connect (through the proxy when one was asked for). */
  url: string
  /** Direct access for arranging and checking data, bypassing the app's counters. */
  prisma: PrismaClient
  pool: pg.Pool
  proxy: TcpProxy | undefined
}

/** A TCP proxy whose `cut()` makes the database unreachable (refused, open connections dropped). */
export class TcpProxy {
  private server: net.Server | undefined
  private readonly sockets = new Set<net.Socket>()
  port = 0

  constructor (private readonly target: { host: string, port: number }) {}

  async start (port = 0): Promise<void> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.target.port, this.target.host)
      for (const socket of [client, upstream]) {
        this.sockets.add(socket)
        socket.on('close', () => this.sockets.delete(socket))
        socket.on('error', () => {})
      }
      client.pipe(upstream).pipe(client)
      client.on('close', () => upstream.destroy())
      upstream.on('close', () => client.destroy())
    })
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
    this.port = (server.address() as net.AddressInfo).port
    this.server = server
  }

  async cut (): Promise<void> {
    const server = this.server
    this.server = undefined
    for (const socket of this.sockets) socket.destroy()
    if (server !== undefined) await new Promise((resolve) => server.close(resolve))
  }

  /** Serves again on the same port. */
  async restore (): Promise<void> {
    await this.start(this.port)
  }
}

function withDatabase (url: string, database: string): string {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.toString()
}

export async function createTestDatabase (t: Teardown, options: { proxy?: boolean, seed?: boolean } = {}): Promise<TestDatabase> {
  let directUrl: string
  if (serverUrl !== undefined) {
    const name = `battra_test_${process.pid}_${randomBytes(4).toString('hex')}`
    const admin = new pg.Client({ connectionString: serverUrl })
    await admin.connect()
    await admin.query(`CREATE DATABASE ${name}`)
    await admin.end()
    directUrl = withDatabase(serverUrl, name)
    t.teardown(async () => {
      const client = new pg.Client({ connectionString: serverUrl })
      await client.connect()
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await client.end()
    })
  } else {
    const embedded = await startEmbeddedDatabase({ dataDir: 'memory://', host: '127.0.0.1', port: 0 })
    directUrl = embedded.url
    t.teardown(() => embedded.stop())
  }
  const pool = createPool({ url: directUrl, max: 4, connectTimeoutMs: 5000, statementTimeoutMs: 30_000 }, { count: 0 })
  const prisma = createPrisma(pool)
  // Torn down in reverse order of registration: this runs before the database goes.
  t.teardown(async () => {
    await prisma.$disconnect()
    await pool.end()
  })
  await migrate(pool)
  if (options.seed !== false) await seedDevPersonas(prisma)
  let proxy: TcpProxy | undefined
  let url = directUrl
  if (options.proxy === true) {
    const target = new URL(directUrl)
    proxy = new TcpProxy({ host: target.hostname, port: Number(target.port || 5432) })
    await proxy.start()
    t.teardown(() => proxy!.cut())
    target.host = `127.0.0.1:${proxy.port}`
    url = target.toString()
  }
  return { url, prisma, pool, proxy }
}

export type ConfigOverrides = Partial<Omit<Config, 'cache'>> & { cache?: Partial<Config['cache']> }

export function testConfig (databaseUrl: string, overrides: ConfigOverrides = {}): Config {
  const base = loadConfig({})
  return {
    ...base,
    databaseUrl,
    logLevel: 'silent',
    // Tests flush usage themselves unless they test the interval.
    usageFlushIntervalMs: 3_600_000,
    databaseConnectTimeoutMs: 1000,
    databaseStatementTimeoutMs: 2000,
    ...overrides,
    cache: { ...base.cache, ...overrides.cache }
  }
}

export interface TestApp {
  app: FastifyInstance
  db: TestDatabase
  /** Every log line, at trace level, when asked for with `captureLogs`. */
  logs: string[]
}

export async function build (t: Teardown, options: { config?: ConfigOverrides, proxy?: boolean, db?: TestDatabase, captureLogs?: boolean } = {}): Promise<TestApp> {
  const db = options.db ?? await createTestDatabase(t, { proxy: options.proxy })
  const config = testConfig(db.url, { ...(options.captureLogs === true ? { logLevel: 'trace' } : {}), ...options.config })
  const logs: string[] = []
  const fastifyOptions = serverOptions(config)
  if (options.captureLogs === true) {
    fastifyOptions.logger = { ...(fastifyOptions.logger as object), stream: { write: (line: string) => { logs.push(line) } } }
  }
  const app = Fastify(fastifyOptions)
  app.register(fp(battraAuthService), { config })
  await app.ready()
  t.teardown(() => app.close())
  return { app, db, logs }
}

export function keyOf (email: string): string {
  const persona = PERSONAS.find((p) => p.email === email)
  if (persona === undefined) throw new Error(`no persona ${email}`)
  return persona.key
}

/** Statements the app sent to the database while `fn` ran. */
export async function statementsDuring (app: FastifyInstance, fn: () => Promise<unknown>): Promise<number> {
  const before = app.database.statements.count
  await fn()
  return app.database.statements.count - before
}

export interface KeySpec {
  userId: string
  organizationId?: string | null
  scopes?: string[]
  expiresAt?: Date | null
  revokedAt?: Date | null
  /** A plaintext key; a new-format key is generated when absent. */
  key?: string
}

/**
 * On PostgreSQL, inserting a fixture notifies every listener (new key, new membership), and that
 * notification legitimately evicts the fixture's cache entry. Fixture helpers wait for it to land
 * (delivery takes a few ms) so that tests which count lookups are not raced by their own setup.
 */
export const fixtureSettled = (): Promise<void> => serverUrl === undefined ? Promise.resolve() : sleep(100)

/** Inserts a key row the way any writer would (psql, Studio); returns its id and plaintext. */
export async function insertKey (db: TestDatabase, spec: KeySpec): Promise<{ id: string, key: string }> {
  const inserted = await insertKeyRow(db, spec)
  await fixtureSettled()
  return inserted
}

async function insertKeyRow (db: TestDatabase, spec: KeySpec): Promise<{ id: string, key: string }> {
  const key = spec.key ?? generateApiKey()
  const row = await db.prisma.apiKey.create({
    data: {
      tokenHash: hashApiKey(key),
      hint: hintFor(key),
      userId: spec.userId,
      organizationId: spec.organizationId ?? null,
      scopes: spec.scopes ?? [],
      expiresAt: spec.expiresAt ?? null,
      revokedAt: spec.revokedAt ?? null
    }
  })
  return { id: row.id, key }
}

/** A user, optionally a member of an organization, with one key. */
export async function insertUserWithKey (db: TestDatabase, options: {
  email?: string
  organizationId?: string | null
  orgRole?: 'owner' | 'admin' | 'member' | null
  role?: 'sponsor' | 'product_owner' | 'managing_contributor' | 'contributor'
  disabledAt?: Date | null
  key?: Partial<KeySpec>
} = {}): Promise<{ userId: string, keyId: string, key: string }> {
  const user = await db.prisma.user.create({
    data: {
      email: options.email ?? `user-${randomBytes(4).toString('hex')}@example.com`,
      role: options.role ?? 'contributor',
      disabledAt: options.disabledAt ?? null
    }
  })
  const organizationId = options.organizationId ?? null
  if (organizationId !== null && options.orgRole !== null) {
    await db.prisma.organizationMembership.create({
      data: { organizationId, userId: user.id, role: options.orgRole ?? 'member' }
    })
  }
  const { id, key } = await insertKey(db, { userId: user.id, organizationId, ...options.key })
  return { userId: user.id, keyId: id, key }
}

export async function insertOrganization (db: TestDatabase, name: string): Promise<string> {
  const slug = `${name.toLowerCase().replace(/[^a-z0-9]+/g, '-')}-${randomBytes(3).toString('hex')}`
  const org = await db.prisma.organization.create({ data: { name, slug, externalId: `org_${slug}` } })
  return org.id
}

export async function testOrgId (db: TestDatabase): Promise<string> {
  const org = await db.prisma.organization.findUniqueOrThrow({ where: { slug: TEST_ORG.slug } })
  return org.id
}

/** The key with one character changed: by default the last, which breaks a new-format key's checksum. */
export function withOneCharacterChanged (key: string, index = key.length - 1): string {
  return key.slice(0, index) + (key[index] === 'A' ? 'B' : 'A') + key.slice(index + 1)
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
