// The database ends the service's connections (an operator's pg_terminate_backend, a failover) while key
// management is under way: answers are 200 or 503 with Retry-After, never 500, and the process lives on.
// A connection held between a transaction's statements used to emit an error nobody listened to, and the
// process exited (found by an outside probe).
import t from 'tap'
import { createTestDatabase, databaseKind, serverUrl } from '#test/helpers/database.ts'
import { insertUserWithKey, testOrgId } from '#test/helpers/fixtures.ts'
import { startService } from '#scripts/lib/service-process.ts'

if (serverUrl === undefined) {
  t.test('connections ended by the database', { skip: `on ${databaseKind}: PGlite has no server backends to terminate; .ci/run runs this file on PostgreSQL` }, () => {})
} else {
  const db = await createTestDatabase(t)
  const orgId = await testOrgId(db)
  const { keyId } = await insertUserWithKey(db, { organizationId: orgId })
  // The service's pool names itself, so that only its connections are ended (not this file's own).
  const url = new URL(db.url)
  url.searchParams.set('application_name', 'battra-under-fire')
  const service = await startService({ DATABASE_URL: url.toString(), LOG_REQUESTS: 'false', AUTH_FAILURE_LIMIT: '1000000' })
  t.teardown(() => service.stop('SIGKILL'))

  t.test('terminated during PATCHes, rotations and lists: 200 or 503, no 500, no exit', async (t) => {
    const statuses = new Map<number, number>()
    const retryAfterMissing: number[] = []
    const running = { stop: false }
    const admin = { 'x-api-key': 'battra-admin-key-1', 'content-type': 'application/json' }
    const operations = [
      () => fetch(`${service.baseUrl}/api/v1/api-keys/${keyId}`, { method: 'PATCH', headers: admin, body: JSON.stringify({ description: `at ${Date.now()}` }) }),
      () => fetch(`${service.baseUrl}/api/v1/api-keys?limit=20`, { headers: admin }),
      () => fetch(`${service.baseUrl}/api/v1/api-keys`, { method: 'POST', headers: admin, body: JSON.stringify({ description: 'made under fire' }) })
    ]
    const loops = Array.from({ length: 8 }, async (_, i) => {
      while (!running.stop) {
        const response = await operations[i % operations.length]().catch(() => undefined)
        if (response === undefined) { // the process is gone
          statuses.set(0, (statuses.get(0) ?? 0) + 1)
          return
        }
        await response.arrayBuffer()
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1)
        if (response.status === 503 && response.headers.get('retry-after') === null) retryAfterMissing.push(response.status)
      }
    })
    // Terminate every pooled connection of the service, ten times, while the loops run.
    for (let round = 0; round < 10; round++) {
      await new Promise((resolve) => setTimeout(resolve, 300))
      await db.pool.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'battra-under-fire'")
    }
    running.stop = true
    await Promise.all(loops)
    t.comment(`answers: ${JSON.stringify(Object.fromEntries(statuses))}`)
    t.same([...statuses.keys()].filter((status) => ![200, 201, 503].includes(status)), [], 'only 200, 201 and 503 (0: no answer)')
    t.same(retryAfterMissing, [], 'every 503 says when to retry')
    t.equal(service.child.exitCode, null, 'the process is still running')
    t.notMatch(service.output(), /uncaught|second error/i)
    const after = await fetch(`${service.baseUrl}/api/v1/api-keys/${keyId}`, { method: 'PATCH', headers: admin, body: JSON.stringify({ description: 'after' }) })
    t.equal(after.status, 200, 'management works again')
  })
}
