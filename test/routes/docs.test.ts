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
    '/api/v1/api-keys/{id}': { delete: ['204', '400', '401', '403', '404', '409', '429', '503'] },
    '/api/v1/api-keys/{id}/rotate': { post: ['201', '400', '401', '403', '404', '409', '429', '503'] },
    '/api/v1/admin/auth-cache': { get: ['200', '400', '401', '403', '429', '503'] },
    '/api/v1/admin/auth-cache/flush': { post: ['200', '400', '401', '403', '429', '503'] }
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
})

t.test('the documentation UI is served', async (t) => {
  const response = await app.inject({ url: '/docs/' })
  t.equal(response.statusCode, 200)
  t.match(response.body, /swagger/i)
})
