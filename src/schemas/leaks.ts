// The shapes of leaked-key handling: GitHub's secret-scanning report and our answer to it, the public
// leak-report route, and what a key records of a report (its `leakReport`, shown to its owner).
import { Type, type Static, type TSchema } from 'typebox'
import { Compile } from 'typebox/compile'
import { DateTime, Nullable } from './common.ts'

/** Our bound, not GitHub's: its docs set no maximum and only ask us to handle "a large number of matches". */
export const REPORT_MAX_ITEMS = 1000
export const REPORT_TOKEN_MAX_LENGTH = 1024
/** 1000 realistic matches are about 250 KB; a MiB leaves room for long URLs. */
export const REPORT_BODY_LIMIT_BYTES = 1024 * 1024
export const LEAK_URL_MAX_LENGTH = 8192
export const LEAK_SOURCE_MAX_LENGTH = 256
/** Locations of one token kept on its key: enough to find the leaks, bounded whatever the report says. */
export const MAX_RECORDED_LOCATIONS = 20

// Extra properties are tolerated: GitHub added `source` to this payload without a version change and may
// add more. `url` (documented as possibly empty) and `source` are optional: a missing piece of metadata
// must not turn a real leak into a 400 that leaves the key alive. `source` is free text: the docs list
// capitalised values ("Content") while their samples send lowercase ones ("content", "commit").
export const GitHubReportItemSchema = Type.Object({
  token: Type.String({ maxLength: REPORT_TOKEN_MAX_LENGTH }),
  type: Type.String({ maxLength: 256 }),
  url: Type.Optional(Type.String({ maxLength: LEAK_URL_MAX_LENGTH })),
  source: Type.Optional(Type.String({ maxLength: LEAK_SOURCE_MAX_LENGTH }))
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
  description: 'One row per distinct reported token: true_positive when it is one of our keys (revoked now, unless its organization is "report only"), false_positive otherwise.'
})

export type GitHubReportItem = Static<typeof GitHubReportItemSchema>
export type GitHubReport = Static<typeof GitHubReportSchema>
export type ReportLabel = Static<typeof ReportLabelSchema>
export type GitHubReportAnswerItem = Static<typeof GitHubReportAnswerItemSchema>
export type GitHubReportAnswer = Static<typeof GitHubReportAnswerSchema>

/** Who reported a leak: GitHub secret scanning, or anyone through the public route. */
export const LEAK_REPORTERS = ['github', 'public'] as const
export type LeakReporter = typeof LEAK_REPORTERS[number]

/** Why a key was revoked (`revoked_reason`); null: by its owner, an operator or SQL. */
export const REVOCATION_REASONS = ['leaked'] as const
export type RevocationReason = typeof REVOCATION_REASONS[number]

export const LeakLocationSchema = Type.Object({
  url: Nullable(Type.String()),
  source: Nullable(Type.String())
})
export type LeakLocation = Static<typeof LeakLocationSchema>

// Every property is optional in the view: the column can be written by SQL or Studio too, and a key list
// must not fail over one odd row. The service always writes all of them.
export const LeakReportSchema = Type.Object({
  reporter: Type.Optional(Type.Enum(LEAK_REPORTERS, { description: 'github: secret scanning; public: POST /api/v1/api-keys/report-leak' })),
  reportedAt: Type.Optional(DateTime),
  url: Type.Optional(Nullable(Type.String({ description: 'Where the key was found (the first place reported)' }))),
  source: Type.Optional(Nullable(Type.String({ description: "GitHub's kind of location: content, commit, issue_comment, …" }))),
  locations: Type.Optional(Type.Array(LeakLocationSchema, { description: `Every place reported, at most ${MAX_RECORDED_LOCATIONS}` }))
}, { description: 'The first leak report of this key. With revokedReason "leaked" the report revoked it; without, its organization is "report only" and the key still works: rotate it.' })
export type LeakReport = Static<typeof LeakReportSchema>

export const LeakReportBodySchema = Type.Object({
  key: Type.String({ minLength: 1, maxLength: REPORT_TOKEN_MAX_LENGTH, description: 'The key you found' }),
  // Shown to the key's owner as a link: an anonymous reporter's `javascript:` URL must not become one.
  url: Type.Optional(Type.String({ maxLength: LEAK_URL_MAX_LENGTH, pattern: '^https?://\\S+$', description: 'Where you found it: an http:// or https:// URL' })),
  source: Type.Optional(Type.String({ maxLength: LEAK_SOURCE_MAX_LENGTH, description: 'What kind of place it is (a repository file, a paste, a log…)' }))
}, { additionalProperties: false })
export type LeakReportBody = Static<typeof LeakReportBodySchema>

export const LEAK_REPORT_ACCEPTED = {
  status: 'received',
  message: 'Thank you. If this is a Battra API key, it is revoked (or flagged for its owner) within seconds.'
} as const

export const LeakReportAcceptedSchema = Type.Object({
  status: Type.Literal(LEAK_REPORT_ACCEPTED.status),
  message: Type.String()
}, { description: 'The same answer whether or not the key exists: the route cannot be used to test keys.' })

/**
 * A route's validatorCompiler that checks the body against `schema` strictly, with TypeBox: no coercion
 * (Fastify's Ajv turns a number token into a string), so that a malformed report is a 400, never a match.
 * Refusals are Fastify's FST_ERR_VALIDATION (400), naming the first problem.
 */
export function strictBodyValidator (schema: TSchema): (route: { httpPart?: string }) => (data: unknown) => { value?: unknown, error?: Error } {
  const check = Compile(schema)
  return ({ httpPart }) => (data) => {
    if (httpPart !== 'body' || check.Check(data)) return { value: data }
    const first = [...check.Errors(data)][0]
    return { error: new Error(first === undefined ? 'body is invalid' : `body${first.instancePath} ${first.message}`) }
  }
}
