// Request bodies: JSON in UTF-8, as sent, and nothing else. The content-type parsers of the service's
// routes (src/app.ts, and the report routes' own) are made of these.
import type { FastifyRequest } from 'fastify'
import { BadRequestError, UnsupportedMediaTypeError, type HttpError } from './errors.ts'

/**
 * Why a string cannot be stored as sent, if it cannot: PostgreSQL refuses NUL, and stores a lone surrogate
 * (which only a JSON escape can make, `\ud800`) as U+FFFD (found by an outside probe).
 */
function unstorable (text: string): string | undefined {
  if (text.includes('\0')) return 'NUL characters are not allowed in strings'
  if (!(text as string & { isWellFormed: () => boolean }).isWellFormed()) return 'Strings must be well-formed Unicode: a lone surrogate (\\ud800 to \\udfff) cannot be stored'
  return undefined
}

/** The first reason a value's strings (names included) cannot be stored as sent; undefined when all can. */
function unstorableIn (value: unknown): string | undefined {
  if (typeof value === 'string') return unstorable(value)
  if (value === null || typeof value !== 'object') return undefined
  for (const [name, child] of Object.entries(value)) {
    const reason = unstorable(name) ?? unstorableIn(child)
    if (reason !== undefined) return reason
  }
  return undefined
}

const CHARSET = /;\s*charset\s*=\s*"?([^";\s]*)/i
const CHARSET_PARAMETERS = /;\s*charset\*?\s*=/gi

/**
 * What a body's headers say that makes it unreadable here, before it is read: a content coding (gzip was
 * read as JSON and refused as "not valid JSON"), JSON in a charset other than UTF-8 (RFC 8259), which
 * read as UTF-8 would be stored as something its sender did not write, or a type said twice over (a
 * repeated Content-Type, or charset, of which Node and the parser would each have read one).
 */
export function bodyHeadersRefusal (request: FastifyRequest): HttpError | undefined {
  const coding = request.headers['content-encoding']?.trim().toLowerCase()
  if (coding !== undefined && coding !== '' && coding !== 'identity') {
    return new UnsupportedMediaTypeError(`Content-Encoding ${coding.slice(0, 40)} is not supported: send the body uncompressed`) as HttpError
  }
  // Node undoes chunked and nothing else: `Transfer-Encoding: gzip, chunked` would be read as plain.
  const transferCodings = request.headers['transfer-encoding']?.toLowerCase().split(',').map((name) => name.trim()) ?? []
  const compressed = transferCodings.find((name) => name !== 'chunked' && name !== 'identity' && name !== '')
  if (compressed !== undefined) return new UnsupportedMediaTypeError(`Transfer-Encoding ${compressed.slice(0, 40)} is not supported: send the body uncompressed`) as HttpError
  const rawHeaders = request.raw.rawHeaders
  let contentTypes = 0
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i].toLowerCase() === 'content-type') contentTypes++
  if (contentTypes > 1) return new BadRequestError('Content-Type is given more than once') as HttpError
  const contentType = request.headers['content-type'] ?? ''
  const charsetParameters = contentType.match(CHARSET_PARAMETERS) ?? []
  if (charsetParameters.length > 1) return new BadRequestError('Content-Type gives its charset more than once') as HttpError
  if (charsetParameters.some((parameter) => parameter.includes('*'))) return new UnsupportedMediaTypeError('JSON bodies must be UTF-8, declared as charset=utf-8 (not charset*=)') as HttpError
  const charset = CHARSET.exec(contentType)?.[1].toLowerCase()
  if (charset === undefined || charset === 'utf-8' || charset === 'utf8') return undefined
  return new UnsupportedMediaTypeError(`JSON bodies must be UTF-8; this one says charset=${charset.slice(0, 40)}`) as HttpError
}

// Fatal: bytes that are not UTF-8 are refused, not turned into U+FFFD and stored (found by an outside probe).
const UTF8 = new TextDecoder('utf-8', { fatal: true })

/** A JSON body from its bytes: valid UTF-8, valid JSON, no string PostgreSQL cannot store as sent; undefined when empty. */
export function parseJsonBytes (raw: Buffer): unknown {
  let text: string
  try {
    text = UTF8.decode(raw)
  } catch {
    throw new BadRequestError('The body is not valid UTF-8')
  }
  if (text === '') return undefined
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw new BadRequestError('The body is not valid JSON')
  }
  // Only an escape can put NUL or a lone surrogate in a JSON string: walk the value only when the text has one.
  const reason = text.includes('\\u') ? unstorableIn(value) : undefined
  if (reason !== undefined) throw new BadRequestError(reason)
  return value
}

/** The JSON content-type parser of every route but GitHub's (which verifies the bytes first). */
export function parseJsonBody (request: FastifyRequest, raw: Buffer, done: (error: Error | null, value?: unknown) => void): void {
  // An empty body is no body, whatever its headers say.
  if (raw.length === 0) return done(null, undefined)
  const refusal = bodyHeadersRefusal(request)
  if (refusal !== undefined) return done(refusal)
  let value: unknown
  try {
    value = parseJsonBytes(raw)
  } catch (error) {
    return done(error as Error)
  }
  done(null, value)
}

export function refuseNonEmptyBody (request: FastifyRequest, body: Buffer, done: (error: Error | null, value?: unknown) => void): void {
  if (body.length === 0) return done(null, undefined)
  done(new UnsupportedMediaTypeError(`The body must be JSON (application/json), not ${(request.headers['content-type'] ?? 'untyped').slice(0, 60)}`))
}
