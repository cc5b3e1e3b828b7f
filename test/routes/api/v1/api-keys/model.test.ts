// Model-based property test of key management (fast-check commands): random sequences of create, rotate
// (also concurrent), revoke, PATCH of policies (also concurrent self-PATCHes racing an admin's lock-down),
// membership removal and flush, by random keys of random scopes and expiries. After every step: no 5xx,
// every answer matches its schema, no key holds a scope or a lifetime that the key which made it lacked
// (unless that key had auth:admin), a key has at most one successor, a policy PATCHed by a key without
// auth:admin is no less restricted than that key's own as it stood, and a key racing an admin's lock-down
// of itself ends no less restricted than the lock-down.
import fc from 'fast-check'
import t from 'tap'
import { Value } from 'typebox/value'
import { looserRateLimit, widerNetworks, type RateLimit } from '#src/policy/key-policy.ts'
import { ErrorResponse } from '#src/schemas/common.ts'
import { CreatedKeySchema, KeyViewSchema } from '#src/schemas/keys.ts'
import { build } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertKey, insertOrganization, insertUserWithKey } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)
// Revoked keys keep answering 401 to the runs: the failed-attempt limiter has tests of its own.
const { app, db } = await build(t, { config: { failedAttempts: { limit: 1_000_000, windowMs: 60_000, maxClients: 100 } } })

const SCOPES = ['projects:read', 'projects:write', 'auth:admin'] as const
// null: none given, so the calling key's expiry (if any) is inherited.
const LIFETIMES = [null, null, 600, 3600, 86_400] as const

interface KnownKey {
  id: string
  key: string
  userId: string
  scopes: string[]
  expiresAt: number | null
}

interface Made {
  /** The calling key's scopes and expiry as they stood before the request. */
  byScopes: string[]
  byExpiresAt: number | null
  byAdmin: boolean
  key: KnownKey
}

interface World {
  orgId: string
  users: string[]
  keys: KnownKey[]
  made: Made[]
  successors: Map<string, string[]>
  answers: number
}

type Answer = { statusCode: number, body: any }

/** What the runs did, so the test can tell it exercised both sides of the rules. */
const seen = { created: 0, rotated: 0, revoked: 0, refused: 0, patched: 0, lockDowns: 0, busy: 0 }

async function call (key: string, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: object): Promise<Answer> {
  const response = await app.inject({ method, url, headers: { 'x-api-key': key }, ...(payload === undefined ? {} : { payload }) })
  return { statusCode: response.statusCode, body: response.body === '' ? null : response.json() }
}

/** Every answer: no 5xx, and the body its status promises. */
function checkAnswer (answer: Answer, success: number, schema: typeof CreatedKeySchema | typeof KeyViewSchema | null): void {
  // The embedded database has one connection: a request queued behind parallel transactions on a busy
  // machine may answer 503 (retry later), counted below. A 500 (or any other 5xx) is a bug.
  if (answer.statusCode === 503 && ['AUTH_UNAVAILABLE', 'SERVICE_UNAVAILABLE'].includes(answer.body?.code)) seen.busy++
  else if (answer.statusCode >= 500) throw new Error(`5xx: ${JSON.stringify(answer.body)}`)
  if (answer.statusCode === 403 || answer.statusCode === 404 || answer.statusCode === 409) seen.refused++
  if (answer.statusCode === success) {
    if (schema !== null && !Value.Check(schema, answer.body)) throw new Error(`answer does not match its schema: ${JSON.stringify(answer.body)}`)
  } else if (!Value.Check(ErrorResponse, answer.body) || Object.keys(answer.body).length !== 4) {
    throw new Error(`error body is not { statusCode, code, error, message }: ${JSON.stringify(answer.body)}`)
  }
}

const isAdminKey = (key: KnownKey) => key.scopes.includes('auth:admin')
const stillWorks = (key: KnownKey) => key.expiresAt === null || key.expiresAt > Date.now()

function recordMade (world: World, by: KnownKey, body: any, userId: string): void {
  const key: KnownKey = { id: body.id, key: body.key, userId, scopes: body.scopes, expiresAt: body.expiresAt === null ? null : Date.parse(body.expiresAt) }
  world.keys.push(key)
  world.made.push({ byScopes: [...by.scopes], byExpiresAt: by.expiresAt, byAdmin: isAdminKey(by), key })
}

/** The invariants, checked after every step. */
async function checkInvariants (world: World): Promise<void> {
  for (const { byScopes, byExpiresAt, byAdmin, key } of world.made) {
    if (byAdmin) continue
    const wider = key.scopes.find((scope) => !byScopes.includes(scope))
    if (wider !== undefined) throw new Error(`key ${key.id} holds ${wider}, which the key that made it lacked`)
    if (byExpiresAt !== null && (key.expiresAt === null || key.expiresAt > byExpiresAt)) throw new Error(`key ${key.id} outlives the key that made it`)
  }
  for (const [id, successors] of world.successors) {
    if (successors.length > 1) throw new Error(`key ${id} has ${successors.length} successors`)
  }
  const rows = await db.prisma.apiKey.findMany({ where: { userId: { in: world.users } }, select: { id: true, replacedById: true } })
  const pointedAt = rows.flatMap((row) => row.replacedById === null ? [] : [row.replacedById])
  if (new Set(pointedAt).size !== pointedAt.length) throw new Error('two keys name the same successor')
}

type Command = fc.AsyncCommand<object, World>

class Create implements Command {
  /** scopes 'own': the calling key's own scopes (mostly allowed); else a random set (often wider). */
  constructor (readonly by: number, readonly scopes: string[] | 'own', readonly lifetime: number | null, readonly personal: boolean) {}
  check = () => true
  async run (_model: object, world: World): Promise<void> {
    const by = world.keys[this.by % world.keys.length]
    const answer = await call(by.key, 'POST', '/api/v1/api-keys', {
      scopes: this.scopes === 'own' ? by.scopes : this.scopes,
      ...(this.lifetime === null ? {} : { expiresAt: new Date(Date.now() + this.lifetime * 1000).toISOString() }),
      ...(this.personal ? { organizationId: null } : {})
    })
    checkAnswer(answer, 201, CreatedKeySchema)
    if (answer.statusCode === 201) {
      recordMade(world, by, answer.body, by.userId)
      seen.created++
    }
    await checkInvariants(world)
  }

  toString = () => `create(by ${this.by}, ${this.scopes === 'own' ? 'own scopes' : this.scopes.join('+') || 'no scope'}, ${this.lifetime ?? '∞'}${this.personal ? ', personal' : ''})`
}

class Rotate implements Command {
  constructor (readonly by: number, readonly target: number, readonly grace: number, readonly concurrency: number) {}
  check = () => true
  async run (_model: object, world: World): Promise<void> {
    const by = world.keys[this.by % world.keys.length]
    const target = world.keys[this.target % world.keys.length]
    const answers = await Promise.all(Array.from({ length: this.concurrency }, () =>
      call(by.key, 'POST', `/api/v1/api-keys/${target.id}/rotate`, { gracePeriodSeconds: this.grace })))
    for (const answer of answers) {
      checkAnswer(answer, 201, CreatedKeySchema)
      if (answer.statusCode !== 201) continue
      recordMade(world, by, answer.body, target.userId)
      seen.rotated++
      world.successors.set(target.id, [...(world.successors.get(target.id) ?? []), answer.body.id])
      target.expiresAt = Math.min(target.expiresAt ?? Infinity, Date.now() + this.grace * 1000)
    }
    await checkInvariants(world)
  }

  toString = () => `rotate(by ${this.by}, key ${this.target}, grace ${this.grace}, ×${this.concurrency})`
}

class Revoke implements Command {
  constructor (readonly by: number, readonly target: number) {}
  check = () => true
  async run (_model: object, world: World): Promise<void> {
    const by = world.keys[this.by % world.keys.length]
    const target = world.keys[this.target % world.keys.length]
    const answer = await call(by.key, 'DELETE', `/api/v1/api-keys/${target.id}`)
    checkAnswer(answer, 204, null)
    if (answer.statusCode === 204) {
      seen.revoked++
      if ((await call(target.key, 'GET', '/api/v1/auth/me')).statusCode !== 401) throw new Error('a revoked key still works')
    }
    await checkInvariants(world)
  }

  toString = () => `revoke(by ${this.by}, key ${this.target})`
}

interface Policy { allowedCidrs: string[], rateLimit: RateLimit | null }

const CIDRS = [[], ['127.0.0.0/8'], ['127.0.0.1/32'], ['10.0.0.0/8']] as const
const LIMITS = [null, { requests: 1000, windowSeconds: 60 }, { requests: 100, windowSeconds: 60 }, { requests: 50, windowSeconds: 3600 }] as const
/** The admin's lock-down: still usable from the test's address, and stricter than most. */
const LOCK_DOWN: Policy = { allowedCidrs: ['127.0.0.1/32'], rateLimit: { requests: 100, windowSeconds: 60 } }

async function policyOf (id: string): Promise<Policy> {
  const row = await db.prisma.apiKey.findUniqueOrThrow({ where: { id }, select: { allowedCidrs: true, rateLimitRequests: true, rateLimitWindowSeconds: true } })
  return { allowedCidrs: row.allowedCidrs, rateLimit: row.rateLimitRequests === null ? null : { requests: row.rateLimitRequests, windowSeconds: row.rateLimitWindowSeconds! } }
}

/** Why `policy` is less restricted than `bound`, or undefined. */
const looser = (policy: Policy, bound: Policy): string | undefined =>
  widerNetworks(policy.allowedCidrs, bound.allowedCidrs) ?? looserRateLimit(policy.rateLimit, bound.rateLimit)

class PatchPolicy implements Command {
  /**
   * `copies` concurrent PATCHes of the target's networks and limit by one key; with `lockDown`, the target
   * is the calling key itself and an admin locks it down while they run.
   */
  constructor (readonly by: number, readonly target: number, readonly cidrs: number, readonly limit: number, readonly copies: number, readonly lockDown: boolean) {}
  check = () => true
  async run (_model: object, world: World): Promise<void> {
    const by = world.keys[this.by % world.keys.length]
    const target = this.lockDown ? by : world.keys[this.target % world.keys.length]
    const admin = world.keys.find((key) => isAdminKey(key) && stillWorks(key) && key.id !== by.id)
    // A key with auth:admin may set its own policy to anything, so only a key without it races a lock-down.
    const lockDown = this.lockDown && admin !== undefined && !isAdminKey(by)
    const asked = { allowedCidrs: [...CIDRS[this.cidrs]], rateLimit: LIMITS[this.limit] }
    const before = await policyOf(by.id)
    const patches = Array.from({ length: this.copies }, () => call(by.key, 'PATCH', `/api/v1/api-keys/${target.id}`, asked))
    const adminAnswer = lockDown ? call(admin.key, 'PATCH', `/api/v1/api-keys/${target.id}`, LOCK_DOWN) : undefined
    const [answers, adminAnswered] = await Promise.all([Promise.all(patches), adminAnswer])
    for (const answer of answers) {
      checkAnswer(answer, 200, KeyViewSchema)
      if (answer.statusCode === 200) seen.patched++
    }
    const after = await policyOf(target.id)
    if (adminAnswered !== undefined) {
      const answer = adminAnswered
      checkAnswer(answer, 200, KeyViewSchema)
      if (answer.statusCode === 200) {
        seen.lockDowns++
        const why = looser(await policyOf(target.id), LOCK_DOWN)
        if (why !== undefined) throw new Error(`key ${target.id} undid an admin's lock-down of itself: ${why}`)
      }
    } else if (!isAdminKey(by) && answers.some((answer) => answer.statusCode === 200)) {
      const why = looser(after, before)
      if (why !== undefined) throw new Error(`key ${by.id} made key ${target.id} less restricted than itself: ${why}`)
    }
    await checkInvariants(world)
  }

  toString = () => `patch policy(by ${this.by}, key ${this.lockDown ? 'itself' : this.target}, ${JSON.stringify(CIDRS[this.cidrs])}, ${JSON.stringify(LIMITS[this.limit])}, ×${this.copies}${this.lockDown ? ', admin locks down' : ''})`
}

class RemoveMembership implements Command {
  constructor (readonly user: number) {}
  check = () => true
  async run (_model: object, world: World): Promise<void> {
    const userId = world.users[this.user % world.users.length]
    await db.prisma.organizationMembership.deleteMany({ where: { organizationId: world.orgId, userId } })
    await checkInvariants(world)
  }

  toString = () => `remove membership(user ${this.user})`
}

class List implements Command {
  constructor (readonly by: number) {}
  check = () => true
  async run (_model: object, world: World): Promise<void> {
    const by = world.keys[this.by % world.keys.length]
    const answer = await call(by.key, 'GET', '/api/v1/api-keys?includeRevoked=true')
    if (answer.statusCode >= 500) throw new Error('5xx')
    if (answer.statusCode === 200) {
      for (const view of answer.body) if (!Value.Check(KeyViewSchema, view)) throw new Error(`list entry does not match: ${JSON.stringify(view)}`)
      if (!isAdminKey(by) && answer.body.some((view: { userId: string }) => view.userId !== by.userId)) throw new Error('listed another user\'s key')
    }
  }

  toString = () => `list(by ${this.by})`
}

class Flush implements Command {
  check = () => true
  async run (_model: object, world: World): Promise<void> {
    const adminKey = world.keys.find((key) => isAdminKey(key) && stillWorks(key))
    if (adminKey === undefined) return
    const answer = await call(adminKey.key, 'POST', '/api/v1/admin/auth-cache/flush')
    if (answer.statusCode >= 500) throw new Error('5xx')
  }

  toString = () => 'flush'
}

const index = fc.nat({ max: 40 })
const commands = [
  fc.tuple(index, fc.oneof(fc.constant('own' as const), fc.subarray([...SCOPES])), fc.constantFrom(...LIFETIMES), fc.boolean()).map(([by, scopes, lifetime, personal]) => new Create(by, scopes, lifetime, personal)),
  fc.tuple(index, index, fc.constantFrom(0, 60, 3600), fc.constantFrom(1, 1, 4)).map(([by, target, grace, concurrency]) => new Rotate(by, target, grace, concurrency)),
  fc.tuple(index, index).map(([by, target]) => new Revoke(by, target)),
  fc.tuple(index, index, fc.nat({ max: CIDRS.length - 1 }), fc.nat({ max: LIMITS.length - 1 }), fc.constantFrom(1, 1, 4), fc.boolean())
    .map(([by, target, cidrs, limit, copies, lockDown]) => new PatchPolicy(by, target, cidrs, limit, copies, lockDown)),
  fc.nat({ max: 3 }).map((user) => new RemoveMembership(user)),
  index.map((by) => new List(by)),
  fc.constant(new Flush())
]

t.test('key management keeps its invariants under random sequences of operations', async (t) => {
  let runs = 0
  await fc.assert(fc.asyncProperty(fc.commands(commands, { maxCommands: 30 }), async (sequence) => {
    runs++
    // A world of its own per run: one organization, three users with keys of every kind.
    const orgId = await insertOrganization(db, `Model ${runs}`)
    const world: World = { orgId, users: [], keys: [], made: [], successors: new Map(), answers: 0 }
    for (const scopes of [[], ['projects:read'], ['projects:read', 'projects:write']]) {
      const user = await insertUserWithKey(db, { organizationId: orgId, key: { scopes } })
      world.users.push(user.userId)
      world.keys.push({ id: user.keyId, key: user.key, userId: user.userId, scopes, expiresAt: null })
      const expiresAt = new Date(Date.now() + 1800_000)
      const shortLived = await insertKey(db, { userId: user.userId, organizationId: orgId, scopes, expiresAt })
      world.keys.push({ id: shortLived.id, key: shortLived.key, userId: user.userId, scopes, expiresAt: expiresAt.getTime() })
    }
    const admin = await insertKey(db, { userId: world.users[0], organizationId: orgId, scopes: ['auth:admin'] })
    world.keys.push({ id: admin.id, key: admin.key, userId: world.users[0], scopes: ['auth:admin'], expiresAt: null })
    await fc.asyncModelRun(() => ({ model: {}, real: world }), sequence)
  }), { numRuns: 60, interruptAfterTimeLimit: 120_000, ...(process.env.FC_SEED === undefined ? {} : { seed: Number(process.env.FC_SEED) }) })
  t.comment(`${runs} sequences: ${seen.created} keys created, ${seen.rotated} rotated, ${seen.revoked} revoked, ${seen.patched} policy PATCHes, ${seen.lockDowns} lock-downs raced, ${seen.refused} refusals, ${seen.busy} 503 (busy)`)
  t.ok(seen.created > 0 && seen.rotated > 0 && seen.revoked > 0 && seen.refused > 0 && seen.patched > 0 && seen.lockDowns > 0, 'the runs exercised what is allowed and what is refused')
})
