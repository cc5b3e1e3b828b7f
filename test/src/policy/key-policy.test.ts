import t from 'tap'
import {
  checkRateLimits, compileKeyPolicy, formatRateLimit, hasRateLimit, looserRateLimit, parseRateLimit, widerNetworks, type KeyPolicy
} from '#src/policy/key-policy.ts'
import { LocalRateLimiter, type RateDecision, type RateLimiter } from '#src/policy/rate-limiter.ts'

const KEY = '00000000-0000-4000-8000-00000000000a'
const ORG = '00000000-0000-4000-8000-00000000000b'

t.test('a key without networks or limits, and a personal key whose organization limit cannot apply, compile to null', async (t) => {
  t.equal(compileKeyPolicy(KEY, ORG, [], null, null), null)
  t.equal(compileKeyPolicy(KEY, null, [], null, { requests: 5, windowSeconds: 1 }), null)
  const policy = compileKeyPolicy(KEY, ORG, ['10.0.0.0/8'], null, { requests: 5, windowSeconds: 1 })!
  t.match(policy, { allowedCidrs: ['10.0.0.0/8'], rateLimit: null, keyBucket: `key:${KEY}`, organizationRateLimit: { requests: 5, windowSeconds: 1 }, organizationBucket: `org:${ORG}` })
  t.ok(policy.allowsAddress!('10.1.2.3'))
  t.notOk(policy.allowsAddress!('11.0.0.1'))
  t.ok(hasRateLimit(policy))
  t.notOk(hasRateLimit(compileKeyPolicy(KEY, ORG, ['10.0.0.0/8'], null, null)!))
  t.equal(compileKeyPolicy(KEY, ORG, [], { requests: 5, windowSeconds: 60 }, null)!.keyBucket, `key:${KEY}:60`, 'a counter per window length')
  t.equal(compileKeyPolicy(KEY, ORG, [], { requests: 5, windowSeconds: 60 }, null, ORG)!.keyBucket, `key:${ORG}:60`, 'the counter of the key it was derived from')
  t.equal(compileKeyPolicy(KEY, ORG, [], { requests: 1, windowSeconds: 1 }, null)!.allowsAddress, null, 'no networks: no matcher to run')
  t.notOk(compileKeyPolicy(KEY, ORG, ['garbage'], null, null)!.allowsAddress!('10.0.0.1'), 'an unreadable list admits nobody')
})

t.test('the key is counted before its organization; refusals name the limit that refused', async (t) => {
  let now = 1_700_000_040_000 - (1_700_000_040_000 % 60_000)
  const limiter = new LocalRateLimiter({ now: () => now })
  const policy = compileKeyPolicy(KEY, ORG, [], { requests: 2, windowSeconds: 60 }, { requests: 4, windowSeconds: 60 })!
  const sibling = compileKeyPolicy('00000000-0000-4000-8000-00000000000c', ORG, [], null, { requests: 4, windowSeconds: 60 })!
  const check = (p: KeyPolicy) => checkRateLimits(limiter, p) as { decision: RateDecision, scope: string }
  t.match(check(policy), { scope: 'key', decision: { allowed: true, limit: 2, remaining: 1 } }, 'key 1 left, organization 3 left: the key is closer')
  t.match(check(policy), { scope: 'key', decision: { allowed: true, remaining: 0 } })
  for (let i = 0; i < 3; i++) t.match(check(policy), { scope: 'key', decision: { allowed: false, limit: 2, remaining: 0 } }, 'refused by its own limit')
  t.match(check(sibling), { scope: 'organization', decision: { allowed: true, limit: 4, remaining: 1 } }, "the key's refused requests used none of the organization's")
  t.match(check(sibling), { scope: 'organization', decision: { allowed: true, remaining: 0 } })
  t.match(check(sibling), { scope: 'organization', decision: { allowed: false, limit: 4 } }, 'refused by the organization')
  now += 60_000
  t.match(check(sibling), { decision: { allowed: true, remaining: 3 } }, 'a new window')
})

t.test('an asynchronous limiter (Redis) gives a promise; a synchronous one never does', async (t) => {
  const local = new LocalRateLimiter()
  const policy = compileKeyPolicy(KEY, ORG, [], { requests: 5, windowSeconds: 60 }, { requests: 5, windowSeconds: 60 })!
  t.notOk(checkRateLimits(local, policy) instanceof Promise)
  const remote: RateLimiter = {
    consume: async (bucket, limit, windowSeconds) => local.consume(`remote:${bucket}`, limit, windowSeconds),
    close: async () => {}
  }
  const verdict = checkRateLimits(remote, policy)
  t.ok(verdict instanceof Promise)
  t.match(await verdict, { decision: { allowed: true, remaining: 4 } })
})

t.test('no looser, no wider: what a restricted key may give other keys', async (t) => {
  const caller = { requests: 100, windowSeconds: 60 }
  t.equal(looserRateLimit({ requests: 100, windowSeconds: 60 }, caller), undefined, 'the same')
  t.equal(looserRateLimit({ requests: 50, windowSeconds: 60 }, caller), undefined)
  t.equal(looserRateLimit({ requests: 100, windowSeconds: 3600 }, caller), undefined, 'same burst, lower rate')
  t.equal(looserRateLimit({ requests: 1, windowSeconds: 1 }, caller), undefined, '60 a minute at most')
  t.match(looserRateLimit({ requests: 2, windowSeconds: 1 }, caller), /2\/1s is looser than the calling key's \(100\/60s\)/, '120 a minute')
  t.match(looserRateLimit({ requests: 200, windowSeconds: 3600 }, caller), /looser/, 'a lower rate, but 200 at once')
  t.match(looserRateLimit(null, caller), /no rate limit is looser/)
  t.equal(looserRateLimit(null, null), undefined, 'a caller without a limit binds nothing')
  t.equal(widerNetworks([], []), undefined)
  t.equal(widerNetworks(['10.1.0.0/16'], ['10.0.0.0/8']), undefined)
  t.match(widerNetworks([], ['10.0.0.0/8']), /any address is wider/)
  t.match(widerNetworks(['10.0.0.0/8', '11.0.0.0/8'], ['10.0.0.0/8']), /^11\.0\.0\.0\/8 is outside the calling key's networks \(10\.0\.0\.0\/8\)$/)
})

t.test('the command line form of a limit', async (t) => {
  for (const [text, expected] of [
    ['100/60s', { requests: 100, windowSeconds: 60 }],
    ['100/60', { requests: 100, windowSeconds: 60 }],
    ['1000/1h', { requests: 1000, windowSeconds: 3600 }],
    ['10/s', { requests: 10, windowSeconds: 1 }],
    ['5000/d', { requests: 5000, windowSeconds: 86_400 }],
    ['5/2m', { requests: 5, windowSeconds: 120 }]
  ] as const) {
    t.same(parseRateLimit(text), expected, text)
    t.same(parseRateLimit(formatRateLimit(expected)), expected, `${text} round trip`)
  }
  for (const text of ['', '100', '0/60s', '100/0s', '100/2d', '-1/60s', '1.5/60s', '100/60x', 'ten/s', '100/']) {
    t.equal(parseRateLimit(text), undefined, JSON.stringify(text))
  }
})
