// Run by leaks.test.mjs in a child `node` with CIBMTR_FHIR_LOG=trace: every flow, the CIBMTR
// workflow and the error paths against the parent's sandbox, printing everything a user might
// print. The sandbox's URLs and credentials come in the JSON file named by $CIBMTR_LEAK_CONFIG;
// the tokens and codes the scenario obtained go to the file named by $CIBMTR_LEAK_RESULT, never
// to stdout, so that the parent can check the sandbox recorded them.
import { readFileSync, writeFileSync } from 'node:fs'
import util from 'node:util'

import * as cf from 'cibmtr-fhir'

const { urls, credentials: c, tokenStore } = JSON.parse(readFileSync(process.env.CIBMTR_LEAK_CONFIG, 'utf8'))
const result = { accessTokens: [], codes: [] }

/** Every way a user prints a value. */
function show(label, value) {
  console.log(`== ${label}`)
  console.log(util.inspect(value, { depth: null }))
  // With `getters: true` too: the classes whose getters hand out a secret on purpose
  // (`GeneratedKey.privatePem`, `RegisteredClient.clientSecret`) show it as '[redacted]'.
  console.log(util.inspect(value, { depth: null, showHidden: true, getters: true }))
  console.log(util.format('%o %O %s %j', value, value, value, value))
  try {
    console.log(JSON.stringify(value))
  } catch (e) {
    console.log(`JSON.stringify failed: ${e.message}`)
  }
  try {
    console.log(String(value))
  } catch (e) {
    console.log(`String() failed: ${e.message}`)
  }
}

/** An error: shown, with every field, and logged to stderr. */
function showError(label, e) {
  show(label, e)
  console.log(e.message, e.stack, JSON.stringify(Object.fromEntries(Object.entries(e))))
  console.error(label, e)
}

/** Awaits `promise`, which must reject; shows the error. */
async function failing(label, promise) {
  try {
    const v = await promise
    show(`${label} (did not fail)`, v)
  } catch (e) {
    showError(label, e)
  }
}

async function admin(path, body) {
  const res = await fetch(`${urls.base}/admin/${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  if (!res.ok) throw new Error(`admin ${path}: ${res.status} ${await res.text()}`)
}

async function token(label, flow) {
  const t = await flow.token()
  result.accessTokens.push(t)
  show(label, flow)
  show(`${label}.stats()`, flow.stats())
  return t
}

// Password grant: a 503, then a 429 with Retry-After 0, then the token.
await admin('faults', { route: 'okta_token', status: 503, times: 1 })
await admin('faults', { route: 'okta_token', status: 429, headers: { 'Retry-After': '0' }, times: 1, add: true })
const okta = new cf.PasswordGrant(c.okta.tokenUrl, c.okta.clientId, c.okta.clientSecret, c.okta.username, c.okta.password, {
  scope: c.okta.scope,
})
await token('PasswordGrant', okta)

// Client credentials, secret in the body and as HTTP Basic.
for (const [label, m, authMethod] of [
  ['client_secret_post', c.msk, 'client_secret_post'],
  ['client_secret_basic', c.mskBasic, 'client_secret_basic'],
]) {
  await token(`ClientCredentials ${label}`, new cf.ClientCredentials(m.tokenUrl, m.clientId, m.clientSecret, { scope: m.scope, authMethod }))
}

// Backend Services: the sandbox's ES384 key, and an RS384 key from generateKey.
const es = new cf.BackendServices(c.backend.clientId, c.backend.privateKeyPem, {
  tokenUrl: c.backend.tokenUrl,
  algorithm: 'ES384',
  keyId: c.backend.keyId,
  scope: c.backend.scope,
})
await token('BackendServices ES384', es)
const key = await cf.generateKey('RS384')
// Never on the wire, so not in secretsSeen(): handed to the test, which scans for it too.
result.generatedKey = key.privatePem
show('generateKey', key)
await admin('backend-clients', { client_id: 'leak-rs384', jwks: key.jwks })
const rs = new cf.BackendServices('leak-rs384', key.privatePem, { fhirBase: c.backend.fhirBase, algorithm: 'RS384', scope: 'system/*.read' })
await token('BackendServices RS384', rs)
show('publicJwks', cf.publicJwks(key.privatePem, 'RS384'))

// App Launch: authorize, the browser's redirect, complete, a forced refresh.
const app = new cf.AuthorizationCode(c.smart.clientId, c.smart.redirectUri, c.smart.scope, {
  clientSecret: c.smart.clientSecret,
  fhirBase: c.smart.fhirBase,
  tokenStore,
})
const authorizeUrl = await app.authorizationUrl()
show('authorizationUrl', authorizeUrl)
const redirect = (await fetch(authorizeUrl, { redirect: 'manual' })).headers.get('location')
result.codes.push(new URL(redirect).searchParams.get('code'))
await app.complete(redirect)
await token('AuthorizationCode', app)
show('AuthorizationCode.context', app.context)
app.invalidate()
await token('AuthorizationCode refreshed', app)
await failing('complete() replayed', app.complete(redirect))

// Dynamic registration.
const registered = await cf.registerClient(c.smart.registrationUrl, 'leak scenario', [c.smart.redirectUri], c.smart.scope)
show('registerClient', registered)

// The CIBMTR workflow.
const client = new cf.CibmtrClient('12345', okta, { baseUrl: urls.cibmtrBase })
show('CibmtrClient', client)
show('CibmtrClient.fhir', client.fhir)
const crid = await client.registerCrid({
  firstName: 'Zephyrine',
  lastName: 'Quillfeather',
  birthDate: '1967-03-14',
  gender: 'F',
  ssn: '123-45-6789',
})
show('crid', crid)
show('ensurePatient', await client.ensurePatient(crid))
await admin('faults', { route: 'observation_create', status: 503, times: 1 })
const labs = [1, 2, 3].map((i) => ({ loinc: '718-7', value: 10 + i / 10, unit: 'g/dL', effective: `2024-05-0${i}T08:30:00-05:00` }))
labs.push({ loinc: '718-7', value: 'not a number', unit: 'g/dL', effective: '2024-05-09T08:30:00-05:00' })
const report = await client.submitLabs(crid, labs, { concurrency: 2, progress: (p) => show('progress', p) })
show('submitLabs report', report)
for (const item of report.items) show(`report item ${item.index}`, item)
show('submitLab', await client.submitLab(crid, { loinc: '718-7', value: 11.5, unit: 'g/dL', effective: '2024-06-01T08:30:00-05:00' }))
show('observations', await client.observations(crid))
show('findPatient', await client.findPatient(crid))

// Error paths.
const wrong = (overrides) =>
  new cf.PasswordGrant(c.okta.tokenUrl, c.okta.clientId, overrides.secret ?? c.okta.clientSecret, c.okta.username, overrides.password ?? c.okta.password)
await failing('wrong password', wrong({ password: 'Wrong-Password-1234' }).token())
await failing('wrong client secret', wrong({ secret: 'Wrong-Secret-5678' }).token())
await failing(
  'wrong ClientCredentials secret',
  new cf.ClientCredentials(c.msk.tokenUrl, c.msk.clientId, 'Wrong-Msk-Secret-9012', { scope: c.msk.scope }).token(),
)
const outcome = { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid', diagnostics: 'Observation.status is required' }] }
await admin('faults', { route: 'observation_create', status: 400, headers: { 'Content-Type': 'application/fhir+json' }, body: JSON.stringify(outcome), times: 1 })
await failing('invalid FHIR create', client.fhir.create({ resourceType: 'Observation', subject: { reference: 'Patient/x' } }))
await failing('invalid CRID registration', client.registerCrid({ firstName: 'Zephyrine', lastName: 'Quillfeather', birthDate: '1967-02-30', gender: 'F' }))
try {
  new cf.PasswordGrant(c.okta.tokenUrl, '', c.okta.clientSecret, c.okta.username, c.okta.password)
} catch (e) {
  showError('empty client id', e)
}

// Everything once more, at the end.
show('all', { okta, es, rs, app, key, registered, client, report })
writeFileSync(process.env.CIBMTR_LEAK_RESULT, JSON.stringify(result))
