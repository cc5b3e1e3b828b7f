// What counts as "the database is not there right now" (503) and what is a bug (500).
import t from 'tap'
import { isDatabaseUnavailable } from '#src/db/failures.ts'

t.test('the ways pg, the adapter and Prisma say the database is unavailable', async (t) => {
  const unavailable: Array<[string, unknown]> = [
    ['refused', Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })],
    ['terminated by an administrator (pg)', Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' })],
    ['terminated, wrapped by Prisma as P2039', Object.assign(new Error('Database error. Code: `57P01`. Message: `terminating connection due to administrator command`'), { code: 'P2039' })],
    ['a cause chain', new Error('outer', { cause: Object.assign(new Error('inner'), { code: '08006' }) })],
    ['a client that lost its connection', new Error('Client has encountered a connection error and is not queryable')],
    ['Prisma cannot reach the server', Object.assign(new Error('x'), { code: 'P1001' })],
    ['the database dropped under the service (pg; found by an outside probe)', Object.assign(new Error('database "battra" does not exist'), { code: '3D000' })],
    ['the same through Prisma\'s adapter, by message only', Object.assign(new Error('Database error. Code: `3D000`. Message: `database "battra" does not exist`'), { code: 'P2039' })],
    ['its password no longer accepted', Object.assign(new Error('password authentication failed for user "battra"'), { code: '28P01' })],
    ['its login refused, through Prisma (P1010; found by an outside probe)', Object.assign(new Error('User was denied access on the database'), { code: 'P1010' })],
    ['a raw query whose connection a proxy closed (P2010, the adapter says ConnectionClosed; found by an outside probe)', Object.assign(new Error('Raw query failed'), { code: 'P2010', meta: { driverAdapterError: { cause: { kind: 'ConnectionClosed' } } } })],
    ['the adapter\'s error itself in a cause chain', new Error('outer', { cause: { name: 'DriverAdapterError', kind: 'DatabaseNotReachable' } })]
  ]
  for (const [name, error] of unavailable) t.ok(isDatabaseUnavailable(error), name)
  const bugs: Array<[string, unknown]> = [
    ['a unique violation', Object.assign(new Error('duplicate key value violates unique constraint'), { code: '23505' })],
    ['a syntax error wrapped by Prisma', Object.assign(new Error('Database error. Code: `42601`. Message: `syntax error`'), { code: 'P2039' })],
    ['a raw query that broke a unique constraint (the adapter\'s kind is no outage)', Object.assign(new Error('Raw query failed'), { code: 'P2010', meta: { driverAdapterError: { cause: { kind: 'UniqueConstraintViolation' } } } })],
    ['a plain bug', new TypeError('undefined is not a function')],
    ['not an error', 'text']
  ]
  for (const [name, error] of bugs) t.notOk(isDatabaseUnavailable(error), name)
})
