// POST /api/v1/api-keys/report-leak over real HTTP: no key needed, the same answer whatever the key (even
// with the database stalled: nothing is looked up before the answer), real keys revoked right after, and a
// limit per client. Clients are told apart by X-Forwarded-For from the trusted local proxy (the test).
import t from 'tap'
import { randomBytes } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { generateApiKey, hashApiKey } from '#src/auth/api-key.ts'
import type { LeaksConfig } from '#src/config.ts'
import { build } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertOrganization, insertUserWithKey, testOrgId, withOneCharacterChanged } from '#test/helpers/fixtures.ts'
import { until } from '#test/helpers/wait.ts'

t.comment(`database: ${databaseKind}`)

const PATH = '/api/v1/api-keys/report-leak'
const LIMIT = 5
const leaks: LeaksConfig = { keysUrl: undefined, keysToken: undefined, reportRateLimit: { requests: LIMIT, windowSeconds: 3600 } }
const { app, db } = await build(t, { config: { trustProxy: ['127.0.0.1'], leaks } })
const base = await listen(app)
const orgId = await testOrgId(db)

await db.pool.query(`
  CREATE TABLE leak_test_writes (at timestamptz DEFAULT clock_timestamp(), key_id uuid, actor text);
  CREATE FUNCTION leak_test_log() RETURNS trigger AS $$ BEGIN
    INSERT INTO leak_test_writes (key_id, actor) VALUES (NEW.id, current_setting('battra.actor', true));
    RETURN NULL;
  END $$ LANGUAGE plpgsql;
  CREATE TRIGGER leak_test_log AFTER UPDATE ON api_keys FOR EACH ROW EXECUTE FUNCTION leak_test_log();`)
const writes = async () => (await db.pool.query<{ key_id: string, actor: string }>('SELECT key_id, actor FROM leak_test_writes ORDER BY at')).rows

async function listen (instance: FastifyInstance): Promise<string> {
  await instance.listen({ port: 0, host: '127.0.0.1' })
  return `http://127.0.0.1:${(instance.server.address() as { port: number }).port}`
}

/** A client address of its own for each caller, so that the per-client limit is the test's to spend. */
const newClient = (): string => `198.51.100.${1 + Math.floor(Math.random() * 250)}`
let clientCounter = 0
const distinctClient = (): string => `203.0.113.${++clientCounter}`

async function report (body: unknown, options: { client?: string, url?: string, contentType?: string } = {}) {
  const started = performance.now()
  const response = await fetch(`${options.url ?? base}${PATH}`, {
    method: 'POST',
    body: typeof body === 'string' ? body : JSON.stringify(body),
    headers: { 'content-type': options.contentType ?? 'application/json', 'x-forwarded-for': options.client ?? distinctClient() }
  })
  const text = await response.text()
  const ms = performance.now() - started
  const headers = Object.fromEntries([...response.headers].filter(([name]) => !['date', 'keep-alive', 'connection'].includes(name)))
  return { status: response.status, text, json: JSON.parse(text), headers, ms }
}

const me = (key: string) => app.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })
const keyRow = (id: string) => db.prisma.apiKey.findUniqueOrThrow({ where: { id } })

t.test('the same answer for a real key, an unknown one, a bad checksum and junk; only the real ones are revoked', async (t) => {
  const real = await insertUserWithKey(db, { organizationId: orgId })
  const last = await insertUserWithKey(db, { organizationId: orgId, key: { key: `battra-legacy-${randomBytes(3).toString('hex')}-key-1` } })
  t.equal((await me(real.key)).statusCode, 200)
  const before = (await writes()).length
  const url = 'https://pastebin.example/abc'
  const bodies = [
    { key: real.key, url, source: 'paste' },
    { key: generateApiKey() },
    { key: withOneCharacterChanged(real.key), url },
    { key: 'x' },
    { key: 'ü not even ascii ü' },
    { key: 'battra-nobody-key-1', source: 'log' },
    { key: last.key }
  ]
  const answers = []
  for (const body of bodies) answers.push(await report(body))
  for (const [index, answer] of answers.entries()) {
    t.equal(answer.status, 202, `report ${index}`)
    t.equal(answer.text, answers[0].text, `report ${index}: the same body, byte for byte`)
    t.same(answer.headers, answers[0].headers, `report ${index}: the same headers`)
  }
  t.match(answers[0].json, { status: 'received', message: /Thank you/ })

  // One report at a time, in order: once the last is done, every earlier one is.
  await until(async () => (await keyRow(last.keyId)).revokedAt !== null, 5000, 'the last reported key revoked')
  t.equal((await me(real.key)).statusCode, 401, 'the real key is refused')
  t.match(await keyRow(real.keyId), { revokedReason: 'leaked', leakReport: { reporter: 'public', url, source: 'paste', locations: [{ url, source: 'paste' }] } })
  t.match(await keyRow(last.keyId), { revokedReason: 'leaked', leakReport: { reporter: 'public', url: null, source: null } })
  const written = (await writes()).slice(before)
  t.same(written.map((row) => row.key_id).sort(), [real.keyId, last.keyId].sort(), 'nothing but the two real keys was written')
  t.same(JSON.parse(written.find((row) => row.key_id === real.keyId)!.actor), { type: 'system', reason: 'leaked', reporter: 'public', url, source: 'paste' })

  const again = await report({ key: real.key, url })
  t.equal(again.text, answers[0].text, 'reporting a revoked key: the same answer')
  const marker = await insertUserWithKey(db, { organizationId: orgId })
  await report({ key: marker.key })
  await until(async () => (await keyRow(marker.keyId)).revokedAt !== null, 5000)
  t.equal((await writes()).filter((row) => row.key_id === real.keyId).length, 1, 'no second write')
})

t.test('the answer never waits for the database: with it stalled, real and unknown keys are answered at once, alike', async (t) => {
  const { app: stalled, db: stalledDb } = await build(t, { proxy: true, config: { trustProxy: ['127.0.0.1'], leaks } })
  const url = await listen(stalled)
  const real = await insertUserWithKey(stalledDb, { organizationId: await testOrgId(stalledDb) })
  await stalledDb.proxy!.stall()
  const answers = []
  for (const key of [real.key, generateApiKey(), real.key.slice(0, -1), generateApiKey()]) answers.push(await report({ key }, { url }))
  for (const answer of answers) {
    t.equal(answer.status, 202)
    t.equal(answer.text, answers[0].text)
    // A lookup would wait for the stalled database (its connect timeout is a second).
    t.ok(answer.ms < 500, `answered in ${Math.round(answer.ms)} ms`)
  }
  await stalledDb.proxy!.restore()
})

t.test('timing: real and unknown keys are answered in the same time class', async (t) => {
  const samples: Record<'real' | 'unknown', number[]> = { real: [], unknown: [] }
  for (let i = 0; i < 12; i++) {
    const { key } = await insertUserWithKey(db, { organizationId: orgId })
    samples.real.push((await report({ key })).ms)
    samples.unknown.push((await report({ key: generateApiKey() })).ms)
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1]
  const [real, unknown] = [median(samples.real), median(samples.unknown)]
  t.comment(`median answer: real ${real.toFixed(1)} ms, unknown ${unknown.toFixed(1)} ms`)
  // Loose on purpose (a shared 2-core machine): the stalled-database test above is the strict proof.
  t.ok(Math.abs(real - unknown) < Math.max(25, Math.min(real, unknown) / 2), 'medians close to each other (the lookup happens after the answer)')
})

t.test('limited per client: past the limit 429 with Retry-After, whatever the body; other clients unaffected', async (t) => {
  const client = newClient()
  const bodies: unknown[] = [{ key: generateApiKey() }, 'not json', { key: 42 }, { key: generateApiKey() }, { nokey: true }]
  for (const body of bodies) t.not((await report(body, { client })).status, 429)
  const refused = await report({ key: generateApiKey() }, { client })
  t.equal(refused.status, 429)
  t.match(refused.json, { statusCode: 429, code: 'RATE_LIMITED', message: /Too many leak reports from this client/ })
  t.ok(Number(refused.headers['retry-after']) > 0)
  t.equal(refused.headers['ratelimit-limit'], String(LIMIT))
  const refusedMalformed = await report('not json', { client })
  t.equal(refusedMalformed.status, 429, 'counted before the body is read')
  t.equal((await report({ key: generateApiKey() }, { client: distinctClient() })).status, 202, 'another client')
})

t.test('malformed bodies: 400 (or 413, 415), never a 500, and nothing about keys', async (t) => {
  const cases: Record<string, unknown> = {
    'not JSON': '{"key": ',
    'JSON null': 'null',
    'an array': [{ key: generateApiKey() }],
    'no key': { url: 'https://example.com' },
    'a number key': { key: 42 },
    'a null key': { key: null },
    'an empty key': { key: '' },
    'an overlong key': { key: 'k'.repeat(2000) },
    'an unknown property': { key: generateApiKey(), token: 'x' },
    'a number url': { key: generateApiKey(), url: 7 },
    'a url that is not http(s), shown to the owner as a link (found by an outside probe)': { key: generateApiKey(), url: 'javascript:alert(document.cookie)' },
    'a url with a space': { key: generateApiKey(), url: 'https://example.com/a b' },
    'a NUL in the source': { key: generateApiKey(), source: 'a\u0000b' }
  }
  for (const [name, body] of Object.entries(cases)) {
    const response = await report(body)
    t.equal(response.status, 400, name)
    t.match(response.json, { statusCode: 400, code: /^(BAD_REQUEST|FST_ERR_VALIDATION|FST_ERR_CTP_EMPTY_JSON_BODY)$/ }, name)
  }
  t.equal((await report({ key: generateApiKey() }, { contentType: 'text/plain' })).status, 415)
  const tooLarge = await report({ key: generateApiKey(), url: 'u'.repeat(20_000) })
  t.equal(tooLarge.status, 413)
  const empty = await fetch(`${base}${PATH}`, { method: 'POST', headers: { 'x-forwarded-for': distinctClient() } })
  t.equal(empty.status, 400, 'no body at all')
})

t.test('report only: the public route flags the key of such an organization, and it keeps working', async (t) => {
  const org = await insertOrganization(db, 'Manual Rotation Org')
  await db.prisma.organization.update({ where: { id: org }, data: { leakAutoRevoke: false } })
  const flagged = await insertUserWithKey(db, { organizationId: org })
  await report({ key: flagged.key, url: 'https://example.com/log' })
  await until(async () => (await keyRow(flagged.keyId)).leakReport !== null, 5000)
  t.match(await keyRow(flagged.keyId), { revokedAt: null, revokedReason: null, leakReport: { reporter: 'public', url: 'https://example.com/log' } })
  t.equal((await me(flagged.key)).statusCode, 200)
})

t.test('a report answered while the database is down is acted on once it is back', async (t) => {
  const { app: blip, db: blipDb, logs } = await build(t, { proxy: true, captureLogs: true, config: { leaks } })
  const real = await insertUserWithKey(blipDb, { organizationId: await testOrgId(blipDb) })
  await blipDb.proxy!.cut()
  const response = await blip.inject({ method: 'POST', url: PATH, payload: { key: real.key } })
  t.equal(response.statusCode, 202, 'answered as ever')
  await until(() => logs.some((line) => line.includes('leak report: the database does not answer; trying again')), 10_000, 'a failed attempt')
  await blipDb.proxy!.restore()
  await until(async () => (await blipDb.prisma.apiKey.findUniqueOrThrow({ where: { id: real.keyId } })).revokedAt !== null, 10_000, 'revoked on a later attempt')
  t.notOk(logs.some((line) => line.includes(real.key)), 'the key never reaches the log')
})

t.test('a report answered just before the service closes is still acted on', async (t) => {
  const { app: closing, db: closingDb } = await build(t, { config: { leaks } })
  const real = await insertUserWithKey(closingDb, { organizationId: await testOrgId(closingDb) })
  const response = await closing.inject({ method: 'POST', url: PATH, payload: { key: real.key } })
  t.equal(response.statusCode, 202)
  await closing.close()
  t.ok((await closingDb.prisma.apiKey.findUniqueOrThrow({ where: { id: real.keyId } })).revokedAt !== null, 'revoked before close resolved')
})

t.test('a key reported with the whitespace around it, a header name or a scheme, or pasted inside a line, is the key (found by outside probes)', async (t) => {
  for (const shape of [
    (key: string) => `${key}\n`, (key: string) => ` ${key}\r\n`, (key: string) => `ApiKey ${key}`, (key: string) => `\tapikey  ${key} `,
    (key: string) => `Bearer ${key}`, (key: string) => `Authorization: Bearer ${key}`, (key: string) => `X-API-Key: ApiKey ${key}`, (key: string) => `token ${key}`,
    (key: string) => `BATTRA_API_KEY="${key}"`, (key: string) => `curl -H 'X-API-Key: ${key}' https://battra.example/api/v1/projects`,
    (key: string) => `https://ci.example/log?key=${key}&x=1`
  ]) {
    const real = await insertUserWithKey(db, { organizationId: orgId })
    t.equal((await report({ key: shape(real.key) })).status, 202)
    await until(async () => (await keyRow(real.keyId)).revokedAt !== null, 10_000, `revoked: ${JSON.stringify(shape('<key>'))}`)
    t.equal((await me(real.key)).statusCode, 401)
  }
})

t.test('a database away when the service closes: the reports are tried again until the shutdown stops waiting, and acted on once it is back (found by an outside probe)', async (t) => {
  const { app: blip, db: blipDb, logs } = await build(t, { proxy: true, captureLogs: true, config: { leaks } })
  const real = await insertUserWithKey(blipDb, { organizationId: await testOrgId(blipDb) })
  await blipDb.proxy!.cut()
  t.equal((await blip.inject({ method: 'POST', url: PATH, payload: { key: real.key } })).statusCode, 202)
  await until(() => logs.some((line) => line.includes('leak report: the database does not answer; trying again')), 10_000, 'a failed attempt')
  const closed = blip.close()
  await blipDb.proxy!.restore()
  await closed
  t.ok((await blipDb.prisma.apiKey.findUniqueOrThrow({ where: { id: real.keyId } })).revokedAt !== null, 'revoked before close resolved')
  t.same(unsettledLines(logs), [], 'nothing left for an operator')
})

t.test('a legacy key pasted with a header name or another scheme is the key; a near copy of a current key inside text is not one', async (t) => {
  const legacy = `legacy-${Date.now()}-pasted`
  const held = await insertUserWithKey(db, { organizationId: orgId, key: { key: legacy } })
  t.equal((await report({ key: `X-API-Key: Bearer ${legacy}` })).status, 202)
  await until(async () => (await keyRow(held.keyId)).revokedAt !== null, 10_000, 'the legacy key revoked')
  // One character changed: its checksum fails, so the text around it is not stripped to it (nothing is revoked).
  const real = await insertUserWithKey(db, { organizationId: orgId })
  const near = withOneCharacterChanged(real.key)
  const other = await insertUserWithKey(db, { organizationId: orgId })
  t.equal((await report({ key: `KEY=${near} OTHER=${other.key}` })).status, 202)
  await until(async () => (await keyRow(other.keyId)).revokedAt !== null, 10_000, 'the valid key in the text revoked')
  t.equal((await keyRow(real.keyId)).revokedAt, null, 'the near copy revoked nothing')
})

/** The error lines that name a report not acted on, by the key's hash. */
function unsettledLines (logs: readonly string[]): Array<{ tokenHash?: string, msg: string }> {
  return logs.map((line) => JSON.parse(line) as { level: number, tokenHash?: string, msg: string })
    .filter((line) => line.level === 50 && line.msg.startsWith('leak report: accepted and not acted on'))
}

t.test('a report the shutdown cannot wait for (the database hangs) is logged with its key\'s hash, never the key (found by an outside probe)', async (t) => {
  const { app: hung, db: hungDb, logs } = await build(t, { proxy: true, captureLogs: true, config: { leaks, shutdownTimeoutMs: 3000, databaseConnectTimeoutMs: 2000, databaseStatementTimeoutMs: 1000 } })
  const real = await insertUserWithKey(hungDb, { organizationId: await testOrgId(hungDb) })
  hungDb.proxy!.freeze()
  t.teardown(() => hungDb.proxy!.restore())
  t.equal((await hung.inject({ method: 'POST', url: PATH, payload: { key: real.key, url: `https://example.com/?k=${real.key}` } })).statusCode, 202)
  t.equal((await hung.inject({ method: 'POST', url: PATH, payload: { key: 'not a key at all, nothing to act on' } })).statusCode, 202)
  await hung.close()
  t.same(unsettledLines(logs).map((line) => line.tokenHash), [hashApiKey(real.key)], 'one line, for the report that can be a key, with what finds its key')
  t.notOk(logs.some((line) => line.includes(real.key)), 'the key never reaches the log')
  await hungDb.proxy!.restore()
  t.equal((await hungDb.prisma.apiKey.findUniqueOrThrow({ where: { id: real.keyId } })).revokedAt, null, 'not revoked: the line is all there is')
})

t.test('a shutdown cut short (a second signal) logs the reports not yet acted on, once (found by an outside probe)', async (t) => {
  const { app: hung, db: hungDb, logs } = await build(t, { proxy: true, captureLogs: true, config: { leaks } })
  const real = await insertUserWithKey(hungDb, { organizationId: await testOrgId(hungDb) })
  hungDb.proxy!.freeze()
  t.teardown(() => hungDb.proxy!.restore())
  t.equal((await hung.inject({ method: 'POST', url: PATH, payload: { key: real.key } })).statusCode, 202)
  hung.shutdown.cutShort('a second signal (SIGTERM)')
  hung.shutdown.cutShort('a second signal (SIGTERM)')
  const lines = unsettledLines(logs)
  t.same(lines.map((line) => line.tokenHash), [hashApiKey(real.key)])
  t.match(lines[0]?.msg, /shutdown cut short: a second signal \(SIGTERM\)/)
  await hungDb.proxy!.restore()
})

t.test('the public /metrics cannot tell a real key of a report-only organization from an unknown one', async (t) => {
  // Found by an outside probe: battra_auth_db_statements_total moved by 3 for an unknown key and by 6 for a
  // real one, which in a report-only organization stays valid. Reports act through their own connection.
  const reportOnly = await insertOrganization(db, 'Report Only Metrics')
  await db.prisma.organization.update({ where: { id: reportOnly }, data: { leakAutoRevoke: false } })
  const real = await insertUserWithKey(db, { organizationId: reportOnly })
  const counters = async () => {
    const text = await (await fetch(`${base}/metrics`)).text()
    const read = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)![1])
    return { statements: read('battra_auth_db_statements_total'), usageFlushes: read('battra_auth_usage_flushes_total'), invalidations: read('battra_auth_cache_invalidations_total') }
  }
  const before = await counters()
  t.equal((await report({ key: generateApiKey() })).status, 202)
  t.equal((await report({ key: real.key })).status, 202)
  // Reports are acted on one at a time, in order: once the real one is flagged, both are done.
  await until(async () => (await keyRow(real.keyId)).leakReport !== null, 10_000, 'the real key flagged')
  const after = await counters()
  t.equal(after.statements - before.statements, after.usageFlushes - before.usageFlushes, 'no statement counted for either report (usage flushes aside)')
  t.equal(after.invalidations, before.invalidations, 'no invalidation')
  t.equal((await me(real.key)).statusCode, 200, 'the key of a report-only organization still works')
})
