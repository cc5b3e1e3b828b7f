// Creating, listing, revoking and rotating keys: the data rules, shared by the HTTP routes and the CLI.
// Who may do what (own keys, admin) is decided by the caller of these functions.
import { generateApiKey, hashApiKey, hintFor } from './api-key.ts'
import type { PrismaClient } from './database.ts'

export const MAX_SCOPES = 32
export const SCOPE_PATTERN = '^[a-z][a-z0-9_-]{0,30}(:[a-z0-9_*-]{1,30}){0,3}$'
const SCOPE = new RegExp(SCOPE_PATTERN)
export const MAX_GRACE_SECONDS = 30 * 24 * 3600

/** A refusal with the HTTP status and code it answers with. */
export class KeyManagementError extends Error {
  override name = 'KeyManagementError'
  constructor (readonly statusCode: 400 | 403 | 404 | 409, readonly code: string, message: string) {
    super(message)
  }
}

export interface KeyView {
  id: string
  userId: string
  hint: string
  description: string | null
  organizationId: string | null
  scopes: string[]
  createdAt: Date
  lastUsedAt: Date | null
  expiresAt: Date | null
  revokedAt: Date | null
}

export interface CreatedKey extends KeyView {
  /** The plaintext key: shown once, never stored. */
  key: string
}

const VIEW = {
  id: true, userId: true, hint: true, description: true, organizationId: true, scopes: true,
  createdAt: true, lastUsedAt: true, expiresAt: true, revokedAt: true
} as const

export interface NewKey {
  userId: string
  organizationId: string | null
  description?: string | null
  scopes?: string[]
  expiresAt?: Date | null
}

export function validateScopes (scopes: string[]): string[] {
  const unique = [...new Set(scopes)]
  if (unique.length > MAX_SCOPES) throw new KeyManagementError(400, 'INVALID_SCOPES', `At most ${MAX_SCOPES} scopes`)
  const bad = unique.find((scope) => !SCOPE.test(scope))
  if (bad !== undefined) throw new KeyManagementError(400, 'INVALID_SCOPES', `Invalid scope "${bad}": lowercase words separated by colons, e.g. projects:read`)
  return unique
}

/** Creates a key for an existing, enabled user, in an organization the user belongs to (or personal). */
export async function createKey (prisma: PrismaClient, spec: NewKey, now = new Date()): Promise<CreatedKey> {
  if (spec.expiresAt != null && spec.expiresAt.getTime() <= now.getTime()) {
    throw new KeyManagementError(400, 'INVALID_EXPIRY', 'expiresAt must be in the future')
  }
  const scopes = validateScopes(spec.scopes ?? [])
  const user = await prisma.user.findUnique({ where: { id: spec.userId }, select: { disabledAt: true } })
  if (user === null) throw new KeyManagementError(404, 'USER_NOT_FOUND', 'User not found')
  if (user.disabledAt !== null) throw new KeyManagementError(409, 'USER_DISABLED', 'The user is disabled')
  if (spec.organizationId !== null) {
    const membership = await prisma.organizationMembership.findUnique({
      where: { organizationId_userId: { organizationId: spec.organizationId, userId: spec.userId } },
      select: { id: true }
    })
    if (membership === null) {
      throw new KeyManagementError(403, 'ORG_MEMBERSHIP_REQUIRED', 'The user is not a member of that organization')
    }
  }
  const key = generateApiKey()
  const row = await prisma.apiKey.create({
    data: {
      tokenHash: hashApiKey(key),
      hint: hintFor(key),
      userId: spec.userId,
      organizationId: spec.organizationId,
      description: spec.description ?? null,
      scopes,
      expiresAt: spec.expiresAt ?? null
    },
    select: VIEW
  })
  return { ...row, key }
}

export interface KeyFilter {
  userId?: string
  organizationId?: string
  includeRevoked?: boolean
  limit?: number
  offset?: number
}

export async function listKeys (prisma: PrismaClient, filter: KeyFilter): Promise<KeyView[]> {
  return prisma.apiKey.findMany({
    where: {
      userId: filter.userId,
      organizationId: filter.organizationId,
      ...(filter.includeRevoked === true ? {} : { revokedAt: null })
    },
    orderBy: [{ createdAt: 'desc' }, { id: 'asc' }],
    take: filter.limit ?? 100,
    skip: filter.offset ?? 0,
    select: VIEW
  })
}

/** The key, when it exists and `owner` (if given) owns it; otherwise not found, whichever it was. */
export async function findKey (prisma: PrismaClient, id: string, owner?: string): Promise<KeyView> {
  const row = await prisma.apiKey.findUnique({ where: { id }, select: VIEW })
  if (row === null || (owner !== undefined && row.userId !== owner)) {
    throw new KeyManagementError(404, 'API_KEY_NOT_FOUND', 'API key not found')
  }
  return row
}

/** Revokes a key; revoking a revoked key changes nothing. */
export async function revokeKey (prisma: PrismaClient, id: string, owner?: string, now = new Date()): Promise<KeyView> {
  const key = await findKey(prisma, id, owner)
  if (key.revokedAt !== null) return key
  return prisma.apiKey.update({ where: { id }, data: { revokedAt: now }, select: VIEW })
}

/**
 * Issues a new key with the same user, organization, description, scopes and expiry; the old one keeps
 * working for the grace period (0: it stops now), then expires. Both in one transaction.
 */
export async function rotateKey (prisma: PrismaClient, id: string, gracePeriodSeconds: number, owner?: string, now = new Date()): Promise<{ created: CreatedKey, old: KeyView }> {
  if (!Number.isInteger(gracePeriodSeconds) || gracePeriodSeconds < 0 || gracePeriodSeconds > MAX_GRACE_SECONDS) {
    throw new KeyManagementError(400, 'INVALID_GRACE_PERIOD', `gracePeriodSeconds must be an integer from 0 to ${MAX_GRACE_SECONDS}`)
  }
  const old = await findKey(prisma, id, owner)
  if (old.revokedAt !== null || (old.expiresAt !== null && old.expiresAt.getTime() <= now.getTime())) {
    throw new KeyManagementError(409, 'API_KEY_NOT_ACTIVE', 'A revoked or expired key cannot be rotated')
  }
  const graceEnd = new Date(now.getTime() + gracePeriodSeconds * 1000)
  const oldExpiry = old.expiresAt !== null && old.expiresAt < graceEnd ? old.expiresAt : graceEnd
  const key = generateApiKey()
  const [created, updated] = await prisma.$transaction([
    prisma.apiKey.create({
      data: {
        tokenHash: hashApiKey(key),
        hint: hintFor(key),
        userId: old.userId,
        organizationId: old.organizationId,
        description: old.description,
        scopes: old.scopes,
        expiresAt: old.expiresAt
      },
      select: VIEW
    }),
    prisma.apiKey.update({ where: { id }, data: { expiresAt: oldExpiry }, select: VIEW })
  ])
  return { created: { ...created, key }, old: updated }
}
