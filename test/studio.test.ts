// Prisma Studio on the embedded database, looked at in a real browser (Debian's Chromium).
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { hashApiKey } from '#src/auth/api-key.ts'
import { PERSONAS } from '#src/db/seed.ts'
import { sleep } from '#test/helpers/wait.ts'
import { startService } from '#scripts/lib/service-process.ts'

const CHROMIUM = '/usr/bin/chromium'
const ROOT = fileURLToPath(new URL('..', import.meta.url))

async function freePort (): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

t.test('Prisma Studio shows users, organizations, memberships and keys, and no secret', {
  skip: existsSync(CHROMIUM) ? false : `Chromium is not installed at ${CHROMIUM} (apt-get install chromium); .ci/run installs it`
}, async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'battra-studio-'))
  // The lock beside it too: it stays when the service is killed.
  t.teardown(() => Promise.all([rm(dataDir, { recursive: true, force: true }), rm(`${dataDir}.lock`, { force: true })]))
  const service = await startService({ EMBEDDED_DATA_DIR: dataDir, EMBEDDED_DB_PORT: '0', LOG_REQUESTS: 'false' })
  t.teardown(() => service.stop('SIGKILL'))
  const databasePort = new URL(service.databaseUrl!).port

  const studioPort = await freePort()
  const studio = spawn(process.execPath, [join(ROOT, 'node_modules/prisma/build/index.js'), 'studio', '--browser', 'none', '--port', String(studioPort)], {
    cwd: ROOT,
    env: { ...process.env, DATABASE_URL: '', EMBEDDED_DB_PORT: databasePort, PRISMA_HIDE_UPDATE_MESSAGE: '1' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let studioOutput = ''
  studio.stdout.on('data', (chunk) => { studioOutput += chunk })
  studio.stderr.on('data', (chunk) => { studioOutput += chunk })
  t.teardown(() => { studio.kill('SIGKILL') })
  for (let i = 0; i < 300 && !studioOutput.includes('Prisma Studio is running'); i++) await sleep(100)
  t.match(studioOutput, 'Prisma Studio is running', 'Studio started')

  const { chromium } = await import('playwright-core')
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run']
  })
  t.teardown(() => browser.close())
  // Wide enough for every column of api_keys: Studio's grid renders only the columns in view.
  const page = await browser.newPage({ viewport: { width: 5000, height: 1000 } })
  await page.goto(`http://127.0.0.1:${studioPort}`, { waitUntil: 'networkidle' })
  // Studio lists the tables after its own introspection query, which can finish after the network is idle.
  const tables = ['users', 'organizations', 'organization_memberships', 'api_keys']
  await page.waitForFunction((names) => names.every((name) => document.body.innerText.includes(name)), tables, { timeout: 20_000 })
    .catch(() => {}) // the assertions below say which table is missing
  const sidebar = await page.innerText('body')
  for (const table of tables) t.match(sidebar, table, `${table} is listed`)

  await page.getByText('api_keys', { exact: true }).first().click()
  await page.getByText('battra-d…ey-1').first().waitFor({ timeout: 20_000 })
  const screenshot = join(tmpdir(), 'battra-studio-api-keys.png')
  await page.screenshot({ path: screenshot, fullPage: true })
  t.comment(`screenshot: ${screenshot}`)
  const shown = await page.innerText('body')
  for (const hint of ['battra-d…ey-1', 'battra-a…ey-1']) t.match(shown, hint, `hint ${hint} is shown`)
  for (const persona of PERSONAS) {
    t.notOk(shown.includes(persona.key), `the key of ${persona.name} is not shown`)
  }
  t.match(shown, 'token_hash', 'the token_hash column is in view')
  t.ok(PERSONAS.some((p) => shown.includes(hashApiKey(p.key).slice(0, 12))), 'what identifies a key is its hash (and hint)')
})
