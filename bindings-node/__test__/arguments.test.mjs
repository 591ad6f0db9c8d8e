// Wrong argument types are TypeErrors naming the argument, as Node's own functions throw; values
// of the right type that cannot be used are the package's VALIDATION errors naming the field.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { cf, freshLab, oktaGrant, rejectsWith, startSandbox } from './helpers.mjs'

const URL_ = 'http://127.0.0.1:9/token'

/** Asserts `fn` throws (or rejects with) a TypeError whose message names `name`. */
async function typeError(fn, name) {
  let error
  try {
    await fn()
  } catch (e) {
    error = e
  }
  assert.ok(error instanceof TypeError, `expected a TypeError naming ${name}, got ${error}`)
  assert.match(error.code, /^ERR_INVALID_ARG_(TYPE|VALUE)$/)
  assert.ok(error.message.includes(`"${name}"`), `${error.message} names ${name}`)
  return error
}

test('flows: wrong types, missing arguments, bad options are TypeErrors naming the argument', async () => {
  const pg = (...a) => new cf.PasswordGrant(...a)
  await typeError(() => pg(5, 'id', 'secret', 'user', 'pw'), 'tokenUrl')
  await typeError(() => pg(URL_, null, 'secret', 'user', 'pw'), 'clientId')
  await typeError(() => pg(URL_, 'id', 'secret', 'user'), 'password')
  await typeError(() => pg(URL_, 'id', 'secret', 'user', 'pw', 'scope'), 'options')
  await typeError(() => pg(URL_, 'id', 'secret', 'user', 'pw', { http: 5 }), 'options.http')
  await typeError(() => pg(URL_, 'id', 'secret', 'user', 'pw', { scoop: 'x' }), 'options.scoop')
  await typeError(() => pg(URL_, 'id', 'secret', 'user', 'pw', { scope: 5 }), 'options.scope')
  await typeError(() => pg(URL_, 'id', 'secret', 'user', 'pw', { http: { timeout: '5s' } }), 'options.http.timeout')
  await typeError(() => new cf.ClientCredentials(URL_, 'id', 7), 'clientSecret')
  await typeError(() => new cf.ClientCredentials(URL_, 'id', 'secret', { authMethod: true }), 'options.authMethod')
  await typeError(() => new cf.BackendServices('id', undefined), 'privateKey')
  await typeError(() => new cf.BackendServices('id', 'pem', { http: 'fast' }), 'options.http')
  await typeError(() => new cf.AuthorizationCode('id', 'http://127.0.0.1/cb', ['scope']), 'scope')
  await typeError(() => new cf.AuthorizationCode('id', 'http://127.0.0.1/cb', 's', { fhirbase: 'x' }), 'options.fhirbase')
  await typeError(() => cf.generateKey(384), 'algorithm')
  await typeError(() => cf.registerClient(URL_, 'name', 'http://127.0.0.1/cb', 'scope'), 'redirectUris')
  // A misplaced string is not echoed: it may be a secret.
  const e = await typeError(() => pg(URL_, 'id', 'secret', 'user', 'pw', 'Misplaced-Password-1'), 'options')
  assert.ok(!e.message.includes('Misplaced-Password-1'))
})

test('flows: bad values are VALIDATION errors naming the field', async () => {
  await rejectsWith(() => new cf.PasswordGrant(URL_, '', 'secret', 'user', 'pw'), 'VALIDATION', { field: 'client_id' })
  await rejectsWith(() => new cf.ClientCredentials('not a url', 'id', 'secret'), 'VALIDATION')
  await rejectsWith(cf.generateKey('HS256'), 'VALIDATION', { field: 'algorithm' })
  await rejectsWith(() => new cf.BackendServices('id', 'pem', { tokenUrl: URL_, algorithm: 'HS256' }), 'VALIDATION', {
    field: 'algorithm',
  })
})

test('clients and the sandbox: TypeErrors for types, VALIDATION for values', async (t) => {
  const sb = await startSandbox(t)
  const auth = oktaGrant(sb)
  await typeError(() => new cf.FhirClient(5), 'baseUrl')
  await typeError(() => new cf.FhirClient(sb.urls.mskFhir, 'x'), 'options')
  await typeError(() => new cf.FhirClient(sb.urls.mskFhir, { auth: 5 }), 'options.auth')
  await typeError(() => new cf.FhirClient(sb.urls.mskFhir, { auth: {} }), 'options.auth')
  await typeError(() => new cf.FhirClient(sb.urls.mskFhir, { defaultParams: { researchstudy: 1 } }), 'options.defaultParams.researchstudy')
  const fhir = new cf.FhirClient(sb.urls.mskFhir, { auth })
  await typeError(() => fhir.read('Patient', 1), 'id')
  await typeError(() => fhir.create('Patient'), 'resource')
  await rejectsWith(() => new cf.FhirClient('not a url'), 'VALIDATION', { field: 'base_url' })

  await typeError(() => new cf.CibmtrClient(12345, auth), 'ccn')
  await typeError(() => new cf.CibmtrClient('12345', {}), 'auth')
  await typeError(() => new cf.CibmtrClient('12345', auth, { http: 5 }), 'options.http')
  await typeError(() => new cf.CibmtrClient('12345', auth, { labOptions: { strict: 'yes' } }), 'options.labOptions.strict')
  await rejectsWith(() => new cf.CibmtrClient('1234', auth), 'VALIDATION', { field: 'ccn' })

  const client = new cf.CibmtrClient('12345', auth, { baseUrl: sb.urls.cibmtrBase })
  await typeError(() => client.registerCrid(5), 'demographics')
  await typeError(() => client.registerCrid(null), 'demographics')
  await typeError(() => client.registerCrid('Jane', 7, '1970-01-01', 'F'), 'lastName')
  await rejectsWith(client.registerCrid({ firstName: 'Jane', lastName: 'Doe', birthDate: '2024-02-30', gender: 'F' }), 'VALIDATION', {
    field: 'birth_date',
  })
  const crid = await client.registerCrid({ firstName: 'Jane', lastName: 'Doe', birthDate: '1970-01-31', gender: 'F' })
  await typeError(() => client.ensurePatient({}), 'crid')
  await typeError(() => client.submitLab({ crid }, freshLab()), 'crid')
  await typeError(() => client.submitLab(crid, 42), 'lab')
  await typeError(() => client.submitLabs(crid, 5), 'labs')
  await typeError(() => client.submitLabs(crid, [freshLab()], 'fast'), 'options')
  await typeError(() => client.submitLabs(crid, [freshLab()], { progress: 5 }), 'options.progress')
  await typeError(() => client.submitLabs(crid, [freshLab()], { concurency: 2 }), 'options.concurency')
  const { loinc: _loinc, ...noCode } = freshLab()  // the lab's code is its `loinc`
  await rejectsWith(client.submitLab(crid, noCode), 'VALIDATION', { field: 'loinc' })
  await rejectsWith(client.submitLab(crid, { ...freshLab(), value: 'high' }), 'VALIDATION', { field: 'value' })
  const report = await client.submitLabs(crid, [{ ...freshLab(), value: 'high' }])
  assert.equal(report.items[0].error.code, 'VALIDATION')
  assert.equal(report.items[0].error.field, 'value')
  // The labs array is read in one JSON.stringify: an object that is not an array is still a
  // TypeError naming it, what JSON cannot write is JSON.stringify's own TypeError, a hole or a
  // non-object is a failed item, NaN is a value the checks refuse, and a Date is its ISO string.
  await typeError(() => client.submitLabs(crid, { 0: freshLab(), length: 1 }), 'labs')
  await assert.rejects(async () => client.submitLabs(crid, [{ ...freshLab(), value: 10n }]), (e) => e instanceof TypeError && /BigInt/.test(e.message))
  const mixed = await client.submitLabs(crid, [freshLab(), , 7, { ...freshLab(), value: NaN }, { ...freshLab(), effective: new Date(Date.UTC(2021, 2, 3, 4, 5, 6)) }])
  assert.deepEqual(mixed.items.map((i) => i.status), ['created', 'failed', 'failed', 'failed', 'created'])
  assert.equal(mixed.items[3].error.field, 'value')
  const dated = await client.observations(crid)
  assert.ok(dated.some((o) => o.effectiveDateTime === '2021-03-03T04:05:06.000Z'), 'the Date went as its ISO string')

  await typeError(() => cf.Sandbox.start('fast'), 'options')
  await typeError(() => cf.Sandbox.start({ port: '8080' }), 'options.port')
  await typeError(() => cf.Sandbox.start({ prot: 8080 }), 'options.prot')
  await typeError(() => sb.cibmtrClient({ http: 5 }), 'options.http')
  await typeError(() => sb.setFault('okta_token', { status: '503' }), 'fault.status')
  await typeError(() => sb.setFault(5, { status: 503 }), 'route')
  await typeError(() => sb.registerBackendClient('id', 'jwks'), 'jwks')
  await rejectsWith(() => sb.setFault('no_such_route', { status: 503 }), 'VALIDATION', { field: 'route' })
  await rejectsWith(() => sb.setFault('okta_token', { status: 99 }), 'VALIDATION', { field: 'status' })
  await rejectsWith(() => sb.setFault('okta_token', { status: 503, share: 50 }), 'VALIDATION', { field: 'share' })
  await rejectsWith(() => sb.setFault('okta_token', { status: 503, share: NaN }), 'VALIDATION', { field: 'share' })
})
