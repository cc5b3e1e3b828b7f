// Keeps the hidden class of Node's process.nextTick queue entries alive for the life of the process.
//
// Every request makes several nextTick entries inside Node's streams: object literals
// `{ [async_id_symbol], [trigger_async_id_symbol], callback, args }`. Their hidden classes (V8 maps) are
// held only weakly by V8's transition tree and inline caches. When the service sits idle after its start,
// V8's memory reducer runs full GCs; with no entry alive at that moment the maps are collected, the next
// entries get new maps, and the inline caches in nextTick that saw the old ones turn megamorphic for
// good: every nextTick then goes through V8's runtime. Measured on GET /health (README, Performance):
// about 2 µs of CPU per request, 15% of the request's cost, in most starts but not all (it depends on
// when the GCs fall). One live object with the same shape keeps the maps, so the caches stay monomorphic.
// test/src/tick-object-shape.test.ts shows the caches going megamorphic without it.
//
// Importing this module keeps the shape: src/server.ts imports it first, before the imports that start
// allocating (and collecting) in earnest; the plugin's entry imports it for services that embed us.
import { AsyncResource } from 'node:async_hooks'

let kept: object | undefined

/** Idempotent; harmless on a Node whose entries have another shape (it then keeps an unrelated object). */
export function keepTickObjectShape (): void {
  if (kept !== undefined) return
  // An AsyncResource carries the same two symbols as the queue entries; they are not exported otherwise.
  const symbols = Object.getOwnPropertySymbols(new AsyncResource('battra-auth-tick-shape'))
  const asyncId = symbols.find((symbol) => symbol.description === 'async_id_symbol')
  const triggerId = symbols.find((symbol) => symbol.description === 'trigger_async_id_symbol')
  if (asyncId === undefined || triggerId === undefined) return
  // Same properties in the same order as Node's literal; non-integer ids so the fields start in their
  // most general number representation (a later generalisation would make new maps again).
  kept = { [asyncId]: 0.5, [triggerId]: 0.5, callback: function noop () {}, args: undefined }
}

keepTickObjectShape()
