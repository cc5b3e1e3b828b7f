import t from 'tap'
import { UNKNOWN_KEY, type Claims, type Resolution } from '#src/auth/claims.ts'
import { KeyResolver, LookupUnavailableError } from '#src/cache/key-resolver.ts'

const config = { ttlMs: 1000, maxEntries: 3, negativeTtlMs: 100, negativeMaxEntries: 2, staleIfErrorMs: 5000, unverifiedTtlMs: 500 }

function claims (keyId: string, userId = 'u1', organizationId: string | null = 'o1'): Claims {
  return { keyId, userId, organizationId, userExternalId: null, email: 'e', role: 'contributor', contextType: organizationId === null ? 'personal' : 'organization', organizationExternalId: null, organizationSlug: null, organizationName: null, orgRole: null, scopes: [], expiresAt: null }
}

function harness (answers: Record<string, Resolution>) {
  let now = 1_000_000
  const calls: string[] = []
  let failing = false
  let release: (() => void) | undefined
  let gate: Promise<void> | undefined
  const resolver = new KeyResolver(async (hash) => {
    calls.push(hash)
    if (gate !== undefined) await gate
    if (failing) throw new Error('connection refused')
    return answers[hash] ?? UNKNOWN_KEY
  }, config, () => now)
  return {
    resolver,
    calls,
    advance: (ms: number) => { now += ms },
    now: () => now,
    fail: (value: boolean) => { failing = value },
    hold: () => { gate = new Promise((resolve) => { release = resolve }) },
    releaseHeld: () => { gate = undefined; release?.() }
  }
}

/** The announcement of a new key that is none of the cached ones. */
const keyAddedElsewhere = { target: { keyId: 'k-new' }, keyAdded: true }

const ok = (keyId: string, userId?: string, organizationId?: string | null): Resolution => ({ ok: true, claims: claims(keyId, userId, organizationId), expiresAtMs: Infinity, policy: null })

t.test('hits, misses and TTL', async (t) => {
  const h = harness({ a: ok('ka') })
  t.equal(h.resolver.cached('a', h.now()), undefined)
  t.match(await h.resolver.resolve('a'), { ok: true })
  t.match(h.resolver.cached('a', h.now()), { ok: true })
  h.advance(999)
  t.ok(h.resolver.cached('a', h.now()), 'fresh until the TTL')
  h.advance(1)
  t.equal(h.resolver.cached('a', h.now()), undefined, 'not past it')
  t.same(h.calls, ['a'])
  t.match(h.resolver.stats(), { hits: 2, misses: 1, lookups: 1 })
})

t.test('negative entries live for their own, shorter TTL', async (t) => {
  const h = harness({})
  t.match(await h.resolver.resolve('x'), { ok: false, rejection: 'API_KEY_INVALID' })
  t.ok(h.resolver.cached('x', h.now()))
  h.advance(100)
  t.equal(h.resolver.cached('x', h.now()), undefined)
})

t.test('concurrent misses of one key make one lookup', async (t) => {
  const h = harness({ a: ok('ka') })
  h.hold()
  const all = Array.from({ length: 100 }, () => h.resolver.resolve('a'))
  t.equal(h.resolver.stats().inFlight, 1)
  h.releaseHeld()
  const results = await Promise.all(all)
  t.equal(h.calls.length, 1)
  t.ok(results.every((r) => r.ok))
  t.equal(h.resolver.stats().inFlight, 0)
})

t.test('bounded: the least recently used entry goes first', async (t) => {
  const h = harness({ a: ok('ka'), b: ok('kb'), c: ok('kc'), d: ok('kd') })
  for (const hash of ['a', 'b', 'c']) await h.resolver.resolve(hash)
  h.resolver.cached('a', h.now()) // a becomes the most recent
  await h.resolver.resolve('d')
  t.equal(h.resolver.stats().entries, 3)
  t.equal(h.resolver.stats().evictions, 1)
  t.ok(h.resolver.cached('a', h.now()))
  t.equal(h.resolver.cached('b', h.now()), undefined, 'b was the oldest')
  for (let i = 0; i < 10; i++) await h.resolver.resolve(`unknown-${i}`)
  t.equal(h.resolver.stats().negativeEntries, 2, 'unknown keys cannot push out good ones')
  t.equal(h.resolver.stats().entries, 3)
})

t.test('stale-if-error: served within the window, LookupUnavailableError after', async (t) => {
  const h = harness({ a: ok('ka') })
  await h.resolver.resolve('a')
  h.advance(1500)
  h.fail(true)
  t.match(await h.resolver.resolve('a'), { ok: true }, 'stale entry served')
  t.equal(h.resolver.stats().staleServed, 1)
  await t.rejects(h.resolver.resolve('never-seen'), LookupUnavailableError)
  h.advance(5000)
  await t.rejects(h.resolver.resolve('a'), LookupUnavailableError, 'past the stale window')
})

t.test('invalidation by key, user, organization, all', async (t) => {
  const h = harness({ a: ok('ka', 'u1', 'o1'), b: ok('kb', 'u2', 'o1'), c: ok('kc', 'u3', 'o2'), p: ok('kp', 'u4', null) })
  const fill = async () => { for (const hash of ['a', 'b', 'c']) await h.resolver.resolve(hash) }
  await fill()
  t.equal(h.resolver.invalidate({ keyId: 'ka' }), 1)
  t.equal(h.resolver.cached('a', h.now()), undefined)
  await fill()
  t.equal(h.resolver.invalidate({ userId: 'u2' }), 1)
  await fill()
  t.equal(h.resolver.invalidate({ organizationId: 'o1' }), 2)
  t.ok(h.resolver.cached('c', h.now()))
  await fill()
  t.equal(h.resolver.invalidate({ all: true }), 3)
})

t.test('a lookup that started before an invalidation does not refill the cache', async (t) => {
  const h = harness({ a: ok('ka') })
  h.hold()
  const pending = h.resolver.resolve('a')
  h.resolver.invalidate({ keyId: 'ka' })
  h.releaseHeld()
  t.match(await pending, { ok: true }, 'the waiting request still gets its answer')
  t.equal(h.resolver.cached('a', h.now()), undefined, 'but it is not cached')
})

t.test('an unrelated invalidation during a lookup does not stop it from filling the cache', async (t) => {
  const h = harness({ a: ok('ka', 'u1', 'o1') })
  h.hold()
  const pending = h.resolver.resolve('a')
  h.resolver.invalidate({ userId: 'someone-else' })
  h.resolver.invalidate({ organizationId: 'o1', userId: 'u2' })
  h.resolver.apply(keyAddedElsewhere)
  h.releaseHeld()
  await pending
  t.ok(h.resolver.cached('a', h.now()), 'cached')
  h.hold()
  const unknown = h.resolver.resolve('nobody')
  h.resolver.apply(keyAddedElsewhere)
  h.releaseHeld()
  await unknown
  t.equal(h.resolver.cached('nobody', h.now()), undefined, 'an unknown key read before a key was added is not remembered')
})

t.test('forgetting unknown keys keeps rejections that belong to a key', async (t) => {
  const h = harness({ r: { ok: false, rejection: 'USER_DISABLED', keyId: 'kr', userId: 'u9' } })
  await h.resolver.resolve('r')
  await h.resolver.resolve('nobody')
  t.equal(h.resolver.apply(keyAddedElsewhere), 1)
  t.ok(h.resolver.cached('r', h.now()))
})
