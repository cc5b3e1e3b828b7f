// Pruning: the events before a date go, an anchor is recorded, and what is kept still verifies.
import t from 'tap'
import { pruneChain, verifyChain } from '#src/audit/chain.ts'
import { createTestDatabase, databaseKind } from '#test/helpers/database.ts'
import { insertUserWithKey, testOrgId } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)

t.test('prune --before keeps a verifiable chain, records an anchor and an audit.pruned event', async (t) => {
  const db = await createTestDatabase(t)
  const orgId = await testOrgId(db)
  await insertUserWithKey(db, { organizationId: orgId })
  const { rows: [{ at }] } = await db.pool.query<{ at: Date }>('SELECT clock_timestamp() AS at')
  const { keyId } = await insertUserWithKey(db, { organizationId: orgId })
  const before = (await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM audit_events')).rows[0].n

  const result = await pruneChain(db.prisma, at)
  t.ok(result.pruned > 0 && result.pruned < before, `pruned ${result.pruned} of ${before}`)
  const { rows: anchors } = await db.pool.query('SELECT first_seq::text, prev_hash, pruned_count FROM audit_anchors')
  t.same(anchors, [{ first_seq: result.firstSeq, prev_hash: result.prevHash, pruned_count: result.pruned }])
  t.ok((await db.pool.query('SELECT 1 FROM audit_events WHERE key_id = $1', [keyId])).rowCount! > 0, 'later events are kept')
  const verified = await verifyChain(db.prisma)
  t.ok(verified.ok, JSON.stringify(verified.firstBad))
  t.equal((await db.pool.query('SELECT 1 FROM audit_events WHERE action = \'audit.pruned\'')).rowCount, 1)

  // Everything, twice: the chain continues from the anchors.
  await pruneChain(db.prisma, new Date(Date.now() + 60_000))
  t.ok((await verifyChain(db.prisma)).ok)
  await insertUserWithKey(db, { organizationId: orgId })
  await pruneChain(db.prisma, new Date(Date.now() + 60_000))
  await insertUserWithKey(db, { organizationId: orgId })
  const last = await verifyChain(db.prisma)
  t.ok(last.ok, JSON.stringify(last.firstBad))
})
