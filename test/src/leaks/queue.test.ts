import t from 'tap'
import { SerialQueue } from '#src/leaks/queue.ts'

t.test('one task at a time, in order; a failing task does not stop the others', async (t) => {
  const errors: unknown[] = []
  const queue = new SerialQueue({ maxPending: 10, onError: (error) => errors.push(error) })
  const order: string[] = []
  let running = 0
  let most = 0
  const task = (name: string, fail = false) => async () => {
    running++
    most = Math.max(most, running)
    await new Promise((resolve) => setImmediate(resolve))
    order.push(name)
    running--
    if (fail) throw new Error(name)
  }
  t.ok(queue.push(task('a')))
  t.ok(queue.push(task('b', true)))
  t.ok(queue.push(task('c')))
  t.equal(queue.stats().pending, 3)
  await queue.idle()
  t.same(order, ['a', 'b', 'c'])
  t.equal(most, 1, 'never two at once')
  t.same(errors.map((error) => (error as Error).message), ['b'])
  t.same(queue.stats(), { pending: 0, done: 3, dropped: 0 })
})

t.test('bounded: past maxPending a task is refused and counted', async (t) => {
  const queue = new SerialQueue({ maxPending: 2, onError: () => {} })
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  t.ok(queue.push(() => gate))
  t.ok(queue.push(async () => {}))
  t.notOk(queue.push(async () => {}), 'full')
  t.equal(queue.stats().dropped, 1)
  release()
  await queue.idle()
  t.ok(queue.push(async () => {}), 'room again')
  await queue.idle()
  t.same(queue.stats(), { pending: 0, done: 3, dropped: 1 })
})
