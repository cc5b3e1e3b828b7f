// The package as another service installs it: `npm pack`, installed into a scratch Fastify app in a
// temporary folder (only fastify beside it), run against the test database, and type-checked.
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'
import { createTestDatabase, databaseKind } from '#test/helpers/database.ts'
import { keyOf } from '#test/helpers/fixtures.ts'

const run = promisify(execFile)
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const TSC = join(ROOT, 'node_modules', '.bin', 'tsc')

t.comment(`database: ${databaseKind}`)

const CONSUMER = `
import Fastify from 'fastify'
import battraAuth, { type Claims } from 'battra-auth'
import { ApiKeyInvalidError } from 'battra-auth/errors'

const app = Fastify()
await app.register(battraAuth)
app.get('/stories', { config: { auth: { roles: ['product_owner'] } } }, async (request) => {
  const claims: Claims | null = request.auth
  return { email: claims?.email ?? null, organization: request.auth?.organizationSlug ?? null }
})
app.get('/status', { config: { auth: false } }, async (request) => ({ auth: request.auth }))
await app.ready()

const answers: Record<string, unknown> = {}
for (const [name, headers, url] of [
  ['po', { 'x-api-key': process.env.PO_KEY! }, '/stories'],
  ['dev', { 'x-api-key': process.env.DEV_KEY! }, '/stories'],
  ['bad', { 'x-api-key': 'battra-no-such-key' }, '/stories'],
  ['open', {}, '/status']
] as const) {
  const response = await app.inject({ url, headers })
  answers[name] = { status: response.statusCode, body: response.json(), challenge: response.headers['www-authenticate'] ?? null }
}
answers.errorCode = new ApiKeyInvalidError().code
console.log(JSON.stringify(answers))
await app.close()
`

const WRONG_USE = `
import Fastify from 'fastify'
import battraAuth from 'battra-auth'
const app = Fastify()
await app.register(battraAuth)
app.get('/x', async (request) => request.auth?.noSuchClaim)
`

t.test('npm pack, install into a scratch Fastify app, register, authenticate, type-check', async (t) => {
  const db = await createTestDatabase(t)
  const dir = await mkdtemp(join(tmpdir(), 'battra-consumer-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))

  // The build is current (npm ci ran prepare); rebuilt if sources changed since.
  await run(process.execPath, [join(ROOT, 'scripts', 'build-if-stale.mjs')], { cwd: ROOT })
  const { stdout: packed } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 })
  const [{ filename, files }] = JSON.parse(packed) as Array<{ filename: string, files: Array<{ path: string }> }>
  const paths = files.map((file) => file.path)
  t.ok(paths.includes('dist/plugins/index.js') && paths.includes('dist/plugins/index.d.ts'), 'the compiled plugin and its types are in the package')
  t.ok(paths.some((path) => path.startsWith('prisma/migrations/')), 'the migrations are in the package')
  t.notOk(paths.some((path) => path.startsWith('test/') || path.startsWith('src/') || (path.endsWith('.ts') && !path.endsWith('.d.ts'))), 'no sources or tests')

  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
  const fastifyVersion = JSON.parse(await readFile(join(ROOT, 'node_modules', 'fastify', 'package.json'), 'utf8')).version as string
  await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', join(dir, filename), `fastify@${fastifyVersion}`], { cwd: dir, maxBuffer: 16 * 1024 * 1024, timeout: 300_000 })

  await writeFile(join(dir, 'consumer.ts'), CONSUMER)
  await writeFile(join(dir, 'wrong.ts'), WRONG_USE)
  const compilerOptions = { target: 'ES2023', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, skipLibCheck: true, outDir: 'out' }
  await writeFile(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: ['consumer.ts'] }))
  await writeFile(join(dir, 'tsconfig.wrong.json'), JSON.stringify({ compilerOptions: { ...compilerOptions, noEmit: true }, files: ['wrong.ts'] }))

  const compiled = await run(TSC, ['-p', 'tsconfig.json'], { cwd: dir }).then(() => ({ ok: true, output: '' }), (error: { stdout: string }) => ({ ok: false, output: error.stdout }))
  t.ok(compiled.ok, `the consumer type-checks against the package's types${compiled.output === '' ? '' : `:\n${compiled.output}`}`)
  const wrong = await run(TSC, ['-p', 'tsconfig.wrong.json'], { cwd: dir }).then(() => '', (error: { stdout: string }) => error.stdout)
  t.match(wrong, /noSuchClaim/, 'a claim that does not exist is a type error: request.auth is typed')

  const { stdout } = await run(process.execPath, ['out/consumer.js'], {
    cwd: dir,
    env: { ...process.env, DATABASE_URL: db.url, LOG_LEVEL: 'silent', PO_KEY: keyOf('po+clerk_test@mock.com'), DEV_KEY: keyOf('dev+clerk_test@mock.com') },
    timeout: 60_000
  })
  const answers = JSON.parse(stdout.trim().split('\n').pop()!)
  t.match(answers.po, { status: 200, body: { email: 'po+clerk_test@mock.com', organization: 'test-org' } }, 'a key is accepted and its claims reach the route')
  t.match(answers.dev, { status: 403, body: { code: 'FORBIDDEN' } }, 'a route policy refuses the wrong role')
  t.match(answers.bad, { status: 401, body: { statusCode: 401, code: 'API_KEY_INVALID', error: 'Unauthorized', message: 'Invalid API key' }, challenge: 'ApiKey realm="battra"' }, 'a bad key gets the exact error')
  t.same(answers.open, { status: 200, body: { auth: null }, challenge: null }, 'config: { auth: false } opts out')
  t.equal(answers.errorCode, 'API_KEY_INVALID', 'the errors are exported for consumers')
})
