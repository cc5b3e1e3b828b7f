// GitHub signs each secret-scanning report's raw body (ECDSA P-256, SHA-256) and names the key it used in
// `Github-Public-Key-Identifier`; the base64 DER signature comes in `Github-Public-Key-Signature`. We look the
// identifier up in GitHub's published keys (cached 1 h, refetched at most once a minute for an unknown one).
import { createPublicKey, verify as verifySignature, type KeyObject } from 'node:crypto'
import { Type } from 'typebox'
import { Compile } from 'typebox/compile'

/** Header names as Node presents them (lowercased); GitHub documents them as `Github-Public-Key-…`. */
export const KEY_IDENTIFIER_HEADER = 'github-public-key-identifier'
export const SIGNATURE_HEADER = 'github-public-key-signature'

/** Where GitHub publishes its secret-scanning keys (the default for SECRET_SCANNING_KEYS_URL). */
export const GITHUB_SECRET_SCANNING_KEYS_URL = 'https://api.github.com/meta/public_keys/secret_scanning'

/**
 * Why a report is refused. `keys-unavailable`: the identifier is not among the keys held and the last
 * attempt to fetch GitHub's keys failed, so the report cannot be judged now (a 503, which GitHub retries;
 * never a 401 that would drop a genuine report).
 */
export type VerificationFailure = 'missing-headers' | 'unknown-key' | 'bad-signature' | 'malformed-signature' | 'keys-unavailable'
export type VerificationResult = { ok: true } | { ok: false, reason: VerificationFailure }

export interface GitHubKeyStoreOptions {
  url: string
  fetch?: typeof fetch
  /** Milliseconds since the epoch; injected by tests. */
  now?: () => number
  /** How long a fetched document is trusted before it is fetched again. */
  ttlMs?: number
  /** At most one fetch per interval, whatever the number of unknown identifiers (GitHub rate-limits the endpoint). */
  minRefetchIntervalMs?: number
  timeoutMs?: number
  /** Sent with every fetch, e.g. `authorization: Bearer <token>`: GitHub's docs advise a token against rate limits. */
  headers?: Record<string, string>
}

export interface GitHubKeyStoreStats {
  /** Fetch attempts, failed ones included. */
  fetches: number
  fetchFailures: number
  knownKeys: number
  /** When keys were last fetched successfully (ms since the epoch), null before the first success. */
  lastFetchAt: number | null
  lastFetchError: string | null
}

interface CachedKey {
  pem: string
  keyObject: KeyObject
}

// GitHub's document is a few kilobytes; anything far larger is not it.
const MAX_KEYS_DOCUMENT_BYTES = 1024 * 1024
// A DER ECDSA P-256 signature is 8 to 72 bytes: 96 base64 characters at most.
const MAX_SIGNATURE_BASE64_LENGTH = 100
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/
// GitHub's identifiers are 64 hex digits; printable ASCII up to 256 keeps junk out of lookups and logs.
const KEY_IDENTIFIER = /^[\x21-\x7e]{1,256}$/

const KeysDocument = Compile(Type.Object({ public_keys: Type.Array(Type.Unknown(), { maxItems: 100 }) }))
const KeyEntry = Compile(Type.Object({
  key_identifier: Type.String({ pattern: KEY_IDENTIFIER.source }),
  key: Type.String({ minLength: 1, maxLength: 8192 }),
  is_current: Type.Optional(Type.Boolean())
}))

export class GitHubKeyStore {
  private readonly url: string
  private readonly fetch: typeof fetch
  private readonly now: () => number
  private readonly ttlMs: number
  private readonly minRefetchIntervalMs: number
  private readonly timeoutMs: number
  private readonly headers: Record<string, string>

  private keys = new Map<string, CachedKey>()
  private loadedAt: number | null = null
  private lastAttemptAt: number | null = null
  private inFlight: Promise<void> | undefined
  private etag: string | null = null
  private fetches = 0
  private fetchFailures = 0
  private lastFetchError: string | null = null

  constructor (options: GitHubKeyStoreOptions) {
    this.url = options.url
    this.fetch = options.fetch ?? globalThis.fetch
    this.now = options.now ?? Date.now
    this.ttlMs = options.ttlMs ?? 60 * 60 * 1000
    this.minRefetchIntervalMs = options.minRefetchIntervalMs ?? 60 * 1000
    this.timeoutMs = options.timeoutMs ?? 5000
    this.headers = options.headers ?? {}
  }

  /** Never throws: every failure, a failed key fetch included, is a reason. */
  async verify (rawBody: Buffer | Uint8Array, keyIdentifier: string | undefined, signatureBase64: string | undefined): Promise<VerificationResult> {
    if (keyIdentifier === undefined || keyIdentifier === '' || signatureBase64 === undefined || signatureBase64 === '') {
      return { ok: false, reason: 'missing-headers' }
    }
    // Checked before the key lookup so that garbage cannot trigger fetches.
    const signature = decodeDerSignature(signatureBase64)
    if (signature === undefined) return { ok: false, reason: 'malformed-signature' }
    if (!KEY_IDENTIFIER.test(keyIdentifier)) return { ok: false, reason: 'unknown-key' }

    const { key, fetchedNow } = await this.keyFor(keyIdentifier)
    // Unknown only when GitHub's keys were just fetched and it is not among them; if the refetch is not
    // due yet (someone sent an unknown identifier a moment ago), GitHub may have rotated meanwhile: a 503
    // it retries, not a 401 that would drop a genuine report (found by an outside probe).
    if (key === undefined) return { ok: false, reason: this.lastFetchError === null && fetchedNow ? 'unknown-key' : 'keys-unavailable' }
    try {
      const valid = verifySignature('sha256', rawBody, { key, dsaEncoding: 'der' }, signature)
      return valid ? { ok: true } : { ok: false, reason: 'bad-signature' }
    } catch {
      return { ok: false, reason: 'bad-signature' }
    }
  }

  /** Seconds until the keys may be fetched again (Retry-After of a `keys-unavailable` refusal), at least 1. */
  retryAfterSeconds (): number {
    if (this.lastAttemptAt === null) return 1
    const wait = this.lastAttemptAt + this.minRefetchIntervalMs - this.now()
    return Math.max(1, Math.ceil(wait / 1000))
  }

  stats (): GitHubKeyStoreStats {
    return {
      fetches: this.fetches,
      fetchFailures: this.fetchFailures,
      knownKeys: this.keys.size,
      lastFetchAt: this.loadedAt,
      lastFetchError: this.lastFetchError
    }
  }

  /** The key, and whether the keys were fetched for this lookup (a fetch under way counts). */
  private async keyFor (keyIdentifier: string): Promise<{ key: KeyObject | undefined, fetchedNow: boolean }> {
    let fetchedNow = false
    if (this.loadedAt === null || this.now() - this.loadedAt >= this.ttlMs) fetchedNow = await this.refresh()
    const known = this.keys.get(keyIdentifier)
    if (known !== undefined) return { key: known.keyObject, fetchedNow }
    // Perhaps GitHub rotated its keys since our last fetch.
    fetchedNow = (await this.refresh()) || fetchedNow
    return { key: this.keys.get(keyIdentifier)?.keyObject, fetchedNow }
  }

  /**
   * Shares a fetch under way; otherwise fetches unless one was attempted less than the interval ago.
   * Resolves whether a fetch took place (false: skipped, too soon after the last).
   */
  private async refresh (): Promise<boolean> {
    if (this.inFlight !== undefined) {
      await this.inFlight
      return true
    }
    const now = this.now()
    if (this.lastAttemptAt !== null) {
      const elapsed = now - this.lastAttemptAt
      // A clock that went backwards must not block refetches until it catches up.
      if (elapsed >= 0 && elapsed < this.minRefetchIntervalMs) return false
    }
    this.lastAttemptAt = now
    this.inFlight = this.load().finally(() => { this.inFlight = undefined })
    await this.inFlight
    return true
  }

  private async load (): Promise<void> {
    this.fetches++
    try {
      const document = await this.download()
      // 304: the keys we hold are still GitHub's.
      if (document !== undefined) this.keys = this.parseKeys(document)
      this.loadedAt = this.now()
      this.lastFetchError = null
    } catch (error) {
      // The previous keys stay in use: GitHub's endpoint being down must not make genuine reports fail.
      this.fetchFailures++
      this.lastFetchError = error instanceof Error ? error.message : String(error)
    }
  }

  /** The response text, or undefined when the server answers 304 to our ETag. */
  private async download (): Promise<string | undefined> {
    const headers: Record<string, string> = { accept: 'application/json', ...this.headers }
    // GitHub's docs suggest conditional requests: a 304 does not count against its rate limit.
    if (this.etag !== null && this.keys.size > 0) headers['if-none-match'] = this.etag
    const response = await this.fetch(this.url, { headers, signal: AbortSignal.timeout(this.timeoutMs) })
    if (response.status === 304 && this.keys.size > 0) {
      await response.body?.cancel()
      return undefined
    }
    if (!response.ok) {
      await response.body?.cancel()
      throw new Error(`keys endpoint answered ${response.status}`)
    }
    const text = await readCappedText(response, MAX_KEYS_DOCUMENT_BYTES)
    this.etag = response.headers.get('etag')
    return text
  }

  private parseKeys (text: string): Map<string, CachedKey> {
    let document: unknown
    try {
      document = JSON.parse(text)
    } catch {
      throw new Error('keys document is not JSON')
    }
    if (!KeysDocument.Check(document)) throw new Error('keys document has no public_keys array')

    const keys = new Map<string, CachedKey>()
    for (const entry of document.public_keys) {
      // Malformed or foreign entries are skipped, not fatal: one odd entry must not disable the others.
      if (!KeyEntry.Check(entry)) continue
      const previous = this.keys.get(entry.key_identifier)
      if (previous !== undefined && previous.pem === entry.key) {
        keys.set(entry.key_identifier, previous)
        continue
      }
      const keyObject = parseP256PublicKey(entry.key)
      if (keyObject !== undefined) keys.set(entry.key_identifier, { pem: entry.key, keyObject })
    }
    // An empty or all-invalid list is more likely a broken answer than GitHub retiring every key.
    if (keys.size === 0) throw new Error('keys document has no usable P-256 key')
    return keys
  }
}

/** Duplicate headers come as arrays; a report with two signatures is ambiguous, so treat it as unsigned. */
export function signatureHeaders (headers: Record<string, string | string[] | undefined>): { keyIdentifier: string | undefined, signature: string | undefined } {
  const single = (value: string | string[] | undefined): string | undefined => typeof value === 'string' ? value : undefined
  return { keyIdentifier: single(headers[KEY_IDENTIFIER_HEADER]), signature: single(headers[SIGNATURE_HEADER]) }
}

function parseP256PublicKey (pem: string): KeyObject | undefined {
  try {
    const key = createPublicKey({ key: pem, format: 'pem' })
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') return undefined
    return key
  } catch {
    return undefined
  }
}

/** Strict: Buffer.from(…, 'base64') silently skips invalid characters, so the alphabet is checked first. */
function decodeDerSignature (signatureBase64: string): Buffer | undefined {
  if (signatureBase64.length > MAX_SIGNATURE_BASE64_LENGTH || !BASE64.test(signatureBase64)) return undefined
  if (signatureBase64.length % 4 === 1) return undefined
  const der = Buffer.from(signatureBase64, 'base64')
  return isDerEcdsaSignature(der) ? der : undefined
}

/** SEQUENCE { INTEGER r, INTEGER s } with short-form lengths, nothing trailing (P-256 needs no more). */
function isDerEcdsaSignature (der: Buffer): boolean {
  if (der.length < 8 || der.length > 72) return false
  if (der[0] !== 0x30 || der[1] !== der.length - 2) return false
  let offset = 2
  for (let i = 0; i < 2; i++) {
    if (offset + 2 > der.length || der[offset] !== 0x02) return false
    const length = der[offset + 1]
    if (length < 1 || length > 33 || offset + 2 + length > der.length) return false
    offset += 2 + length
  }
  return offset === der.length
}

async function readCappedText (response: Response, maxBytes: number): Promise<string> {
  const declared = Number(response.headers.get('content-length'))
  if (declared > maxBytes) {
    await response.body?.cancel()
    throw new Error(`keys document larger than ${maxBytes} bytes`)
  }
  if (response.body === null) return ''
  const reader = response.body.getReader()
  const chunks: Uint8Array[] = []
  let total = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    total += value.byteLength
    if (total > maxBytes) {
      await reader.cancel()
      throw new Error(`keys document larger than ${maxBytes} bytes`)
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks).toString('utf8')
}
