// POST /api/v1/secret-scanning/github over real HTTP, with GitHub played by the test: a P-256 key pair made
// here and a local server standing in for GitHub's public-keys URL. Two instances share the database: a
// key revoked through one is refused by the other within the invalidation bound.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { generateApiKey } from '#src/auth/api-key.ts'
import { build } from '#test/helpers/app.ts'
import { databaseKind, serverUrl } from '#test/helpers/database.ts'
import { insertOrganization, insertUserWithKey, testOrgId, withOneCharacterChanged } from '#test/helpers/fixtures.ts'
import { keysDocument, newSigningKey, signBody, startKeysServer, type SigningKey } from '#test/helpers/github-keys.ts'
import { until } from '#test/helpers/wait.ts'

t.comment(`database: ${databaseKind}`)

const PATH = '/api/v1/secret-scanning/github'
/** The other instance's bound: NOTIFY on PostgreSQL; its unverified-entry cap on PGlite, which cannot notify. */
const UNVERIFIED_TTL_MS = 300
const INVALIDATION_BOUND_MS = serverUrl === undefined ? UNVERIFIED_TTL_MS + 700 : 1000

const github = newSigningKey(randomBytes(32).toString('hex'))
const keysServer = await startKeysServer(t, keysDocument(github))
const { app, db, clock } = await build(t, { config: { leaks: { keysUrl: keysServer.url, keysToken: undefined, reportRateLimit: { requests: 10, windowSeconds: 60 } } } })
const { app: other } = await build(t, { db, config: { cache: { unverifiedTtlMs: UNVERIFIED_TTL_MS } } })
await app.listen({ port: 0, host: '127.0.0.1' })
const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
const orgId = await testOrgId(db)

// Every change made to a key, with the actor the transaction named (what an audit trigger would read).
await db.pool.query(`
  CREATE TABLE leak_test_writes (at timestamptz DEFAULT clock_timestamp(), key_id uuid, actor text, revoked_at timestamptz, leak_report jsonb);
  CREATE FUNCTION leak_test_log() RETURNS trigger AS $$ BEGIN
    INSERT INTO leak_test_writes (key_id, actor, revoked_at, leak_report) VALUES (NEW.id, current_setting('battra.actor', true), NEW.revoked_at, NEW.leak_report);
    RETURN NULL;
  END $$ LANGUAGE plpgsql;
  CREATE TRIGGER leak_test_log AFTER UPDATE ON api_keys FOR EACH ROW EXECUTE FUNCTION leak_test_log();`)
const writesOf = async (keyId: string) => (await db.pool.query<{ actor: string | null, revoked_at: Date | null, leak_report: unknown }>('SELECT actor, revoked_at, leak_report FROM leak_test_writes WHERE key_id = $1 ORDER BY at', [keyId])).rows
const writeCount = async () => Number((await db.pool.query<{ n: string }>('SELECT count(*) AS n FROM leak_test_writes')).rows[0].n)

interface Match { token: unknown, type?: unknown, url?: unknown, source?: unknown }
const match = (token: string, url = `https://github.com/octo/repo/blob/${randomBytes(20).toString('hex')}/.env`): Match =>
  ({ token, type: 'battra_api_key', url, source: 'content' })

function signedHeaders (body: string | Buffer, key: SigningKey = github): Record<string, string> {
  return { 'github-public-key-identifier': key.id, 'github-public-key-signature': signBody(body, key) }
}

async function post (body: string | Buffer, headers: Record<string, string> = signedHeaders(body), contentType = 'application/json') {
  const response = await fetch(`${base}${PATH}`, { method: 'POST', body: typeof body === 'string' ? body : new Uint8Array(body), headers: { 'content-type': contentType, ...headers } })
  const text = await response.text()
  let json: any
  try { json = JSON.parse(text) } catch { json = undefined }
  return { status: response.status, headers: response.headers, json, text }
}

const me = (instance: FastifyInstance, key: string) => instance.inject({ url: '/api/v1/auth/me', headers: { 'x-api-key': key } })
const keyRow = (id: string) => db.prisma.apiKey.findUniqueOrThrow({ where: { id } })

t.test('a signed report revokes the key on every instance, records the report for its owner, and names the leak as the actor', async (t) => {
  const leaked = await insertUserWithKey(db, { organizationId: orgId })
  const unknown = generateApiKey()
  const badChecksum = withOneCharacterChanged(leaked.key)
  t.equal((await me(app, leaked.key)).statusCode, 200)
  t.equal((await me(other, leaked.key)).statusCode, 200, 'cached on the other instance')

  const url = 'https://github.com/octo/repo/blob/0123456789abcdef0123456789abcdef01234567/config/.env'
  const body = JSON.stringify([match(leaked.key, url), match(unknown), match(badChecksum), { token: leaked.key, type: 'battra_api_key', url: 'https://github.com/octo/repo/commit/abc', source: 'commit' }])
  const response = await post(body)
  const answeredAt = performance.now()
  t.equal(response.status, 200)
  t.same(response.json, [
    { token_raw: leaked.key, token_type: 'battra_api_key', label: 'true_positive' },
    { token_raw: unknown, token_type: 'battra_api_key', label: 'false_positive' },
    { token_raw: badChecksum, token_type: 'battra_api_key', label: 'false_positive' }
  ], "GitHub's format, one row per distinct token")

  t.equal((await me(app, leaked.key)).json().code, 'API_KEY_INVALID', 'refused at once on the instance that answered')
  await until(async () => (await me(other, leaked.key)).statusCode === 401, INVALIDATION_BOUND_MS + 2000, 'the other instance refuses the key')
  const ms = performance.now() - answeredAt
  t.ok(ms < INVALIDATION_BOUND_MS, `refused by the other instance ${Math.round(ms)} ms after the answer (bound ${INVALIDATION_BOUND_MS} ms, ${databaseKind})`)

  const row = await keyRow(leaked.keyId)
  t.ok(row.revokedAt !== null)
  t.equal(row.revokedReason, 'leaked')
  t.match(row.leakReport, {
    reporter: 'github',
    url,
    source: 'content',
    locations: [{ url, source: 'content' }, { url: 'https://github.com/octo/repo/commit/abc', source: 'commit' }]
  })
  t.ok(Math.abs(Date.parse((row.leakReport as { reportedAt: string }).reportedAt) - row.revokedAt!.getTime()) < 1000)

  const writes = await writesOf(leaked.keyId)
  t.equal(writes.length, 1, 'one write')
  t.same(JSON.parse(writes[0].actor!), { type: 'system', reason: 'leaked', reporter: 'github', url, source: 'content' }, 'battra.actor names the leak')

  // What the owner (and an operator) sees.
  const list = await app.inject({ url: `/api/v1/api-keys?includeRevoked=true&userId=${leaked.userId}`, headers: { 'x-api-key': 'battra-admin-key-1' } })
  t.match(list.json(), [{ id: leaked.keyId, revokedReason: 'leaked', leakReport: { reporter: 'github', url, source: 'content' } }])
})

t.test('a replay of the same report is harmless: the same answer, no second write', async (t) => {
  const leaked = await insertUserWithKey(db, { organizationId: orgId })
  const body = JSON.stringify([match(leaked.key)])
  const headers = signedHeaders(body)
  const first = await post(body, headers)
  t.same(first.json, [{ token_raw: leaked.key, token_type: 'battra_api_key', label: 'true_positive' }])
  const before = await keyRow(leaked.keyId)
  const writes = await writeCount()
  const replays = await Promise.all([post(body, headers), post(body, headers), post(body, headers)])
  for (const replay of replays) {
    t.equal(replay.status, 200)
    t.same(replay.json, first.json)
  }
  t.equal(await writeCount(), writes, 'nothing written again')
  t.same(await keyRow(leaked.keyId), before, 'the key row is as the first report left it')
})

t.test('an unsigned or wrongly signed report gets 401 and changes nothing', async (t) => {
  const target = await insertUserWithKey(db, { organizationId: orgId })
  const body = JSON.stringify([match(target.key)])
  const stranger = newSigningKey(github.id) // GitHub's identifier, someone else's key
  const otherBody = JSON.stringify([match(generateApiKey())])
  const writes = await writeCount()
  const cases: Array<[string, Record<string, string>]> = [
    ['no headers', {}],
    ['identifier only', { 'github-public-key-identifier': github.id }],
    ['signature only', { 'github-public-key-signature': signBody(body, github) }],
    ["signed by another key under GitHub's identifier", signedHeaders(body, stranger)],
    ['the signature of another body', { 'github-public-key-identifier': github.id, 'github-public-key-signature': signBody(otherBody, github) }],
    ['signature garbage', { 'github-public-key-identifier': github.id, 'github-public-key-signature': '!!!not base64!!!' }],
    ['signature too long', { 'github-public-key-identifier': github.id, 'github-public-key-signature': 'A'.repeat(4000) }],
    ['a DER-shaped signature of zeros', { 'github-public-key-identifier': github.id, 'github-public-key-signature': Buffer.from([0x30, 6, 2, 1, 0, 2, 1, 0]).toString('base64') }],
    ['identifier garbage', { 'github-public-key-identifier': 'ü'.repeat(10), 'github-public-key-signature': signBody(body, github) }]
  ]
  for (const [name, headers] of cases) {
    const response = await post(body, headers)
    t.equal(response.status, 401, name)
    t.match(response.json, { statusCode: 401, code: 'SECRET_SCANNING_SIGNATURE_INVALID', error: 'Unauthorized', message: /not signed by a known GitHub secret-scanning key/ }, name)
    t.equal(response.headers.get('www-authenticate'), 'ApiKey realm="battra"', name)
  }
  // A body changed after signing: one byte.
  const tampered = Buffer.from(body)
  const headers = signedHeaders(tampered)
  tampered[tampered.length - 3] ^= 0x01
  t.equal((await post(tampered, headers)).status, 401, 'a tampered body')
  // Repeated headers (Node joins them into one value): ambiguous, refused.
  const repeated = await fetch(`${base}${PATH}`, {
    method: 'POST',
    body,
    headers: [['content-type', 'application/json'], ['github-public-key-identifier', github.id], ['github-public-key-signature', signBody(body, github)], ['github-public-key-signature', signBody(body, github)]]
  })
  t.equal(repeated.status, 401, 'a repeated signature header')
  // An empty body reaches no parser: verified all the same.
  const empty = await fetch(`${base}${PATH}`, { method: 'POST', headers: { 'content-type': 'application/json' } })
  t.equal(empty.status, 401, 'an empty unsigned body')

  t.equal(await writeCount(), writes, 'nothing written')
  t.equal((await me(app, target.key)).statusCode, 200, 'the key still works')
})

t.test('an unknown key identifier triggers exactly one refetch (and a flood of them no more)', async (t) => {
  const target = await insertUserWithKey(db, { organizationId: orgId })
  const body = JSON.stringify([match(target.key)])
  // GitHub's keys were fetched by an earlier test: known identifiers are served from the cache.
  const before = keysServer.requests
  t.equal((await post(body)).status, 200)
  t.equal(keysServer.requests, before, 'a known identifier: no fetch')

  // Within a minute of the last fetch, even an unknown identifier fetches nothing: move past it.
  clock.advance(61_000)
  const rotated = newSigningKey(randomBytes(32).toString('hex'))
  const unknownBody = JSON.stringify([match(generateApiKey())])
  t.equal((await post(unknownBody, signedHeaders(unknownBody, rotated))).status, 401, 'unknown to GitHub too: 401')
  t.equal(keysServer.requests, before + 1, 'one refetch')
  const flood = await Promise.all(Array.from({ length: 20 }, (_, i) => {
    const stranger = newSigningKey(`unknown-${i}`)
    return post(unknownBody, signedHeaders(unknownBody, stranger))
  }))
  // No refetch is due: GitHub might have rotated meanwhile, so 503 with Retry-After (it retries), not a 401
  // that would drop a genuine report (an outside probe spent the refetch with a bogus identifier first).
  t.ok(flood.every((response) => response.status === 503 && response.headers.get('retry-after') !== null), 'within the interval: 503, retry later')
  t.equal(keysServer.requests, before + 1, 'no further fetch within the interval')

  // GitHub rotates its keys: the new one is picked up by the refetch an unknown identifier triggers.
  keysServer.answer = { status: 200, body: keysDocument(github, rotated) }
  clock.advance(61_000)
  const leaked = await insertUserWithKey(db, { organizationId: orgId })
  const rotatedBody = JSON.stringify([match(leaked.key)])
  const response = await post(rotatedBody, signedHeaders(rotatedBody, rotated))
  t.same([response.status, response.json?.[0]?.label], [200, 'true_positive'], 'signed with the new key')
  t.equal(keysServer.requests, before + 2)
  t.equal((await post(body)).status, 200, 'the old key still verifies while listed')
  t.equal(keysServer.requests, before + 2)
})

t.test('a body of 1000 tokens is handled within the body limit', async (t) => {
  const leaked = await insertUserWithKey(db, { organizationId: orgId })
  const matches = Array.from({ length: 999 }, () => match(generateApiKey()))
  matches.splice(500, 0, match(leaked.key))
  const body = JSON.stringify(matches, null, 1)
  t.ok(body.length > 200_000 && body.length < 1024 * 1024, `${body.length} bytes`)
  const response = await post(body)
  t.equal(response.status, 200)
  t.equal(response.json.length, 1000)
  t.same(response.json[500], { token_raw: leaked.key, token_type: 'battra_api_key', label: 'true_positive' })
  t.equal(response.json.filter((row: { label: string }) => row.label === 'true_positive').length, 1)
  t.equal((await me(app, leaked.key)).statusCode, 401)
})

t.test('malformed bodies get 400 once signed (and change nothing)', async (t) => {
  const writes = await writeCount()
  const cases: Record<string, string> = {
    'not JSON': '[{"token": ',
    'JSON null': 'null',
    'an object, not an array': JSON.stringify(match(generateApiKey())),
    'a string': '"battra_x"',
    'a null item': '[null]',
    'no token': JSON.stringify([{ type: 'battra_api_key', url: 'u', source: 'content' }]),
    'no type': JSON.stringify([{ token: generateApiKey(), url: 'u' }]),
    'a number token': JSON.stringify([{ token: 42, type: 'battra_api_key' }]),
    'an object token': JSON.stringify([{ token: { value: 'x' }, type: 'battra_api_key' }]),
    'an overlong token': JSON.stringify([{ token: 'x'.repeat(2000), type: 'battra_api_key' }]),
    'a number url': JSON.stringify([{ token: generateApiKey(), type: 'battra_api_key', url: 7 }]),
    '1001 matches': JSON.stringify(Array.from({ length: 1001 }, () => match(generateApiKey(), 'u'))),
    'a NUL in a url': JSON.stringify([{ token: generateApiKey(), type: 'battra_api_key', url: 'a\u0000b' }])
  }
  for (const [name, body] of Object.entries(cases)) {
    const response = await post(body)
    t.equal(response.status, 400, name)
    t.match(response.json, { statusCode: 400, code: /^(BAD_REQUEST|FST_ERR_VALIDATION)$/, error: 'Bad Request' }, name)
  }
  t.equal(await writeCount(), writes)
  const empty = await post('[]')
  t.same([empty.status, empty.json], [200, []], 'an empty report is answered with nothing to say')
})

t.test('a legacy key (the seeded form) can be reported too', async (t) => {
  const legacy = await insertUserWithKey(db, { organizationId: orgId, key: { key: `battra-leak-${randomBytes(3).toString('hex')}-key-1` } })
  const body = JSON.stringify([{ token: legacy.key, type: 'battra_legacy_key' }])
  const response = await post(body)
  t.same(response.json, [{ token_raw: legacy.key, token_type: 'battra_legacy_key', label: 'true_positive' }])
  t.equal((await me(app, legacy.key)).statusCode, 401)
  t.match((await keyRow(legacy.keyId)).leakReport, { reporter: 'github', url: null, source: null, locations: [{ url: null, source: null }] })
})

t.test('report only: an organization whose switch is off gets its key flagged, not revoked', async (t) => {
  const org = await insertOrganization(db, 'Careful Org')
  const switched = await app.inject({ method: 'PATCH', url: `/api/v1/admin/organizations/${org}`, headers: { 'x-api-key': 'battra-admin-key-1' }, payload: { leakAutoRevoke: false } })
  t.equal(switched.statusCode, 200)
  t.match(switched.json(), { id: org, leakAutoRevoke: false, rateLimit: null })
  const flagged = await insertUserWithKey(db, { organizationId: org })
  const url = 'https://github.com/octo/repo/blob/1/.env'
  const body = JSON.stringify([match(flagged.key, url)])
  const response = await post(body)
  t.same(response.json, [{ token_raw: flagged.key, token_type: 'battra_api_key', label: 'true_positive' }], 'still a true positive')
  t.equal((await me(app, flagged.key)).statusCode, 200, 'the key still works')
  const row = await keyRow(flagged.keyId)
  t.same([row.revokedAt, row.revokedReason], [null, null])
  t.match(row.leakReport, { reporter: 'github', url, source: 'content' })
  const writes = await writesOf(flagged.keyId)
  t.equal(writes.length, 1)
  t.match(JSON.parse(writes[0].actor!), { type: 'system', reason: 'leaked', reporter: 'github', url })
  const list = await app.inject({ url: `/api/v1/api-keys?userId=${flagged.userId}`, headers: { 'x-api-key': 'battra-admin-key-1' } })
  t.match(list.json(), [{ id: flagged.keyId, revokedAt: null, revokedReason: null, leakReport: { reporter: 'github', url } }], 'the owner sees the report on a key that still works')

  await post(JSON.stringify([match(flagged.key, 'https://github.com/elsewhere')]))
  t.equal((await writesOf(flagged.keyId)).length, 1, 'a second report of a flagged key writes nothing: the first report stays')

  // Switched back on, the next report revokes, keeping the first report.
  t.equal((await app.inject({ method: 'PATCH', url: `/api/v1/admin/organizations/${org}`, headers: { 'x-api-key': 'battra-admin-key-1' }, payload: { leakAutoRevoke: true } })).statusCode, 200)
  await post(JSON.stringify([match(flagged.key, 'https://github.com/again')]))
  t.equal((await me(app, flagged.key)).statusCode, 401)
  t.match(await keyRow(flagged.keyId), { revokedReason: 'leaked', leakReport: { url } })
})

t.test('the organization switch: admin only, validated', async (t) => {
  const url = `/api/v1/admin/organizations/${orgId}`
  const patch = (key: string, payload: unknown) => app.inject({ method: 'PATCH', url, headers: { 'x-api-key': key }, payload: payload as object })
  t.equal((await patch('battra-dev-key-1', { leakAutoRevoke: false })).statusCode, 403)
  t.equal((await patch('battra-admin-key-1', { leakAutoRevoke: 'no' })).statusCode, 400)
  t.equal((await patch('battra-admin-key-1', {})).statusCode, 400, 'at least one setting')
  t.match((await patch('battra-admin-key-1', { leakAutoRevoke: true })).json(), { leakAutoRevoke: true })
})

t.test('hostile transport: 413 over the limit, 415 for other content types, never a 500', async (t) => {
  const huge = JSON.stringify([{ token: generateApiKey(), type: 'battra_api_key', url: 'x'.repeat(1024 * 1024) }])
  const tooLarge = await post(huge)
  t.equal(tooLarge.status, 413)
  t.match(tooLarge.json, { statusCode: 413, code: 'FST_ERR_CTP_BODY_TOO_LARGE' })
  const body = JSON.stringify([match(generateApiKey())])
  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/octet-stream']) {
    const response = await post(body, signedHeaders(body), type)
    t.equal(response.status, 415, type)
    t.match(response.json, { statusCode: 415, code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE' }, type)
  }
  t.equal((await post(body, signedHeaders(body), 'application/json; charset=utf-8')).status, 200, 'JSON with a charset is JSON')
  for (const type of ['application/json; charset=utf-16', 'application/json; charset="latin1"']) {
    const response = await post(body, signedHeaders(body), type)
    t.equal(response.status, 415, `${type}: JSON must be UTF-8 (found by an outside probe)`)
    t.match(response.json, { statusCode: 415, code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', message: /UTF-8/ }, type)
  }
})

t.test("GitHub's keys unavailable: 503 with Retry-After, never 500 or 401; nothing changes", async (t) => {
  const target = await insertUserWithKey(db, { organizationId: orgId })
  const body = JSON.stringify([match(target.key)])
  const answers: Record<string, { status: number, body: string }> = {
    'HTTP 500': { status: 500, body: keysDocument(github) },
    'garbage JSON': { status: 200, body: '{"public_keys": [' },
    'JSON of the wrong shape': { status: 200, body: '{"keys": []}' }
  }
  for (const [name, answer] of Object.entries(answers)) {
    const broken = await startKeysServer(t, answer.body, answer.status)
    const { app: instance } = await build(t, { db, config: { leaks: { keysUrl: broken.url, keysToken: undefined, reportRateLimit: { requests: 10, windowSeconds: 60 } } } })
    const response = await instance.inject({ method: 'POST', url: PATH, payload: body, headers: { 'content-type': 'application/json', ...signedHeaders(body) } })
    t.equal(response.statusCode, 503, name)
    t.match(response.json(), { statusCode: 503, code: 'SERVICE_UNAVAILABLE', message: /secret-scanning keys cannot be fetched/ }, name)
    t.ok(Number(response.headers['retry-after']) >= 1, `${name}: Retry-After ${String(response.headers['retry-after'])}`)
    t.equal(broken.requests, 1, `${name}: one fetch`)
    // The keys come back: after the interval the next report is verified (the interval is a minute: not waited for here).
    const unsigned = await instance.inject({ method: 'POST', url: PATH, payload: body, headers: { 'content-type': 'application/json' } })
    t.equal(unsigned.statusCode, 401, `${name}: an unsigned report is still 401, without a fetch`)
    t.equal(broken.requests, 1)
  }
  const unreachable = await startKeysServer(t, keysDocument(github))
  const deadUrl = unreachable.url.replace(/:\d+\//, ':9/')
  const { app: down } = await build(t, { db, config: { leaks: { keysUrl: deadUrl, keysToken: undefined, reportRateLimit: { requests: 10, windowSeconds: 60 } } } })
  const refused = await down.inject({ method: 'POST', url: PATH, payload: body, headers: { 'content-type': 'application/json', ...signedHeaders(body) } })
  t.equal(refused.statusCode, 503, 'keys URL unreachable')
  const { app: none } = await build(t, { db, config: { leaks: { keysUrl: undefined, keysToken: undefined, reportRateLimit: { requests: 10, windowSeconds: 60 } } } })
  const unset = await none.inject({ method: 'POST', url: PATH, payload: body, headers: { 'content-type': 'application/json', ...signedHeaders(body) } })
  t.equal(unset.statusCode, 503, 'SECRET_SCANNING_KEYS_URL=none')
  t.equal(unset.headers['retry-after'], '5')
  t.equal((await me(app, target.key)).statusCode, 200, 'the key still works')
  t.equal((await keyRow(target.keyId)).revokedAt, null)
})

t.test('the database down while a signed report arrives: 503, and GitHub retries', async (t) => {
  const { app: cut, db: cutDb } = await build(t, { proxy: true, config: { leaks: { keysUrl: keysServer.url, keysToken: undefined, reportRateLimit: { requests: 10, windowSeconds: 60 } } } })
  const body = JSON.stringify([match(generateApiKey())])
  t.equal((await cut.inject({ method: 'POST', url: PATH, payload: body, headers: { 'content-type': 'application/json', ...signedHeaders(body) } })).statusCode, 200)
  await cutDb.proxy!.cut()
  const response = await cut.inject({ method: 'POST', url: PATH, payload: body, headers: { 'content-type': 'application/json', ...signedHeaders(body) } })
  t.equal(response.statusCode, 503)
  t.match(response.json(), { code: 'SERVICE_UNAVAILABLE' })
  t.ok(response.headers['retry-after'])
})

t.test('a revocation by a report is in the audit trail as key.leaked, with where it was found', async (t) => {
  const leaked = await insertUserWithKey(db, { organizationId: orgId })
  const url = `https://github.com/octo/repo/blob/${randomBytes(20).toString('hex')}/agent.json`
  t.equal((await post(JSON.stringify([match(leaked.key, url)]))).status, 200)
  const events = await db.prisma.auditEvent.findMany({ where: { keyId: leaked.keyId }, orderBy: { seq: 'asc' } })
  const leakedEvents = events.filter((event) => event.action === 'key.leaked')
  t.equal(leakedEvents.length, 1, 'one key.leaked event')
  t.match(leakedEvents[0], { actor: { type: 'system', reason: 'leaked' }, details: { reason: 'leaked', url, source: 'content' } })
  t.notOk(events.some((event) => event.action === 'key.revoked'), 'recorded as a leak, not as an ordinary revocation')
  const listed = await app.inject({ url: `/api/v1/audit-events?keyId=${leaked.keyId}&action=key.leaked`, headers: { 'x-api-key': 'battra-admin-key-1' } })
  t.match(listed.json().events, [{ action: 'key.leaked', actor: { type: 'system', reason: 'leaked', reporter: 'github' } }], 'the API shows who reported it')
  t.notOk(JSON.stringify(events, (_name, value) => typeof value === 'bigint' ? String(value) : value).includes(leaked.key), 'the key itself is not in the trail')
})
