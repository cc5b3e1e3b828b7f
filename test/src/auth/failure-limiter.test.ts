import t from 'tap'
import { FailureLimiter } from '#src/auth/failure-limiter.ts'

t.test('refuses after the limit within the window, then forgives', async (t) => {
  const limiter = new FailureLimiter({ limit: 3, windowMs: 10_000, maxClients: 10 })
  for (let i = 0; i < 3; i++) {
    t.equal(limiter.retryAfterSeconds('a', 0), 0)
    limiter.recordFailure('a', 0)
  }
  t.equal(limiter.retryAfterSeconds('a', 1), 10)
  t.equal(limiter.retryAfterSeconds('b', 1), 0, 'others unaffected')
  t.equal(limiter.retryAfterSeconds('a', 10_000), 0, 'a new window')
})

t.test('memory is bounded whatever the number of clients', async (t) => {
  const limiter = new FailureLimiter({ limit: 1, windowMs: 10_000, maxClients: 100 })
  for (let i = 0; i < 10_000; i++) limiter.recordFailure(`client-${i}`, 0)
  t.equal(limiter.trackedClients, 100)
  t.ok(limiter.retryAfterSeconds('client-9999', 0) > 0, 'the most recent are kept')
})
