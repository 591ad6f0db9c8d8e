// The Node quick start, run against the local sandbox: `node examples/node/quickstart.mjs`.
//
// Against CIBMTR's test environment, build the PasswordGrant from your credentials with
// `environment('test').tokenUrl` and leave out `baseUrl` (the test API is the default).
import assert from 'node:assert/strict'

import { CibmtrClient, PasswordGrant, Sandbox } from 'cibmtr-fhir'

const sandbox = await Sandbox.start()
try {
  const okta = sandbox.credentials.okta

  // 1. One token, cached and refreshed ahead of expiry, for every call below.
  const auth = new PasswordGrant(okta.tokenUrl, okta.clientId, okta.clientSecret, okta.username,
    okta.password, { scope: okta.scope })

  // 2. A client for one transplant centre (CCN).
  const client = new CibmtrClient('12345', auth, { baseUrl: sandbox.urls.cibmtrBase })

  // 3. CRID (a string: it can exceed 2^53), then the de-identified Patient (never twice).
  const crid = await client.registerCrid('Jane', 'Example', '1968-04-12', 'F')
  const patientId = await client.ensurePatient(crid)
  console.log(`CRID ${crid}, Patient/${patientId}`)

  // 4. Labs for form 2402: validated before sending; re-running sends nothing twice.
  const labs = [
    { loinc: '718-7', value: 10.9, unit: 'g/dL', effective: '2024-03-01T07:45:00-06:00', referenceRange: [12, 16] },
    { loinc: '777-3', value: 142, unit: '10*9/L', effective: '2024-03-01T07:45:00-06:00' },
  ]
  for (const run of ['first', 'second']) {
    const report = await client.submitLabs(crid, labs, {
      // Called on this thread after every lab.
      progress: (p) => process.stdout.isTTY && process.stdout.write(`\r${run} run: ${p.done}/${p.total}`),
    })
    if (process.stdout.isTTY) process.stdout.write('\r')
    console.log(`${run} run: ${report.created} created, ${report.alreadyPresent} already present, ${report.failed} failed`)
  }

  // 5. What CIBMTR holds for the recipient.
  const observations = await client.observations(crid)
  console.log(`${observations.length} Observations on the server`)
  assert.equal(observations.length, 2)

  // Errors carry a stable code and the fields to act on.
  try {
    await client.submitLab(crid, '718-7', 11, 'g/dL', '2024-03-01T07:45:00')
  } catch (e) {
    console.log(`refused: ${e.code} ${e.field} (${e.rule})`)
    assert.equal(e.code, 'VALIDATION')
  }
  console.log(`token requests: ${auth.stats().tokenRequests}`)
} finally {
  sandbox.stop()
}
