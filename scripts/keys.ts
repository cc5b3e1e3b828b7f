// npm run keys -- create|list|update|revoke|rotate|org-limit|org-leaks ... — key management for operators, without HTTP.
// Works on PostgreSQL (DATABASE_URL) or the embedded database (running service or data folder).
import { parseArgs } from 'node:util'
import { loadConfig } from '#src/config.ts'
import type { PrismaClient } from '#src/db/pool.ts'
import { createKey, listKeys, revokeKey, rotateKey, setOrganizationRateLimit, updateKey, updateOrganization, type Actor, type KeyChanges } from '#src/keys/management.ts'
import { formatRateLimit, parseRateLimit, type RateLimit } from '#src/policy/key-policy.ts'
import type { KeyView } from '#src/schemas/keys.ts'
import { connectForTools } from '#src/db/tool-connection.ts'
import { clearErrorLine } from '#scripts/lib/cli-errors.ts'

const USAGE = `usage: npm run keys -- <command> [options]

  create --user <email|id|external id> [--org <slug|id|external id> | --personal]
         [--scopes a,b] [--description TEXT] [--expires-at ISO-8601 | --expires-in 30d|12h|90m]
         [--allowed-cidrs 10.0.0.0/8,2001:db8::/32] [--rate-limit 100/60s]
  list   [--user ...] [--org ...] [--include-revoked]
  update <key id> [--description TEXT] [--expires-at ... | --expires-in ... | --no-expiry] [--scopes a,b]
         [--allowed-cidrs a,b | --any-address] [--rate-limit 100/60s | --no-rate-limit]
  revoke <key id>
  rotate <key id> [--grace SECONDS]
  org-limit <org> <100/60s | none>    the rate limit all the organization's keys share
  org-leaks <org> <revoke | report-only>
                                      what a leak report does to the organization's keys: revoke them
                                      (the default), or only record the report on them (report only)

  --json  machine-readable output
Rate limits: REQUESTS/WINDOW, the window in s, m, h or d (100/60s, 1000/1h, 10/s).
A created key is printed once; only its hash is stored.`

class UsageError extends Error {}
/** A user or organization named on the command line that does not exist. */
class NotFoundError extends Error {}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

async function findUser (prisma: PrismaClient, ref: string): Promise<string> {
  const users = await prisma.user.findMany({
    where: UUID.test(ref) ? { id: ref } : { OR: [{ email: ref }, { externalId: ref }] },
    select: { id: true },
    take: 2
  })
  if (users.length === 0) throw new NotFoundError(`unknown user "${ref}"`)
  if (users.length > 1) throw new UsageError(`"${ref}" names more than one user; use the user's id`)
  return users[0].id
}

async function findOrganization (prisma: PrismaClient, ref: string): Promise<string> {
  const org = await prisma.organization.findFirst({
    where: UUID.test(ref) ? { id: ref } : { OR: [{ slug: ref }, { externalId: ref }] },
    select: { id: true }
  })
  if (org === null) throw new NotFoundError(`unknown organization "${ref}"`)
  return org.id
}

function expiryFrom (at: string | undefined, within: string | undefined): Date | null {
  if (at !== undefined && within !== undefined) throw new UsageError('give --expires-at or --expires-in, not both')
  if (at !== undefined) {
    const date = new Date(at)
    if (Number.isNaN(date.getTime())) throw new UsageError(`--expires-at "${at}" is not a date`)
    return date
  }
  if (within !== undefined) {
    const match = /^(\d+)([dhm])$/.exec(within)
    if (match === null) throw new UsageError(`--expires-in "${within}" must look like 30d, 12h or 90m`)
    const unit = { d: 86_400_000, h: 3_600_000, m: 60_000 }[match[2] as 'd' | 'h' | 'm']
    return new Date(Date.now() + Number(match[1]) * unit)
  }
  return null
}

function rateLimitFrom (text: string | undefined, none: boolean | undefined): RateLimit | null | undefined {
  if (text !== undefined && none === true) throw new UsageError('give --rate-limit or --no-rate-limit, not both')
  if (none === true) return null
  if (text === undefined) return undefined
  const limit = parseRateLimit(text)
  if (limit === undefined) throw new UsageError(`--rate-limit "${text}" must look like 100/60s, 1000/1h or 10/s (at most one day)`)
  return limit
}

function cidrsFrom (text: string | undefined, any: boolean | undefined): string[] | undefined {
  if (text !== undefined && any === true) throw new UsageError('give --allowed-cidrs or --any-address, not both')
  if (any === true) return []
  return text?.split(',').map((entry) => entry.trim())
}

const list = (text: string | undefined): string[] | undefined => text?.split(',').map((s) => s.trim()).filter((s) => s !== '')

function row (key: KeyView): string {
  let state = key.revokedAt !== null
    ? key.revokedReason === 'leaked' ? 'revoked(leaked)' : 'revoked'
    : key.expiresAt !== null && Date.parse(key.expiresAt) <= Date.now() ? 'expired' : key.replacedById !== null ? 'rotated' : 'active'
  // Reported leaked but not revoked (a report-only organization): its owner should rotate it.
  if (key.leakReport !== null && key.revokedReason !== 'leaked') state += '(leak-reported)'
  const networks = key.allowedCidrs.join(',') || 'any'
  const limit = key.rateLimit === null ? 'none' : formatRateLimit(key.rateLimit)
  return [key.id, key.hint, state, key.scopes.join(',') || '-', key.expiresAt ?? 'never', key.lastUsedAt ?? 'never', networks, limit, key.description ?? ''].join('  ')
}
const HEADER = 'id  hint  state  scopes  expires  last used  networks  rate limit  description'

/** An operator at the command line: the rules of auth:admin. */
const OPERATOR: Actor = { type: 'cli' }

async function main (argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      user: { type: 'string' },
      org: { type: 'string' },
      personal: { type: 'boolean' },
      scopes: { type: 'string' },
      description: { type: 'string' },
      'expires-at': { type: 'string' },
      'expires-in': { type: 'string' },
      'include-revoked': { type: 'boolean' },
      grace: { type: 'string' },
      'no-expiry': { type: 'boolean' },
      'allowed-cidrs': { type: 'string' },
      'any-address': { type: 'boolean' },
      'rate-limit': { type: 'string' },
      'no-rate-limit': { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean' }
    }
  })
  const [command, id, limitText] = positionals
  if (values.help === true || command === undefined) {
    console.log(USAGE)
    return command === undefined && values.help !== true ? 2 : 0
  }
  if (!['create', 'list', 'update', 'revoke', 'rotate', 'org-limit', 'org-leaks'].includes(command)) throw new UsageError(`unknown command "${command}"`)
  if (['update', 'revoke', 'rotate'].includes(command) && (id === undefined || !UUID.test(id))) throw new UsageError(`${command} needs a key id (a UUID)`)
  if (command === 'org-limit' && (id === undefined || limitText === undefined)) throw new UsageError('org-limit needs an organization and a limit (100/60s) or none')
  if (command === 'org-leaks' && (id === undefined || !['revoke', 'report-only'].includes(limitText ?? ''))) throw new UsageError('org-leaks needs an organization and revoke or report-only')
  const orgLimit = command === 'org-limit' ? (limitText === 'none' ? null : rateLimitFrom(limitText, false)) : undefined
  const allowedCidrs = cidrsFrom(values['allowed-cidrs'], values['any-address'])
  const rateLimit = rateLimitFrom(values['rate-limit'], values['no-rate-limit'])
  const json = values.json === true
  const print = (value: unknown, text: string) => console.log(json ? JSON.stringify(value, null, 2) : text)

  // Listing creates nothing; a change may create the folder's database, as a first start would (the first admin key).
  const { prisma, where, close } = await connectForTools(loadConfig(), { create: command !== 'list' })
  try {
    if (command === 'create') {
      if (values.user === undefined) throw new UsageError('create needs --user')
      if (values.personal === true && values.org !== undefined) throw new UsageError('give --org or --personal, not both')
      const userId = await findUser(prisma, values.user)
      const organizationId = values.org !== undefined ? await findOrganization(prisma, values.org) : null
      const created = await createKey(prisma, OPERATOR, {
        userId,
        organizationId,
        description: values.description,
        scopes: list(values.scopes) ?? [],
        expiresAt: expiryFrom(values['expires-at'], values['expires-in']),
        ...(allowedCidrs === undefined ? {} : { allowedCidrs }),
        ...(rateLimit === undefined ? {} : { rateLimit })
      })
      print(created, `created key ${created.id} (${created.hint}) in ${where}\n\n  ${created.key}\n\nStore it now: it is not shown again.`)
    } else if (command === 'list') {
      const keys = await listKeys(prisma, OPERATOR, {
        userId: values.user === undefined ? undefined : await findUser(prisma, values.user),
        organizationId: values.org === undefined ? undefined : await findOrganization(prisma, values.org),
        includeRevoked: values['include-revoked'] === true,
        limit: 100
      })
      print(keys, keys.length === 0 ? 'no keys' : [HEADER, ...keys.map(row)].join('\n'))
    } else if (command === 'update') {
      if (values['no-expiry'] === true && (values['expires-at'] !== undefined || values['expires-in'] !== undefined)) throw new UsageError('give --expires-at, --expires-in or --no-expiry, not two')
      const expiry = values['no-expiry'] === true ? null : values['expires-at'] !== undefined || values['expires-in'] !== undefined ? expiryFrom(values['expires-at'], values['expires-in']) : undefined
      const changes: KeyChanges = {
        ...(values.description === undefined ? {} : { description: values.description === '' ? null : values.description }),
        ...(expiry === undefined ? {} : { expiresAt: expiry }),
        ...(values.scopes === undefined ? {} : { scopes: list(values.scopes) }),
        ...(allowedCidrs === undefined ? {} : { allowedCidrs }),
        ...(rateLimit === undefined ? {} : { rateLimit })
      }
      if (Object.keys(changes).length === 0) throw new UsageError('update needs at least one change')
      const updated = await updateKey(prisma, OPERATOR, id, changes)
      print(updated, `updated ${updated.id} (${updated.hint})\n${HEADER}\n${row(updated)}`)
    } else if (command === 'org-limit') {
      const organization = await setOrganizationRateLimit(prisma, OPERATOR, await findOrganization(prisma, id), orgLimit ?? null)
      print(organization, `${organization.slug}: ${organization.rateLimit === null ? 'no rate limit' : `at most ${organization.rateLimit.requests} requests per ${organization.rateLimit.windowSeconds} s, shared by all its keys`}`)
    } else if (command === 'org-leaks') {
      const organization = await updateOrganization(prisma, OPERATOR, await findOrganization(prisma, id), { leakAutoRevoke: limitText === 'revoke' })
      print(organization, `${organization.slug}: ${organization.leakAutoRevoke ? 'a leak report revokes the key at once' : 'report only: a leak report is recorded on the key, which keeps working'}`)
    } else if (command === 'revoke') {
      const revoked = await revokeKey(prisma, OPERATOR, id)
      print(revoked, `revoked ${revoked.id} (${revoked.hint})`)
    } else {
      const grace = values.grace === undefined ? 0 : Number(values.grace)
      const { created, old } = await rotateKey(prisma, OPERATOR, id, grace)
      print({ ...created, previous: old }, `rotated ${old.id}: it stops working at ${old.expiresAt}\nnew key ${created.id} (${created.hint}):\n\n  ${created.key}\n\nStore it now: it is not shown again.`)
    }
  } finally {
    await close()
  }
  return 0
}

/** Refusals of key management carry the code the HTTP API answers with (src/errors.ts). */
const isRefusal = (error: unknown): error is Error & { code: string, statusCode: number } =>
  error instanceof Error && typeof (error as { statusCode?: unknown }).statusCode === 'number' && typeof (error as { code?: unknown }).code === 'string'

try {
  process.exitCode = await main(process.argv.slice(2))
} catch (error) {
  // A data folder held by a process that is not (yet) serving its database, or one that cannot open, is
  // the operator's to act on: its message says what to do, a stack trace would bury it.
  const line = clearErrorLine(error, (error) => error instanceof UsageError || error instanceof NotFoundError || isRefusal(error))
  if (line !== undefined) {
    const code = isRefusal(error) ? ` (${error.code})` : ''
    console.error(`error: ${line}${code}`)
    if (error instanceof UsageError) console.error(`\n${USAGE}`)
    process.exitCode = 1
  } else {
    throw error
  }
}
