import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { authErrorResponses } from '#src/schemas/common.ts'

const NullableString = Type.Union([Type.String(), Type.Null()])

const Project = Type.Object({
  id: Type.String({ format: 'uuid' }),
  organizationId: NullableString,
  name: Type.String(),
  description: NullableString,
  teamId: NullableString,
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' })
})

const projects: FastifyPluginAsyncTypebox = async (fastify) => {
  // Battra's shape: a bare array, the caller's organization only.
  fastify.get('/', {
    schema: {
      summary: "Projects of the calling key's organization",
      querystring: Type.Object({
        limit: Type.Integer({ minimum: 1, maximum: 100, default: 50 }),
        offset: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 0 })
      }),
      response: { 200: Type.Array(Project), ...authErrorResponses }
    }
  }, async (request) => {
    const { organizationId } = request.auth!
    // A personal key belongs to no organization and so sees no organization's projects.
    if (organizationId === null) return []
    const rows = await fastify.prisma.project.findMany({
      where: { organizationId, deletedAt: null },
      orderBy: [{ createdAt: 'asc' }, { id: 'asc' }],
      take: request.query.limit,
      skip: request.query.offset,
      select: { id: true, organizationId: true, name: true, description: true, teamId: true, createdAt: true, updatedAt: true }
    })
    return rows.map((row) => ({ ...row, createdAt: row.createdAt.toISOString(), updatedAt: row.updatedAt.toISOString() }))
  })
}

export default projects
