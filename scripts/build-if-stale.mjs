// `npm start` runs the compiled service (dist/). After `npm ci` (prepare builds) dist/ is current; after
// an edit it is not: this rebuilds when any source file is newer than the build, so that `npm start`
// never runs stale code. Checking costs a directory walk (a few ms); a rebuild, tsc's time.
import { spawnSync } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))

function newest (dir) {
  let latest = 0
  for (const entry of readdirSync(join(root, dir), { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) latest = Math.max(latest, statSync(join(entry.parentPath, entry.name)).mtimeMs)
  }
  return latest
}

let built = 0
try {
  built = statSync(join(root, 'dist', 'src', 'server.js')).mtimeMs
} catch {}
const sources = Math.max(...['src', 'plugins', 'routes'].map(newest), statSync(join(root, 'tsconfig.build.json')).mtimeMs)
if (sources > built) {
  console.error('dist/ is older than the sources: building (npm run build)')
  const result = spawnSync('npx', ['--no-install', 'tsc', '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' })
  process.exit(result.status ?? 1)
}
