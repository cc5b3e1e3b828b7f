// Reduces GitHub's secret-scanning report to the distinct tokens to look up, in GitHub's order.
import type { GitHubReportItem } from '#src/schemas/leaks.ts'

// The schemas live in src/schemas/leaks.ts; re-exported here for the report's users.
export {
  GitHubReportAnswerItemSchema, GitHubReportAnswerSchema, GitHubReportItemSchema, GitHubReportSchema, REPORT_BODY_LIMIT_BYTES,
  REPORT_MAX_ITEMS, REPORT_TOKEN_MAX_LENGTH, ReportLabelSchema
} from '#src/schemas/leaks.ts'
export type { GitHubReport, GitHubReportAnswer, GitHubReportAnswerItem, GitHubReportItem, ReportLabel } from '#src/schemas/leaks.ts'

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
