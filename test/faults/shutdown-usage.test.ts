// A shutdown cut short while the database hangs (SHUTDOWN_TIMEOUT_MS reached, or a second signal): the
// process exits at once, and the key usage it could not write is in its log, key by key, before it does.
// Found by an outside probe: with DATABASE_STATEMENT_TIMEOUT_MS above SHUTDOWN_TIMEOUT_MS, or on a second
// SIGTERM, it was lost without a line.
import t from 'tap'
import { hashApiKey } from '#src/auth/api-key.ts'
import { createTestDatabase, databaseKind } from '#test/helpers/database.ts'
import { until } from '#test/helpers/wait.ts'
import { startService } from '#scripts/lib/service-process.ts'

t.comment(`database: ${databaseKind}`)

const SHUTDOWN_TIMEOUT_MS = 2000
const KEY = 'battra-dev-key-1'

interface LogLine { msg?: string, lastUsedAt?: Record<string, string> }

for (const cut of ['SHUTDOWN_TIMEOUT_MS reached', 'a second SIGTERM', 'SIGINT after SIGTERM'] as const) {
  t.test(`database frozen, shutdown cut short by ${cut}: the unwritten usage is logged before the exit`, async (t) => {
    const db = await createTestDatabase(t, { proxy: true })
    const { id: keyId } = await db.prisma.apiKey.findFirstOrThrow({ where: { tokenHash: hashApiKey(KEY) }, select: { id: true } })
    const service = await startService({
      DATABASE_URL: db.url,
      DATABASE_STATEMENT_TIMEOUT_MS: '5000',
      SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
      USAGE_FLUSH_INTERVAL_MS: '600000'
    }, { compiled: true })
    t.teardown(() => service.stop('SIGKILL'))
    const answer = await fetch(`${service.baseUrl}/api/v1/auth/me`, { headers: { 'x-api-key': KEY } })
    t.equal(answer.status, 200)
    const usedBy = Date.now()
    db.proxy!.freeze()
    t.teardown(() => db.proxy!.restore())
    const started = Date.now()
    const exited = service.stop('SIGTERM', 30_000)
    if (cut !== 'SHUTDOWN_TIMEOUT_MS reached') {
      await until(() => service.output().includes('"msg":"closing"'), 10_000, 'the first signal taken')
      service.child.kill(cut === 'a second SIGTERM' ? 'SIGTERM' : 'SIGINT')
    }
    const code = await exited
    t.equal(code, 1, 'cut short: exit 1')
    t.ok(Date.now() - started < SHUTDOWN_TIMEOUT_MS + 3000, `exited after ${Date.now() - started} ms`)
    const lines = service.output().split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as LogLine)
    const lost = lines.find((line) => line.msg?.startsWith('could not write key usage before shutdown') === true)
    t.ok(lost !== undefined, 'the unwritten usage is logged')
    const at = Date.parse(lost?.lastUsedAt?.[keyId] ?? '')
    t.ok(at <= usedBy && at > usedBy - 60_000, 'with the key and the time of its last use')
    t.ok(lines.some((line) => line.msg?.startsWith('shutdown cut short') === true), 'and why the shutdown was cut short')
  })
}
