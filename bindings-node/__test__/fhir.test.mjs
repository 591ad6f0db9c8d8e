// The generic FhirClient against the sandbox's MSK-like (client credentials, researchstudy on
// every request) and Aidbox-like (Backend Services) stores.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { cf, rejectsWith, startSandbox } from './helpers.mjs'

const patient = (family, extra = {}) => ({
  resourceType: 'Patient',
  name: [{ family, given: ['Test'] }],
  ...extra,
})

test('MSK-like store: researchstudy everywhere, CRUD, conditional create, paged async iteration', async (t) => {
  const sb = await startSandbox(t)
  const c = sb.credentials.msk
  const auth = new cf.ClientCredentials(c.tokenUrl, c.clientId, c.clientSecret, { scope: c.scope })
  const fhir = new cf.FhirClient(sb.urls.mskFhir, { auth, defaultParams: { researchstudy: 'study-1' } })
  assert.ok(fhir.baseUrl.endsWith('/'))

  const created = await fhir.create(patient('Alpha'))
  assert.ok(created.id)
  const read = await fhir.read('Patient', created.id)
  assert.equal(read.name[0].family, 'Alpha')
  const updated = await fhir.update({ ...read, gender: 'female' })
  assert.equal(updated.gender, 'female')

  const cond = patient('Beta', { identifier: [{ system: 'urn:test', value: 'b-1' }] })
  const first = await fhir.createIfNoneExist(cond, 'identifier=urn:test|b-1')
  assert.equal(first.created, true)
  const second = await fhir.createIfNoneExist(cond, 'identifier=urn:test|b-1')
  assert.equal(second.created, false)
  assert.equal(second.resource.id, first.resource.id)

  // 25 more, then read back three to a page: the iterator follows every next link.
  await Promise.all(Array.from({ length: 25 }, (_, i) => fhir.create(patient(`Paged${i}`))))
  const names = []
  for await (const p of fhir.search('Patient', { _count: 3 })) names.push(p.name[0].family)
  assert.equal(names.length, 27)
  assert.equal(new Set(names).size, 27)
  // Breaking out of the loop early is fine.
  let seen = 0
  for await (const _ of fhir.search('Patient', [['_count', 2]])) {
    if (++seen === 3) break
  }
  assert.equal(seen, 3)
  const all = await fhir.searchAll('Patient', { _count: 10 })
  assert.equal(all.length, 27)

  const page = await fhir.searchPage('Patient', { _count: 20 })
  assert.equal(page.resourceType, 'Bundle')
  const next = await fhir.nextPage(page)
  assert.equal(next.resourceType, 'Bundle')
  assert.equal(await fhir.nextPage(next), null)

  const caps = await fhir.capabilities()
  assert.equal(caps.resourceType, 'CapabilityStatement')
  assert.equal(sb.tokenRequests(c.clientId), 1, 'one token for all of it')

  // Without the default parameter the server refuses.
  const bare = new cf.FhirClient(sb.urls.mskFhir, { auth })
  await rejectsWith(bare.read('Patient', created.id), 'HTTP', { status: 403 })
})

test('Aidbox-like store behind Backend Services; a transaction Bundle to the CIBMTR root', async (t) => {
  const sb = await startSandbox(t)
  const b = sb.credentials.backend
  const auth = new cf.BackendServices(b.clientId, b.privateKeyPem, {
    fhirBase: b.fhirBase,
    algorithm: 'ES384',
    keyId: b.keyId,
    scope: b.scope,
  })
  const fhir = new cf.FhirClient(sb.urls.aidboxFhir, { auth, fhirVersion: 'R4' })
  const gamma = await fhir.create(patient('Gamma'))
  const delta = await fhir.create(patient('Delta'))
  assert.equal(sb.fhirResources('aidbox').length, 2)
  assert.equal((await fhir.read('Patient', gamma.id)).name[0].family, 'Gamma')
  assert.deepEqual((await fhir.searchAll('Patient')).map((p) => p.id).sort(), [gamma.id, delta.id].sort())
  // A token the sandbox has revoked is re-minted once, transparently.
  sb.revokeAllTokens()
  assert.equal((await fhir.read('Patient', delta.id)).name[0].family, 'Delta')
  assert.equal(auth.stats().tokenRequests, 2)

  // The sandbox's MSK and Aidbox roots do not take a POST to `{base}/`; CIBMTR's does.
  const o = sb.credentials.okta
  const okta = new cf.PasswordGrant(o.tokenUrl, o.clientId, o.clientSecret, o.username, o.password, { scope: o.scope })
  const cibmtr = new cf.FhirClient(sb.urls.cibmtrBase, { auth: okta, fhirVersion: 'STU3' })
  await rejectsWith(cibmtr.transaction({ resourceType: 'Patient' }), 'VALIDATION', { field: 'bundle.resourceType' })
  const response = await cibmtr.transaction({ resourceType: 'Bundle', type: 'transaction', entry: [] })
  assert.equal(response.resourceType, 'Bundle')
})
