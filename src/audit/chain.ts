// Tamper evidence: walking the hash chain of audit_events, and pruning it with an anchor so that what is
// kept still verifies. Each row's hash is SHA-256(prev_hash + "\n" + battra_audit_payload(row)); the first
// row chains to 64 zeros, or, after pruning, to the anchor recorded for its seq.
import { createHash } from 'node:crypto'
import type { PrismaClient } from '#src/db/pool.ts'

export const GENESIS_HASH = '0'.repeat(64)
const BATCH = 1000

export interface VerifyResult {
  ok: boolean
  /** Rows checked. */
  checked: number
  /** The first row that does not match, and why. */
  firstBad?: { seq: string, id: string | null, reason: string }
  /** The chain's head as recorded (seq and hash): keep it elsewhere to detect a rewritten chain. */
  head: { seq: string, hash: string }
}

interface ChainRow { seq: bigint, id: string, prev_hash: string, hash: string, payload: string }

export const chainHash = (prevHash: string, payload: string): string =>
  createHash('sha256').update(`${prevHash}\n${payload}`, 'utf8').digest('hex')

/** Walks the whole chain, oldest first; stops at the first row that does not match. */
export async function verifyChain (prisma: PrismaClient): Promise<VerifyResult> {
  const [head] = await prisma.$queryRaw<Array<{ last_seq: bigint, last_hash: string }>>`SELECT last_seq, last_hash FROM audit_chain WHERE id = 1`
  const anchors = new Map((await prisma.$queryRaw<Array<{ first_seq: bigint, prev_hash: string }>>`SELECT first_seq, prev_hash FROM audit_anchors`)
    .map((anchor) => [anchor.first_seq, anchor.prev_hash]))
  const headView = { seq: head.last_seq.toString(), hash: head.last_hash }
  const bad = (seq: bigint, id: string | null, reason: string, checked: number): VerifyResult =>
    ({ ok: false, checked, firstBad: { seq: seq.toString(), id, reason }, head: headView })
  let previous: { seq: bigint, hash: string } | undefined
  let checked = 0
  for (;;) {
    const after = previous?.seq ?? -1n
    const rows = await prisma.$queryRaw<ChainRow[]>`
      SELECT e.seq, e.id::text AS id, e.prev_hash, e.hash, battra_audit_payload(e) AS payload
        FROM audit_events e WHERE e.seq > ${after} ORDER BY e.seq LIMIT ${BATCH}`
    for (const row of rows) {
      let expectedPrev: string | undefined
      if (previous === undefined) {
        expectedPrev = row.seq === 1n ? GENESIS_HASH : anchors.get(row.seq)
        if (expectedPrev === undefined) return bad(row.seq, row.id, `rows before seq ${row.seq} are missing and no prune anchor accounts for them`, checked)
      } else {
        if (row.seq !== previous.seq + 1n) return bad(previous.seq + 1n, null, `row seq ${previous.seq + 1n} is missing (deleted)`, checked)
        expectedPrev = previous.hash
      }
      if (row.prev_hash !== expectedPrev) return bad(row.seq, row.id, 'prev_hash does not match the previous row', checked)
      if (chainHash(row.prev_hash, row.payload) !== row.hash) return bad(row.seq, row.id, 'content does not match its hash (edited)', checked)
      checked++
      previous = { seq: row.seq, hash: row.hash }
    }
    if (rows.length < BATCH) break
  }
  // The tail: rows deleted from the end leave the head pointing past them.
  if (previous === undefined) {
    const anchored = anchors.get(head.last_seq + 1n)
    if (head.last_seq !== 0n && anchored !== head.last_hash) return bad(head.last_seq, null, 'the chain is empty but its head says otherwise', checked)
  } else if (previous.seq !== head.last_seq || previous.hash !== head.last_hash) {
    return bad(previous.seq + 1n, null, `rows after seq ${previous.seq} are missing: the head is at seq ${head.last_seq}`, checked)
  }
  return { ok: true, checked, head: headView }
}

export interface PruneResult { pruned: number, firstSeq: string, prevHash: string }

/**
 * Deletes the events recorded before `before` (the oldest first, up to the first one kept) and records an
 * anchor: the seq the chain now starts at and the hash it chains to. The prune itself is recorded as an
 * event (audit.pruned) by the command line's actor.
 */
export async function pruneChain (prisma: PrismaClient, before: Date): Promise<PruneResult> {
  return prisma.$transaction(async (tx) => {
    await tx.$executeRaw`SELECT set_config('battra.audit_prune', 'on', true), set_config('battra.actor', '{"type":"cli"}', true)`
    const [head] = await tx.$queryRaw<Array<{ last_seq: bigint, last_hash: string }>>`SELECT last_seq, last_hash FROM audit_chain WHERE id = 1 FOR UPDATE`
    const [kept] = await tx.$queryRaw<Array<{ seq: bigint | null }>>`SELECT min(seq) AS seq FROM audit_events WHERE at >= ${before}`
    const firstSeq = kept.seq ?? head.last_seq + 1n
    const [last] = await tx.$queryRaw<Array<{ hash: string }>>`SELECT hash FROM audit_events WHERE seq = ${firstSeq - 1n}`
    if (last === undefined) return { pruned: 0, firstSeq: firstSeq.toString(), prevHash: '' }
    const pruned = await tx.$executeRaw`DELETE FROM audit_events WHERE seq < ${firstSeq}`
    await tx.$executeRaw`
      INSERT INTO audit_anchors (pruned_before, pruned_count, first_seq, prev_hash) VALUES (${before}, ${pruned}, ${firstSeq}, ${last.hash})
      ON CONFLICT (first_seq) DO UPDATE SET pruned_count = audit_anchors.pruned_count + EXCLUDED.pruned_count, pruned_before = EXCLUDED.pruned_before`
    await tx.$executeRaw`SELECT set_config('battra.audit_prune', 'off', true)`
    await tx.$queryRaw`SELECT battra_audit_record('audit.pruned', NULL, NULL, NULL, NULL,
      jsonb_build_object('before', ${before.toISOString()}::text, 'pruned', ${pruned}::int, 'firstSeq', ${firstSeq.toString()}::text))::text AS id`
    return { pruned, firstSeq: firstSeq.toString(), prevHash: last.hash }
  }, { maxWait: 10_000, timeout: 120_000 })
}
