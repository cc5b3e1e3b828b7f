// Work done after the answer has gone: one task at a time (a flood of reports cannot flood the database),
// at most `maxPending` waiting (past that a task is dropped and counted), and `idle()` for a graceful close.

export interface SerialQueueOptions {
  maxPending: number
  /** Called with what a task threw; the queue goes on. */
  onError: (error: unknown) => void
}

export class SerialQueue {
  private tail: Promise<void> = Promise.resolve()
  private waiting = 0
  private done = 0
  private droppedTasks = 0

  constructor (private readonly options: SerialQueueOptions) {}

  /** Queues the task; false (and nothing queued) when the queue is full. */
  push (task: () => Promise<unknown>): boolean {
    if (this.waiting >= this.options.maxPending) {
      this.droppedTasks++
      return false
    }
    this.waiting++
    this.tail = this.tail.then(async () => {
      try {
        await task()
      } catch (error) {
        this.options.onError(error)
      } finally {
        this.waiting--
        this.done++
      }
    })
    return true
  }

  /** Resolves once every task queued so far has run. */
  async idle (): Promise<void> {
    await this.tail
  }

  stats (): { pending: number, done: number, dropped: number } {
    return { pending: this.waiting, done: this.done, dropped: this.droppedTasks }
  }
}
