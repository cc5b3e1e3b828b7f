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
  t.equal(await tracker.stop(Date.now() + 2000, 10), undefined, 'all written')
  t.equal(attempts, 3)
  t.equal(tracker.pendingKeys, 0)
})

t.test('stop gives up at its deadline and hands back what it could not write', async (t) => {
  const failure = new Error('down')
  const tracker = new UsageTracker({ write: async () => { throw failure }, intervalMs: 1000, onError: () => {} })
  tracker.record('a', 1)
  tracker.record('b', 2)
  const unwritten = await tracker.stop(Date.now() + 100, 10)
  t.same(unwritten?.uses, new Map([['a', 1], ['b', 2]]))
  t.equal(unwritten?.error, failure, 'with the last failure')
})

t.test('a write the database never answers does not hold stop past its deadline (found by an outside probe)', async (t) => {
  let attempts = 0
  const tracker = new UsageTracker({ write: () => { attempts++; return new Promise<void>(() => {}) }, intervalMs: 1000, onError: () => {} })
  tracker.record('a', 1)
  tracker.record('b', 2)
  const started = Date.now()
  const stopping = tracker.stop(started + 200, 10)
  tracker.record('a', 3) // a use after the batch left: the later time is the one handed back
  const unwritten = await stopping
  t.ok(Date.now() - started < 2000, 'back at about the deadline')
  t.equal(attempts, 1, 'the one write, never answered')
  t.same(unwritten?.uses, new Map([['a', 3], ['b', 2]]), 'the unanswered batch and the newer use, merged')
  t.match(String(unwritten?.error), /unanswered at the shutdown deadline/)
})
