// The Node package (bindings-node, `cibmtr-fhir`) against authorization servers nobody here
// wrote, each started on 127.0.0.1 (port 0) by its test and stopped with it: oidc-provider (npm,
// tests/interop/node/oidc-server.mjs) and an authlib password server
// (tests/interop/authlib/password_server.py). Every flow once; the Rust suite
// (tests/interop/tests/auth_servers.rs) covers more cases.
//
//   node --test tests/interop/node-package/   (scripts/test-interop.sh; CIBMTR_INTEROP_PYTHON is
//                                              the interop virtualenv's interpreter)
//
// Whether a token works is the server's word (introspection, userinfo, a protected resource).
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import { test } from 'node:test'

import * as cf from '../../../bindings-node/index.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const interop = path.resolve(here, '..')
const root = path.resolve(interop, '../..')
const python = process.env.CIBMTR_INTEROP_PYTHON ?? path.join(root, 'target/interop-venv/bin/python')
const OIDC = 'oidc-provider'
const AUTHLIB = 'authlib'
const REDIRECT_URI = 'http://127.0.0.1:9/callback'
const SMART_SCOPE = 'openid offline_access launch/patient patient/*.read'
const hex = (n) => randomBytes(n).toString('hex')
const introspector = ['interop-resource-server', hex(16)]

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/** Starts a server that prints one JSON line when ready; stopped (stdin closed, then killed)
 *  after the test. A server that cannot start fails the test with its name and stderr. */
async function startPeer(t, name, command, args, cwd) {
  const child = spawn(command, args, { cwd, stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d) => {
    stderr += d
  })
  t.after(async () => {
    child.stdin.end()
    const timer = setTimeout(() => child.kill('SIGKILL'), 2000)
    if (child.exitCode === null && child.signalCode === null) await once(child, 'exit')
    clearTimeout(timer)
  })
  const lines = createInterface({ input: child.stdout })
  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} printed no ready line in 60 s; stderr:\n${stderr}`)), 60000)
    lines.once('line', (line) => {
      clearTimeout(timer)
      resolve(JSON.parse(line))
    })
    child.once('error', (e) => reject(new Error(`${name} could not be started (${command}): ${e.message}`)))
    child.once('exit', (code) => reject(new Error(`${name} exited (${code}) before it was ready; stderr:\n${stderr}`)))
  })
  lines.on('line', () => {})
  return { ready, stderr: () => stderr }
}

async function startOidc(t, clients, ttl) {
  const config = {
    clients: [
      ...clients,
      {
        client_id: introspector[0],
        client_secret: introspector[1],
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
  }
  if (ttl) config.ttl = ttl
  const node = path.join(interop, 'node')
  const peer = await startPeer(t, OIDC, process.execPath, [path.join(node, 'oidc-server.mjs'), JSON.stringify(config)], node)
  const r = peer.ready
  return {
    ...peer,
    tokenUrl: r.token_endpoint,
    authorizeUrl: r.authorization_endpoint,
    registrationUrl: r.registration_endpoint,
    userinfoUrl: r.userinfo_endpoint,
    async introspect(token) {
      const res = await fetch(r.introspection_endpoint, {
        method: 'POST',
        headers: { authorization: basic(...introspector) },
        body: new URLSearchParams({ token }),
      })
      assert.equal(res.status, 200, `${OIDC} introspection`)
      return res.json()
    },
  }
}

async function startPasswordServer(t, lifetime) {
  const creds = {
    client_id: `okta-like-${hex(4)}`,
    client_secret: `s%3A:${hex(12)}+/=`,
    username: 'recipient.coordinator@center.example',
    password: `pw:${hex(8)}%+`,
    lifetime,
    scope: 'cibmtr_fhir',
  }
  const peer = await startPeer(t, `${AUTHLIB} password server`, python, [
    path.join(interop, 'authlib', 'password_server.py'),
    JSON.stringify(creds),
  ])
  return {
    ...peer,
    ...creds,
    tokenUrl: peer.ready.token_endpoint,
    grant(password = creds.password) {
      return new cf.PasswordGrant(peer.ready.token_endpoint, creds.client_id, creds.client_secret, creds.username, password, {
        scope: 'cibmtr_fhir',
      })
    },
    async stats() {
      return (await fetch(peer.ready.stats_url)).json()
    },
    async protectedStatus(token) {
      return (await fetch(peer.ready.protected_url, { headers: { authorization: `Bearer ${token}` } })).status
    },
  }
}

/** HTTP Basic with id and secret form-encoded first (RFC 6749 §2.3.1). */
function basic(id, secret) {
  const enc = (s) => new URLSearchParams({ s }).toString().slice(2)
  return `Basic ${Buffer.from(`${enc(id)}:${enc(secret)}`).toString('base64')}`
}

/** Serves a JWKS on a loopback port (a client's `jwks_uri`), counting fetches. */
async function serveJwks(t, jwks) {
  const host = { fetches: 0 }
  const server = createServer((_req, res) => {
    host.fetches += 1
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(jwks))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => server.close())
  host.url = `http://127.0.0.1:${server.address().port}/jwks.json`
  return host
}

/** The user's browser: follows redirects by hand with a cookie jar, submits oidc-provider's
 *  development login (any login) and consent forms; returns the redirect to the app. */
async function browserLogin(op, authorizationUrl, login) {
  const jar = new Map()
  let url = authorizationUrl
  let init = { redirect: 'manual' }
  for (let step = 0; step < 16; step++) {
    const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ')
    const res = await fetch(url, { ...init, headers: { ...(init.headers ?? {}), ...(cookie ? { cookie } : {}) } })
    for (const c of res.headers.getSetCookie()) {
      const [pair, ...attrs] = c.split(';')
      const [name, ...value] = pair.trim().split('=')
      const dead = value.join('=') === '' || attrs.some((a) => /expires=.*1970/i.test(a))
      if (dead) jar.delete(name)
      else jar.set(name, value.join('='))
    }
    if (res.status >= 300 && res.status < 400) {
      const target = new URL(res.headers.get('location'), url).toString()
      if (target.startsWith(REDIRECT_URI)) return target
      url = target
      init = { redirect: 'manual' }
      continue
    }
    const html = await res.text()
    assert.equal(res.status, 200, `${OIDC}: ${res.status} at ${url}: ${html.slice(0, 300)}\n${op.stderr()}`)
    const action = /<form[^>]*action="([^"]+)"/.exec(html)
    const prompt = /name="prompt" value="(\w+)"/.exec(html)
    assert.ok(action && prompt, `${OIDC}: no interaction form at ${url}`)
    const form = new URLSearchParams({ prompt: prompt[1] })
    if (prompt[1] === 'login') {
      form.set('login', login)
      form.set('password', 'any password')
    }
    url = new URL(action[1].replaceAll('&#x2F;', '/').replaceAll('&amp;', '&'), url).toString()
    init = { method: 'POST', body: form, redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded' } }
  }
  throw new Error(`${OIDC}: never got back to the app`)
}

async function login(op, auth, user) {
  const url = await auth.authorizationUrl()
  const q = new URL(url).searchParams
  assert.equal(q.get('code_challenge_method'), 'S256')
  const back = new URL(await browserLogin(op, url, user))
  assert.equal(back.searchParams.get('state'), q.get('state'))
  assert.ok(back.searchParams.get('code'))
  await auth.complete(back.toString())
}

function smartApp(clientId, secret) {
  return {
    client_id: clientId,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: [REDIRECT_URI],
    scope: SMART_SCOPE,
    token_endpoint_auth_method: secret ? 'client_secret_basic' : 'none',
    ...(secret ? { client_secret: secret } : {}),
  }
}

async function rejectsWithAuth(promise, error, message) {
  await assert.rejects(promise, (e) => {
    assert.equal(e.code, 'AUTH', message)
    assert.equal(e.error, error, message)
    return true
  })
}

// ---------------------------------------------------------------------------------------------
// oidc-provider
// ---------------------------------------------------------------------------------------------

for (const authMethod of ['client_secret_post', 'client_secret_basic']) {
  test(`ClientCredentials (${authMethod}) against ${OIDC}`, async (t) => {
    const flow = `ClientCredentials (${authMethod})`
    // `%`, `:` and `+` in the secret: Basic must form-encode it.
    const secret = `node%25:${hex(8)}+/=`
    const op = await startOidc(t, [
      {
        client_id: 'cc',
        client_secret: secret,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: authMethod,
        scope: 'system/*.read',
      },
    ])
    const auth = new cf.ClientCredentials(op.tokenUrl, 'cc', secret, { scope: 'system/*.read unknown/scope', authMethod })
    const token = await auth.token().catch((e) => assert.fail(`${flow} against ${OIDC}: ${e.message}\n${op.stderr()}`))
    const live = await op.introspect(token)
    assert.equal(live.active, true, `${flow} against ${OIDC}`)
    assert.equal(live.client_id, 'cc')
    assert.equal(live.scope, 'system/*.read', `${flow} against ${OIDC}: unknown scope dropped`)
    assert.equal(await auth.token(), token)
    assert.equal(auth.stats().tokenRequests, 1)
    const wrong = new cf.ClientCredentials(op.tokenUrl, 'cc', 'wrong', { scope: 'system/*.read', authMethod })
    await rejectsWithAuth(wrong.token(), 'invalid_client', `${flow} against ${OIDC}: wrong secret`)
  })
}

for (const [algorithm, byUri] of [
  ['RS384', false],
  ['ES384', false],
  ['RS384', true],
  ['ES384', true],
]) {
  const how = byUri ? 'jwks_uri' : 'inline JWKS'
  test(`BackendServices (private_key_jwt ${algorithm}, ${how}) against ${OIDC}`, async (t) => {
    const flow = `BackendServices (private_key_jwt ${algorithm}, ${how})`
    const key = await cf.generateKey(algorithm)
    const jwks = cf.publicJwks(key.privatePem, algorithm)
    assert.deepEqual(jwks, key.jwks)
    const client = {
      client_id: 'backend',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: algorithm,
      scope: 'system/*.read',
    }
    const host = byUri ? await serveJwks(t, jwks) : null
    if (host) client.jwks_uri = host.url
    else client.jwks = jwks
    const op = await startOidc(t, [client])
    const auth = new cf.BackendServices('backend', key.privatePem, { tokenUrl: op.tokenUrl, algorithm, scope: 'system/*.read' })
    const first = await auth.token().catch((e) => assert.fail(`${flow} against ${OIDC}: ${e.message}\n${op.stderr()}`))
    const live = await op.introspect(first)
    assert.equal(live.active, true, `${flow} against ${OIDC}`)
    assert.equal(live.client_id, 'backend')
    // A second token needs a fresh assertion (oidc-provider refuses a replayed jti).
    auth.invalidate()
    const second = await auth.token()
    assert.notEqual(second, first)
    assert.equal((await op.introspect(second)).active, true, `${flow} against ${OIDC}: second token`)
    assert.equal(auth.stats().tokenRequests, 2)
    if (host) assert.ok(host.fetches >= 1, `${flow}: ${OIDC} never fetched the jwks_uri`)
    const stranger = await cf.generateKey(algorithm)
    const impostor = new cf.BackendServices('backend', stranger.privatePem, { tokenUrl: op.tokenUrl, algorithm, scope: 'system/*.read' })
    await rejectsWithAuth(impostor.token(), 'invalid_client', `${flow} against ${OIDC}: unregistered key`)
  })
}

test(`AuthorizationCode (PKCE S256, refresh rotation) against ${OIDC}`, async (t) => {
  const flow = 'AuthorizationCode (PKCE S256, refresh rotation)'
  const secret = `app:${hex(8)}%+`
  const op = await startOidc(t, [smartApp('smart-app', secret)])
  const auth = new cf.AuthorizationCode('smart-app', REDIRECT_URI, SMART_SCOPE, {
    clientSecret: secret,
    authorizeUrl: op.authorizeUrl,
    tokenUrl: op.tokenUrl,
  })
  await login(op, auth, 'alice')
  const first = await auth.token()
  const live = await op.introspect(first)
  assert.equal(live.active, true, `${flow} against ${OIDC}`)
  assert.equal(live.sub, 'alice')
  const me = await fetch(op.userinfoUrl, { headers: { authorization: `Bearer ${first}` } })
  assert.equal(me.status, 200, `${flow} against ${OIDC}: userinfo`)
  assert.equal((await me.json()).sub, 'alice')
  assert.ok(auth.context.id_token)
  assert.ok(!JSON.stringify(auth.context).includes(first), 'the context holds no token')

  // Forced refresh from 50 callers at once: one refresh-token request. oidc-provider rotates
  // strictly, so a duplicate refresh would revoke the grant and leave every token dead.
  auth.invalidate()
  const tokens = new Set(await Promise.all(Array.from({ length: 50 }, () => auth.token())))
  assert.equal(tokens.size, 1, `${flow} against ${OIDC}`)
  const [second] = tokens
  assert.notEqual(second, first)
  assert.equal(auth.stats().tokenRequests, 2)
  assert.equal((await op.introspect(second)).active, true, `${flow} against ${OIDC}: the grant survived`)
  // The rotated refresh token is the one presented next.
  auth.invalidate()
  const third = await auth.token()
  assert.equal((await op.introspect(third)).active, true, `${flow} against ${OIDC}: second refresh`)
})

test(`registerClient (RFC 7591) + AuthorizationCode against ${OIDC}`, async (t) => {
  const flow = 'registerClient + AuthorizationCode'
  const op = await startOidc(t, [])
  const reg = await cf.registerClient(op.registrationUrl, 'cibmtr-fhir node interop', [REDIRECT_URI], SMART_SCOPE)
  assert.ok(reg.clientId && reg.clientSecret)
  assert.ok(!JSON.stringify(reg).includes(reg.clientSecret), 'JSON hides the secret')
  const auth = new cf.AuthorizationCode(reg.clientId, REDIRECT_URI, SMART_SCOPE, {
    clientSecret: reg.clientSecret,
    authorizeUrl: op.authorizeUrl,
    tokenUrl: op.tokenUrl,
  })
  await login(op, auth, 'carol')
  const live = await op.introspect(await auth.token())
  assert.equal(live.active, true, `${flow} against ${OIDC}`)
  assert.equal(live.client_id, reg.clientId)
})

// ---------------------------------------------------------------------------------------------
// authlib: the password grant
// ---------------------------------------------------------------------------------------------

test(`PasswordGrant against ${AUTHLIB}: one request for many callers, sent with Basic`, async (t) => {
  const flow = 'PasswordGrant'
  const s = await startPasswordServer(t, 300)
  const auth = s.grant()
  const tokens = new Set(await Promise.all(Array.from({ length: 100 }, () => auth.token())))
  assert.equal(tokens.size, 1, `${flow} against ${AUTHLIB}`)
  const [token] = tokens
  assert.equal(await s.protectedStatus(token), 200, `${flow} against ${AUTHLIB}`)
  const stats = await s.stats()
  assert.equal(stats.token_requests, 1, `${flow} against ${AUTHLIB}`)
  assert.deepEqual(stats.auth_methods, { client_secret_basic: 1 })
  // The same secret in the body is refused, so the SDK's success means it sent Basic.
  const res = await fetch(s.tokenUrl, {
    method: 'POST',
    body: new URLSearchParams({
      grant_type: 'password',
      username: s.username,
      password: s.password,
      client_id: s.client_id,
      client_secret: s.client_secret,
    }),
  })
  assert.equal(res.status, 401)
  assert.equal((await res.json()).error, 'invalid_client')
})

test(`PasswordGrant against ${AUTHLIB}: refresh ahead over short lifetimes`, async (t) => {
  const flow = 'PasswordGrant (refresh ahead, 2 s tokens)'
  const lifetime = 2
  const s = await startPasswordServer(t, lifetime)
  const auth = s.grant()
  const deadline = Date.now() + (3 * lifetime + 0.5) * 1000
  const seen = new Set()
  while (Date.now() < deadline) {
    const tokens = await Promise.all(Array.from({ length: 4 }, () => auth.token()))
    for (const token of new Set(tokens)) {
      seen.add(token)
      assert.equal(await s.protectedStatus(token), 200, `${flow} against ${AUTHLIB}: a handed-out token was refused`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  const { token_requests: requests } = await s.stats()
  assert.ok(requests >= 3 && requests <= 6, `${flow} against ${AUTHLIB}: ${requests} token requests`)
  assert.equal(requests, seen.size)
  assert.equal(requests, auth.stats().tokenRequests)
})

test(`PasswordGrant against ${AUTHLIB}: a wrong password is invalid_grant, not retried`, async (t) => {
  const flow = 'PasswordGrant (wrong password)'
  const s = await startPasswordServer(t, 300)
  const auth = s.grant('not-the-password')
  for (let i = 0; i < 3; i++) {
    await assert.rejects(auth.token(), (e) => {
      assert.equal(e.code, 'AUTH', `${flow} against ${AUTHLIB}`)
      assert.equal(e.error, 'invalid_grant')
      assert.equal(e.status, 400)
      return true
    })
  }
  assert.equal((await s.stats()).token_requests, 1, `${flow} against ${AUTHLIB}: retried or asked again`)
})
