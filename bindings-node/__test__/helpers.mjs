// Shared by the test files: the package as users import it, a sandbox per file, and small
// assertions on the package's errors.
import assert from 'node:assert/strict'

import * as cf from 'cibmtr-fhir'

export { cf }

/** A sandbox for one test file, stopped after it. */
export async function startSandbox(t, options) {
  const sb = await cf.Sandbox.start(options)
  t.after(() => sb.stop())
  return sb
}

/** The Okta-like password grant of `sb`. */
export function oktaGrant(sb, overrides = {}) {
  const o = sb.credentials.okta
  return new cf.PasswordGrant(
    o.tokenUrl,
    o.clientId,
    overrides.clientSecret ?? o.clientSecret,
    o.username,
    overrides.password ?? o.password,
    { scope: o.scope },
  )
}

/** Asserts that `promiseOrFn` rejects (or throws) with the package's error of `code`, whose
 *  fields include `fields`; returns the error. */
export async function rejectsWith(promiseOrFn, code, fields = {}) {
  let error
  try {
    await (typeof promiseOrFn === 'function' ? promiseOrFn() : promiseOrFn)
  } catch (e) {
    error = e
  }
  assert.ok(error, `expected a ${code} error, got none`)
  assert.ok(error instanceof Error, 'the error is an Error')
  assert.equal(error.code, code, `code of: ${error.stack ?? error}`)
  for (const [k, v] of Object.entries(fields)) {
    assert.deepEqual(error[k], v, `field ${k} of: ${error.message}`)
  }
  return error
}

let labCounter = 0
/** A valid hemoglobin lab with a value no other test uses. */
export function freshLab(extra = {}) {
  labCounter += 1
  return {
    loinc: '718-7',
    value: 10 + labCounter / 1000,
    unit: 'g/dL',
    effective: '2024-05-01T08:30:00-05:00',
    ...extra,
  }
}
