import { defineConfig } from 'prisma/config'
import { studioDatabaseUrl } from './src/config.ts'

// Used by the Prisma CLI (generate, studio). The service applies migrations itself (src/migrate.ts).
export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: { url: studioDatabaseUrl() }
})
