import t from 'tap'
import { build } from '#test/helpers/app.ts'

t.test('a close step that does not finish is waited for only until its share of SHUTDOWN_TIMEOUT_MS, then named in a warning', async (t) => {
  const shutdownTimeoutMs = 1000
  const { app, logs } = await build(t, { captureLogs: true, config: { shutdownTimeoutMs } })
  t.equal(await app.shutdown.waitForStep('quick step', async () => {}), true, 'a step that finishes is waited for')
  t.equal(await app.shutdown.waitForStep('failing step', async () => { throw new Error('refused') }), true, 'so is one that fails: its hook handles the failure')
  const stuck = app.shutdown.waitForStep('stuck step', async () => await new Promise(() => {}))
  t.equal(await stuck, false, 'a step that never finishes is given up on')
  const warnings = logs.map((line) => JSON.parse(line) as { level: number, msg: string, step?: string }).filter((line) => line.level === 40)
  t.same(warnings.map((line) => line.step), ['stuck step'])
})
