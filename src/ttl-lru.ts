// A bounded least-recently-used map whose entries are fresh until one time and kept, stale, until a later
// one (for stale-if-error). Map keeps insertion order, so the first key is always the least recently used.

export interface TtlEntry<V> {
  value: V
  /** When the value was read from the source of truth (ms since epoch). */
  storedAt: number
  /** Served normally until this time (ms since epoch). */
  freshUntil: number
  /** Kept until this time for use when the source of truth fails; dropped after. */
  staleUntil: number
}

export class TtlLru<V> {
  private readonly entries = new Map<string, TtlEntry<V>>()
  evictions = 0

  constructor (readonly maxEntries: number) {}

  get size (): number {
    return this.entries.size
  }

  /** A fresh entry, refreshed as most recently used; undefined when absent or no longer fresh. */
  getFresh (key: string, now: number): TtlEntry<V> | undefined {
    const entry = this.entries.get(key)
    if (entry === undefined) return undefined
    if (entry.freshUntil <= now) {
      if (entry.staleUntil <= now) this.entries.delete(key)
      return undefined
    }
    this.entries.delete(key)
    this.entries.set(key, entry)
    return entry
  }

  /** Any entry not yet past its stale time, without touching recency. */
  peek (key: string, now: number): TtlEntry<V> | undefined {
    const entry = this.entries.get(key)
    if (entry === undefined) return undefined
    if (entry.staleUntil <= now) {
      this.entries.delete(key)
      return undefined
    }
    return entry
  }

  set (key: string, value: V, storedAt: number, freshUntil: number, staleUntil: number): void {
    this.entries.delete(key)
    this.entries.set(key, { value, storedAt, freshUntil, staleUntil })
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value as string
      this.entries.delete(oldest)
      this.evictions++
    }
  }

  delete (key: string): boolean {
    return this.entries.delete(key)
  }

  /** Removes every entry whose value matches; returns how many. */
  deleteWhere (matches: (value: V) => boolean): number {
    let removed = 0
    for (const [key, entry] of this.entries) {
      if (matches(entry.value)) {
        this.entries.delete(key)
        removed++
      }
    }
    return removed
  }

  clear (): number {
    const removed = this.entries.size
    this.entries.clear()
    return removed
  }
}
