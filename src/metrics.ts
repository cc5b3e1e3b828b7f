// Prometheus metrics kept as plain numbers and rendered in the text format at scrape time, so that
// counting costs the request path one property increment.

export class Histogram {
  readonly counts: number[]
  sum = 0
  count = 0

  constructor (readonly buckets: readonly number[]) {
    this.counts = new Array(buckets.length).fill(0)
  }

  observe (value: number): void {
    this.sum += value
    this.count++
    for (let i = 0; i < this.buckets.length; i++) {
      if (value <= this.buckets[i]) {
        this.counts[i]++
        return
      }
    }
  }
}

export type Sample = [labels: Record<string, string | number> | undefined, value: number]

export interface Family {
  name: string
  help: string
  type: 'counter' | 'gauge'
  samples: Sample[]
}

const escapeLabel = (value: string | number) => String(value).replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')

function labelText (labels: Record<string, string | number> | undefined): string {
  if (labels === undefined) return ''
  const parts = Object.entries(labels).map(([key, value]) => `${key}="${escapeLabel(value)}"`)
  return parts.length === 0 ? '' : `{${parts.join(',')}}`
}

export function renderFamilies (families: Family[]): string {
  const lines: string[] = []
  for (const family of families) {
    lines.push(`# HELP ${family.name} ${family.help}`, `# TYPE ${family.name} ${family.type}`)
    for (const [labels, value] of family.samples) lines.push(`${family.name}${labelText(labels)} ${value}`)
  }
  return lines.join('\n') + '\n'
}

export function renderHistogram (name: string, help: string, histogram: Histogram): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`]
  let cumulative = 0
  histogram.buckets.forEach((bound, i) => {
    cumulative += histogram.counts[i]
    lines.push(`${name}_bucket{le="${bound}"} ${cumulative}`)
  })
  lines.push(`${name}_bucket{le="+Inf"} ${histogram.count}`, `${name}_sum ${histogram.sum}`, `${name}_count ${histogram.count}`)
  return lines.join('\n') + '\n'
}
