// Prometheus metrics through prom-client. The request path keeps plain number increments (one property
// write per answer); these collectors read the numbers when /metrics is scraped.
import { Counter, Gauge, type Registry } from 'prom-client'

type Labels = Record<string, string | number>
export type Samples = Array<[labels: Labels | undefined, value: number]>

/** A counter whose value is kept elsewhere, read at scrape time. */
export function pulledCounter (registry: Registry, name: string, help: string, labelNames: string[], read: () => Samples): void {
  // eslint-disable-next-line no-new -- registering is the point: the registry keeps it
  new Counter({
    name,
    help,
    labelNames,
    registers: [registry],
    collect () {
      this.reset()
      for (const [labels, value] of read()) {
        if (labels === undefined) this.inc(value)
        else this.inc(labels, value)
      }
    }
  })
}

/** A gauge whose value is kept elsewhere, read at scrape time. */
export function pulledGauge (registry: Registry, name: string, help: string, labelNames: string[], read: () => Samples): void {
  // eslint-disable-next-line no-new -- registering is the point: the registry keeps it
  new Gauge({
    name,
    help,
    labelNames,
    registers: [registry],
    collect () {
      this.reset()
      for (const [labels, value] of read()) {
        if (labels === undefined) this.set(value)
        else this.set(labels, value)
      }
    }
  })
}
