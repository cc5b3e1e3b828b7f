import t from 'tap'
import { Compile } from 'typebox/compile'
import { GitHubReportSchema, GitHubReportAnswerSchema, distinctReportedTokens, REPORT_MAX_ITEMS, REPORT_TOKEN_MAX_LENGTH } from '#src/leaks/report.ts'

const report = Compile(GitHubReportSchema)
const answer = Compile(GitHubReportAnswerSchema)

t.test("GitHub's documented payloads are accepted", async (t) => {
  t.ok(report.Check([{ token: 'NMIfyYncKcRALEXAMPLE', type: 'mycompany_api_token', url: 'https://github.com/octocat/Hello-World/blob/12345600b9cbe38a219f39a9941c9319b600c002/foo/bar.txt', source: 'content' }]))
  t.ok(report.Check([{ source: 'commit', token: 'some_token', type: 'some_type', url: 'https://example.com/base-repo-url/' }]), 'any key order')
  t.ok(report.Check([{ token: 'some_token', type: 'some_type', url: 'some_url' }]), 'the older payload without source')
  t.ok(report.Check([{ token: 't', type: 'x', url: '', source: 'Npm' }]), 'an empty url')
  t.ok(report.Check([{ token: 't', type: 'x', url: 'u', source: 'content', added_later: true }]), 'extra properties')
  t.ok(report.Check([]), 'an empty report')
})

t.test('malformed reports are refused', async (t) => {
  t.notOk(report.Check({ token: 't', type: 'x' }), 'not an array')
  t.notOk(report.Check([{ type: 'x', url: 'u' }]), 'no token')
  t.notOk(report.Check([{ token: 't', url: 'u' }]), 'no type')
  t.notOk(report.Check([{ token: 42, type: 'x' }]), 'a number token')
  t.notOk(report.Check([null]), 'a null item')
  t.notOk(report.Check([{ token: 'x'.repeat(REPORT_TOKEN_MAX_LENGTH + 1), type: 'x' }]), 'an overlong token')
  const item = { token: 't', type: 'x', url: 'u', source: 'content' }
  t.ok(report.Check(Array(REPORT_MAX_ITEMS).fill(item)))
  t.notOk(report.Check(Array(REPORT_MAX_ITEMS + 1).fill(item)), 'too many items')
})

t.test('the answer schema allows only the two labels and the raw-token form', async (t) => {
  t.ok(answer.Check([{ token_raw: 't', token_type: 'x', label: 'true_positive' }, { token_raw: 'u', token_type: 'x', label: 'false_positive' }]))
  t.notOk(answer.Check([{ token_raw: 't', token_type: 'x', label: 'TRUE_POSITIVE' }]))
  t.notOk(answer.Check([{ token_raw: 't', token_hash: 'h', token_type: 'x', label: 'true_positive' }]), 'never both forms')
})

t.test('distinct tokens keep GitHub order and every location', async (t) => {
  const tokens = distinctReportedTokens([
    { token: 'b', type: 'battra_api_key', url: 'https://github.com/o/r/blob/1/a', source: 'content' },
    { token: 'a', type: 'battra_api_key', url: 'https://github.com/o/r/blob/1/b', source: 'commit' },
    { token: 'b', type: 'battra_api_key', url: 'https://github.com/o/r/blob/1/c', source: 'content' },
    { token: 'b', type: 'other_type', url: 'https://github.com/o/r/blob/1/a', source: 'content' },
    { token: 'c', type: 'battra_api_key' }
  ])
  t.same(tokens, [
    { token: 'b', type: 'battra_api_key', locations: [{ url: 'https://github.com/o/r/blob/1/a', source: 'content' }, { url: 'https://github.com/o/r/blob/1/c', source: 'content' }] },
    { token: 'a', type: 'battra_api_key', locations: [{ url: 'https://github.com/o/r/blob/1/b', source: 'commit' }] },
    { token: 'c', type: 'battra_api_key', locations: [{ url: undefined, source: undefined }] }
  ])
  t.same(distinctReportedTokens([]), [])
})
