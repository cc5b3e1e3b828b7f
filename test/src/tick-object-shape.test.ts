// The hidden class of nextTick's queue entries survives the full GCs of an idle process (src/tick-object-shape.ts).
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { ensureBuilt } from '#scripts/lib/service-process.ts'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/** The states of the inline caches that define the entries' properties, in nextTick's feedback. */
async function entryCaches (keep: boolean): Promise<string[]> {
  ensureBuilt()
  // V8 prints with C stdio: into a pipe, which Node makes non-blocking, part of it can be lost at exit.
  const file = join(mkdtempSync(join(tmpdir(), 'battra-tick-')), 'feedback.txt')
  const output = openSync(file, 'w')
  // Through env(1) without NODE_OPTIONS: the test runner puts its loader there for every child (whatever
  // env a spawn passes), and that loader runs, and collects garbage, before the module under test.
  const child = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, '--expose-gc', '--allow-natives-syntax', 'test/helpers/tick-feedback.mjs'], {
    cwd: ROOT, env: { ...process.env, KEEP: keep ? '1' : '0' }, stdio: ['ignore', output, 'inherit']
  })
  const [code] = await once(child, 'close')
  closeSync(output)
  const printed = readFileSync(file, 'utf8')
  rmSync(dirname(file), { recursive: true, force: true })
  if (code !== 0) throw new Error(`tick-feedback exited with ${code}`)
  return [...printed.matchAll(/DefineKeyedOwnPropertyInLiteral (\w+)/g)].map((match) => match[1])
}

t.test('without the kept shape, an idle full GC turns the caches megamorphic', async (t) => {
  const caches = await entryCaches(false)
  t.ok(caches.length >= 4, `the four property definitions were found (${caches.join(', ')})`)
  // Else this Node keeps the maps itself and src/tick-object-shape.ts is not needed: say so, do not fail.
  if (!caches.includes('MEGAMORPHIC')) t.comment(`this Node (${process.version}) keeps nextTick's entry shape through a full GC; src/tick-object-shape.ts is not needed here`)
})

t.test('with the kept shape, the caches stay monomorphic', async (t) => {
  const caches = await entryCaches(true)
  t.ok(caches.length >= 4, `the four property definitions were found (${caches.join(', ')})`)
  t.same(caches.filter((state) => state !== 'MONOMORPHIC'), [], 'every definition stays monomorphic')
})
