// The command line's key policies (flags on create, update, org-limit), against the app on the same database.
import t from 'tap'
import { build } from '#test/helpers/app.ts'
import { createTestDatabase, databaseKind } from '#test/helpers/database.ts'
import { runScript } from '#test/helpers/scripts.ts'
import { sleep } from '#test/helpers/wait.ts'

t.comment(`database: ${databaseKind}`)

const keys = (env: Record<string, string>, ...args: string[]) => runScript('scripts/keys.ts', env, ...args)

t.test('CLI key policies: create with networks and a limit, update them, set an organization limit', async (t) => {
  const db = await createTestDatabase(t)
  const { app } = await build(t, { db, config: { cache: { unverifiedTtlMs: 300 } } })
  const env = { DATABASE_URL: db.url }
  const me = (key: string, remoteAddress = '127.0.0.1') => app.inject({ url: '/api/v1/auth/me', remoteAddress, headers: { 'x-api-key': key } })
  const eventually = async (check: () => Promise<boolean>) => {
    for (let i = 0; i < 100; i++) {
      if (await check()) return true
      await sleep(10)
    }
    return false
  }

  const created = await keys(env, 'create', '--user', 'dev+clerk_test@mock.com', '--org', 'test-org', '--allowed-cidrs', '10.0.0.0/8, 2001:db8::/32', '--rate-limit', '100/1m', '--json')
  t.equal(created.code, 0, created.stderr)
  const key = JSON.parse(created.stdout)
  t.same([key.allowedCidrs, key.rateLimit], [['10.0.0.0/8', '2001:db8::/32'], { requests: 100, windowSeconds: 60 }])
  t.equal((await me(key.key)).json().code, 'IP_NOT_ALLOWED')
  t.equal((await me(key.key, '10.1.1.1')).headers['ratelimit-limit'], '100')

  const updated = await keys(env, 'update', key.id, '--any-address', '--rate-limit', '5/s', '--description', 'agent', '--json')
  t.equal(updated.code, 0, updated.stderr)
  t.match(JSON.parse(updated.stdout), { allowedCidrs: [], rateLimit: { requests: 5, windowSeconds: 1 }, description: 'agent' })
  t.ok(await eventually(async () => (await me(key.key)).headers['ratelimit-limit'] === '5'), 'the service sees the change')
  const cleared = await keys(env, 'update', key.id, '--no-rate-limit')
  t.equal(cleared.code, 0, cleared.stderr)
  t.match(cleared.stdout, /any {2}none {2}agent/, 'the human answer shows networks and limit')

  const limited = await keys(env, 'org-limit', 'test-org', '1000/1h')
  t.equal(limited.code, 0, limited.stderr)
  t.match(limited.stdout, 'test-org: at most 1000 requests per 3600 s, shared by all its keys')
  t.ok(await eventually(async () => (await me('battra-dev-key-1')).headers['ratelimit-limit'] === '1000'), "the organization's keys share it")
  t.equal((await keys(env, 'org-limit', 'test-org', 'none')).stdout.trim(), 'test-org: no rate limit')
  t.ok(await eventually(async () => (await me('battra-dev-key-1')).headers['ratelimit-limit'] === undefined))

  // Each run starts a process: three errors stand for the rest (usage errors share one path).
  const errors: Array<[string[], RegExp]> = [
    [['update', key.id, '--allowed-cidrs', '10.0.0.1/8'], /allowedCidrs\[0\] "10\.0\.0\.1\/8": has host bits set beyond \/8.*\(INVALID_CIDR\)/],
    [['update', key.id, '--rate-limit', 'lots'], /--rate-limit "lots" must look like 100\/60s/],
    [['org-limit', 'no-such-org', 'none'], /unknown organization "no-such-org"/]
  ]
  for (const [args, message] of errors) {
    const result = await keys(env, ...args)
    t.equal(result.code, 1, args.join(' '))
    t.match(result.stderr, message)
  }
})
