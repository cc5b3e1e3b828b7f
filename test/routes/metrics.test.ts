import t from 'tap'
import { build } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { keyOf } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)
const { app } = await build(t)

function sample (text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `))
  if (line === undefined) throw new Error(`no sample ${name}${labels}`)
  return Number(line.split(' ')[1])
}

t.test('GET /metrics counts answers, cache use, lookups, statements and usage writes', async (t) => {
  const me = (headers: Record<string, string>) => app.inject({ url: '/api/v1/auth/me', headers })
  for (let i = 0; i < 5; i++) await me({ 'x-api-key': keyOf('dev+clerk_test@mock.com') })
  await me({})
  await me({ 'x-api-key': 'battra-unknown-1' })
  await me({ 'x-api-key': 'battra-unknown-1' })
  await app.apiKeyAuth.flushUsage()

  const response = await app.inject({ url: '/metrics' })
  t.equal(response.statusCode, 200, 'scraped without a key')
  t.match(response.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  const text = response.body
  t.equal(sample(text, 'battra_auth_requests_total', '{code="OK"}'), 5)
  t.equal(sample(text, 'battra_auth_requests_total', '{code="API_KEY_MISSING"}'), 1)
  t.equal(sample(text, 'battra_auth_requests_total', '{code="API_KEY_INVALID"}'), 2)
  t.equal(sample(text, 'battra_auth_cache_hits_total', '{cache="positive"}'), 4)
  t.equal(sample(text, 'battra_auth_cache_hits_total', '{cache="negative"}'), 1)
  t.equal(sample(text, 'battra_auth_cache_misses_total'), 2)
  t.equal(sample(text, 'battra_auth_db_lookup_duration_seconds_count'), 2, 'one lookup per miss, timed')
  t.equal(sample(text, 'battra_auth_db_lookup_duration_seconds_bucket', '{le="+Inf"}'), 2)
  t.equal(sample(text, 'battra_auth_usage_flushes_total'), 1)
  t.equal(sample(text, 'battra_auth_usage_flush_keys_sum'), 1, 'one key written')
  t.equal(sample(text, 'battra_auth_db_statements_total'), app.database.statements.count)
  t.ok(sample(text, 'process_resident_memory_bytes') > 10_000_000)
  t.match(text, /# TYPE battra_auth_db_lookup_duration_seconds histogram/)
  t.notMatch(text, /battra-dev-key-1|battra-unknown-1/, 'no key in the metrics')
})
