// Key policies across a fleet: three real service processes on one PostgreSQL database and one Redis.
// What the fleet guarantees, per key (or organization) and window of limit N:
// - Redis answering, exact mode (the default): at most N admitted across all instances, with no tolerance;
//   each admitted request is counted by one atomic script, so the admitted ones see RateLimit-Remaining
//   N−1, N−2, …, 0 exactly once each.
// - k instances cut off from Redis: each of them counts alone, so at most N + k·N in the windows the outage
//   spans; the others keep sharing the Redis counter. No answer is a 5xx.
import t from 'tap'
import { createTestDatabase, databaseKind, serverUrl } from '#test/helpers/database.ts'
import { insertOrganization, insertUserWithKey, testOrgId } from '#test/helpers/fixtures.ts'
import { TcpProxy } from '#test/helpers/proxy.ts'
import { sleep } from '#test/helpers/wait.ts'
import { startService, type ServiceProcess } from '#scripts/lib/service-process.ts'

if (serverUrl === undefined) {
  t.comment(`skipped on ${databaseKind}: three processes need one shared database, and PGlite lives inside one process (its socket carries no LISTEN/NOTIFY either); .ci/run runs this file on PostgreSQL`)
  t.pass('nothing to run on the embedded database')
} else {
  await fleetTests()
}

async function fleetTests (): Promise<void> {
  const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
  const redisTarget = new URL(REDIS_URL)
  const db = await createTestDatabase(t)
  const orgId = await testOrgId(db)
  // The third instance reaches Redis through a proxy the test cuts.
  const redisProxy = new TcpProxy({ host: redisTarget.hostname, port: Number(redisTarget.port || 6379) })
  await redisProxy.start()
  t.teardown(() => redisProxy.cut())
  const env = {
    DATABASE_URL: db.url,
    LOG_REQUESTS: 'false',
    AUTH_FAILURE_LIMIT: '1000000',
    USAGE_FLUSH_INTERVAL_MS: '3600000',
    // A loaded test machine must not turn a counting test into a fallback test (production default: 50 ms).
    REDIS_TIMEOUT_MS: '1000'
  }
  const redisUrls = [REDIS_URL, REDIS_URL, `redis://127.0.0.1:${redisProxy.port}`]
  const started = await Promise.allSettled(redisUrls.map((url) => startService({ ...env, REDIS_URL: url })))
  const fleet: ServiceProcess[] = started.flatMap((result) => result.status === 'fulfilled' ? [result.value] : [])
  t.teardown(() => Promise.all(fleet.map((instance) => instance.stop('SIGKILL'))))
  const failure = started.find((result) => result.status === 'rejected')
  if (failure !== undefined) throw failure.reason
  const cutOff = fleet[2]

  const call = async (instance: ServiceProcess, key: string) => {
    const response = await fetch(instance.baseUrl + '/api/v1/auth/verify', { headers: { 'x-api-key': key } })
    const text = await response.text()
    return { status: response.status, headers: response.headers, body: text === '' ? {} : JSON.parse(text) as Record<string, unknown> }
  }
  const readyDetail = async (instance: ServiceProcess) =>
    (await (await fetch(instance.baseUrl + '/ready', { headers: { accept: 'application/json' } })).json()) as { rateLimit: { backend: string, fallbacks: number } }
  async function waitFor (check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
    const begun = performance.now()
    while (!(await check())) {
      if (performance.now() - begun > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`)
      await sleep(5)
    }
    return performance.now() - begun
  }
  const fallbacks = async () => Promise.all(fleet.map(async (instance) => (await readyDetail(instance)).rateLimit.fallbacks))
  const windowIndex = (windowSeconds: number) => Math.floor(Date.now() / (windowSeconds * 1000))

  await waitFor(async () => (await Promise.all(fleet.map(readyDetail))).every((detail) => detail.rateLimit.backend === 'redis'), 10_000, 'every instance on Redis')

  t.test('a key limited to N per window: exactly N admitted across three instances, each remaining count once', async (t) => {
    const limit = 30
    const windowSeconds = 3600
    const { key } = await insertUserWithKey(db, { organizationId: orgId, key: { rateLimit: { requests: limit, windowSeconds } } })
    const fallbacksBefore = await fallbacks()
    const firstWindow = windowIndex(windowSeconds)
    // 4N requests at once, spread over the fleet.
    const answers = await Promise.all(Array.from({ length: 4 * limit }, (_, i) => call(fleet[i % fleet.length], key)))
    const sameWindow = windowIndex(windowSeconds) === firstWindow
    const fallenBack = (await fallbacks()).filter((count, i) => count > fallbacksBefore[i]).length
    t.equal(fallenBack, 0, 'no instance fell back meanwhile: the exact-mode guarantee is what was tested')

    t.same([...new Set(answers.map((answer) => answer.status))].sort(), [200, 429], 'admitted or refused, nothing else')
    const admitted = answers.filter((answer) => answer.status === 200)
    const tolerance = (sameWindow ? 1 : 2) * limit + fallenBack * limit
    t.ok(admitted.length <= tolerance, `${admitted.length} admitted, at most ${tolerance}`)
    if (sameWindow) {
      t.equal(admitted.length, limit, 'exactly N: none lost, none extra')
      const remaining = admitted.map((answer) => Number(answer.headers.get('ratelimit-remaining'))).sort((a, b) => a - b)
      t.same(remaining, Array.from({ length: limit }, (_, i) => i), 'RateLimit-Remaining N−1 … 0, each once: one shared counter')
    } else {
      t.comment('the requests straddled a window boundary: two windows, at most 2N')
    }
    for (const refused of answers.filter((answer) => answer.status === 429)) {
      if (refused.body.code !== 'RATE_LIMITED' || refused.headers.get('retry-after') === null || refused.headers.get('ratelimit-remaining') !== '0') {
        t.fail(`unexpected refusal: ${JSON.stringify(refused.body)}`)
        break
      }
    }
    t.ok(admitted.every((answer) => answer.headers.get('x-user-id') !== null && answer.headers.get('ratelimit-limit') === String(limit)), 'admitted answers carry identity and RateLimit-* headers')
  })

  t.test("an organization's limit is shared by its keys across instances", async (t) => {
    const limit = 20
    const org = await insertOrganization(db, 'Fleet Quota Org')
    await db.pool.query('UPDATE organizations SET rate_limit_requests = $2, rate_limit_window_seconds = 3600 WHERE id = $1', [org, limit])
    const keys = [await insertUserWithKey(db, { organizationId: org }), await insertUserWithKey(db, { organizationId: org })]
    const firstWindow = windowIndex(3600)
    const answers = await Promise.all(Array.from({ length: 3 * limit }, (_, i) => call(fleet[i % fleet.length], keys[i % 2].key)))
    const admitted = answers.filter((answer) => answer.status === 200).length
    if (windowIndex(3600) === firstWindow) t.equal(admitted, limit, 'two keys, three instances, one quota')
    else t.ok(admitted <= 2 * limit, `across a window boundary: ${admitted} ≤ 2N`)
    t.ok(answers.every((answer) => answer.status === 200 || answer.body.code === 'RATE_LIMITED'))
  })

  t.test('a policy changed through one instance is enforced by every instance at once', async (t) => {
    const { key, keyId } = await insertUserWithKey(db, { organizationId: orgId })
    for (const instance of fleet) t.equal((await call(instance, key)).status, 200, 'cached everywhere')
    const patch = (instance: ServiceProcess, body: object) => fetch(`${instance.baseUrl}/api/v1/api-keys/${keyId}`, {
      method: 'PATCH',
      headers: { 'x-api-key': 'battra-admin-key-1', 'content-type': 'application/json' },
      body: JSON.stringify(body)
    })
    t.equal((await patch(fleet[0], { allowedCidrs: ['192.0.2.0/24'] })).status, 200)
    for (const instance of fleet) {
      const ms = await waitFor(async () => (await call(instance, key)).body.code === 'IP_NOT_ALLOWED', 1000, `refused on ${instance.baseUrl}`)
      t.ok(ms < 1000, `refused by ${instance.baseUrl} ${Math.round(ms)} ms after the change`)
    }
    t.equal((await patch(fleet[1], { allowedCidrs: [], rateLimit: { requests: 1000, windowSeconds: 60 } })).status, 200)
    for (const instance of fleet) {
      await waitFor(async () => (await call(instance, key)).headers.get('ratelimit-limit') === '1000', 1000, `limited on ${instance.baseUrl}`)
    }
    t.pass('every instance applies the new policy')
  })

  t.test('one instance losing Redis keeps answering, counts alone meanwhile (at most N + N), and comes back', async (t) => {
    const limit = 20
    const { key } = await insertUserWithKey(db, { organizationId: orgId, key: { rateLimit: { requests: limit, windowSeconds: 3600 } } })
    const firstWindow = windowIndex(3600)
    let admitted = 0
    for (let i = 0; i < 5; i++) if ((await call(fleet[0], key)).status === 200) admitted++

    // Load on the instance while its Redis connection is cut: every answer must be a 200 or a 429.
    const statuses: number[] = []
    const failures: string[] = []
    const load = new AbortController()
    const loops = Array.from({ length: 4 }, async () => {
      while (!load.signal.aborted) {
        try {
          statuses.push((await call(cutOff, key)).status)
        } catch (error) {
          failures.push(String(error))
        }
      }
    })
    await sleep(100)
    await redisProxy.cut()
    await waitFor(async () => (await readyDetail(cutOff)).rateLimit.backend === 'local', 10_000, 'the instance falls back')
    await sleep(300)
    load.abort()
    await Promise.all(loops)
    t.same(failures, [], 'no request failed')
    t.same([...new Set(statuses)].filter((status) => status !== 200 && status !== 429), [], `${statuses.length} answers, all 200 or 429: never a 5xx`)
    admitted += statuses.filter((status) => status === 200).length

    // The other instances keep sharing the Redis counter; the cut-off one counted alone.
    for (let i = 0; i < 3 * limit; i++) if ((await call(fleet[i % 2], key)).status === 200) admitted++
    if (windowIndex(3600) === firstWindow) t.ok(admitted <= 2 * limit, `${admitted} admitted in the window: at most N + k·N = ${2 * limit} with k = 1 instance cut off`)
    t.ok(admitted >= limit, `${admitted} admitted: the fleet did not refuse early`)

    const ready = await fetch(cutOff.baseUrl + '/ready')
    t.same([ready.status, await ready.text()], [200, 'READY'], '/ready stays READY: the instance answers')
    t.match(await readyDetail(cutOff), { rateLimit: { store: 'redis', backend: 'local' } })
    t.equal(cutOff.output().match(/Redis unreachable/g)?.length, 1, 'the outage is logged once')

    await redisProxy.restore()
    await waitFor(async () => (await readyDetail(cutOff)).rateLimit.backend === 'redis', 15_000, 'back on Redis')
    const back = await call(cutOff, key)
    t.equal(back.status, 429, 'back on the shared counter, which the others exhausted')
    t.equal(cutOff.child.exitCode, null, 'still running')
    t.notMatch(cutOff.output(), /unhandled|uncaught/i)
  })
}
