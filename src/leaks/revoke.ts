// What a leak report does to the keys it names, whoever reported it (GitHub secret scanning, the public
// route): each token that is one of our keys is revoked at once, or only flagged when its organization is
// "report only", and the report is recorded on the key for its owner (`leak_report`, `revoked_reason`).
//
// - A token that cannot be a key (a new-format key whose checksum fails, anything over 256 characters or
//   outside visible ASCII) is a false positive without any lookup; any other is looked up by hash (new keys
//   and legacy ones such as the seeded battra-dev-key-1), all of a report's tokens in one statement.
// - Writes are conditional (`revoked_at IS NULL`, and for a flag `leak_report IS NULL`): a replayed or
//   concurrent report finds nothing left to do and changes nothing; the answer is still true_positive.
// - One transaction for the report; before each key's change it names the actor in battra.actor
//   ({ type: 'system', reason: 'leaked', reporter, url, source }), which the database's triggers read.
// - The caller announces the revoked keys (invalidation); the revocation's trigger tells the other
//   instances too.
import { KEY_LENGTH, KEY_PREFIX, hashApiKey, isPlausibleKey } from '#src/auth/api-key.ts'
import { stripScheme } from '#src/auth/key-headers.ts'
import type { PrismaClient } from '#src/db/pool.ts'
import { asActor, setActor, type SystemActor } from '#src/keys/management.ts'
import { MAX_RECORDED_LOCATIONS, type LeakLocation, type LeakReport, type LeakReporter, type ReportLabel } from '#src/schemas/leaks.ts'

/** One token of a report and every place it was seen. */
export interface LeakSighting {
  token: string
  locations: ReadonlyArray<{ url?: string | undefined, source?: string | undefined }>
}

export interface LeakOutcome {
  /** Per distinct token: true_positive when it is one of our keys (whatever was done), else false_positive. */
  labels: Map<string, ReportLabel>
  /** Keys this report revoked: to announce to every instance. */
  revoked: string[]
  /** Keys this report flagged without revoking ("report only" organizations). */
  flagged: string[]
}

interface FoundKey {
  id: string
  tokenHash: string
  revokedAt: Date | null
  leakReport: unknown
  organization: { leakAutoRevoke: boolean } | null
}

// A key of the current form wherever it stands in what was pasted (a header line, a .env line, a URL).
const CURRENT_KEY_IN_TEXT = new RegExp(`(?<![0-9A-Za-z_])${KEY_PREFIX}[0-9A-Za-z]{${KEY_LENGTH - KEY_PREFIX.length}}(?![0-9A-Za-z])`, 'g')
// What people paste before a key: the header's name, another scheme (Bearer, Token). Keys hold neither.
const PASTED_BEFORE = /^(?:(?:x-api-key|authorization)[ \t]*:[ \t]*)?(?:(?:bearer|token)[ \t]+)?/i

/**
 * The key a person reported (found by outside probes: each of these was answered 202 and never revoked).
 * A key of the current form, with its checksum, is found wherever it stands; any other is read as the
 * service would read it from a header: without the whitespace around it (a line's end, copied from a
 * .env file), a header's name, or a scheme (`ApiKey`, `Bearer`, `Token`).
 */
export function reportedKey (reported: string): string {
  for (const [candidate] of reported.matchAll(CURRENT_KEY_IN_TEXT)) {
    if (isPlausibleKey(candidate)) return candidate
  }
  return stripScheme(reported.trim().replace(PASTED_BEFORE, ''))
}

/**
 * A reported token as a log line may name it: never the token (it may be a working key), only its hash,
 * which finds the key (api_keys.token_hash) for an operator who must act on the report by hand. Undefined
 * for a token that cannot be a key: there is nothing to act on.
 */
export function reportedTokenForLog (token: string): { tokenHash: string } | undefined {
  return isPlausibleKey(token) ? { tokenHash: hashApiKey(token) } : undefined
}

const emptyToNull = (value: string | undefined): string | null => value === undefined || value === '' ? null : value

/** What the key records of the report (the first one: later reports of a flagged key do not replace it). */
export function leakReportFor (reporter: LeakReporter, sighting: LeakSighting, at: Date): LeakReport {
  const locations: LeakLocation[] = sighting.locations.slice(0, MAX_RECORDED_LOCATIONS).map((location) => ({ url: emptyToNull(location.url), source: emptyToNull(location.source) }))
  return { reporter, reportedAt: at.toISOString(), url: locations[0]?.url ?? null, source: locations[0]?.source ?? null, locations }
}

function actorFor (reporter: LeakReporter, sighting: LeakSighting): SystemActor {
  const first = sighting.locations[0]
  const actor: SystemActor = { type: 'system', reason: 'leaked', reporter }
  if (first?.url !== undefined && first.url !== '') actor.url = first.url
  if (first?.source !== undefined && first.source !== '') actor.source = first.source
  return actor
}

/**
 * Acts on the tokens of one report. Sightings should be distinct tokens (src/leaks/report.ts); a repeated
 * token is answered once. Throws only when the database fails (nothing is then changed).
 */
export async function handleLeakedTokens (prisma: PrismaClient, reporter: LeakReporter, sightings: readonly LeakSighting[], now = new Date()): Promise<LeakOutcome> {
  const labels = new Map<string, ReportLabel>()
  const byHash = new Map<string, LeakSighting>()
  for (const sighting of sightings) {
    labels.set(sighting.token, 'false_positive')
    if (isPlausibleKey(sighting.token)) byHash.set(hashApiKey(sighting.token), sighting)
  }
  const outcome: LeakOutcome = { labels, revoked: [], flagged: [] }
  if (byHash.size === 0) return outcome

  const found: FoundKey[] = await prisma.apiKey.findMany({
    where: { tokenHash: { in: [...byHash.keys()] } },
    select: { id: true, tokenHash: true, revokedAt: true, leakReport: true, organization: { select: { leakAutoRevoke: true } } }
  })
  for (const key of found) labels.set(byHash.get(key.tokenHash)!.token, 'true_positive')

  // A revoked key has nothing left to do (a replay); a flagged one, unless its organization now revokes.
  const pending = found.filter((key) => key.revokedAt === null && (key.organization?.leakAutoRevoke !== false || key.leakReport === null))
  if (pending.length === 0) return outcome

  await asActor(prisma, actorFor(reporter, byHash.get(pending[0].tokenHash)!), async (tx) => {
    for (const [index, key] of pending.entries()) {
      const sighting = byHash.get(key.tokenHash)!
      if (index > 0) await setActor(tx, actorFor(reporter, sighting))
      const report = JSON.stringify(leakReportFor(reporter, sighting, now))
      if (key.organization?.leakAutoRevoke === false) {
        const count = await tx.$executeRaw`
          UPDATE api_keys SET leak_report = ${report}::jsonb, updated_at = ${now}
          WHERE id = ${key.id}::uuid AND revoked_at IS NULL AND leak_report IS NULL`
        if (count > 0) outcome.flagged.push(key.id)
      } else {
        // A key flagged earlier keeps its first report.
        const count = await tx.$executeRaw`
          UPDATE api_keys SET revoked_at = ${now}, revoked_reason = 'leaked', leak_report = COALESCE(leak_report, ${report}::jsonb), updated_at = ${now}
          WHERE id = ${key.id}::uuid AND revoked_at IS NULL`
        if (count > 0) outcome.revoked.push(key.id)
      }
    }
  })
  return outcome
}
