// Run by test/src/tick-object-shape.test.ts with --expose-gc --allow-natives-syntax, compiled and with
// plain node as `npm start` runs (a loader would run first and collect garbage of its own): makes nextTick
// entries, lets every one of them die and runs full GCs (what V8's memory reducer does while the service
// is idle), makes more, then prints V8's description of process.nextTick, whose inline caches tell
// whether the entries kept one hidden class. KEEP=1: with src/tick-object-shape.ts imported first.
if (process.env.KEEP === '1') await import('../../dist/src/tick-object-shape.js')
const tick = () => new Promise((resolve) => process.nextTick(resolve))
for (let i = 0; i < 50; i++) await tick()
await new Promise((resolve) => setTimeout(resolve, 10))
globalThis.gc()
globalThis.gc()
await new Promise((resolve) => setTimeout(resolve, 10))
for (let i = 0; i < 50; i++) await tick()
// V8's natives syntax parses only in code compiled at run time here.
// eslint-disable-next-line no-new-func
new Function('f', '%DebugPrint(f)')(process.nextTick)
