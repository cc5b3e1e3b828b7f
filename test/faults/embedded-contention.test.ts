// First starts of the embedded database under contention: two at once on one new folder (one serves,
// the other is refused naming the folder and the PID), and one on a machine whose CPUs are busy.
import { spawn } from 'node:child_process'
import { cpus } from 'node:os'
import t from 'tap'
import { PERSONAS } from '#src/db/seed.ts'
import { serverUrl } from '#test/helpers/database.ts'
import { startService } from '#scripts/lib/service-process.ts'
import { START_TIMEOUT_MS, newFolder, nextStartServesEveryone, spawnFirstStart } from './first-start.ts'
import { watch, type Watched } from './processes.ts'

// Bounded, with room for a loaded machine: several real first starts per case.
t.setTimeout(360_000)

const skip = serverUrl === undefined ? false : 'the embedded database only: with DATABASE_URL there is no first start of a data folder'
if (skip !== false) t.comment(skip)

t.test('two simultaneous first starts on one new folder: exactly one serves, the other exits naming the folder and the PID', { skip }, async (t) => {
  const folder = await newFolder(t)
  const starts = [spawnFirstStart(t, folder), spawnFirstStart(t, folder)]
  // The loser exits; the winner listens.
  const loserIndex = await Promise.race(starts.map(async (start, i) => { await start.exited; return i }))
  const loser = starts[loserIndex]
  const winner = starts[1 - loserIndex]
  await winner.waitFor(/Server listening at (http:\/\/127\.0\.0\.1:\d+)/, START_TIMEOUT_MS)
  t.not(await loser.exited, 0, 'the loser exits non-zero')
  t.match(loser.output(), `the embedded data folder ${folder.dataDir} is in use by process ${winner.child.pid}`, 'naming the folder and the winner\'s PID')
  const baseUrl = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(winner.output())![1]
  for (const persona of PERSONAS) {
    const response = await fetch(`${baseUrl}/api/v1/auth/me`, { headers: { 'x-api-key': persona.key } })
    t.equal(response.status, 200, `the winner serves ${persona.key}`)
  }
  winner.child.kill('SIGTERM')
  t.equal(await winner.exited, 0)
  await nextStartServesEveryone(t, folder)
})

t.test('a first start while every CPU is busy succeeds', { skip }, async (t) => {
  const folder = await newFolder(t)
  const hogs: Watched[] = []
  for (let i = 0; i < Math.max(2, cpus().length); i++) {
    const child = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' })
    hogs.push(watch(t, { child, output: () => '' }))
  }
  const started = Date.now()
  const service = await startService(folder.env, { timeoutMs: START_TIMEOUT_MS })
  t.teardown(() => service.stop('SIGKILL'))
  t.comment(`first start under ${hogs.length} busy loops: ${Date.now() - started} ms`)
  await Promise.all(hogs.map((hog) => hog.kill()))
  t.match(service.output(), /seeded the dev personas/)
  for (const persona of PERSONAS) {
    const response = await fetch(`${service.baseUrl}/api/v1/auth/me`, { headers: { 'x-api-key': persona.key } })
    t.equal(response.status, 200, persona.key)
  }
  t.equal(await service.stop('SIGTERM'), 0)
})
