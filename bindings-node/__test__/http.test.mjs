// HTTP settings (the `http` option): timeouts, retry bounds, a proxy, extra CA certificates and
// allowHttpHosts, against the sandbox and small local servers.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import https from 'node:https'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import util from 'node:util'

import { cf, rejectsWith, startSandbox } from './helpers.mjs'

// A test-only CA and a server certificate it signed for localhost and 127.0.0.1 (tls/README).
const TLS = new URL('./tls/', import.meta.url)
const CA_FILE = new URL('ca.pem', TLS).pathname

function oktaGrantWith(sb, http, url) {
  const o = sb.credentials.okta
  return new cf.PasswordGrant(url ?? o.tokenUrl, o.clientId, o.clientSecret, o.username, o.password, {
    scope: o.scope,
    http,
  })
}

/** How long `promise` took to settle, and its error (if it rejected). */
async function timed(promise) {
  const started = Date.now()
  try {
    await promise
    return { ms: Date.now() - started }
  } catch (error) {
    return { ms: Date.now() - started, error }
  }
}

/** A port on 127.0.0.1 where nothing listens. */
async function deadPort() {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address()
  server.close()
  await once(server, 'close')
  return port
}

test('a short timeout fails fast with NETWORK where the default waits', async (t) => {
  const sb = await startSandbox(t)
  sb.setFault('observation_search', { delay: 1.5 })
  const auth = oktaGrantWith(sb)
  const quick = new cf.FhirClient(sb.urls.cibmtrBase, {
    auth,
    fhirVersion: 'STU3',
    http: { timeout: 300, requestRetries: 0 },
  })
  const fast = await timed(quick.read('Observation', 'nope'))
  assert.equal(fast.error?.code, 'NETWORK', String(fast.error))
  assert.match(fast.error.message, /timed out/)
  assert.ok(fast.ms < 1200, `${fast.ms} ms`)
  const patient = new cf.FhirClient(sb.urls.cibmtrBase, { auth, fhirVersion: 'STU3' })
  const slow = await timed(patient.read('Observation', 'nope'))
  assert.equal(slow.error?.code, 'HTTP', 'the default waits for the slow answer (a 404)')
  assert.ok(slow.ms >= 1400, `${slow.ms} ms`)

  // The token endpoint too, with the flow's own settings.
  sb.setFault('okta_token', { delay: 1.5 })
  const token = await timed(oktaGrantWith(sb, { timeout: 300, tokenRetries: 0 }).token())
  assert.equal(token.error?.code, 'NETWORK')
  assert.ok(token.ms < 1200, `${token.ms} ms`)
  assert.equal(sb.requests('okta_token'), 2, 'the first grant, then this single attempt')
})

test('retry bounds: requestRetries 0 makes one attempt where the default retries', async (t) => {
  const sb = await startSandbox(t)
  const auth = oktaGrantWith(sb)
  await auth.token()
  sb.setFault('observation_search', { status: 503 })
  const once = new cf.FhirClient(sb.urls.cibmtrBase, { auth, fhirVersion: 'STU3', http: { requestRetries: 0 } })
  await rejectsWith(once.read('Observation', 'x'), 'HTTP', { status: 503 })
  assert.equal(sb.requests('observation_search'), 1)
  const byDefault = new cf.FhirClient(sb.urls.cibmtrBase, { auth, fhirVersion: 'STU3' })
  await rejectsWith(byDefault.read('Observation', 'x'), 'HTTP', { status: 503 })
  assert.equal(sb.requests('observation_search'), 1 + 5, '1 attempt and 4 retries by default')

  sb.setFault('okta_token', { status: 503 })
  await assert.rejects(oktaGrantWith(sb, { tokenRetries: 0 }).token())
  assert.equal(sb.requests('okta_token'), 1 + 1)
  // Settings of its own (all defaults), so the token `auth` cached is not used.
  await assert.rejects(oktaGrantWith(sb, {}).token())
  assert.equal(sb.requests('okta_token'), 2 + 4, '1 attempt and 3 retries by default')
})

test('bad settings are VALIDATION errors naming the key, before any request', async (t) => {
  const sb = await startSandbox(t)
  const dir = await mkdtemp(join(tmpdir(), 'cibmtr-fhir-http-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const notPem = join(dir, 'not-a-cert.pem')
  await writeFile(notPem, 'hello')
  const cases = [
    [{ timeout: -1 }, 'timeout'],
    [{ timeout: 0 }, 'timeout'],
    [{ connectTimeout: Number.NaN }, 'connectTimeout'],
    [{ maxRateLimitWait: Infinity }, 'maxRateLimitWait'],
    [{ maxRetryTime: -5 }, 'maxRetryTime'],
    [{ proxy: 'proxy.example.org:3128' }, 'proxy'],
    [{ caFiles: ['/nonexistent/ca.pem'] }, 'caFiles'],
    [{ caFiles: [CA_FILE, notPem] }, 'caFiles'],
    [{ allowHttpHosts: ['http://fhir.internal'] }, 'allowHttpHosts'],
    [{ tokenRetries: -1 }, 'tokenRetries'],
    [{ requestRetries: 1.5 }, 'requestRetries'],
  ]
  const s = sb.credentials.smart
  for (const [http, field] of cases) {
    await rejectsWith(() => oktaGrantWith(sb, http), 'VALIDATION', { field, name: 'ValidationError' })
    await rejectsWith(() => new cf.FhirClient(sb.urls.mskFhir, { http }), 'VALIDATION', { field })
    await rejectsWith(() => sb.cibmtrClient({ http }), 'VALIDATION', { field })
    await rejectsWith(cf.registerClient(s.registrationUrl, 'app', [s.redirectUri], s.scope, { http }), 'VALIDATION', { field })
  }
  assert.equal(sb.tokenRequestsTotal(), 0, 'nothing was sent')
  // A refused proxy is not echoed.
  const e = await rejectsWith(() => oktaGrantWith(sb, { proxy: 'svc:hunter2@proxy.example.org' }), 'VALIDATION')
  assert.ok(!e.message.includes('hunter2'))
  // A value of the wrong type is refused by the conversion, naming the key.
  assert.throws(() => oktaGrantWith(sb, { timeout: '5' }), /timeout/)
  assert.throws(() => oktaGrantWith(sb, { caFiles: CA_FILE }), /caFiles/)
  // Several CA files are fine.
  oktaGrantWith(sb, { caFiles: [CA_FILE, new URL('server.pem', TLS).pathname] })
})

/** An HTTP proxy that answers every request itself with a token and records what it got. */
async function fakeProxy(t) {
  const seen = []
  const server = net.createServer((socket) => {
    let data = ''
    socket.on('data', (chunk) => {
      data += chunk.toString('latin1')
      if (!data.includes('\r\n\r\n')) return
      seen.push(data)
      const body = JSON.stringify({ access_token: 'via-proxy', token_type: 'Bearer', expires_in: 3600 })
      socket.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: ${body.length}\r\n\r\n${body}`)
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => server.close())
  return { port: server.address().port, seen }
}

test('a proxy carries the requests with its credentials, which are never shown', async (t) => {
  const sb = await startSandbox(t)
  const proxy = await fakeProxy(t)
  const http = { proxy: `http://svc:hunter2@127.0.0.1:${proxy.port}`, tokenRetries: 0 }
  const auth = oktaGrantWith(sb, http)
  assert.equal(await auth.token(), 'via-proxy')
  assert.equal(sb.requests('okta_token'), 0, 'it went to the proxy, not to the sandbox')
  const head = proxy.seen[0]
  assert.ok(head.startsWith(`POST ${sb.credentials.okta.tokenUrl} HTTP/1.1`), head)
  const basic = Buffer.from('svc:hunter2').toString('base64')
  assert.ok(head.toLowerCase().includes(`proxy-authorization: basic ${basic}`.toLowerCase()), head)
  const client = new cf.CibmtrClient('12345', auth, { baseUrl: sb.urls.cibmtrBase, http })
  for (const value of [auth, client, client.fhir]) {
    const text = [util.inspect(value, { showHidden: true }), JSON.stringify(value), String(value)].join('\n')
    assert.ok(!text.includes('hunter2'), text)
  }
  // A proxy that does not answer: the error names the target, never the proxy's password.
  const port = await deadPort()
  const e = await rejectsWith(
    oktaGrantWith(sb, { proxy: `http://svc:hunter2@127.0.0.1:${port}`, tokenRetries: 0 }).token(),
    'NETWORK',
  )
  const text = [e.message, e.stack, util.inspect(e), JSON.stringify(e)].join('\n')
  assert.ok(!text.includes('hunter2'), text)
})

test('caFiles trusts a private certificate authority (a TLS-inspecting proxy)', async (t) => {
  const server = https.createServer(
    { key: readFileSync(new URL('server.key', TLS)), cert: readFileSync(new URL('server.pem', TLS)) },
    (req, res) => {
      req.resume()
      req.on('end', () => {
        res.setHeader('Content-Type', 'application/json')
        res.end(JSON.stringify({ access_token: 'over-tls', token_type: 'Bearer', expires_in: 3600 }))
      })
    },
  )
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => server.close())
  const url = `https://localhost:${server.address().port}/token`
  const untrusted = new cf.ClientCredentials(url, 'id', 'secret', { http: { tokenRetries: 0 } })
  await rejectsWith(untrusted.token(), 'NETWORK')
  const trusted = new cf.ClientCredentials(url, 'id', 'secret', { http: { caFiles: [CA_FILE], tokenRetries: 0 } })
  assert.equal(await trusted.token(), 'over-tls')
})

test('allowHttpHosts lets plain http reach a listed host', async (t) => {
  const sb = await startSandbox(t)
  // Refused by default, before any request; accepted when the host is listed.
  const e = await rejectsWith(() => oktaGrantWith(sb, undefined, 'http://okta.internal/token'), 'CONFIG')
  assert.match(e.message, /allow_http_hosts/)
  oktaGrantWith(sb, { allowHttpHosts: ['okta.internal'] }, 'http://okta.internal/token')
  // End to end through a host that is not loopback by name but reaches this machine (0.0.0.0
  // connects to the local host on Linux).
  const url = sb.credentials.okta.tokenUrl.replace('127.0.0.1', '0.0.0.0')
  await rejectsWith(() => oktaGrantWith(sb, undefined, url), 'CONFIG')
  assert.ok(await oktaGrantWith(sb, { allowHttpHosts: ['0.0.0.0'] }, url).token())
  assert.equal(sb.requests('okta_token'), 1)
})

test('every entry point takes http', async (t) => {
  const sb = await startSandbox(t)
  const http = { timeout: 10_000, requestRetries: 1 }
  const client = sb.cibmtrClient({ http })
  const crid = await client.registerCrid('Ida', 'Moe', '1961-02-03', 'F')
  const patientId = await client.ensurePatient(crid)
  const s = sb.credentials.smart
  const reg = await cf.registerClient(s.registrationUrl, 'app', [s.redirectUri], s.scope, { http })
  const pub = await cf.registerPublicClient(s.registrationUrl, 'app', [s.redirectUri], s.scope, { http })
  assert.ok(reg.clientSecret)
  assert.equal(pub.clientSecret, null)
  const code = new cf.AuthorizationCode(reg.clientId, s.redirectUri, s.scope, {
    clientSecret: reg.clientSecret,
    fhirBase: s.fhirBase,
    http,
  })
  assert.ok((await code.authorizationUrl()).startsWith(s.authorizeUrl))
  const b = sb.credentials.backend
  const backend = new cf.BackendServices(b.clientId, b.privateKeyPem, {
    tokenUrl: b.tokenUrl,
    algorithm: 'ES384',
    scope: b.scope,
    http,
  })
  assert.ok(await backend.token())
  const m = sb.credentials.msk
  assert.ok(await new cf.ClientCredentials(m.tokenUrl, m.clientId, m.clientSecret, { scope: m.scope, http }).token())
  const fhir = new cf.FhirClient(sb.urls.cibmtrBase, { auth: oktaGrantWith(sb, http), fhirVersion: 'STU3', http })
  assert.equal((await fhir.read('Patient', patientId)).id, patientId)
})
