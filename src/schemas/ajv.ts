// Validation rules that hold on every route, given once to Fastify's Ajv (serverOptions in src/app.ts)
// instead of patched field by field.
import type { Ajv } from 'ajv'

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/

/**
 * An RFC 3339 date-time that names a real instant PostgreSQL can store. ajv-formats accepts the leap
 * second 23:59:60, which JavaScript cannot represent, and V8 silently rolls 02-30 over to March.
 */
export function isRealInstant (text: string): boolean {
  const match = RFC3339.exec(text)
  if (match === null) return false
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number)
  if (year < 1 || hour > 23 || minute > 59 || second > 59) return false
  if (match[8] !== undefined && (Number(match[8]) > 23 || Number(match[9]) > 59)) return false
  const date = new Date(Date.UTC(year, month - 1, day))
  date.setUTCFullYear(year) // Date.UTC maps years 0-99 to 1900-1999
  return date.getUTCMonth() === month - 1 && date.getUTCDate() === day && !Number.isNaN(Date.parse(text))
}

type SchemaNode = Record<string, unknown>

const isNumeric = (type: unknown) => type === 'integer' || type === 'number' || (Array.isArray(type) && type.some(isNumeric))

/**
 * Marks every number of a route's schema `finite`. Ajv coerces "1e309" or "Infinity" in a query string
 * (and JSON.parse reads 1e309) to Infinity, which then skips minimum/maximum: every number must be finite.
 */
export function requireFiniteNumbers (schema: unknown): void {
  if (schema === null || typeof schema !== 'object') return
  const node = schema as SchemaNode
  if (isNumeric(node.type)) node.finite = true
  for (const key of ['properties', 'patternProperties', '$defs', 'definitions']) {
    const children = node[key]
    if (children !== null && typeof children === 'object') for (const child of Object.values(children)) requireFiniteNumbers(child)
  }
  for (const key of ['items', 'additionalProperties', 'not', 'if', 'then', 'else']) requireFiniteNumbers(node[key])
  for (const key of ['anyOf', 'oneOf', 'allOf', 'prefixItems']) {
    if (Array.isArray(node[key])) for (const child of node[key] as unknown[]) requireFiniteNumbers(child)
  }
}

/**
 * The numbers of a query string's schema (its top-level properties), to be written in decimal: Ajv reads
 * a query number as JavaScript's Number() does, and took `0x10`, `0b10`, `1e1`, `+2` and ` 2` for numbers
 * (found by an outside probe).
 */
export function numericPropertyNames (schema: unknown): string[] {
  const properties = (schema as SchemaNode | undefined)?.properties
  if (properties === null || typeof properties !== 'object') return []
  return Object.entries(properties).filter(([, child]) => isNumeric((child as SchemaNode | undefined)?.type)).map(([name]) => name)
}

/** How a number is written in a query string. */
export const DECIMAL_NUMBER = /^-?\d+(?:\.\d+)?$/

/** Fastify's `ajv.onCreate`: runs after ajv-formats, so the formats here replace its own. */
export function configureAjv (ajv: Ajv): void {
  // Not tied to a type: Ajv checks type-tied keywords only on finite numbers (strictNumbers).
  ajv.addKeyword({
    keyword: 'finite',
    schemaType: 'boolean',
    validate: function finite (enabled: boolean, data: unknown) {
      const ok = !enabled || typeof data !== 'number' || Number.isFinite(data)
      if (!ok) (finite as unknown as { errors: unknown[] }).errors = [{ keyword: 'finite', message: 'must be a finite number', params: {} }]
      return ok
    }
  })
  ajv.addFormat('date-time', { type: 'string', validate: isRealInstant })
  // Identifiers compared in code (owner checks) are compared in one case: UUIDs are case-insensitive.
  ajv.addKeyword({
    keyword: 'lowercase',
    type: 'string',
    modifying: true,
    schemaType: 'boolean',
    validate: function lowercase (enabled: boolean, data: string, _schema: unknown, context?: { parentData: Record<string | number, unknown>, parentDataProperty: string | number }) {
      if (enabled && context !== undefined) context.parentData[context.parentDataProperty] = data.toLowerCase()
      return true
    }
  })
}
