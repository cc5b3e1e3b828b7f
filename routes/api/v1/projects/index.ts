import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { listProjects } from '#src/projects/list.ts'
import { authErrorResponses } from '#src/schemas/common.ts'
import { ListProjectsQuerySchema, ProjectSchema } from '#src/schemas/projects.ts'

const projects: FastifyPluginAsyncTypebox = async (fastify) => {
  // Battra's shape: a bare array, the caller's organization only.
  fastify.get('/', {
    schema: {
      summary: "Projects of the calling key's organization",
      querystring: ListProjectsQuerySchema,
      response: { 200: Type.Array(ProjectSchema), ...authErrorResponses }
    }
  }, async (request) => {
    const { organizationId } = request.auth!
    // A personal key belongs to no organization and so sees no organization's projects.
    if (organizationId === null) return []
    return listProjects(fastify.database.pool, organizationId, request.query.limit, request.query.offset)
  })
}

export default projects
