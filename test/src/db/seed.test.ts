// Seeding is decided from the database: it adds what was never seeded, in one transaction, and never
// rewrites or resurrects what an operator changed or deleted.
import t from 'tap'
import { hashApiKey } from '#src/auth/api-key.ts'
import { PERSONAS, seedDevPersonas } from '#src/db/seed.ts'
import { createTestDatabase, databaseKind } from '#test/helpers/database.ts'

t.comment(`database: ${databaseKind}`)

const AGENT_KEYS = ['battra-devops-key-1', 'battra-documenter-key-1']

t.test('seeding twice seeds once', async (t) => {
  const db = await createTestDatabase(t, { seed: false })
  const first = await seedDevPersonas(db.prisma)
  t.equal(first.length, PERSONAS.length + 2, 'the organization, every persona and the projects')
  t.same(await seedDevPersonas(db.prisma), [], 'the second run finds nothing to do')
  t.equal(await db.prisma.user.count(), PERSONAS.length)
  t.equal(await db.prisma.apiKey.count(), PERSONAS.length)
  t.equal(await db.prisma.project.count(), 3)
})

t.test('a database seeded before the agent personas existed gets them, and nothing else changes', async (t) => {
  const db = await createTestDatabase(t, { seed: false })
  await seedDevPersonas(db.prisma)
  // As a folder seeded by an earlier version looks: no agents, no markers; and an operator changed dev.
  const agents = await db.prisma.apiKey.findMany({ where: { tokenHash: { in: AGENT_KEYS.map(hashApiKey) } }, select: { userId: true } })
  await db.prisma.user.deleteMany({ where: { id: { in: agents.map((a) => a.userId) } } })
  await db.prisma.seedMarker.deleteMany({})
  await db.prisma.user.update({ where: { externalId: 'user_test_dev' }, data: { email: 'renamed@example.com', role: 'sponsor' } })
  const seeded = await seedDevPersonas(db.prisma)
  t.same(seeded.filter((name) => name.startsWith('persona:') && !name.includes('agent')).length, 6, 'the existing personas are recorded as seeded')
  for (const key of AGENT_KEYS) t.equal(await db.prisma.apiKey.count({ where: { tokenHash: hashApiKey(key) } }), 1, `${key} added`)
  t.match(await db.prisma.user.findUniqueOrThrow({ where: { externalId: 'user_test_dev' } }), { email: 'renamed@example.com', role: 'sponsor' }, 'a changed persona is not overwritten')
  t.equal(await db.prisma.user.count(), PERSONAS.length, 'no duplicates')
  t.equal(await db.prisma.project.count(), 3, 'projects not seeded twice')
})

t.test('a persona an operator deleted stays deleted', async (t) => {
  const db = await createTestDatabase(t)
  await db.prisma.user.delete({ where: { externalId: 'user_agent_devops_1' } })
  t.same(await seedDevPersonas(db.prisma), [])
  t.equal(await db.prisma.user.count({ where: { externalId: 'user_agent_devops_1' } }), 0)
})

t.test('an interrupted seed leaves nothing half done, and the next one completes it', async (t) => {
  const db = await createTestDatabase(t, { seed: false })
  // Break the last step (the projects) so the transaction fails after every persona was written.
  await db.pool.query('ALTER TABLE projects RENAME TO projects_away')
  await t.rejects(seedDevPersonas(db.prisma))
  t.equal(await db.prisma.user.count(), 0, 'no persona without the rest')
  t.equal(await db.prisma.seedMarker.count(), 0, 'no marker either')
  await db.pool.query('ALTER TABLE projects_away RENAME TO projects')
  t.equal((await seedDevPersonas(db.prisma)).length, PERSONAS.length + 2)
  t.equal(await db.prisma.user.count(), PERSONAS.length)
})
