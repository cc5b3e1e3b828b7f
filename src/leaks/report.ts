// GitHub's secret-scanning report and our answer to it, as TypeBox schemas (for Fastify's type provider),
// and the helper that reduces a report to the distinct tokens to look up, in GitHub's order.
import { Type, type Static } from 'typebox'

/** Our bound, not GitHub's: its docs set no maximum and only ask us to handle "a large number of matches". */
export const REPORT_MAX_ITEMS = 1000
export const REPORT_TOKEN_MAX_LENGTH = 1024
/** Fastify's default body limit; 1000 realistic matches are about 250 KB. */
export const REPORT_BODY_LIMIT_BYTES = 1024 * 1024

// Extra properties are tolerated: GitHub added `source` to this payload without a version change and may
// add more. `url` (documented as possibly empty) and `source` are optional: a missing piece of metadata
// must not turn a real leak into a 400 that leaves the key alive. `source` is free text: the docs list
// capitalised values ("Content") while their samples send lowercase ones ("content", "commit").
export const GitHubReportItemSchema = Type.Object({
  token: Type.String({ maxLength: REPORT_TOKEN_MAX_LENGTH }),
  type: Type.String({ maxLength: 256 }),
  url: Type.Optional(Type.String({ maxLength: 8192 })),
  source: Type.Optional(Type.String({ maxLength: 256 }))
}, { description: 'One secret match: the token, the pattern name registered with GitHub, where it was found.' })

export const GitHubReportSchema = Type.Array(GitHubReportItemSchema, {
  maxItems: REPORT_MAX_ITEMS,
  description: "GitHub secret scanning's report: a JSON array of matches, signed over the raw body."
})

export const ReportLabelSchema = Type.Union([Type.Literal('true_positive'), Type.Literal('false_positive')])

// GitHub's feedback format with the raw token (it also accepts `token_hash`, never both in one row).
export const GitHubReportAnswerItemSchema = Type.Object({
  token_raw: Type.String(),
  token_type: Type.String(),
  label: ReportLabelSchema
}, { additionalProperties: false })

export const GitHubReportAnswerSchema = Type.Array(GitHubReportAnswerItemSchema, {
  description: 'One row per distinct reported token: true_positive when it was a live key (now revoked), false_positive otherwise.'
})

export type GitHubReportItem = Static<typeof GitHubReportItemSchema>
export type GitHubReport = Static<typeof GitHubReportSchema>
export type ReportLabel = Static<typeof ReportLabelSchema>
export type GitHubReportAnswerItem = Static<typeof GitHubReportAnswerItemSchema>
export type GitHubReportAnswer = Static<typeof GitHubReportAnswerSchema>

export interface LeakLocation {
  url: string | undefined
  source: string | undefined
}

export interface ReportedToken {
  token: string
  /** The type of the token's first match, echoed back as `token_type`. */
  type: string
  /** Every place the report names for this token, for the key's history. */
  locations: LeakLocation[]
}

/**
 * The distinct tokens of a report in the order GitHub first lists them, so each is looked up and revoked
 * once and the answer has one row per token. The same token under two types is answered under the first.
 */
export function distinctReportedTokens (items: readonly GitHubReportItem[]): ReportedToken[] {
  const byToken = new Map<string, ReportedToken>()
  for (const item of items) {
    const location = { url: item.url, source: item.source }
    const seen = byToken.get(item.token)
    if (seen === undefined) {
      byToken.set(item.token, { token: item.token, type: item.type, locations: [location] })
    } else if (!seen.locations.some((known) => known.url === location.url && known.source === location.source)) {
      seen.locations.push(location)
    }
  }
  return [...byToken.values()]
}
