// The embedded database's port has no password (PGlite's socket knows none): on a machine with other
// users, any of them could connect and write the auth store, a key with auth:admin included (found by an
// outside probe). PostgreSQL's answer for local connections is peer authentication; over loopback TCP
// Linux tells a connection's owner too: the client's end of it is listed in /proc/net/tcp with its uid.
// Connections of another user (or of another machine, whose end is not listed) are refused with a
// PostgreSQL error before any byte is read.
import { existsSync, readFileSync, readlinkSync } from 'node:fs'
import type { Server, Socket } from 'node:net'
import type { PGLiteSocketServer } from '@electric-sql/pglite-socket'

const TABLES = ['/proc/net/tcp', '/proc/net/tcp6']

/**
 * The uid owning the other end of a loopback connection, from the kernel's socket table: the entry whose
 * local port is the client's and whose remote port is ours. Undefined when no such entry is listed.
 */
export function peerUid (socket: Socket): number | undefined {
  const clientPort = socket.remotePort
  const serverPort = socket.localPort
  const ours = socketInode(socket)
  if (clientPort === undefined || serverPort === undefined || ours === undefined) return undefined
  const local = `:${clientPort.toString(16).toUpperCase().padStart(4, '0')}`
  const remote = `:${serverPort.toString(16).toUpperCase().padStart(4, '0')}`
  // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode …
  const rows = TABLES.flatMap((table) => {
    try {
      return readFileSync(table, 'utf8').split('\n').map((line) => line.trim().split(/\s+/)).filter((fields) => fields.length > 9)
    } catch {
      return []
    }
  })
  // Our end must still be open, in the same reading: once the client's end is gone, its address and port
  // may be another client's, a connection of root's among them, which the row found below would then be
  // (found by an outside probe: a reset connection of another user passed as a root one that took its
  // place). While ours is open, no other connection can have them.
  if (!rows.some((fields) => fields[9] === ours && fields[3] === '01')) return undefined
  const client = rows.find((fields) => fields[1].endsWith(local) && fields[2].endsWith(remote))
  // A socket its process has closed is an orphan of the kernel's (inode 0), listed as root's: its owner
  // is unknown (found by an outside probe: a client that sent its queries and closed at once passed as
  // root). Only an open one (ESTABLISHED, 01) owned by a process says who connected.
  return client !== undefined && client[3] === '01' && client[9] !== '0' ? Number(client[7]) : undefined
}

/** The inode of this process's end of the connection, as the socket tables list it. */
function socketInode (socket: Socket): string | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd
  if (fd === undefined || fd < 0) return undefined
  try {
    return /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`))?.[1]
  } catch {
    return undefined
  }
}

/** A PostgreSQL ErrorResponse (FATAL, invalid_authorization_specification), as libpq and pg report it. */
function fatalError (message: string): Buffer {
  const fields = Buffer.from(`SFATAL\0VFATAL\0C28000\0M${message}\0\0`, 'utf8')
  const head = Buffer.alloc(5)
  head.write('E', 0)
  head.writeInt32BE(fields.length + 4, 1)
  return Buffer.concat([head, fields])
}

/** Whether this system lists its connections' owners (Linux); elsewhere the port stays as open as it was. */
const canTellPeers = (): boolean => TABLES.some((table) => existsSync(table))

/** Refused connections left open at once, to answer their client's first message with the error; more are closed unanswered. */
export const MAX_REFUSED_OPEN = 256

/**
 * Refuses every connection to the server that is not this process's user's (or root's). Only admitted
 * connections count against the server's maxConnections: Node's own bound on the port (pglite-socket sets
 * it to maxConnections) counted refused ones too, so another user holding that many open kept the owner,
 * its tools and the service itself out (found by an outside probe). Refused ones have a bound of their own.
 */
export function refuseOtherUsers (server: PGLiteSocketServer): void {
  if (!canTellPeers() || process.getuid === undefined) return
  const own = process.getuid()
  const target = server as unknown as {
    handleConnection: (socket: Socket) => Promise<void>
    start: () => Promise<void>
    server: Server | null
    maxConnections: number
  }
  const start = target.start.bind(server)
  target.start = async () => {
    await start()
    if (target.server !== null) target.server.maxConnections = target.maxConnections + MAX_REFUSED_OPEN
  }
  let refusedOpen = 0
  const handleConnection = target.handleConnection.bind(server)
  target.handleConnection = async (socket: Socket) => {
    const uid = peerUid(socket)
    if (uid === own || uid === 0) return await handleConnection(socket)
    if (refusedOpen >= MAX_REFUSED_OPEN) {
      socket.destroy()
      return
    }
    refusedOpen++
    socket.once('close', () => { refusedOpen-- })
    const who = uid === undefined ? 'a client whose user this machine does not list (another machine?)' : `the user with uid ${uid}`
    refuse(socket, fatalError(`the embedded database accepts connections only from the user the service runs as (uid ${own}), not ${who}: it has no password`))
  }
}

/** The SSLRequest a client may send first (psql does): its code, after the length 8. */
const SSL_REQUEST = 80877103

/**
 * Answers the client's first message with the error, and closes. An SSLRequest is answered "no" first:
 * libpq shows an error sent in its place only as "an error response during SSL exchange".
 */
function refuse (socket: Socket, error: Buffer): void {
  // A refused connection still counts against the port's connections until it closes: it closes soon,
  // whatever the client does (found by an outside probe: a burst of half-sent ones shut the owner out).
  socket.setTimeout(1000, () => socket.destroy())
  socket.on('error', () => socket.destroy())
  const onData = (chunk: Buffer): void => {
    if (chunk.length === 8 && chunk.readInt32BE(0) === 8 && chunk.readInt32BE(4) === SSL_REQUEST) {
      socket.write('N')
      return
    }
    socket.off('data', onData)
    socket.end(error, () => socket.destroy())
  }
  socket.on('data', onData)
}
