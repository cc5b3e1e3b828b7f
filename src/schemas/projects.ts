// Battra's project, as GET /api/v1/projects answers it.
import { Type, type Static } from 'typebox'
import { DateTime, Nullable, Pagination, Uuid } from './common.ts'

export const ProjectSchema = Type.Object({
  id: Uuid,
  organizationId: Nullable(Uuid),
  name: Type.String(),
  description: Nullable(Type.String()),
  teamId: Nullable(Uuid),
  createdAt: DateTime,
  updatedAt: DateTime
})
export type Project = Static<typeof ProjectSchema>

export const ListProjectsQuerySchema = Type.Object({ ...Pagination })
