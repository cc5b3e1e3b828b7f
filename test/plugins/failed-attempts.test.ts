import t from 'tap'
import { build, statementsDuring } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { keyOf } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)
const limit = 5
const { app } = await build(t, { config: { trustProxy: ['127.0.0.1'], failedAttempts: { limit, windowMs: 60_000, maxClients: 1000 } } })

const me = (key: string, remoteAddress: string, forwardedFor?: string) => app.inject({
  url: '/api/v1/auth/me',
  remoteAddress,
  headers: { 'x-api-key': key, ...(forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor }) }
})

t.test('behind a trusted proxy, X-Forwarded-For names the client', async (t) => {
  for (let i = 0; i < limit; i++) t.equal((await me(`guess-${i}`, '127.0.0.1', '203.0.113.5')).statusCode, 401)
  const statements = await statementsDuring(app, async () => {
    const limited = await me('guess-x', '127.0.0.1', '203.0.113.5')
    t.equal(limited.statusCode, 429)
    t.equal(limited.json().code, 'TOO_MANY_FAILED_ATTEMPTS')
    t.ok(Number(limited.headers['retry-after']) >= 1)
  })
  t.equal(statements, 0, 'refused before any lookup')
  t.equal((await me(keyOf('dev+clerk_test@mock.com'), '127.0.0.1', '203.0.113.6')).statusCode, 200, 'another client behind the same proxy authenticates')
  t.equal((await me('guess-y', '127.0.0.1', '203.0.113.6')).statusCode, 401, 'and is not limited')
})

t.test('a key already known good is not held back by its client\'s failures', async (t) => {
  const key = keyOf('po+clerk_test@mock.com')
  t.equal((await me(key, '127.0.0.1', '198.51.100.7')).statusCode, 200)
  for (let i = 0; i < limit; i++) await me(`wrong-${i}`, '127.0.0.1', '198.51.100.7')
  t.equal((await me('wrong-again', '127.0.0.1', '198.51.100.7')).statusCode, 429)
  t.equal((await me(key, '127.0.0.1', '198.51.100.7')).statusCode, 200, 'the good key still works')
})

t.test('a good key whose cache entry has aged goes to its lookup, not to 429 (found by an outside probe)', async (t) => {
  const { app: aging, clock } = await build(t, { config: { failedAttempts: { limit, windowMs: 60_000, maxClients: 1000 }, cache: { ttlMs: 1000 } } })
  const from = (key: string) => aging.inject({ url: '/api/v1/auth/me', remoteAddress: '198.51.100.20', headers: { 'x-api-key': key } })
  const known = keyOf('sm+clerk_test@mock.com')
  t.equal((await from(known)).statusCode, 200)
  for (let i = 0; i < limit; i++) await from(`wrong-${i}`)
  t.equal((await from('wrong-again')).statusCode, 429)
  clock.advance(1500) // past the entry's freshness, well within the failure window
  const statements = await statementsDuring(aging, async () => {
    t.equal((await from(known)).statusCode, 200, 'the key known good is looked up again and admitted')
  })
  t.equal(statements, 1, 'one lookup')
  t.equal((await from('wrong-later')).statusCode, 429, 'guesses are still held back')
  t.equal((await from(keyOf('qa+clerk_test@mock.com'))).statusCode, 429, 'so is a key this instance has not seen good: from this client it could be a guess')
})

t.test('from an untrusted address, X-Forwarded-For is ignored: rotating it does not escape the limit', async (t) => {
  for (let i = 0; i < limit; i++) t.equal((await me(`guess-${i}`, '10.7.7.7', `192.0.2.${i}`)).statusCode, 401)
  t.equal((await me('guess-z', '10.7.7.7', '192.0.2.200')).statusCode, 429)
  t.equal((await me(keyOf('qa+clerk_test@mock.com'), '10.7.7.8')).statusCode, 200, 'another address authenticates')
})

t.test('a burst of parallel guesses starts no more lookups than the budget allows', async (t) => {
  // A slow machine must not turn the budget's lookups into 503s: this test is about counting.
  const { app } = await build(t, { config: { databaseStatementTimeoutMs: 60_000, databaseConnectTimeoutMs: 60_000, failedAttempts: { limit: 20, windowMs: 60_000, maxClients: 1000 } } })
  const statements = await statementsDuring(app, async () => {
    const answers = await Promise.all(Array.from({ length: 400 }, (_, i) =>
      app.inject({ url: '/api/v1/auth/me', remoteAddress: '203.0.113.99', headers: { 'x-api-key': `parallel-guess-${i}` } })))
    const statuses = answers.map((answer) => answer.statusCode)
    t.equal(statuses.filter((status) => status === 401).length, 20, 'the budget is answered 401')
    t.equal(statuses.filter((status) => status === 429).length, 380, 'the rest 429 before any lookup')
  })
  t.equal(statements, 20, 'one lookup per guess within the budget, none beyond it')
})
