// Which errors mean "the database is not there right now" (refused, reset, timed out, restarting, full),
// as opposed to a bug or a bad statement. pg, @prisma/adapter-pg and Prisma each word it their own way;
// this is the one place that knows all of them. Such failures are answered 503 with Retry-After.

// Socket-level failures reported by Node (pg) while connecting or talking to the server.
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN'])
// Prisma: authentication failed (P1000), can't reach (P1001), timed out (P1002, P1008), database missing
// (P1003), access denied (P1010), closed (P1017), pool timeout (P2024), too many connections (P2037).
const PRISMA_CODES = new Set(['P1000', 'P1001', 'P1002', 'P1003', 'P1008', 'P1010', 'P1017', 'P2024', 'P2037'])
// @prisma/adapter-pg's own classification of a driver error (a raw query's P2010 carries it in meta).
const ADAPTER_KINDS = new Set(['ConnectionClosed', 'DatabaseNotReachable', 'DatabaseDoesNotExist', 'DatabaseAccessDenied', 'AuthenticationFailed', 'SocketTimeout', 'TooManyConnections', 'TlsConnectionError'])
// PostgreSQL SQLSTATEs: class 08 (connection exception), shutdown and start-up (57P01-57P03), statement
// timeout or cancel (57014), too many connections and out of resources (53xxx), and the database gone or
// not letting us in (3D000 does not exist, 28000/28P01 authorization): no request can be served meanwhile.
const SQLSTATE = /^(?:08[0-9A-Z]{3}|57P0[1-3]|57014|53[0-9A-Z]{3}|3D000|28000|28P01)$/
// What pg and Prisma's adapter say when they have no error code to give.
// Prisma's P2039 ("Database error. Code: `57P01`") names the SQLSTATE only in its message.
const MESSAGES = /Code: `(?:08[0-9A-Z]{3}|57P0[1-3]|57014|53[0-9A-Z]{3}|3D000|28000|28P01)`|database "[^"]*" does not exist|terminating connection due to|Connection terminated|connection timeout|timeout exceeded when trying to connect|Query read timeout|Can't reach database server|Connection ended unexpectedly|server closed the connection|Timed out fetching a new connection|Client has encountered a connection error|the database system is (?:starting up|shutting down)/i

function describesUnavailability (error: Record<string, unknown>): boolean {
  const code = typeof error.code === 'string' ? error.code : undefined
  if (code !== undefined && (NETWORK_CODES.has(code) || PRISMA_CODES.has(code) || SQLSTATE.test(code))) return true
  // A raw query through Prisma (P2010) carries the driver's words in meta, and the adapter's verdict.
  const meta = error.meta as Record<string, unknown> | undefined
  const adapterKind = ((meta?.driverAdapterError as { cause?: { kind?: unknown } } | undefined)?.cause ?? error).kind
  if (typeof adapterKind === 'string' && ADAPTER_KINDS.has(adapterKind)) return true
  const texts = [error.message, meta?.message, meta?.cause]
  return texts.some((text) => typeof text === 'string' && MESSAGES.test(text))
}

export function isDatabaseUnavailable (error: unknown): boolean {
  // Walk the cause chain: adapters and Prisma wrap the driver's error.
  for (let current = error, depth = 0; current !== null && typeof current === 'object' && depth < 5; depth++) {
    if (describesUnavailability(current as Record<string, unknown>)) return true
    current = (current as { cause?: unknown }).cause
  }
  return false
}

// A transaction that lost to a concurrent one and may simply run again: serialization failure (40001),
// deadlock (40P01); Prisma's P2034 ("write conflict or a deadlock").
const CONFLICT_CODES = new Set(['40001', '40P01', 'P2034'])
const CONFLICT_MESSAGES = /deadlock detected|could not serialize access|write conflict or a deadlock/i

function describesConflict (error: Record<string, unknown>): boolean {
  const meta = error.meta as Record<string, unknown> | undefined
  const codes = [error.code, error.originalCode, meta?.code]
  if (codes.some((code) => typeof code === 'string' && CONFLICT_CODES.has(code))) return true
  const texts = [error.message, meta?.message, meta?.cause]
  return texts.some((text) => typeof text === 'string' && CONFLICT_MESSAGES.test(text))
}

/** Whether a failed transaction lost a race (deadlock, serialization failure) and may be run again. */
export function isTransactionConflict (error: unknown): boolean {
  for (let current = error, depth = 0; current !== null && typeof current === 'object' && depth < 5; depth++) {
    if (describesConflict(current as Record<string, unknown>)) return true
    current = (current as { cause?: unknown }).cause
  }
  return false
}
