// Rows written the way any writer would (psql, Studio), each helper waiting for its own notification.
import { randomBytes } from 'node:crypto'
import { generateApiKey, hashApiKey, hintFor } from '#src/auth/api-key.ts'
import { PERSONAS, TEST_ORG } from '#src/db/seed.ts'
import type { MembershipRole, UserRole } from '#src/schemas/claims.ts'
import type { TestDatabase } from './database.ts'

export function keyOf (email: string): string {
  const persona = PERSONAS.find((p) => p.email === email)
  if (persona === undefined) throw new Error(`no persona ${email}`)
  return persona.key
}

export interface KeySpec {
  userId: string
  organizationId?: string | null
  scopes?: string[]
  expiresAt?: Date | null
  revokedAt?: Date | null
  /** A plaintext key; a new-format key is generated when absent. */
  key?: string
  allowedCidrs?: string[]
  rateLimit?: { requests: number, windowSeconds: number } | null
}

/**
 * Inserts a key row; returns its id and plaintext. On PostgreSQL the insert notifies every listener
 * (a new key), which legitimately evicts unknown keys: waiting for it keeps tests that count lookups
 * from being raced by their own setup.
 */
export async function insertKey (db: TestDatabase, spec: KeySpec): Promise<{ id: string, key: string }> {
  const key = spec.key ?? generateApiKey()
  const row = await db.prisma.apiKey.create({
    data: {
      tokenHash: hashApiKey(key),
      hint: hintFor(key),
      userId: spec.userId,
      organizationId: spec.organizationId ?? null,
      scopes: spec.scopes ?? [],
      expiresAt: spec.expiresAt ?? null,
      revokedAt: spec.revokedAt ?? null,
      allowedCidrs: spec.allowedCidrs ?? [],
      rateLimitRequests: spec.rateLimit?.requests ?? null,
      rateLimitWindowSeconds: spec.rateLimit?.windowSeconds ?? null
    }
  })
  await db.notified(`key+:${row.id}`)
  return { id: row.id, key }
}

/** A user, optionally a member of an organization, with one key. */
export async function insertUserWithKey (db: TestDatabase, options: {
  email?: string
  organizationId?: string | null
  orgRole?: MembershipRole | null
  role?: UserRole
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
    await db.notified(`member:${organizationId}:${user.id}`)
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
