// Reading the key from a request's raw headers. No Fastify: pure functions.

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

/** Whether the value may start with the scheme (A or a): most values are bare keys, spared the expression. */
const mayHaveScheme = (value: string) => (value.charCodeAt(0) | 0x20) === 0x61

/** The key of a value that may start with the `ApiKey` scheme (the header's forms), without it. */
export function stripScheme (value: string): string {
  if (!mayHaveScheme(value)) return value
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
