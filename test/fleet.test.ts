// Several real service processes on one PostgreSQL database: invalidation reaches every instance,
// listener and database outages are survived, and SIGTERM under load loses no usage.
import t from 'tap'
import { createTestDatabase, databaseKind, serverUrl } from '#test/helpers/database.ts'
import { insertOrganization, insertUserWithKey, testOrgId } from '#test/helpers/fixtures.ts'
import { sleep } from '#test/helpers/wait.ts'
import { startService, type ServiceProcess } from '#scripts/lib/service-process.ts'

if (serverUrl === undefined) {
  t.test('a fleet of instances on one database', { skip: `on ${databaseKind}: LISTEN/NOTIFY does not cross PGlite's socket; .ci/run runs this file on PostgreSQL` }, () => {})
} else {
  await fleetTests()
}

async function fleetTests (): Promise<void> {
  const db = await createTestDatabase(t, { proxy: true })
  const orgId = await testOrgId(db)
  const env = {
    DATABASE_URL: db.url,
    LOG_REQUESTS: 'false',
    // The polling below makes many refused requests from one address; the limiter has its own tests.
    AUTH_FAILURE_LIMIT: '1000000',
    USAGE_FLUSH_INTERVAL_MS: '3600000',
    AUTH_LISTENER_RECONNECT_MIN_MS: '1000',
    AUTH_LISTENER_RECONNECT_MAX_MS: '2000',
    AUTH_CACHE_UNVERIFIED_TTL_MS: '2000',
    DATABASE_CONNECT_TIMEOUT_MS: '500'
  }
  // Every instance that started is stopped at the end, even when another one failed to start.
  const started = await Promise.allSettled([1, 2, 3].map(() => startService(env)))
  const fleet: ServiceProcess[] = started.flatMap((result) => result.status === 'fulfilled' ? [result.value] : [])
  t.teardown(() => Promise.all(fleet.map((instance) => instance.stop('SIGKILL'))))
  const failure = started.find((result) => result.status === 'rejected')
  if (failure !== undefined) throw failure.reason

  const call = async (instance: ServiceProcess, key: string, path = '/api/v1/auth/me') => {
    const response = await fetch(instance.baseUrl + path, { headers: { 'x-api-key': key } })
    return { status: response.status, body: await response.json() as Record<string, unknown> }
  }
  const admin = (instance: ServiceProcess, path: string, method = 'GET', body?: object) =>
    fetch(instance.baseUrl + path, {
      method,
      headers: { 'x-api-key': 'battra-admin-key-1', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(async (r) => ({ status: r.status, body: await r.json() as Record<string, any> }))

  async function waitFor (check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
    const started = performance.now()
    while (!(await check())) {
      if (performance.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`)
      await sleep(2)
    }
    return performance.now() - started
  }

  /** Calls with the key and says whether the answer came from the cache (no lookup was started). */
  async function servedFromCache (instance: ServiceProcess, key: string): Promise<boolean> {
    const misses = async () => (await admin(instance, '/api/v1/admin/auth-cache')).body.misses as number
    const before = await misses()
    const { status } = await call(instance, key)
    return status === 200 && await misses() === before
  }

  await waitFor(async () => {
    const stats = await Promise.all(fleet.map((instance) => admin(instance, '/api/v1/admin/auth-cache')))
    return stats.every((s) => s.body.listener?.state === 'listening')
  }, 10_000, 'every listener up')

  t.test('every instance stops serving a change made with SQL: p99 delay over 60 changes', async (t) => {
    type Change = { name: string, apply: (f: Fixture) => Promise<unknown>, seen: (r: { status: number, body: Record<string, unknown> }) => boolean }
    type Fixture = Awaited<ReturnType<typeof insertUserWithKey>> & { organizationId: string }
    const sql = (text: string, values: unknown[]) => db.pool.query(text, values)
    const changes: Change[] = [
      { name: 'revoke key', apply: (f) => sql('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [f.keyId]), seen: (r) => r.body.code === 'API_KEY_INVALID' },
      { name: 'change membership role', apply: (f) => sql("UPDATE organization_memberships SET role = 'admin' WHERE user_id = $1", [f.userId]), seen: (r) => r.status === 200 && r.body.orgRole === 'admin' },
      { name: 'delete membership', apply: (f) => sql('DELETE FROM organization_memberships WHERE user_id = $1', [f.userId]), seen: (r) => r.body.code === 'ORG_MEMBERSHIP_REQUIRED' },
      { name: 'disable user', apply: (f) => sql('UPDATE users SET disabled_at = now() WHERE id = $1', [f.userId]), seen: (r) => r.body.code === 'USER_DISABLED' },
      { name: 'delete organization', apply: (f) => sql('DELETE FROM organizations WHERE id = $1', [f.organizationId]), seen: (r) => r.body.code === 'API_KEY_INVALID' },
      { name: 'expire key', apply: (f) => sql("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", [f.keyId]), seen: (r) => r.body.code === 'API_KEY_EXPIRED' }
    ]
    const delays: number[] = []
    for (let i = 0; i < 60; i++) {
      const change = changes[i % changes.length]
      // Organization deletes take a fresh organization; the others share Test Org.
      const organizationId = change.name === 'delete organization' ? await insertOrganization(db, `Fleet ${i}`) : orgId
      const fixture = { ...await insertUserWithKey(db, { organizationId }), organizationId }
      for (const instance of fleet) t.equal((await call(instance, fixture.key)).status, 200)
      await change.apply(fixture)
      // Measured from the commit (the statement's return), per instance.
      const seenAfter = await Promise.all(fleet.map((instance) =>
        waitFor(async () => change.seen(await call(instance, fixture.key)), 3000, `${change.name} on ${instance.baseUrl}`)))
      delays.push(...seenAfter)
    }
    delays.sort((a, b) => a - b)
    const p = (q: number) => delays[Math.min(delays.length - 1, Math.ceil(q * delays.length) - 1)]
    t.comment(`invalidation delay over ${delays.length} observations (60 changes × 3 instances): p50 ${p(0.5).toFixed(1)} ms, p99 ${p(0.99).toFixed(1)} ms, max ${p(1).toFixed(1)} ms`)
    t.ok(p(0.99) < 1000, `p99 ${p(0.99).toFixed(1)} ms is under 1 s`)
  })

  t.test('a flush on one instance reaches every instance', async (t) => {
    const { key, keyId } = await insertUserWithKey(db, { organizationId: orgId })
    for (const instance of fleet) t.equal((await call(instance, key)).status, 200)
    for (const instance of fleet) await waitFor(() => servedFromCache(instance, key), 5000, 'the key cached')
    // A change the triggers do not see (replica mode), as after a restore from backup.
    const client = await db.pool.connect()
    await client.query("SET session_replication_role = 'replica'")
    await client.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [keyId])
    await client.query("SET session_replication_role = 'origin'")
    client.release()
    for (const instance of fleet) t.equal((await call(instance, key)).status, 200, 'still cached everywhere')
    const flush = await admin(fleet[0], '/api/v1/admin/auth-cache/flush', 'POST', { keyId })
    t.match(flush.body, { scope: 'key', broadcast: true })
    for (const instance of fleet) {
      t.ok(await waitFor(async () => (await call(instance, key)).status === 401, 1000, 'flushed everywhere') <= 1000, `rejected by ${instance.baseUrl}`)
    }
  })

  t.test('listeners killed from the database side reconnect, flush, and do not serve what changed meanwhile', async (t) => {
    const { key, keyId } = await insertUserWithKey(db, { organizationId: orgId })
    for (const instance of fleet) t.equal((await call(instance, key)).status, 200)
    const { rows } = await db.pool.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'battra-auth-listener' AND datname = current_database()")
    t.equal(rows.length, 3, 'one listener per instance')
    await sleep(200)
    // Made while no instance listens (they wait at least 500 ms before reconnecting).
    await db.pool.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [keyId])
    for (const instance of fleet) {
      await waitFor(async () => {
        const stats = (await admin(instance, '/api/v1/admin/auth-cache')).body
        return stats.listener.state === 'listening' && stats.listener.reconnects >= 1
      }, 10_000, 'listener back')
      t.equal((await call(instance, key)).status, 401, 'the change is not served after the reconnect')
    }
  })

  t.test('the database becomes unreachable and returns: stale answers, 503s, no crash, recovery', async (t) => {
    const cached = await insertUserWithKey(db, { organizationId: orgId })
    const uncached = await insertUserWithKey(db, { organizationId: orgId })
    // The fixtures' own notifications cross the database asynchronously, and one arriving after the key
    // was cached drops it (so it failed once in CI, under load: no entry left to serve stale). A later
    // change seen by every instance means the earlier ones were applied: each listener gets them in order.
    const sentinel = await insertUserWithKey(db, { organizationId: orgId })
    for (const instance of fleet) t.equal((await call(instance, sentinel.key)).status, 200)
    await db.pool.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [sentinel.keyId])
    for (const instance of fleet) await waitFor(async () => (await call(instance, sentinel.key)).status === 401, 5000, 'the sentinel change seen')
    for (const instance of fleet) t.equal((await call(instance, cached.key)).status, 200)
    // An answer is not kept when a notification reaches the instance during its lookup: wait until a
    // repeat of the call is a cache hit.
    for (const instance of fleet) await waitFor(() => servedFromCache(instance, cached.key), 5000, 'the key cached')
    await db.proxy!.cut()
    await sleep(2500) // past the trust cap: answers now come from stale-if-error
    for (const instance of fleet) {
      const served = await call(instance, cached.key)
      // The body and the cache's counters say why, should this ever fail again (it did once in CI, 503, unexplained).
      t.equal(served.status, 200, 'a cached key keeps working inside the stale window', { body: served.body, cache: served.status === 200 ? undefined : (await admin(instance, '/api/v1/admin/auth-cache')).body })
      const refused = await call(instance, uncached.key)
      t.equal(refused.status, 503)
      t.equal(refused.body.code, 'AUTH_UNAVAILABLE')
      t.equal((await fetch(instance.baseUrl + '/ready')).status, 503)
    }
    await sleep(1000)
    await db.proxy!.restore()
    for (const instance of fleet) {
      const ms = await waitFor(async () => (await call(instance, uncached.key)).status === 200, 10_000, 'recovery')
      t.ok(ms < 10_000, `recovered ${Math.round(ms)} ms after the database returned`)
      t.equal(instance.child.exitCode, null, 'still running')
      t.notMatch(instance.output(), /unhandled|uncaught/i, 'no unhandled rejection or exception')
    }
    for (const instance of fleet) {
      await waitFor(async () => (await admin(instance, '/api/v1/admin/auth-cache')).body.listener.state === 'listening', 10_000, 'listener back')
    }
  })

  t.test('SIGTERM under load: in-flight requests finish, exit 0, no usage lost', async (t) => {
    const { key, keyId } = await insertUserWithKey(db, { organizationId: orgId })
    const target = fleet[2]
    let lastOkSentAt = 0
    let ok = 0
    let stopping = false
    const loops = Array.from({ length: 16 }, async () => {
      while (true) {
        const sentAt = Date.now()
        try {
          const response = await fetch(target.baseUrl + '/api/v1/auth/me', { headers: { 'x-api-key': key } })
          await response.arrayBuffer()
          if (response.status === 200) {
            ok++
            lastOkSentAt = Math.max(lastOkSentAt, sentAt)
          } else if (!stopping) throw new Error(`status ${response.status}`)
        } catch {
          if (stopping) return // refused once the server stopped accepting
          throw new Error('request failed before shutdown')
        }
      }
    })
    await sleep(1500)
    stopping = true
    const signalledAt = Date.now()
    const code = await target.stop('SIGTERM', 20_000)
    const exitedAt = Date.now()
    await Promise.all(loops)
    t.equal(code, 0, 'exit 0')
    t.ok(exitedAt - signalledAt < 15_000, `exited ${exitedAt - signalledAt} ms after SIGTERM`)
    t.ok(ok > 100, `${ok} requests answered under load`)
    const { rows } = await db.pool.query<{ last_used_at: Date }>('SELECT last_used_at FROM api_keys WHERE id = $1', [keyId])
    const lastUsedAt = rows[0].last_used_at?.getTime() ?? 0
    t.ok(lastUsedAt >= lastOkSentAt, `last_used_at (${new Date(lastUsedAt).toISOString()}) is not before the last answered request (${new Date(lastOkSentAt).toISOString()})`)
    t.ok(lastUsedAt <= exitedAt, 'and not after the exit')
  })
}
