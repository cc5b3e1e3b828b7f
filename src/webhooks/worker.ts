// Delivers the webhook outbox (webhook_deliveries), at least once. A worker claims due deliveries with
// FOR UPDATE SKIP LOCKED and a lease (locked_until, claim) in one statement, so that two workers, in one
// process or many, never hold the same delivery at once; it then sends each outside any transaction,
// signed per Standard Webhooks, and records the outcome only if its claim still stands. A worker that dies
// mid-delivery leaves a lease that expires: another one sends the event again (same webhook-id).
// Failures are retried with exponential backoff and jitter until WEBHOOK_RETRY_FOR_MS after the event,
// then marked failed (visible in GET /api/v1/webhooks and /:id/deliveries).
import { randomUUID } from 'node:crypto'
import { Webhook } from 'standardwebhooks'
import type { WebhookConfig } from '#src/config.ts'
import type { PrismaClient } from '#src/db/pool.ts'
import { settledWithin } from '#src/settled-within.ts'

interface ClaimedRow {
  id: string
  endpoint_id: string
  event_type: string
  payload: string
  attempts: number
  created_at: Date
  url: string
  signing_secret: string
}

/** last_error of a send the shutdown cut short before its receiver answered. */
export const CUT_SHORT = 'cut short by shutdown before an answer'

/** Deliveries one worker has under way at most, whatever its receivers' speed. */
const MAX_DELIVERIES_UNDER_WAY = 100

export interface DeliveryOutcome { id: string, ok: boolean, status?: number, error?: string, final: boolean }

export interface WorkerOptions {
  prisma: PrismaClient
  config: WebhookConfig
  /** The scheduling clock (ms since epoch): due times, leases, backoff. Signatures use the real time. */
  now?: () => number
  /** Jitter source in [0, 1), for tests. */
  random?: () => number
  onError?: (error: unknown) => void
  onRecovered?: () => void
  /** Deliveries claimed per round. */
  batch?: number
}

/** The delay before attempt n + 1 after n failed attempts: exponential, capped, with "equal jitter". */
export function backoffMs (failedAttempts: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const exponential = Math.min(maxMs, baseMs * 2 ** Math.min(failedAttempts - 1, 40))
  return Math.round(exponential / 2 + random() * exponential / 2)
}

export class WebhookWorker {
  private readonly now: () => number
  private readonly random: () => number
  private readonly batch: number
  private timer: NodeJS.Timeout | undefined
  /** The claim under way: claims of one worker never overlap. */
  private claiming: Promise<Array<Promise<DeliveryOutcome>>> | undefined
  private readonly inFlight = new Set<AbortController>()
  /** Deliveries under way, whichever round claimed them, each with its endpoint's id. */
  private readonly deliveries = new Map<Promise<DeliveryOutcome>, string>()
  /** Outcomes sent but not yet written (the database failed meanwhile): written before anything else. */
  private unrecorded: Array<() => Promise<unknown>> = []
  private stopped = false
  private failing = false
  delivered = 0
  failures = 0
  gaveUp = 0

  constructor (private readonly options: WorkerOptions) {
    this.now = options.now ?? Date.now
    this.random = options.random ?? Math.random
    this.batch = options.batch ?? 20
  }

  start (): void {
    this.stopped = false
    this.schedule(0)
  }

  // The scheduled rounds do not wait for their deliveries: a receiver that does not answer holds its own
  // deliveries for up to WEBHOOK_TIMEOUT_MS, not the next round, and while it does, its endpoint's other
  // deliveries wait (found by an outside probe: one silent receiver delayed every endpoint's events).
  private schedule (delayMs: number): void {
    if (this.stopped) return
    clearTimeout(this.timer)
    this.timer = setTimeout(() => {
      this.claimRound().then(
        (started) => {
          for (const delivery of started) delivery.catch((error: unknown) => this.noteFailure(error))
          this.schedule(started.length >= this.batch ? 0 : this.options.config.pollIntervalMs)
        },
        () => this.schedule(this.options.config.pollIntervalMs)
      )
    }, delayMs)
    this.timer.unref()
  }

  /** One round, waited for: claims what is due and delivers it. */
  async runOnce (): Promise<DeliveryOutcome[]> {
    const settled = await Promise.allSettled(await this.claimRound())
    const failed = settled.find((result) => result.status === 'rejected')
    if (failed !== undefined) {
      this.noteFailure(failed.reason)
      throw failed.reason
    }
    return settled.map((result) => (result as PromiseFulfilledResult<DeliveryOutcome>).value)
  }

  /** Claims what is due and starts delivering it; resolves with the deliveries started. */
  private async claimRound (): Promise<Array<Promise<DeliveryOutcome>>> {
    while (this.claiming !== undefined) await this.claiming.catch(() => {})
    const claiming = this.claimDue()
    this.claiming = claiming
    try {
      const started = await claiming
      if (this.failing) this.options.onRecovered?.()
      this.failing = false
      return started
    } catch (error) {
      this.noteFailure(error)
      throw error
    } finally {
      this.claiming = undefined
    }
  }

  /** The database may be away: logged once, retried on the next round. */
  private noteFailure (error: unknown): void {
    if (!this.failing) this.options.onError?.(error)
    this.failing = true
  }

  /** Writes outcomes a database failure kept back, so that what was delivered is not sent again. */
  private async recordKeptBack (): Promise<void> {
    while (this.unrecorded.length > 0) {
      await this.unrecorded[0]()
      this.unrecorded.shift()
    }
  }

  /** Writes an outcome; if the database fails, keeps it for the next round (until the lease ends, no one else sends it). */
  private async record (write: () => Promise<unknown>): Promise<void> {
    try {
      await write()
    } catch (error) {
      this.unrecorded.push(write)
      throw error
    }
  }

  private async claimDue (): Promise<Array<Promise<DeliveryOutcome>>> {
    await this.recordKeptBack()
    const room = Math.min(this.batch, MAX_DELIVERIES_UNDER_WAY - this.deliveries.size)
    if (this.stopped || room <= 0) return []
    const { prisma, config } = this.options
    const now = new Date(this.now())
    // The database stamps deliveries to the microsecond, this clock counts milliseconds: a delivery made
    // in the current millisecond is due too (a test saw one stamped .123456 skipped at .123).
    const dueBefore = new Date(now.getTime() + 1)
    const leaseUntil = new Date(now.getTime() + config.timeoutMs * 2 + 5000)
    const claim = randomUUID()
    // Only deliveries of live endpoints are picked: a removed endpoint's oldest deliveries would otherwise
    // fill every batch and be dropped by the join, so that nothing was ever sent (found by an outside probe).
    const rows = await prisma.$queryRaw<ClaimedRow[]>`
      UPDATE webhook_deliveries d SET locked_until = ${leaseUntil}, claim = ${claim}::uuid, attempts = d.attempts + 1
        FROM (SELECT pending.id FROM webhook_deliveries pending
                JOIN webhook_endpoints live ON live.id = pending.endpoint_id AND live.disabled_at IS NULL
               WHERE pending.status = 'pending' AND pending.next_attempt_at < ${dueBefore}
                 AND (pending.locked_until IS NULL OR pending.locked_until <= ${now})
                 AND pending.endpoint_id <> ALL(${[...new Set(this.deliveries.values())]}::uuid[])
               ORDER BY pending.next_attempt_at LIMIT ${room} FOR UPDATE OF pending SKIP LOCKED) due,
             webhook_endpoints e, webhook_endpoint_secrets s
       WHERE d.id = due.id AND e.id = d.endpoint_id AND s.endpoint_id = e.id
      RETURNING d.id, d.endpoint_id, d.event_type, d.payload::text AS payload, d.attempts, d.created_at, e.url, s.secret AS signing_secret`
    return rows.map((row) => this.track(row.endpoint_id, this.deliver(row, claim)))
  }

  /** Counts a delivery under way (stop() waits for it) until it is recorded, or kept back. */
  private track (endpointId: string, delivery: Promise<DeliveryOutcome>): Promise<DeliveryOutcome> {
    this.deliveries.set(delivery, endpointId)
    const done = () => this.deliveries.delete(delivery)
    delivery.then(done, done)
    return delivery
  }

  private async deliver (row: ClaimedRow, claim: string): Promise<DeliveryOutcome> {
    const { prisma, config } = this.options
    const controller = new AbortController()
    // Claimed while stop() ran (its claim statement was under way): handed back unsent, not sent while the
    // shutdown waits (found by an outside probe: a receiver that did not answer held it to WEBHOOK_TIMEOUT_MS).
    if (this.stopped) controller.abort(new Error('shutting down'))
    const sent = !controller.signal.aborted
    this.inFlight.add(controller)
    const timeout = setTimeout(() => controller.abort(new Error(`no answer within ${config.timeoutMs} ms`)), config.timeoutMs)
    let status: number | undefined
    let error: string | undefined
    try {
      const headers = signedHeaders(row.signing_secret, row.id, row.payload)
      const response = await fetch(row.url, { method: 'POST', headers, body: row.payload, redirect: 'manual', signal: controller.signal })
      status = response.status
      await response.body?.cancel().catch(() => {})
      if (status < 200 || status >= 300) error = `HTTP ${status}`
    } catch (caught) {
      error = controller.signal.aborted ? String((controller.signal.reason as Error | undefined)?.message ?? 'aborted') : describe(caught)
    } finally {
      clearTimeout(timeout)
      this.inFlight.delete(controller)
    }
    if (this.stopped && error !== undefined && controller.signal.aborted) {
      // Handed back for the next worker, at once. Never sent: not an attempt. Cut short while its
      // receiver had it: an attempt all the same, which the receiver may have taken (found by an outside
      // probe: sent twice, counted once).
      if (!sent) {
        await this.record(() => prisma.$executeRaw`UPDATE webhook_deliveries SET locked_until = NULL, claim = NULL, attempts = attempts - 1 WHERE id = ${row.id} AND claim = ${claim}::uuid`)
      } else {
        this.failures++
        await this.record(() => prisma.$executeRaw`
          UPDATE webhook_deliveries SET locked_until = NULL, claim = NULL, last_status = NULL, last_error = ${CUT_SHORT}
           WHERE id = ${row.id} AND claim = ${claim}::uuid AND status = 'pending'`)
      }
      return { id: row.id, ok: false, error, final: false }
    }
    const now = this.now()
    if (error === undefined) {
      this.delivered++
      await this.record(() => prisma.$executeRaw`
        UPDATE webhook_deliveries SET status = 'delivered', delivered_at = ${new Date(now)}, locked_until = NULL, last_status = ${status ?? null}::int, last_error = NULL
         WHERE id = ${row.id} AND claim = ${claim}::uuid`)
      return { id: row.id, ok: true, status, final: true }
    }
    const next = now + backoffMs(row.attempts, config.backoffBaseMs, config.backoffMaxMs, this.random)
    const final = next > row.created_at.getTime() + config.retryForMs
    // Each attempt counted once: a last one as given up, not also as an error (found by an outside probe).
    if (final) this.gaveUp++
    else this.failures++
    // Only a delivery still pending: one whose endpoint was removed while it was under way stays failed
    // ("endpoint removed"), not pending forever (found by an outside probe).
    await this.record(() => prisma.$executeRaw`
      UPDATE webhook_deliveries SET status = ${final ? 'failed' : 'pending'}, next_attempt_at = ${new Date(next)}, locked_until = NULL,
             last_status = ${status ?? null}::int, last_error = ${error.slice(0, 500)}
       WHERE id = ${row.id} AND claim = ${claim}::uuid AND status = 'pending'`)
    return { id: row.id, ok: false, status, error, final }
  }

  /**
   * Stops claiming; deliveries under way get `graceMs` to be answered (a send cut short is sent again),
   * then are cut short and handed back; waits for their outcomes to be written.
   */
  async stop ({ graceMs = 0 }: { graceMs?: number } = {}): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    this.timer = undefined
    const underWay = () => Promise.allSettled([...this.deliveries.keys()])
    if (graceMs > 0) await settledWithin(underWay(), graceMs)
    for (const controller of this.inFlight) controller.abort(new Error('shutting down'))
    await this.claiming?.catch(() => {})
    await underWay()
    // Last chance for outcomes the database refused; those still unwritten are sent again after their lease.
    await this.recordKeptBack().catch(() => {})
  }

  stats () {
    return { delivered: this.delivered, failures: this.failures, gaveUp: this.gaveUp, failing: this.failing }
  }
}

function describe (error: unknown): string {
  const cause = (error as { cause?: { code?: string, message?: string } }).cause
  return cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : String(error))
}

/** The Standard Webhooks headers of one attempt: webhook-id, webhook-timestamp (now), webhook-signature. */
export function signedHeaders (secret: string, id: string, payload: string, at = new Date()): Record<string, string> {
  const timestamp = Math.floor(at.getTime() / 1000)
  return {
    'content-type': 'application/json',
    'user-agent': 'battra-auth-webhooks',
    'webhook-id': id,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': new Webhook(secret).sign(id, new Date(timestamp * 1000), payload)
  }
}
