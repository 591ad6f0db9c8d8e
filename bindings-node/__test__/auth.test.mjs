// The four flows against the sandbox started from Node, key generation and registration.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { cf, oktaGrant, rejectsWith, startSandbox } from './helpers.mjs'

test('PasswordGrant: one token request, then the cache', async (t) => {
  const sb = await startSandbox(t)
  const auth = oktaGrant(sb)
  const tokens = await Promise.all(Array.from({ length: 200 }, () => auth.token()))
  assert.equal(new Set(tokens).size, 1, 'every caller got the same token')
  assert.equal(typeof tokens[0], 'string')
  assert.ok(tokens[0].length > 20)
  assert.equal(sb.tokenRequests(sb.credentials.okta.clientId), 1)
  const stats = auth.stats()
  assert.equal(stats.tokenRequests, 1)
  assert.equal(stats.cacheHits + 1, 200)

  // The token is accepted by the server it was minted for.
  const res = await fetch(sb.urls.protected, { headers: { authorization: `Bearer ${tokens[0]}` } })
  assert.equal(res.status, 200)

  // invalidate() makes the next call ask again, once for many callers.
  auth.invalidate()
  const again = await Promise.all(Array.from({ length: 50 }, () => auth.token()))
  assert.equal(new Set(again).size, 1)
  assert.notEqual(again[0], tokens[0])
  assert.equal(sb.tokenRequests(sb.credentials.okta.clientId), 2)
  // invalidateToken() drops only the current token.
  assert.equal(auth.invalidateToken(tokens[0]), false)
  assert.equal(auth.invalidateToken(again[0]), true)
})

test('token(): a cached token is answered at once, still a Promise, one request for 10,000 calls', async (t) => {
  const sb = await startSandbox(t)
  const auth = oktaGrant(sb)
  const clientId = sb.credentials.okta.clientId
  const first = await auth.token()
  // The fast path (a fresh cached token) and the slow one both return a real Promise.
  const pending = auth.token()
  assert.ok(pending instanceof Promise, 'a cached token() is a Promise')
  assert.equal(await pending, first)
  for (let i = 0; i < 10_000; i++) {
    const token = await auth.token()
    if (token !== first) assert.fail(`call ${i} answered another token`)
  }
  assert.equal(sb.tokenRequests(clientId), 1)
  const stats = auth.stats()
  assert.equal(stats.tokenRequests, 1)
  assert.equal(stats.cacheHits, 10_001)
  // After invalidate() the next call goes to the server again, then the cache answers again.
  auth.invalidate()
  const next = auth.token()
  assert.ok(next instanceof Promise)
  const renewed = await next
  assert.notEqual(renewed, first)
  assert.equal(sb.tokenRequests(clientId), 2)
  for (let i = 0; i < 1_000; i++) assert.equal(await auth.token(), renewed)
  assert.equal(sb.tokenRequests(clientId), 2)
  // A failure is a rejection, never a synchronous throw.
  let thrown = null
  let failing
  try {
    failing = oktaGrant(sb, { password: 'not-the-password' }).token()
  } catch (e) {
    thrown = e
  }
  assert.equal(thrown, null, 'token() threw instead of rejecting')
  assert.ok(failing instanceof Promise)
  await rejectsWith(failing, 'AUTH')
})

test('token(): a token near expiry is refreshed ahead, not served from the cache until it expires', async (t) => {
  // A 3 s token: refresh-ahead from 2.5 s (a sixth of its life before expiry), expired at 3 s.
  const sb = await startSandbox(t, { oktaTokenTtl: 3 })
  const auth = oktaGrant(sb)
  const clientId = sb.credentials.okta.clientId
  const first = await auth.token()
  const obtained = performance.now()
  for (let i = 0; i < 1_000; i++) assert.equal(await auth.token(), first)
  assert.equal(sb.tokenRequests(clientId), 1)
  // Into the refresh-ahead window, while the first token is still valid: the next call
  // refreshes; a fast path that only checked expiry would still answer the first token.
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, 2_650 - (performance.now() - obtained))))
  const refreshed = await auth.token()
  assert.notEqual(refreshed, first, 'the token was not refreshed ahead of expiry')
  assert.equal(sb.tokenRequests(clientId), 2)
  assert.equal(auth.stats().refreshes, 1)
  // The new token is fresh: the cache answers again without a request.
  for (let i = 0; i < 1_000; i++) assert.equal(await auth.token(), refreshed)
  assert.equal(sb.tokenRequests(clientId), 2)
})

test('ClientCredentials: client_secret_post and client_secret_basic', async (t) => {
  const sb = await startSandbox(t)
  for (const [creds, authMethod] of [
    [sb.credentials.msk, 'client_secret_post'],
    [sb.credentials.mskBasic, 'client_secret_basic'],
  ]) {
    const auth = new cf.ClientCredentials(creds.tokenUrl, creds.clientId, creds.clientSecret, {
      scope: creds.scope,
      authMethod,
    })
    const token = await auth.token()
    assert.equal(await auth.token(), token)
    assert.equal(sb.tokenRequests(creds.clientId), 1, authMethod)
  }
  // The sandbox's basic-only client refuses the secret in the body.
  const basicOnly = sb.credentials.mskBasic
  const wrong = new cf.ClientCredentials(basicOnly.tokenUrl, basicOnly.clientId, basicOnly.clientSecret, {
    scope: basicOnly.scope,
    authMethod: 'client_secret_post',
  })
  await rejectsWith(wrong.token(), 'AUTH')
  // An unknown method is refused before anything is sent.
  await rejectsWith(
    () => new cf.ClientCredentials(basicOnly.tokenUrl, 'x', 'y', { authMethod: 'private_key_jwt' }),
    'VALIDATION',
    { field: 'auth_method' },
  )
})

test('BackendServices: the sandbox client, and a key from generateKey', async (t) => {
  const sb = await startSandbox(t)
  const b = sb.credentials.backend
  const given = new cf.BackendServices(b.clientId, b.privateKeyPem, {
    tokenUrl: b.tokenUrl,
    algorithm: 'ES384',
    keyId: b.keyId,
    scope: b.scope,
  })
  const token = await given.token()
  const res = await fetch(sb.urls.protected, { headers: { authorization: `Bearer ${token}` } })
  assert.equal(res.status, 200)

  for (const algorithm of ['ES384', 'RS384']) {
    const key = await cf.generateKey(algorithm)
    assert.equal(key.algorithm, algorithm)
    assert.match(key.privatePem, /^-----BEGIN PRIVATE KEY-----/)
    assert.equal(key.jwks.keys.length, 1)
    assert.equal(key.jwks.keys[0].kid, key.keyId)
    assert.deepEqual(cf.publicJwks(key.privatePem, algorithm), key.jwks)
    const clientId = `node-backend-${algorithm}`
    sb.registerBackendClient(clientId, key.jwks)
    // Token endpoint discovered from the FHIR base.
    const auth = new cf.BackendServices(clientId, key.privatePem, {
      fhirBase: b.fhirBase,
      algorithm,
      scope: 'system/*.read',
    })
    assert.equal(auth.keyId, key.keyId)
    const tokens = await Promise.all(Array.from({ length: 20 }, () => auth.token()))
    assert.equal(new Set(tokens).size, 1)
    assert.equal(sb.tokenRequests(clientId), 1)
  }
  // A key that does not match the algorithm is refused before any request.
  const ec = await cf.generateKey('ES384')
  await rejectsWith(
    () => new cf.BackendServices('x', ec.privatePem, { tokenUrl: b.tokenUrl, algorithm: 'RS384' }),
    'VALIDATION',
  )
  await rejectsWith(cf.generateKey('HS256'), 'VALIDATION', { field: 'algorithm' })
})

test('AuthorizationCode: authorizationUrl, the browser redirect, complete, context, refresh', async (t) => {
  const sb = await startSandbox(t)
  const s = sb.credentials.smart
  const flow = new cf.AuthorizationCode(s.clientId, s.redirectUri, s.scope, {
    clientSecret: s.clientSecret,
    fhirBase: s.fhirBase,
  })
  const url = new URL(await flow.authorizationUrl())
  assert.equal(url.searchParams.get('code_challenge_method'), 'S256')
  assert.ok(url.searchParams.get('state'))
  assert.equal(url.searchParams.get('aud'), s.fhirBase)
  const res = await fetch(url, { redirect: 'manual' })
  assert.ok([302, 303].includes(res.status), `status ${res.status}`)
  const location = res.headers.get('location')
  assert.ok(location.startsWith(s.redirectUri))
  await flow.complete(location)
  assert.equal(flow.context.patient, s.patient)
  assert.equal(flow.context.access_token, undefined)
  const token = await flow.token()
  const ok = await fetch(sb.urls.protected, { headers: { authorization: `Bearer ${token}` } })
  assert.equal(ok.status, 200)

  // The refresh token is used when the access token is dropped: no new login needed.
  flow.invalidate()
  const refreshed = await flow.token()
  assert.notEqual(refreshed, token)
  assert.equal(flow.stats().tokenRequests, 2)

  // Another object resumes from a saved access token without a request while it is valid.
  const resumed = new cf.AuthorizationCode(s.clientId, s.redirectUri, s.scope, {
    clientSecret: s.clientSecret,
    fhirBase: s.fhirBase,
  })
  resumed.restore(refreshed, { expiresAt: Date.now() + 3600_000 })
  assert.equal(await resumed.token(), refreshed)
  assert.equal(resumed.stats().tokenRequests, 0)
  await rejectsWith(() => resumed.restore('x', { expiresAt: -1 }), 'VALIDATION', { field: 'expiresAt' })

  // A redirect from another login (wrong state) is refused before any request.
  await flow.authorizationUrl()
  await rejectsWith(flow.complete(location), 'AUTH', { error: 'state_mismatch' })
})

test('registerClient and registerPublicClient, then a public client logs in', async (t) => {
  const sb = await startSandbox(t)
  const s = sb.credentials.smart
  const confidential = await cf.registerClient(s.registrationUrl, 'node test', [s.redirectUri], s.scope)
  assert.ok(confidential.clientId)
  assert.ok(confidential.clientSecret)
  const pub = await cf.registerPublicClient(s.registrationUrl, 'node public', [s.redirectUri], s.scope)
  assert.equal(pub.clientSecret, null)
  const flow = new cf.AuthorizationCode(pub.clientId, s.redirectUri, s.scope, { fhirBase: s.fhirBase })
  const res = await fetch(await flow.authorizationUrl(), { redirect: 'manual' })
  await flow.complete(res.headers.get('location'))
  assert.ok((await flow.token()).length > 10)
  await rejectsWith(
    cf.registerClient(s.registrationUrl, 'none', [], s.scope),
    'VALIDATION',
    { field: 'redirect_uris' },
  )
})

test('a token store file is shared by two flow objects', async (t) => {
  const { mkdtemp, rm, stat } = await import('node:fs/promises')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = await mkdtemp(join(tmpdir(), 'cibmtr-fhir-node-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const sb = await startSandbox(t)
  const c = sb.credentials.msk
  const path = join(dir, 'tokens.json')
  const a = new cf.ClientCredentials(c.tokenUrl, c.clientId, c.clientSecret, { scope: c.scope, tokenStore: path })
  const token = await a.token()
  assert.equal((await stat(path)).mode & 0o777, 0o600)
  const b = new cf.ClientCredentials(c.tokenUrl, c.clientId, c.clientSecret, { scope: c.scope, tokenStore: path })
  assert.equal(await b.token(), token)
  assert.equal(sb.tokenRequests(c.clientId), 1)
})
