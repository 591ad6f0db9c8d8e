// No secret in util.inspect, JSON.stringify, toString or error output of any object the package
// hands out, while every secret stays readable where a caller needs it.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import util from 'node:util'

import { cf, oktaGrant, startSandbox } from './helpers.mjs'

/** Every way a value gets printed or logged. */
function renderings(value) {
  const out = [
    util.inspect(value, { depth: null }),
    util.inspect(value, { depth: null, showHidden: true, getters: false }),
    util.format('%o %O %s %j', value, value, value, value),
  ]
  try {
    out.push(JSON.stringify(value) ?? '')
  } catch {}
  try {
    out.push(String(value))
  } catch {}
  if (value instanceof Error) out.push(value.message, value.stack ?? '')
  return out.join('\n')
}

function assertHidden(label, value, secrets) {
  const text = renderings(value)
  for (const s of secrets) {
    assert.ok(s && s.length >= 6, `${label}: a secret worth checking`)
    // The whole secret, and a long piece of it (a PEM body line).
    const piece = s.length > 64 ? s.split('\n')[1] : s
    assert.ok(!text.includes(piece), `${label} shows a secret: ${text.slice(0, 400)}`)
  }
}

test('flows, keys, clients, the sandbox and errors never show a secret', async (t) => {
  const sb = await startSandbox(t)
  const c = sb.credentials
  const secrets = [
    c.okta.clientSecret,
    c.okta.password,
    c.msk.clientSecret,
    c.mskBasic.clientSecret,
    c.backend.privateKeyPem,
    c.smart.clientSecret,
  ]
  // Readable where needed.
  assert.ok(secrets.every((s) => typeof s === 'string' && s.length > 8))

  const okta = oktaGrant(sb)
  const oktaToken = await okta.token()
  const msk = new cf.ClientCredentials(c.msk.tokenUrl, c.msk.clientId, c.msk.clientSecret, { scope: c.msk.scope })
  const mskToken = await msk.token()
  const backend = new cf.BackendServices(c.backend.clientId, c.backend.privateKeyPem, {
    tokenUrl: c.backend.tokenUrl,
    algorithm: 'ES384',
    keyId: c.backend.keyId,
  })
  const backendToken = await backend.token()
  const app = new cf.AuthorizationCode(c.smart.clientId, c.smart.redirectUri, c.smart.scope, {
    clientSecret: c.smart.clientSecret,
    fhirBase: c.smart.fhirBase,
  })
  const authorizeUrl = await app.authorizationUrl()
  const state = new URL(authorizeUrl).searchParams.get('state')
  const redirect = (await fetch(authorizeUrl, { redirect: 'manual' })).headers.get('location')
  const code = new URL(redirect).searchParams.get('code')
  await app.complete(redirect)
  const appToken = await app.token()
  const key = await cf.generateKey('ES384')
  const registered = await cf.registerClient(c.smart.registrationUrl, 'secrets test', [c.smart.redirectUri], c.smart.scope)
  const client = new cf.CibmtrClient('12345', okta, { baseUrl: sb.urls.cibmtrBase })
  const fhir = new cf.FhirClient(sb.urls.mskFhir, { auth: msk, defaultParams: { researchstudy: 'x' } })

  const all = [
    ...secrets,
    oktaToken,
    mskToken,
    backendToken,
    appToken,
    state,
    code,
    key.privatePem,
    registered.clientSecret,
  ]
  const objects = {
    okta,
    msk,
    backend,
    app,
    'app.context': app.context,
    key,
    registered,
    client,
    fhir,
    'client.fhir': client.fhir,
    sandbox: sb,
    'sandbox.credentials': sb.credentials,
    'sandbox.credentials.okta': sb.credentials.okta,
    'okta.stats()': okta.stats(),
  }
  for (const [label, value] of Object.entries(objects)) assertHidden(label, value, all)

  // Errors: a wrong password, a wrong secret, a refused redirect.
  const errors = [
    await oktaGrant(sb, { password: 'Wrong-Password-1234' }).token().catch((e) => e),
    await oktaGrant(sb, { clientSecret: 'Wrong-Secret-5678' }).token().catch((e) => e),
    await app.complete(`${c.smart.redirectUri}?code=Some-Code-999&state=Forged-State-1`).catch((e) => e),
  ]
  for (const [i, e] of errors.entries()) {
    assert.ok(e instanceof Error, `error ${i}`)
    assertHidden(`error ${i}`, e, [...all, 'Wrong-Password-1234', 'Wrong-Secret-5678', 'Some-Code-999'])
  }
})
