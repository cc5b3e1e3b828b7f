// PGlite has one session, and pglite-socket (0.2.17) shares it between connections by queueing their
// protocol messages one at a time. It keeps a transaction's messages together, but not an extended-protocol
// batch (Parse, Bind, Describe, Execute … Sync): another connection's Parse could land between one's Parse
// and its Bind and replace the unnamed statement or portal under it ("portal \"\" cannot be run", a query
// answered with another's rows). And a message that threw left the queue marked busy forever. This
// replaces the queue's scheduler: a connection that has begun a batch or a transaction keeps the session
// until its Sync (or the transaction's end); a failure rejects that message only.
import type { PGLiteSocketServer } from '@electric-sql/pglite-socket'

interface QueuedMessage {
  handlerId: number
  message: Uint8Array
  resolve: (bytes: number) => void
  reject: (error: unknown) => void
  onData: (data: Uint8Array) => void
}

interface QueryQueue {
  queue: QueuedMessage[]
  processing: boolean
  lastHandlerId: number | null
  db: {
    isInTransaction: () => boolean
    runExclusive: <T>(fn: () => Promise<T>) => Promise<T>
    execProtocolRawStream: (message: Uint8Array, options: { onRawData: (data: Uint8Array) => void }) => Promise<unknown>
    exec: (sql: string) => Promise<unknown>
  }
  processQueue: () => Promise<void>
  clearTransactionIfNeeded: (handlerId: number) => Promise<void>
}

// Extended-protocol messages that leave a batch open until Sync: Parse, Bind, Describe, Execute, Close, Flush.
const OPENS_BATCH = new Set([0x50, 0x42, 0x44, 0x45, 0x43, 0x48])

export function keepBatchesWhole (server: PGLiteSocketServer): void {
  const queue = (server as unknown as { queryQueue: QueryQueue }).queryQueue
  /** The connection whose batch is open (its Sync not yet run), if any. */
  let batchOwner: number | null = null

  queue.processQueue = async function processQueue (this: QueryQueue): Promise<void> {
    if (this.processing || this.queue.length === 0) return
    this.processing = true
    try {
      while (this.queue.length > 0) {
        const owner = batchOwner ?? (this.db.isInTransaction() ? this.lastHandlerId : null)
        const index = owner === null ? 0 : this.queue.findIndex((item) => item.handlerId === owner)
        // The owner's next message has not arrived yet: the others wait for it (enqueue calls us again).
        if (index === -1) break
        const [item] = this.queue.splice(index, 1)
        let bytes = 0
        try {
          await this.db.runExclusive(() => this.db.execProtocolRawStream(item.message, {
            onRawData: (data) => {
              bytes += data.length
              item.onData(data)
            }
          }))
        } catch (error) {
          item.reject(error)
          continue
        } finally {
          this.lastHandlerId = item.handlerId
          batchOwner = OPENS_BATCH.has(item.message[0]) ? item.handlerId : null
        }
        item.resolve(bytes)
      }
    } finally {
      this.processing = false
    }
  }

  // A connection gone in the middle of its batch or transaction must not hold the session.
  const clearTransaction = queue.clearTransactionIfNeeded.bind(queue)
  queue.clearTransactionIfNeeded = async function (handlerId: number): Promise<void> {
    if (batchOwner === handlerId) batchOwner = null
    await clearTransaction(handlerId)
    await queue.processQueue()
  }
}
