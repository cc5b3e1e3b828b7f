// A property of the hash chain: after any sequence of changes (API-less, plain SQL), verify passes; after
// any one field of any one row is altered behind the trigger's back, verify names exactly that row, and
// passes again once the row is restored.
import t from 'tap'
import fc from 'fast-check'
import { verifyChain } from '#src/audit/chain.ts'
import { createTestDatabase, databaseKind } from '#test/helpers/database.ts'
import { insertUserWithKey, testOrgId } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)

const FIELDS = {
  action: "'key.tampered'",
  actor: '\'{"type":"cli"}\'::jsonb',
  at: "at + interval '1 microsecond'",
  changes: '\'{"scopes":{"before":[],"after":["auth:admin"]}}\'::jsonb',
  details: '\'{"tampered":true}\'::jsonb',
  key_id: 'gen_random_uuid()',
  prev_hash: "repeat('a', 64)",
  hash: "repeat('b', 64)"
} as const

t.test('verify names exactly the altered row, whatever the history and the alteration', async (t) => {
  const db = await createTestDatabase(t)
  const orgId = await testOrgId(db)
  const Op = fc.constantFrom('key', 'scopes', 'revoke', 'expire', 'member', 'disable')
  const withoutGuard = async (sql: string, params: unknown[]) => {
    const client = await db.pool.connect()
    try {
      await client.query('BEGIN')
      await client.query('ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only')
      await client.query(sql, params)
      await client.query('ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only')
      await client.query('COMMIT')
    } finally {
      client.release()
    }
  }

  await fc.assert(fc.asyncProperty(
    fc.array(Op, { minLength: 1, maxLength: 6 }), fc.nat({ max: 1_000_000 }), fc.constantFrom(...Object.keys(FIELDS) as Array<keyof typeof FIELDS>),
    async (ops, pick, field) => {
      const { keyId, userId } = await insertUserWithKey(db, { organizationId: orgId })
      for (const op of ops) {
        if (op === 'key') await insertUserWithKey(db, { organizationId: orgId })
        if (op === 'scopes') await db.pool.query('UPDATE api_keys SET scopes = array_append(scopes, $2) WHERE id = $1', [keyId, `s${pick}`])
        if (op === 'revoke') await db.pool.query('UPDATE api_keys SET revoked_at = CASE WHEN revoked_at IS NULL THEN now() END WHERE id = $1', [keyId])
        if (op === 'expire') await db.pool.query("UPDATE api_keys SET expires_at = now() + interval '1 day' * (1 + random()) WHERE id = $1", [keyId])
        if (op === 'member') await db.pool.query("UPDATE organization_memberships SET role = CASE WHEN role = 'member' THEN 'admin' ELSE 'member' END::membership_role WHERE user_id = $1", [userId])
        if (op === 'disable') await db.pool.query('UPDATE users SET disabled_at = CASE WHEN disabled_at IS NULL THEN now() END WHERE id = $1', [userId])
      }
      const before = await verifyChain(db.prisma)
      if (!before.ok) return false
      const { rows: [victim] } = await db.pool.query<{ id: string, seq: string }>(
        'SELECT id, seq::text FROM audit_events ORDER BY seq OFFSET $1::bigint % (SELECT count(*) FROM audit_events) LIMIT 1', [pick])
      const { rows: [original] } = await db.pool.query(`SELECT ${field}::text AS value FROM audit_events WHERE id = $1`, [victim.id])
      await withoutGuard(`UPDATE audit_events SET ${field} = ${FIELDS[field]} WHERE id = $1`, [victim.id])
      const broken = await verifyChain(db.prisma)
      await withoutGuard(`UPDATE audit_events SET ${field} = $2 WHERE id = $1`, [victim.id, original.value])
      const restored = await verifyChain(db.prisma)
      // A new hash on the last row is the one alteration the head row also catches: it is named all the same.
      return !broken.ok && broken.firstBad?.seq === victim.seq && restored.ok
    }
  ), { numRuns: 12 })
  t.pass('property held')
})
