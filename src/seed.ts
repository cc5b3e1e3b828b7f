// The dev personas of Battra's reference document, plus an operator with the auth:admin scope.
// Their keys are public development keys; only their hashes are stored.
import { hashApiKey, hintFor } from './api-key.ts'
import type { PrismaClient } from './database.ts'
import type { OrgRole, UserRole } from './claims.ts'

export const TEST_ORG = { externalId: 'org_test_battra', slug: 'test-org', name: 'Test Org' }

export interface Persona {
  name: string
  email: string
  externalId: string
  role: UserRole
  orgRole: OrgRole
  key: string
  scopes: string[]
}

export const PERSONAS: readonly Persona[] = [
  { name: 'Developer', email: 'dev+clerk_test@mock.com', externalId: 'user_test_dev', role: 'contributor', orgRole: 'member', key: 'battra-dev-key-1', scopes: [] },
  { name: 'Scrum Master', email: 'sm+clerk_test@mock.com', externalId: 'user_test_sm', role: 'managing_contributor', orgRole: 'admin', key: 'battra-sm-key-1', scopes: [] },
  { name: 'Product Owner', email: 'po+clerk_test@mock.com', externalId: 'user_test_po', role: 'product_owner', orgRole: 'admin', key: 'battra-po-key-1', scopes: [] },
  { name: 'QA', email: 'qa+clerk_test@mock.com', externalId: 'user_test_qa', role: 'contributor', orgRole: 'member', key: 'battra-qa-key-1', scopes: [] },
  { name: 'Sponsor', email: 'sponsor+clerk_test@mock.com', externalId: 'user_test_sponsor', role: 'sponsor', orgRole: 'member', key: 'battra-sponsor-key-1', scopes: [] },
  { name: 'Operator', email: 'ops+clerk_test@mock.com', externalId: 'user_test_ops', role: 'contributor', orgRole: 'owner', key: 'battra-admin-key-1', scopes: ['auth:admin'] }
]

export const SEED_PROJECTS = [
  { name: 'Battra Web', description: 'The web application' },
  { name: 'Battra MCP Server', description: 'Tools for coding agents' },
  { name: 'Battra Mobile', description: null }
]

/** Idempotent: running it again changes nothing. */
export async function seedDevPersonas (prisma: PrismaClient): Promise<void> {
  const org = await prisma.organization.upsert({
    where: { slug: TEST_ORG.slug },
    create: TEST_ORG,
    update: {}
  })
  for (const persona of PERSONAS) {
    const user = await prisma.user.upsert({
      where: { externalId: persona.externalId },
      create: { externalId: persona.externalId, email: persona.email, role: persona.role },
      update: {}
    })
    await prisma.organizationMembership.upsert({
      where: { organizationId_userId: { organizationId: org.id, userId: user.id } },
      create: { organizationId: org.id, userId: user.id, role: persona.orgRole },
      update: {}
    })
    await prisma.apiKey.upsert({
      where: { tokenHash: hashApiKey(persona.key) },
      create: {
        tokenHash: hashApiKey(persona.key),
        hint: hintFor(persona.key),
        userId: user.id,
        organizationId: org.id,
        description: `${persona.name} persona key (development only)`,
        scopes: persona.scopes
      },
      update: {}
    })
  }
  if (await prisma.project.count({ where: { organizationId: org.id } }) === 0) {
    await prisma.project.createMany({
      data: SEED_PROJECTS.map((project) => ({ ...project, organizationId: org.id }))
    })
  }
}
