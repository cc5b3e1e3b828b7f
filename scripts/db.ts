// npm run db:migrate | db:seed — on PostgreSQL (DATABASE_URL) or the embedded database.
// npm run db:migrate -- resolve --rolled-back <name> | --applied <name>: `prisma migrate resolve`, for a
// migration recorded as started and never finished that the runner does not settle by itself.
import { parseArgs } from 'node:util'
import { loadConfig, ConfigError } from '#src/config.ts'
import { migrate, resolveMigration } from '#src/db/migrate.ts'
import { personaMarker, seedDevPersonas, PERSONAS } from '#src/db/seed.ts'
import { connectForTools } from '#src/db/tool-connection.ts'

const USAGE = `usage: npm run db:migrate
       npm run db:migrate -- resolve --rolled-back <migration>   (failed: apply it again on the next db:migrate)
       npm run db:migrate -- resolve --applied <migration>       (applied by hand: record it without running it)
       npm run db:seed`

type Command = { name: 'migrate' } | { name: 'seed' } | { name: 'resolve', migration: string, as: 'rolled-back' | 'applied' }

function parseCommand (argv: string[]): Command | string {
  let parsed
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { 'rolled-back': { type: 'string' }, applied: { type: 'string' } } })
  } catch (error) {
    return (error as Error).message
  }
  const { values, positionals } = parsed
  const [command, subcommand, ...extra] = positionals
  if (command === 'seed' && subcommand === undefined && values['rolled-back'] === undefined && values.applied === undefined) return { name: 'seed' }
  if (command !== 'migrate') return `unknown command "${positionals.join(' ')}"`
  if (subcommand === undefined) {
    return values['rolled-back'] === undefined && values.applied === undefined ? { name: 'migrate' } : '--rolled-back and --applied belong to `resolve`'
  }
  if (subcommand !== 'resolve' || extra.length > 0) return `unknown command "${positionals.join(' ')}"`
  const rolledBack = values['rolled-back']
  const applied = values.applied
  if ((rolledBack === undefined) === (applied === undefined)) return 'resolve needs exactly one of --rolled-back <migration> or --applied <migration>'
  const migration = rolledBack ?? applied!
  if (migration.trim() === '') return 'resolve needs a migration name (a folder of prisma/migrations)'
  return { name: 'resolve', migration, as: rolledBack !== undefined ? 'rolled-back' : 'applied' }
}

const command = parseCommand(process.argv.slice(2))
if (typeof command === 'string') {
  console.error(`error: ${command}\n\n${USAGE}`)
  process.exit(2)
}

let config
try {
  config = loadConfig()
} catch (error) {
  console.error(error instanceof ConfigError ? error.message : error)
  process.exit(1)
}

try {
  // Only seeding wants the embedded folder prepared as a first start would; migrate reports what it
  // applies, and resolve must reach a database whose migrations cannot run.
  const { pool, prisma, where, close } = await connectForTools(config, { prepare: command.name === 'seed', create: command.name !== 'resolve' })
  try {
    if (command.name === 'migrate') {
      const applied = await migrate(pool, undefined, (message) => console.warn(message))
      console.log(applied.length === 0 ? `${where}: no pending migrations` : `${where}: applied ${applied.join(', ')}`)
    } else if (command.name === 'resolve') {
      await resolveMigration(pool, command.migration, command.as)
      console.log(command.as === 'rolled-back'
        ? `${where}: migration ${command.migration} recorded as rolled back; \`npm run db:migrate\` applies it again`
        : `${where}: migration ${command.migration} recorded as applied, without running it`)
    } else {
      await migrate(pool)
      // What this run seeded, not the whole list: a persona seeded before, and perhaps revoked or changed
      // since, is never rewritten (found by an outside probe: it was listed as seeded again).
      const seeded = new Set(await seedDevPersonas(prisma))
      const keys = PERSONAS.filter((persona) => seeded.has(personaMarker(persona))).map((persona) => persona.key)
      console.log(seeded.size === 0
        ? `${where}: nothing to seed: every dev persona was seeded before (one changed, revoked or deleted since is left as it is)`
        : `${where}: seeded ${[...seeded].join(', ')}${keys.length > 0 ? ` (keys ${keys.join(', ')})` : ''}`)
    }
  } finally {
    await close()
  }
} catch (error) {
  console.error(`${command.name === 'resolve' ? 'migrate resolve' : command.name} failed: ${error instanceof Error ? error.message : String(error)}`)
  process.exitCode = 1
}
