import t from 'tap'
import { UsageTracker } from '#src/auth/usage-tracker.ts'

t.test('coalesces uses per key, keeping the latest', async (t) => {
  const writes: Array<Map<string, number>> = []
  const tracker = new UsageTracker({ write: async (uses) => { writes.push(new Map(uses)) }, intervalMs: 1000, onError: () => {} })
  tracker.record('a', 10)
  tracker.record('a', 30)
  tracker.record('a', 20)
  tracker.record('b', 5)
  await tracker.flush()
  t.same(writes, [new Map([['a', 30], ['b', 5]])])
  await tracker.flush()
  t.equal(writes.length, 1, 'nothing to write, no write')
})

t.test('a failed write keeps its uses, merged with newer ones', async (t) => {
  let fail = true
  const writes: Array<Map<string, number>> = []
  const tracker = new UsageTracker({
    write: async (uses) => { if (fail) throw new Error('down'); writes.push(new Map(uses)) },
    intervalMs: 1000,
    onError: () => {}
  })
  tracker.record('a', 10)
  await t.rejects(tracker.flush())
  tracker.record('a', 5)
  tracker.record('b', 7)
  fail = false
  await tracker.flush()
  t.same(writes, [new Map([['a', 10], ['b', 7]])])
})

t.test('concurrent flushes write one batch at a time', async (t) => {
  let active = 0
  let most = 0
  const tracker = new UsageTracker({
    write: async () => { active++; most = Math.max(most, active); await new Promise((resolve) => setTimeout(resolve, 20)); active-- },
    intervalMs: 1000,
    onError: () => {}
  })
  tracker.record('a', 1)
  const first = tracker.flush()
  tracker.record('b', 2)
  await Promise.all([first, tracker.flush()])
  t.equal(most, 1)
  t.equal(tracker.flushes, 2)
})

t.test('stop writes what is left, retrying until the deadline', async (t) => {
  let attempts = 0
  const tracker = new UsageTracker({
    write: async () => { if (++attempts < 3) throw new Error('down') },
    intervalMs: 1000,
    onError: () => {}
  })
  tracker.start()
  tracker.record('a', 1)
  await tracker.stop(2000, 10)
  t.equal(attempts, 3)
  t.equal(tracker.pendingKeys, 0)
})
