// The command line's leak settings: org-leaks switches an organization to report only and back; list shows
// which keys a leak report revoked or flagged.
import t from 'tap'
import { handleLeakedTokens } from '#src/leaks/revoke.ts'
import { createTestDatabase, databaseKind } from '#test/helpers/database.ts'
import { runScript } from '#test/helpers/scripts.ts'
import { insertOrganization, insertUserWithKey } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)

const keys = (env: Record<string, string>, ...args: string[]) => runScript('scripts/keys.ts', env, ...args)

t.test('org-leaks report-only / revoke, and the leak state in list', async (t) => {
  const db = await createTestDatabase(t)
  const env = { DATABASE_URL: db.url }
  const orgId = await insertOrganization(db, 'Leaky Org')
  const { slug } = await db.prisma.organization.findUniqueOrThrow({ where: { id: orgId } })

  const off = await keys(env, 'org-leaks', slug, 'report-only')
  t.equal(off.code, 0, off.stderr)
  t.equal(off.stdout.trim(), `${slug}: report only: a leak report is recorded on the key, which keeps working`)
  t.equal((await db.prisma.organization.findUniqueOrThrow({ where: { id: orgId } })).leakAutoRevoke, false)

  const flagged = await insertUserWithKey(db, { organizationId: orgId })
  const personal = await insertUserWithKey(db)
  const outcome = await handleLeakedTokens(db.prisma, 'public', [flagged.key, personal.key].map((token) => ({ token, locations: [{ url: 'https://example.com' }] })))
  t.same([outcome.flagged, outcome.revoked], [[flagged.keyId], [personal.keyId]], 'a personal key has no organization to be report only: revoked')

  const listed = await keys(env, 'list', '--org', slug)
  t.equal(listed.code, 0, listed.stderr)
  t.match(listed.stdout, new RegExp(`${flagged.keyId} {2}\\S+ {2}active\\(leak-reported\\)`))
  const revoked = await keys(env, 'list', '--user', personal.userId, '--include-revoked', '--json')
  t.match(JSON.parse(revoked.stdout), [{ id: personal.keyId, revokedReason: 'leaked', leakReport: { reporter: 'public', url: 'https://example.com' } }])

  const on = await keys(env, 'org-leaks', slug, 'revoke')
  t.equal(on.stdout.trim(), `${slug}: a leak report revokes the key at once`)
  t.equal((await db.prisma.organization.findUniqueOrThrow({ where: { id: orgId } })).leakAutoRevoke, true)
  const wrong = await keys(env, 'org-leaks', slug, 'maybe')
  t.equal(wrong.code, 1)
  t.match(wrong.stderr, /org-leaks needs an organization and revoke or report-only/)
})
