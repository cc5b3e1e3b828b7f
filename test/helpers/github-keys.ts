// GitHub secret scanning, played by the test: a P-256 key pair, signatures as GitHub makes them, and a
// local HTTP server standing in for api.github.com/meta/public_keys/secret_scanning that counts requests.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto'
import type { Teardown } from './database.ts'

export interface SigningKey {
  id: string
  privateKey: KeyObject
  pem: string
}

export function newSigningKey (id: string, namedCurve = 'P-256'): SigningKey {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve })
  return { id, privateKey, pem: publicKey.export({ type: 'spki', format: 'pem' }) as string }
}

/** What GitHub sends in Github-Public-Key-Signature: base64 of the DER signature of the raw body. */
export function signBody (body: Buffer | string, key: SigningKey): string {
  return sign('sha256', typeof body === 'string' ? Buffer.from(body) : body, { key: key.privateKey, dsaEncoding: 'der' }).toString('base64')
}

export function keysDocument (...keys: SigningKey[]): string {
  return JSON.stringify({
    public_keys: keys.map((key, index) => ({ key_identifier: key.id, key: key.pem, is_current: index === keys.length - 1 }))
  })
}

export interface KeysServer {
  url: string
  /** Requests received so far. */
  readonly requests: number
  /** Status and body of the next answers. */
  answer: { status: number, body: string }
}

export async function startKeysServer (t: Teardown, body: string, status = 200): Promise<KeysServer> {
  const state = { requests: 0, answer: { status, body } }
  const server: Server = createServer((_request, response) => {
    state.requests++
    response.writeHead(state.answer.status, { 'content-type': 'application/json' }).end(state.answer.body)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/meta/public_keys/secret_scanning`,
    get requests () { return state.requests },
    get answer () { return state.answer },
    set answer (value) { state.answer = value }
  }
}
