// npm run audit -- verify|list|prune ... — the audit trail for operators: check its hash chain, read it,
// and prune old events (leaving an anchor so that what is kept still verifies).
// Works on PostgreSQL (DATABASE_URL) or the embedded database (running service or data folder).
import { parseArgs } from 'node:util'
import { pruneChain, verifyChain } from '#src/audit/chain.ts'
import { listEvents } from '#src/audit/events.ts'
import { loadConfig } from '#src/config.ts'
import { clearErrorLine } from '#scripts/lib/cli-errors.ts'
import { connectForTools } from '#src/db/tool-connection.ts'

const USAGE = `usage: npm run audit -- <command> [options]

  verify                     walk the hash chain; exit 1 naming the first row that does not match
  list   [--key ID] [--user ID] [--org ID] [--action NAME] [--since ISO] [--until ISO] [--limit N] [--cursor SEQ]
  prune  --before ISO-8601   delete events recorded before that instant, leaving an anchor (verify still passes)

  --json  machine-readable output`

class UsageError extends Error {}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

function uuid (value: string | undefined, option: string): string | undefined {
  if (value !== undefined && !UUID.test(value)) throw new UsageError(`${option} must be a UUID`)
  return value?.toLowerCase()
}

function instant (value: string | undefined, option: string): string | undefined {
  if (value === undefined) return undefined
  const ms = Date.parse(value)
  if (Number.isNaN(ms)) throw new UsageError(`${option} "${value}" is not a date`)
  return new Date(ms).toISOString()
}

async function main (argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      key: { type: 'string' },
      user: { type: 'string' },
      org: { type: 'string' },
      action: { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      limit: { type: 'string' },
      cursor: { type: 'string' },
      before: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false }
    }
  })
  const [command] = positionals
  if (values.help || command === undefined) {
    console.log(USAGE)
    return values.help ? 0 : 1
  }
  if (!['verify', 'list', 'prune'].includes(command)) throw new UsageError(`unknown command "${command}"`)
  const print = (value: unknown, text: string) => console.log(values.json ? JSON.stringify(value, null, 2) : text)
  const query = {
    keyId: uuid(values.key, '--key'),
    userId: uuid(values.user, '--user'),
    organizationId: uuid(values.org, '--org'),
    action: values.action,
    since: instant(values.since, '--since'),
    until: instant(values.until, '--until'),
    limit: values.limit === undefined ? 50 : Number(values.limit),
    cursor: values.cursor
  }
  if (!Number.isInteger(query.limit) || query.limit < 1 || query.limit > 1000) throw new UsageError('--limit must be an integer from 1 to 1000')
  if (query.cursor !== undefined && !/^\d{1,18}$/.test(query.cursor)) throw new UsageError('--cursor must be a seq (the nextCursor printed)')
  const before = instant(values.before, '--before')
  if (command === 'prune' && before === undefined) throw new UsageError('prune needs --before ISO-8601')
  // A date in the future would delete the whole trail, the events of the last minutes included: a typo, not retention.
  if (command === 'prune' && new Date(before!).getTime() > Date.now()) throw new UsageError(`prune --before ${before} is in the future; the trail is not pruned past now`)

  // The trail of a database that does not exist yet is no answer: nothing is created for it.
  const { prisma, where, close } = await connectForTools(loadConfig(), { create: false })
  try {
    if (command === 'verify') {
      const result = await verifyChain(prisma)
      if (result.ok) {
        print(result, `ok: ${result.checked} events verified in ${where}; head seq ${result.head.seq}, hash ${result.head.hash}`)
        return 0
      }
      const bad = result.firstBad!
      print(result, `BROKEN at seq ${bad.seq}${bad.id === null ? '' : ` (event ${bad.id})`}: ${bad.reason}; ${result.checked} events verified before it`)
      return 1
    }
    if (command === 'prune') {
      const result = await pruneChain(prisma, new Date(before!))
      print(result, result.pruned === 0
        ? `nothing recorded before ${before}`
        : `pruned ${result.pruned} events recorded before ${before}; the chain now starts at seq ${result.firstSeq}, anchored to ${result.prevHash}`)
      return 0
    }
    const page = await listEvents(prisma, { type: 'cli' }, query)
    print(page, [
      ...page.events.map((e) => {
        const actor = e.actor.type === 'key' ? `key ${e.actor.keyId ?? ''}` : e.actor.type === 'database' ? `database:${e.actor.role ?? ''}` : e.actor.type
        const targets = [e.keyId === undefined ? '' : `key ${e.keyId}`, e.userId === undefined ? '' : `user ${e.userId}`, e.organizationId === undefined ? '' : `org ${e.organizationId}`].filter((x) => x !== '').join(' ')
        const changes = e.changes === undefined ? '' : ` ${Object.keys(e.changes).join(',')}`
        return `${e.seq}\t${e.at}\t${e.action}\t${actor}\t${targets}${changes}`
      }),
      page.nextCursor === null ? '' : `(more: --cursor ${page.nextCursor})`
    ].join('\n'))
    return 0
  } finally {
    await close()
  }
}

try {
  process.exitCode = await main(process.argv.slice(2))
} catch (error) {
  const line = clearErrorLine(error, (error) => error instanceof UsageError)
  if (line !== undefined) {
    console.error(`error: ${line}`)
    if (error instanceof UsageError) console.error(`\n${USAGE}`)
    process.exitCode = 1
  } else {
    throw error
  }
}
