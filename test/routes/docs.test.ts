import t from 'tap'
import { build } from '#test/helpers/app.ts'
import { databaseKind } from '#test/helpers/database.ts'

t.comment(`database: ${databaseKind}`)
const { app } = await build(t)

t.test('the OpenAPI document lists every route with its responses', async (t) => {
  const response = await app.inject({ url: '/docs/json' })
  t.equal(response.statusCode, 200, 'readable without a key')
  const spec = response.json()
  t.match(spec.openapi, /^3\./)
  const expected: Record<string, Record<string, string[]>> = {
    '/health': { get: ['200'] },
    '/ready': { get: ['200', '503'] },
    '/metrics': { get: ['200'] },
    '/api/v1/auth/me': { get: ['200', '400', '401', '403', '429', '503'] },
    '/api/v1/auth/verify': { get: ['200', '400', '401', '403', '429', '503'] },
    '/api/v1/projects': { get: ['200', '400', '401', '403', '429', '503'] },
    '/api/v1/api-keys': { get: ['200', '400', '401', '403', '429', '503'], post: ['201', '400', '401', '403', '404', '409', '429', '503'] },
    '/api/v1/api-keys/{id}': { delete: ['204', '400', '401', '403', '404', '409', '429', '503'], patch: ['200', '400', '401', '403', '404', '409', '429', '503'] },
    '/api/v1/api-keys/{id}/rotate': { post: ['201', '400', '401', '403', '404', '409', '429', '503'] },
    '/api/v1/admin/auth-cache': { get: ['200', '400', '401', '403', '429', '503'] },
    '/api/v1/admin/auth-cache/flush': { post: ['200', '400', '401', '403', '429', '503'] },
    '/api/v1/admin/organizations/{id}': { patch: ['200', '400', '401', '403', '404', '429', '503'] },
    '/api/v1/audit-events': { get: ['200', '400', '401', '403', '429', '503'] },
    '/api/v1/webhooks': { get: ['200', '400', '401', '403', '429', '503'], post: ['201', '400', '401', '403', '404', '429', '503'] },
    '/api/v1/webhooks/{id}': { delete: ['204', '400', '401', '403', '404', '429', '503'] },
    '/api/v1/webhooks/{id}/deliveries': { get: ['200', '400', '401', '403', '404', '429', '503'] },
    '/api/v1/secret-scanning/github': { post: ['200', '400', '401', '413', '415', '503'] },
    '/api/v1/api-keys/report-leak': { post: ['202', '400', '429'] }
  }
  for (const [path, methods] of Object.entries(expected)) {
    for (const [method, statuses] of Object.entries(methods)) {
      const operation = spec.paths[path]?.[method]
      if (!t.ok(operation, `${method.toUpperCase()} ${path} is documented`)) continue
      t.same(Object.keys(operation.responses).sort(), statuses.sort(), `${method.toUpperCase()} ${path} responses`)
    }
  }
  const documented = Object.keys(spec.paths).filter((p) => !p.startsWith('/docs'))
  t.same(documented.sort(), Object.keys(expected).sort(), 'no route left out, none extra')
  t.ok(spec.components.securitySchemes.apiKey, 'the X-API-Key scheme is described')

  // The key policies' errors and headers, where a client reads them.
  const verify = spec.paths['/api/v1/auth/verify'].get.responses
  t.match(verify['403'].description, /IP_NOT_ALLOWED/)
  t.match(verify['429'].description, /RATE_LIMITED/)
  t.same(Object.keys(verify['429'].headers).sort(), ['ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset', 'retry-after'])
  t.match(verify['200'].description, /RateLimit-Limit/, 'success answers of limited keys carry the RateLimit-* headers')
  const patch = spec.paths['/api/v1/api-keys/{id}'].patch
  t.match(patch.responses['400'].description, /INVALID_CIDR/)
  t.same(Object.keys(patch.requestBody.content['application/json'].schema.properties).sort(), ['allowedCidrs', 'description', 'expiresAt', 'rateLimit', 'scopes'])
  const ready = spec.paths['/ready'].get.responses
  t.same(Object.keys(ready['200'].content).sort(), ['application/json', 'text/plain'], '/ready: text, or JSON detail when asked')
})

t.test('the documentation UI is served', async (t) => {
  const response = await app.inject({ url: '/docs/' })
  t.equal(response.statusCode, 200)
  t.match(response.body, /swagger/i)
})

t.test('a docs file that does not exist is a 404 with a valid key, not a 500 (found by an outside probe)', async (t) => {
  for (const key of ['battra-dev-key-1', 'battra-admin-key-1']) {
    const response = await app.inject({ url: '/docs/static/nonexistent.js', headers: { 'x-api-key': key } })
    t.equal(response.statusCode, 404, key)
    t.equal(response.json().code, 'NOT_FOUND')
  }
  t.equal((await app.inject({ url: '/docs/static/nonexistent.js' })).statusCode, 401, 'without a key, unknown paths are not revealed')
})
