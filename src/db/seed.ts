// The dev personas of Battra's reference document, an operator with the auth:admin scope, and Battra's
// agent personas. Their keys are public development keys; only their hashes are stored.
//
// Seeding is decided from the database, not from files: each thing seeded is recorded in
// seed_markers in the same transaction, so an interrupted seed is completed by the next start, a
// persona added to this list reaches existing databases, and one an operator changed or deleted is
// never written again.
import { hashApiKey, hintFor } from '#src/auth/api-key.ts'
import type { MembershipRole, UserRole } from '#src/schemas/claims.ts'
import type { PrismaClient } from './pool.ts'

export const TEST_ORG = { externalId: 'org_test_battra', slug: 'test-org', name: 'Test Org' }

export interface Persona {
  name: string
  email: string
  externalId: string
  role: UserRole
  orgRole: MembershipRole
  key: string
  scopes: string[]
}

export const PERSONAS: readonly Persona[] = [
  { name: 'Developer', email: 'dev+clerk_test@mock.com', externalId: 'user_test_dev', role: 'contributor', orgRole: 'member', key: 'battra-dev-key-1', scopes: [] },
  { name: 'Scrum Master', email: 'sm+clerk_test@mock.com', externalId: 'user_test_sm', role: 'managing_contributor', orgRole: 'admin', key: 'battra-sm-key-1', scopes: [] },
  { name: 'Product Owner', email: 'po+clerk_test@mock.com', externalId: 'user_test_po', role: 'product_owner', orgRole: 'admin', key: 'battra-po-key-1', scopes: [] },
  { name: 'QA', email: 'qa+clerk_test@mock.com', externalId: 'user_test_qa', role: 'contributor', orgRole: 'member', key: 'battra-qa-key-1', scopes: [] },
  { name: 'Sponsor', email: 'sponsor+clerk_test@mock.com', externalId: 'user_test_sponsor', role: 'sponsor', orgRole: 'member', key: 'battra-sponsor-key-1', scopes: [] },
  { name: 'Operator', email: 'ops+clerk_test@mock.com', externalId: 'user_test_ops', role: 'contributor', orgRole: 'owner', key: 'battra-admin-key-1', scopes: ['auth:admin'] },
  // Battra's own agent scripts and MCP server configuration use these two.
  { name: 'DevOps agent', email: 'devops-agent-1@battra.local', externalId: 'user_agent_devops_1', role: 'contributor', orgRole: 'member', key: 'battra-devops-key-1', scopes: [] },
  { name: 'Documenter agent', email: 'documenter-agent-1@battra.local', externalId: 'user_agent_documenter_1', role: 'contributor', orgRole: 'member', key: 'battra-documenter-key-1', scopes: [] }
]

export const SEED_PROJECTS = [
  { name: 'Battra Web', description: 'The web application' },
  { name: 'Battra MCP Server', description: 'Tools for coding agents' },
  { name: 'Battra Mobile', description: null }
]

type Transaction = Parameters<Parameters<PrismaClient['$transaction']>[0]>[0]

/** The seed marker of a persona: what seedDevPersonas returns for it when it seeds it. */
export const personaMarker = (persona: Pick<Persona, 'externalId'>): string => `persona:${persona.externalId}`

/** Seeds what was never seeded, in one transaction; returns the names of what it seeded. */
export async function seedDevPersonas (prisma: PrismaClient): Promise<string[]> {
  // A busy machine must not turn a slow seed into a half one: the transaction gets time, not a race.
  return prisma.$transaction((tx) => seedMissing(tx), { maxWait: 60_000, timeout: 120_000 })
}

async function seedMissing (tx: Transaction): Promise<string[]> {
  const done = new Set((await tx.seedMarker.findMany({ select: { name: true } })).map((marker) => marker.name))
  const seeded: string[] = []
  const once = async (name: string, seed: () => Promise<unknown>) => {
    if (done.has(name)) return
    await seed()
    await tx.seedMarker.create({ data: { name } })
    seeded.push(name)
  }
  // Found by slug when it exists (created by hand, or seeded before markers existed): never changed.
  let org = await tx.organization.findUnique({ where: { slug: TEST_ORG.slug }, select: { id: true } })
  await once(`organization:${TEST_ORG.slug}`, async () => {
    org ??= await tx.organization.create({ data: TEST_ORG, select: { id: true } })
  })
  if (org === null) return seeded // seeded once, then deleted by an operator: nothing to add personas to
  const orgId = org.id
  for (const persona of PERSONAS) {
    await once(personaMarker(persona), async () => {
      const existing = await tx.user.findUnique({ where: { externalId: persona.externalId }, select: { id: true } })
      if (existing !== null) return // there already, perhaps changed since: left as it is
      const user = await tx.user.create({ data: { externalId: persona.externalId, email: persona.email, role: persona.role } })
      await tx.organizationMembership.create({ data: { organizationId: orgId, userId: user.id, role: persona.orgRole } })
      const tokenHash = hashApiKey(persona.key)
      if (await tx.apiKey.count({ where: { tokenHash } }) > 0) return
      await tx.apiKey.create({
        data: {
          tokenHash,
          hint: hintFor(persona.key),
          userId: user.id,
          organizationId: orgId,
          description: `${persona.name} persona key (development only)`,
          scopes: persona.scopes
        }
      })
    })
  }
  await once(`projects:${TEST_ORG.slug}`, async () => {
    if (await tx.project.count({ where: { organizationId: orgId } }) > 0) return
    await tx.project.createMany({ data: SEED_PROJECTS.map((project) => ({ ...project, organizationId: orgId })) })
  })
  return seeded
}
