import t from 'tap'
import { SEED_PROJECTS } from '#src/db/seed.ts'
import { build, statementsDuring } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'
import { insertOrganization, insertUserWithKey, keyOf, testOrgId } from '#test/helpers/fixtures.ts'

t.comment(`database: ${databaseKind}`)
const { app, db } = await build(t)
const orgId = await testOrgId(db)
const otherOrg = await insertOrganization(db, 'Other Org')
await db.prisma.project.create({ data: { organizationId: otherOrg, name: 'Secret project of another org' } })
await db.prisma.project.create({ data: { organizationId: orgId, name: 'Deleted project', deletedAt: new Date() } })
await db.prisma.project.create({ data: { organizationId: null, name: 'Project of no organization' } })

const list = (key: string, query = '') => app.inject({ url: `/api/v1/projects${query}`, headers: { 'x-api-key': key } })

t.test("Battra's shape: a bare array of the caller's organization's projects", async (t) => {
  const response = await list(keyOf('dev+clerk_test@mock.com'))
  t.equal(response.statusCode, 200)
  const projects = response.json()
  t.ok(Array.isArray(projects))
  t.same(projects.map((p: { name: string }) => p.name).sort(), SEED_PROJECTS.map((p) => p.name).sort(), 'the seeded projects, no deleted one, no other org')
  for (const project of projects) {
    t.same(Object.keys(project).sort(), ['createdAt', 'description', 'id', 'name', 'organizationId', 'teamId', 'updatedAt'])
    t.equal(project.organizationId, orgId)
    t.match(project.createdAt, /^\d{4}-\d\d-\d\dT/)
  }
})

t.test('another organization sees only its own projects', async (t) => {
  const { key } = await insertUserWithKey(db, { organizationId: otherOrg })
  const projects = (await list(key)).json()
  t.same(projects.map((p: { name: string }) => p.name), ['Secret project of another org'])
})

t.test('a personal key sees no organization projects', async (t) => {
  const { key } = await insertUserWithKey(db, { organizationId: null })
  t.same((await list(key)).json(), [])
})

t.test('limit and offset page through the list', async (t) => {
  const key = keyOf('dev+clerk_test@mock.com')
  const all = (await list(key)).json()
  const first = (await list(key, '?limit=2')).json()
  const rest = (await list(key, '?limit=2&offset=2')).json()
  t.same([...first, ...rest], all)
  t.equal(first.length, 2)
  t.equal((await list(key, '?colour=red')).statusCode, 200, 'unknown parameters are ignored')
  for (const bad of ['?limit=0', '?limit=101', '?offset=-1', '?limit=abc']) {
    const response = await list(key, bad)
    t.equal(response.statusCode, 400, bad)
    t.equal(response.json().code, 'FST_ERR_VALIDATION')
  }
})

t.test('a page of projects costs one statement (the key cached)', async (t) => {
  const key = keyOf('sm+clerk_test@mock.com')
  t.equal((await list(key)).statusCode, 200)
  t.equal(await statementsDuring(app, () => list(key, '?limit=3')), 1)
})

t.test('concurrent reads all answer (connections of the pool do not trip over each other)', async (t) => {
  // On the embedded database every pooled connection shares one session: a named statement prepared on
  // one made the next connection's first read fail with a 500.
  const key = keyOf('qa+clerk_test@mock.com')
  const responses = await Promise.all(Array.from({ length: 30 }, () => list(key)))
  t.same(responses.map((r) => r.statusCode), responses.map(() => 200))
})
