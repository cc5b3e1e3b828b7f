// A TCP proxy between the app and its database (or Redis), whose cut() makes it unreachable; it counts
// the bytes clients send through it, so a test can tell whether anything was asked at all.
import net from 'node:net'

/** `cut()` refuses new connections and drops open ones; `restore()` serves again on the same port. */
export class TcpProxy {
  private server: net.Server | undefined
  private readonly sockets = new Set<net.Socket>()
  private stalled = false
  private readonly pairs = new Set<[net.Socket, net.Socket]>()
  port = 0
  /** Bytes received from clients (and forwarded, unless stalled) since the start. */
  bytesFromClients = 0

  constructor (private readonly target: { host: string, port: number }) {}

  async start (port = 0): Promise<void> {
    const server = net.createServer((client) => {
      this.sockets.add(client)
      client.on('close', () => this.sockets.delete(client))
      client.on('error', () => {})
      client.on('data', (chunk: Buffer) => { this.bytesFromClients += chunk.length })
      // A database that accepts connections but never answers.
      if (this.stalled) return
      const upstream = net.connect(this.target.port, this.target.host)
      this.sockets.add(upstream)
      upstream.on('close', () => this.sockets.delete(upstream))
      upstream.on('error', () => {})
      client.pipe(upstream).pipe(client)
      this.pairs.add([client, upstream])
      client.on('close', () => this.pairs.forEach((pair) => { if (pair[0] === client) this.pairs.delete(pair) }))
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

  /** Drops open connections and accepts new ones without ever answering on them. */
  async stall (): Promise<void> {
    await this.cut()
    this.stalled = true
    await this.start(this.port)
  }

  /** Open connections stay open but nothing more crosses them, and new ones are never answered. */
  freeze (): void {
    this.stalled = true
    for (const [client, upstream] of this.pairs) {
      client.unpipe(upstream)
      upstream.unpipe(client)
    }
  }

  /** Serves again on the same port. */
  async restore (): Promise<void> {
    if (this.server !== undefined) await this.cut()
    this.stalled = false
    await this.start(this.port)
  }
}
