// API key format, hashing and hints. No Fastify, no database: pure functions.
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

/** A string's character codes, to be compared with equalInConstantTime. */
export function characterCodes (value: string): Uint16Array {
  const codes = new Uint16Array(value.length)
  for (let i = 0; i < value.length; i++) codes[i] = value.charCodeAt(i)
  return codes
}

/**
 * Whether a string equals the one whose character codes are `known`, in a time that depends on the
 * lengths only, never on the characters (a key's length tells nothing: new keys all have the same).
 * The known side is a typed array, not a string: reading a string's characters is most of what such a
 * loop costs, about 1.5 ns each, and the typed array's next to nothing.
 */
export function equalInConstantTime (known: Uint16Array, candidate: string): boolean {
  const length = candidate.length
  if (known.length !== length) return false
  let difference = 0
  for (let i = 0; i < length; i++) difference |= known[i] ^ candidate.charCodeAt(i)
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
  private readonly lastKeyOf = new WeakMap<object, { key: Uint16Array, tokenHash: string }>()

  /** The key's token hash, or undefined when the key cannot exist (see isPlausibleKey). */
  tokenHashOf (key: string, connection: object | null | undefined): string | undefined {
    const last = connection == null ? undefined : this.lastKeyOf.get(connection)
    if (last !== undefined && equalInConstantTime(last.key, key)) return last.tokenHash
    if (!isPlausibleKey(key)) return undefined
    const tokenHash = hashApiKey(key)
    if (connection != null) this.lastKeyOf.set(connection, { key: characterCodes(key), tokenHash })
    return tokenHash
  }
}

/** A non-secret label for people: enough to recognise a key, far too little to use it. */
export function hintFor (key: string): string {
  if (isNewFormatKey(key)) return `${KEY_PREFIX}${key.slice(KEY_PREFIX.length, KEY_PREFIX.length + 4)}…${key.slice(-4)}`
  if (key.length <= 8) return '…'
  return `${key.slice(0, 8)}…${key.slice(-4)}`
}
