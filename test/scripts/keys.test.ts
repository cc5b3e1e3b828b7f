import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { build } from '#test/helpers/app.ts'
import { createTestDatabase, databaseKind, serverUrl } from '#test/helpers/database.ts'
import { runScript } from '#test/helpers/scripts.ts'
import { sleep } from '#test/helpers/wait.ts'
import { startService } from '#scripts/lib/service-process.ts'

t.comment(`database: ${databaseKind}`)

const keys = (env: Record<string, string>, ...args: string[]) => runScript('scripts/keys.ts', env, ...args)

t.test('CLI round trip: create, use, list, rotate, revoke', async (t) => {
  const db = await createTestDatabase(t)
  // Outside writers reach the service through NOTIFY on PostgreSQL (ms), through the trust cap on PGlite.
  const { app } = await build(t, { db, config: { cache: { unverifiedTtlMs: 300 } } })
  const env = { DATABASE_URL: db.url }
  const me = (key: string) => app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })
  const eventually = async (key: string, check: (body: Record<string, unknown>) => boolean) => {
    for (let i = 0; i < 100; i++) {
      if (check((await me(key)).json())) return true
      await sleep(10)
    }
    return false
  }

  const created = await keys(env, 'create', '--user', 'ops+clerk_test@mock.com', '--org', 'test-org', '--scopes', 'auth:admin', '--description', 'bootstrap admin', '--expires-in', '30d', '--json')
  t.equal(created.code, 0, created.stderr)
  const key = JSON.parse(created.stdout)
  t.match(key, { key: /^battra_/, scopes: ['auth:admin'], description: 'bootstrap admin' })
  t.ok(new Date(key.expiresAt).getTime() > Date.now() + 29 * 86_400_000)
  const claims = (await me(key.key)).json()
  t.match(claims, { email: 'ops+clerk_test@mock.com', organizationSlug: 'test-org', scopes: ['auth:admin'] })

  const listed = await keys(env, 'list', '--user', 'ops+clerk_test@mock.com', '--json')
  t.equal(listed.code, 0)
  const list = JSON.parse(listed.stdout)
  t.ok(list.some((k: { id: string }) => k.id === key.id))
  t.notOk(listed.stdout.includes(key.key), 'a listing never shows a key')
  t.notMatch(listed.stdout, /[0-9a-f]{64}/, 'nor a hash')
  const human = await keys(env, 'list', '--org', 'test-org')
  t.match(human.stdout, key.hint)

  const rotated = await keys(env, 'rotate', key.id, '--grace', '0', '--json')
  t.equal(rotated.code, 0, rotated.stderr)
  const next = JSON.parse(rotated.stdout)
  t.equal((await me(next.key)).statusCode, 200)
  t.ok(await eventually(key.key, (body) => body.code === 'API_KEY_EXPIRED'), 'the old key stops at once (grace 0)')

  const revoked = await keys(env, 'revoke', next.id)
  t.equal(revoked.code, 0)
  t.match(revoked.stdout, /revoked/)
  t.ok(await eventually(next.key, (body) => body.code === 'API_KEY_INVALID'), 'the revoked key stops')
})

t.test('CLI errors are clear, with exit code 1', async (t) => {
  const db = await createTestDatabase(t)
  const env = { DATABASE_URL: db.url }
  const cases: Array<[string[], RegExp]> = [
    [['create', '--user', 'nobody@example.com'], /unknown user "nobody@example.com"/],
    [['create', '--user', 'dev+clerk_test@mock.com', '--org', 'no-such-org'], /unknown organization "no-such-org"/],
    [['revoke', '00000000-0000-4000-8000-000000000000'], /API key not found \(API_KEY_NOT_FOUND\)/],
    [['rotate', 'not-an-id'], /rotate needs a key id/],
    [['create', '--user', 'dev+clerk_test@mock.com', '--expires-in', 'soon'], /--expires-in "soon"/],
    [['create', '--user', 'dev+clerk_test@mock.com', '--scopes', 'BAD SCOPE'], /Invalid scope/],
    [['explode'], /unknown command "explode"/],
    [['list', '--colour'], /Unknown option '--colour'/],
    // Found by an outside probe: these printed Node's stack.
    [['rotate', '00000000-0000-4000-8000-000000000000', '--grace', '-5'], /Option '--grace' argument is ambiguous/],
    [['create', '--user'], /Option '--user <value>' argument missing/]
  ]
  // Independent processes: run side by side.
  const results = await Promise.all(cases.map(([args]) => keys(env, ...args)))
  for (const [i, [args, message]] of cases.entries()) {
    const result = results[i]
    t.equal(result.code, 1, args.join(' '))
    t.match(result.stderr, message)
    t.notMatch(result.stderr, /\n\s+at /, 'no stack trace')
  }
})

t.test('a database that does not answer (the running service it went through stopped, say): one line, no stack trace (found by an outside probe)', async (t) => {
  const gone = await keys({ DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/battra?connect_timeout=2', DATABASE_CONNECT_TIMEOUT_MS: '2000' }, 'list', '--org', 'test-org')
  t.equal(gone.code, 1)
  t.match(gone.stderr, /^error: the database did not answer \(.+\): nothing more was done; try again once it is up/)
  t.notMatch(gone.stderr, /\n\s+at |PrismaClient|keys\.ts/, 'no stack trace, no code frame')
})

if (serverUrl === undefined) {
  t.test('bootstrapping the first admin key on a new embedded data folder, then starting the service', async (t) => {
    const dataDir = await mkdtemp(join(tmpdir(), 'battra-cli-'))
    // The lock beside it too: the service is killed at the end, which leaves its lock.
    t.teardown(() => Promise.all([rm(dataDir, { recursive: true, force: true }), rm(`${dataDir}.lock`, { force: true })]))
    const env = { DATABASE_URL: '', EMBEDDED_DATA_DIR: dataDir, EMBEDDED_DB_PORT: '0' }
    // Listing a folder with no database creates nothing (a mistyped EMBEDDED_DATA_DIR would get a new one).
    const listed = await keys(env, 'list', '--org', 'test-org')
    t.equal(listed.code, 1)
    t.equal(listed.stderr.trim(), `error: there is no database in ${dataDir} (EMBEDDED_DATA_DIR): set EMBEDDED_DATA_DIR to the service's data folder, or DATABASE_URL; nothing was created`)
    t.same(await readdir(dataDir), [], 'the folder is left empty')
    const created = await keys(env, 'create', '--user', 'ops+clerk_test@mock.com', '--org', 'test-org', '--scopes', 'auth:admin', '--json')
    t.equal(created.code, 0, created.stderr)
    t.match(created.stderr, `note: there was no database in ${dataDir}: created one, migrated and seeded as a first start would`, 'a change made on a new folder says it created the database')
    const { key } = JSON.parse(created.stdout)
    const again = await keys(env, 'list', '--org', 'test-org', '--json')
    t.equal(again.code, 0, again.stderr)
    t.equal(again.stderr, '', 'no note once the database exists')
    const service = await startService({ EMBEDDED_DATA_DIR: dataDir, EMBEDDED_DB_PORT: '0' })
    t.teardown(() => service.stop('SIGKILL'))
    const response = await fetch(`${service.baseUrl}/api/v1/admin/auth-cache`, { headers: { 'x-api-key': key } })
    t.equal(response.status, 200, 'the key made before the first start works')
    t.equal((await fetch(`${service.baseUrl}/api/v1/projects`, { headers: { 'x-api-key': 'battra-dev-key-1' } })).status, 200, 'the folder was seeded as a first start would')
  })
}
