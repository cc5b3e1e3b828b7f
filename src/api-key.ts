// API key format, hashing and header extraction. No Fastify, no database: pure functions.
import { hash, randomBytes } from 'node:crypto'
import { crc32 } from 'node:zlib'

export const KEY_PREFIX = 'battra_'
const RANDOM_LENGTH = 32
const CHECKSUM_LENGTH = 6
export const KEY_LENGTH = KEY_PREFIX.length + RANDOM_LENGTH + CHECKSUM_LENGTH
export const MAX_KEY_LENGTH = 256

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
const NEW_KEY_PATTERN = new RegExp(`^${KEY_PREFIX}[0-9A-Za-z]{${RANDOM_LENGTH + CHECKSUM_LENGTH}}$`)
// Visible ASCII only: a key never contains spaces, controls or bytes above 0x7E.
const KEY_CHARACTERS = /^[\x21-\x7e]+$/

function toBase62 (value: number, width: number): string {
  let out = ''
  while (value > 0) {
    out = BASE62[value % 62] + out
    value = Math.floor(value / 62)
  }
  return out.padStart(width, '0')
}

export function checksumOf (body: string): string {
  return toBase62(crc32(body), CHECKSUM_LENGTH)
}

function randomBase62 (length: number): string {
  let out = ''
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      // 248 = 4 × 62: rejecting bytes above it keeps every character equally likely.
      if (byte < 248 && out.length < length) out += BASE62[byte % 62]
    }
  }
  return out
}

/** A new key: `battra_` + 32 random base62 characters + 6-character base62 CRC32 of what precedes it. */
export function generateApiKey (): string {
  const body = KEY_PREFIX + randomBase62(RANDOM_LENGTH)
  return body + checksumOf(body)
}

export function isNewFormatKey (key: string): boolean {
  return key.length === KEY_LENGTH && NEW_KEY_PATTERN.test(key)
}

/**
 * Whether a key can exist at all, decided without any lookup: visible ASCII, at most 256 characters,
 * and, for keys of the new form, a checksum that matches. Legacy keys (any other string) pass.
 */
export function isPlausibleKey (key: string): boolean {
  if (key.length > MAX_KEY_LENGTH || !KEY_CHARACTERS.test(key)) return false
  if (key.length === KEY_LENGTH && key.startsWith(KEY_PREFIX) && NEW_KEY_PATTERN.test(key)) {
    const body = key.slice(0, KEY_LENGTH - CHECKSUM_LENGTH)
    return checksumOf(body) === key.slice(KEY_LENGTH - CHECKSUM_LENGTH)
  }
  return true
}

export function hashApiKey (key: string): string {
  // One-shot hashing: no Hash object per request.
  return hash('sha256', key, 'hex')
}

/** Whether two strings are equal, in a time that depends only on the length of `candidate`. */
export function equalInConstantTime (known: string, candidate: string): boolean {
  let difference = known.length ^ candidate.length
  // Past the end of `known`, charCodeAt gives NaN, which ^ turns into 0: the length already differs.
  for (let i = 0; i < candidate.length; i++) difference |= known.charCodeAt(i) ^ candidate.charCodeAt(i)
  return difference === 0
}

/**
 * Token hashes of presented keys, remembering the last key of each connection. A keep-alive client
 * sends the same key on every request, and the format check and SHA-256 are half of what a cached
 * request costs the auth hook (about 1.5 µs in place): a repeated key skips both. The comparison runs
 * in constant time, so a client that shares a proxy's connection with others learns nothing from
 * timing; the remembered key lives no longer than its connection.
 */
export class TokenHasher {
  private readonly lastKeyOf = new WeakMap<object, { key: string, tokenHash: string }>()

  /** The key's token hash, or undefined when the key cannot exist (see isPlausibleKey). */
  tokenHashOf (key: string, connection: object | null | undefined): string | undefined {
    const last = connection == null ? undefined : this.lastKeyOf.get(connection)
    if (last !== undefined && equalInConstantTime(last.key, key)) return last.tokenHash
    if (!isPlausibleKey(key)) return undefined
    const tokenHash = hashApiKey(key)
    if (connection != null) this.lastKeyOf.set(connection, { key, tokenHash })
    return tokenHash
  }
}

/** A non-secret label for people: enough to recognise a key, far too little to use it. */
export function hintFor (key: string): string {
  if (isNewFormatKey(key)) return `${KEY_PREFIX}${key.slice(KEY_PREFIX.length, KEY_PREFIX.length + 4)}…${key.slice(-4)}`
  if (key.length <= 8) return '…'
  return `${key.slice(0, 8)}…${key.slice(-4)}`
}

export type KeyExtraction =
  | { outcome: 'key', key: string }
  | { outcome: 'missing' }
  | { outcome: 'conflict' }

const SCHEME = /^apikey(?:[ \t]+|$)/i

const isOws = (code: number) => code === 32 || code === 9

/**
 * Strips HTTP's optional whitespace (space and tab only). String.prototype.trim() would also strip
 * vertical tabs, form feeds and Unicode spaces, and so accept a key wrapped in them.
 */
export function trimOws (value: string): string {
  let start = 0
  let end = value.length
  while (start < end && isOws(value.charCodeAt(start))) start++
  while (end > start && isOws(value.charCodeAt(end - 1))) end--
  return start === 0 && end === value.length ? value : value.slice(start, end)
}

function stripScheme (value: string): string {
  const match = SCHEME.exec(value)
  return match === null ? value : trimOws(value.slice(match[0].length))
}

/**
 * Reads the key from raw header pairs: `X-API-Key: <key>`, `X-API-Key: ApiKey <key>` or
 * `Authorization: ApiKey <key>`. Raw headers are used because Node joins a repeated X-API-Key with
 * ", " and silently drops a repeated Authorization, and both must be refused. What is read is not yet
 * checked: TokenHasher refuses what cannot be a key.
 */
export function extractApiKey (rawHeaders: readonly string[]): KeyExtraction {
  let headerKey: string | undefined
  let authorizationKey: string | undefined
  let headerCount = 0
  let authorizationCount = 0
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]
    if (name.length === 9 && (name === 'x-api-key' || name.toLowerCase() === 'x-api-key')) {
      headerCount++
      headerKey = stripScheme(trimOws(rawHeaders[i + 1]))
    } else if (name.length === 13 && (name === 'authorization' || name.toLowerCase() === 'authorization')) {
      authorizationCount++
      const value = trimOws(rawHeaders[i + 1])
      // Other schemes (Bearer, Basic) belong to other authenticators: they are not our key.
      authorizationKey = SCHEME.test(value) ? stripScheme(value) : undefined
    }
  }
  if (headerCount > 1 || authorizationCount > 1) return { outcome: 'conflict' }
  if (headerKey === '') headerKey = undefined
  if (authorizationKey === '') authorizationKey = undefined
  if (headerKey !== undefined && authorizationKey !== undefined && headerKey !== authorizationKey) {
    return { outcome: 'conflict' }
  }
  const key = headerKey ?? authorizationKey
  if (key === undefined) return { outcome: 'missing' }
  return { outcome: 'key', key }
}
