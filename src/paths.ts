// Where the package's own files are, from the source tree (src/paths.ts) or the build (dist/src/paths.js).
import { join } from 'node:path'

const compiled = !import.meta.url.endsWith('.ts')

/** The folder that holds plugins/ and routes/: the package root, or dist/ when compiled. */
export const CODE_ROOT = join(import.meta.dirname, '..')
/** The package root (package.json, prisma/migrations). */
export const PACKAGE_ROOT = compiled ? join(CODE_ROOT, '..') : CODE_ROOT
export const MIGRATIONS_DIR = join(PACKAGE_ROOT, 'prisma', 'migrations')
