// The benchmark's ceiling for database routes: a bare Fastify 5 (logger off, no plugins, no auth) that
// answers GET /api/v1/projects with one parameterised SELECT through `pg`, the same statement and answer
// shape as ours. DATABASE_URL, BARE_ORGANIZATION_ID; prints "listening <url>".
// The same kept nextTick entry shape as ours (src/tick-object-shape.ts): without it an idle spell costs
// a bare process too about 2 µs per request at random, and the ceiling would move with it.
import '../../dist/src/tick-object-shape.js'
import Fastify from 'fastify'
import pg from 'pg'

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 })
const organizationId = process.env.BARE_ORGANIZATION_ID
const app = Fastify({ logger: false })
app.get('/api/v1/projects', async (request) => {
  const limit = Number(request.query.limit ?? 50)
  const offset = Number(request.query.offset ?? 0)
  const { rows } = await pool.query(
    `SELECT id, organization_id, name, description, team_id, created_at, updated_at
       FROM projects
      WHERE organization_id = $1 AND deleted_at IS NULL
      ORDER BY created_at, id
      LIMIT $2 OFFSET $3`,
    [organizationId, limit, offset]
  )
  return rows.map((row) => ({
    id: row.id,
    organizationId: row.organization_id,
    name: row.name,
    description: row.description,
    teamId: row.team_id,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString()
  }))
})
const url = await app.listen({ host: '127.0.0.1', port: 0 })
console.log(`listening ${url}`)
process.on('SIGTERM', () => app.close().then(() => pool.end()).then(() => process.exit(0)))
