// The package as users load it: CommonJS and ES module entry points give the same binding, and
// the committed declarations name every runtime export.
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { test } from 'node:test'

import * as esm from 'cibmtr-fhir'
import esmDefault from 'cibmtr-fhir'

const require = createRequire(import.meta.url)

test('require() and import give the same classes', () => {
  const cjs = require('cibmtr-fhir')
  for (const name of ['PasswordGrant', 'ClientCredentials', 'BackendServices', 'AuthorizationCode',
    'FhirClient', 'CibmtrClient', 'Sandbox', 'generateKey', 'registerClient', 'registerPublicClient',
    'labCatalog', 'publicJwks', 'environment']) {
    assert.equal(typeof cjs[name], 'function', name)
    assert.equal(esm[name], cjs[name], name)
    assert.equal(esmDefault[name], cjs[name], name)
  }
})

test('index.d.ts declares every export', async () => {
  const dts = await readFile(new URL('../index.d.ts', import.meta.url), 'utf8')
  const cjs = require('cibmtr-fhir')
  for (const name of Object.keys(cjs).filter((n) => !n.startsWith('__'))) {
    assert.match(dts, new RegExp(`export declare (class|function) ${name}\\b`), name)
  }
})

test('network calls return Promises; search returns an async iterable at once', async () => {
  const cf = require('cibmtr-fhir')
  const fhir = new cf.FhirClient('http://127.0.0.1:9/fhir')
  const it = fhir.search('Patient')
  assert.equal(typeof it[Symbol.asyncIterator], 'function')
  const p = cf.generateKey('ES384')
  assert.ok(p instanceof Promise)
  await p
})
