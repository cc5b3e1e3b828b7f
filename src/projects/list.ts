// The read behind GET /api/v1/projects: one parameterised statement through `pg`, mapped to the answer's
// shape. Prisma's query layer doubled the cost of this read
// against a bare `pg` query in the benchmark (README, Performance); writes stay with Prisma.
import type pg from 'pg'
import type { Project } from '#src/schemas/projects.ts'

interface ProjectRow {
  id: string
  organization_id: string | null
  name: string
  description: string | null
  team_id: string | null
  created_at: Date
  updated_at: Date
}

// Unnamed on purpose: a named (server-side prepared) statement breaks where connections share a session
// or move between sessions: PgBouncer in transaction mode, and the embedded database's socket, which
// serves every connection from one PGlite session (the second connection to prepare it failed with
// "already exists"). Planning this statement costs less than the round trip.
const LIST_PROJECTS = `SELECT id, organization_id, name, description, team_id, created_at, updated_at
                         FROM projects
                        WHERE organization_id = $1 AND deleted_at IS NULL
                        ORDER BY created_at, id
                        LIMIT $2 OFFSET $3`

function toProject (row: ProjectRow): Project {
  return {
    id: row.id,
    organizationId: row.organization_id,
    name: row.name,
    description: row.description,
    teamId: row.team_id,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString()
  }
}

/** The organization's projects that are not deleted, oldest first. */
export async function listProjects (pool: pg.Pool, organizationId: string, limit: number, offset: number): Promise<Project[]> {
  const { rows } = await pool.query<ProjectRow>(LIST_PROJECTS, [organizationId, limit, offset])
  return rows.map(toProject)
}
