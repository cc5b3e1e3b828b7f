// A start finds a taken port (or a host that is not this machine's) before its slow steps, not after
// them: opening, migrating and seeding a database can take a minute on a busy machine.
import { createServer } from 'node:net'

/** Why listening on host:port would fail now, or undefined when it would not (port 0 always would not). */
export async function listenError (host: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
  if (port === 0) return undefined
  const probe = createServer()
  return await new Promise((resolve) => {
    probe.once('error', (error: NodeJS.ErrnoException) => resolve(error))
    probe.listen(port, host, () => probe.close(() => resolve(undefined)))
  })
}
