// Every error code with its fields, as a caller branches on them.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { cf, freshLab, oktaGrant, rejectsWith, startSandbox } from './helpers.mjs'

test('AUTH: a wrong password, with the OAuth error and status', async (t) => {
  const sb = await startSandbox(t)
  const e = await rejectsWith(oktaGrant(sb, { password: 'not-the-password' }).token(), 'AUTH', {
    error: 'invalid_grant',
    status: 400,
    name: 'AuthError',
  })
  assert.equal(typeof e.description, 'string')
  assert.match(e.message, /invalid_grant/)
  // A wrong client secret is refused too, and the right credentials still work.
  await rejectsWith(oktaGrant(sb, { clientSecret: 'nope' }).token(), 'AUTH')
  assert.ok(await oktaGrant(sb).token())
})

test('RATE_LIMITED: Okta 429 with a large Retry-After, with retryAfter in seconds', async (t) => {
  const sb = await startSandbox(t)
  sb.setFault('okta_token', {
    status: 429,
    headers: { 'Retry-After': '3600', 'Content-Type': 'application/json' },
    body: JSON.stringify({ errorCode: 'E0000047', errorSummary: 'API call exceeded rate limit due to too many requests.' }),
  })
  const started = Date.now()
  const e = await rejectsWith(oktaGrant(sb).token(), 'RATE_LIMITED', { name: 'RateLimitedError' })
  assert.equal(e.retryAfter, 3600)
  assert.ok(Date.now() - started < 5000, 'an hour is not waited out')
  assert.equal(sb.requests('okta_token'), 1, 'and the endpoint is not hammered')
  sb.clearFaults()
})

test('VALIDATION: bad input names the field and the rule, before any request', async (t) => {
  const sb = await startSandbox(t)
  const client = sb.cibmtrClient()
  const before = sb.requests('crid')
  const e = await rejectsWith(
    client.registerCrid({ firstName: 'Jane', lastName: 'Doe', birthDate: '1970-02-30', gender: 'F' }),
    'VALIDATION',
    { field: 'birth_date', name: 'ValidationError' },
  )
  assert.equal(typeof e.rule, 'string')
  assert.equal(sb.requests('crid'), before, 'nothing was sent')
  await rejectsWith(client.registerCrid({ firstName: 'Jane' }), 'VALIDATION', { field: 'last_name' })
  await rejectsWith(
    client.submitLab('123', { ...freshLab(), efective: 'typo' }),
    'VALIDATION',
    { field: 'efective' },
  )
  await rejectsWith(client.submitLabs('123', [freshLab()], { concurrency: 0 }), 'VALIDATION', {
    field: 'concurrency',
  })
  await rejectsWith(
    () => new cf.PasswordGrant('https://example.org/token', '', 'secret', 'user', 'pw'),
    'VALIDATION',
    { field: 'client_id' },
  )
  await rejectsWith(() => new cf.CibmtrClient('12', oktaGrant(sb)), 'VALIDATION', { field: 'ccn' })
  await rejectsWith(() => new cf.FhirClient('not a url'), 'VALIDATION', { field: 'base_url' })
  // A search with unusable parameters rejects its first step.
  const fhir = new cf.FhirClient(sb.urls.mskFhir)
  const steps = fhir.search('Patient', { x: { nested: 1 } })[Symbol.asyncIterator]()
  await rejectsWith(steps.next(), 'VALIDATION', { field: 'params' })
  await rejectsWith(fhir.searchAll('Patient', [['only-a-name']]), 'VALIDATION', { field: 'params' })
})

test('HTTP: a server 400 with its status and OperationOutcome', async (t) => {
  const sb = await startSandbox(t)
  const client = sb.cibmtrClient()
  const crid = await client.registerCrid({ firstName: 'Ann', lastName: 'Lee', birthDate: '1980-06-01', gender: 'F' })
  await client.ensurePatient(crid)
  const outcome = {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code: 'invalid', diagnostics: 'Observation.valueQuantity is not valid' }],
  }
  sb.setFault('observation_create', {
    status: 400,
    headers: { 'Content-Type': 'application/fhir+json' },
    body: JSON.stringify(outcome),
  })
  const e = await rejectsWith(client.submitLab(crid, freshLab()), 'HTTP', { status: 400, name: 'HttpError' })
  assert.deepEqual(e.outcome, outcome)
  assert.match(e.message, /valueQuantity is not valid/)
  sb.clearFaults()
  // A 404 from a plain read.
  const fhir = new cf.FhirClient(sb.urls.cibmtrBase, { auth: oktaGrant(sb), fhirVersion: 'STU3' })
  await rejectsWith(fhir.read('Observation', 'no-such-id'), 'HTTP', { status: 404 })
})

test('NETWORK: connection refused', async () => {
  const net = await import('node:net')
  // A port that was free a moment ago: nothing listens there.
  const server = net.createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  const auth = new cf.ClientCredentials(`http://127.0.0.1:${port}/token`, 'id', 'secret')
  const fhir = new cf.FhirClient(`http://127.0.0.1:${port}/fhir`)
  // After the core's bounded retries, all three at once.
  const [e] = await Promise.all([
    rejectsWith(auth.token(), 'NETWORK', { name: 'NetworkError' }),
    rejectsWith(fhir.read('Patient', '1'), 'NETWORK'),
    rejectsWith(fhir.search('Patient')[Symbol.asyncIterator]().next(), 'NETWORK'),
  ])
  assert.match(e.message, /127\.0\.0\.1/)
})

test('CONFIG: credentials over plain http to a host that is not loopback', async () => {
  const e = await rejectsWith(
    () => new cf.PasswordGrant('http://okta.example.org/token', 'id', 'secret', 'user', 'pw'),
    'CONFIG',
    { name: 'ConfigError' },
  )
  assert.match(e.message, /https/)
  const auth = new cf.ClientCredentials('https://auth.example.org/token', 'id', 'secret')
  await rejectsWith(() => new cf.FhirClient('http://fhir.example.org/fhir', { auth }), 'CONFIG')
})

test('errors thrown synchronously carry a JavaScript stack; rejections are Errors too', async (t) => {
  let sync
  try {
    new cf.PasswordGrant('http://okta.example.org/token', 'id', 'secret', 'user', 'pw')
  } catch (e) {
    sync = e
  }
  assert.ok(sync.stack.includes('errors.test.mjs'))
  const sb = await startSandbox(t)
  const rejected = await oktaGrant(sb, { password: 'x' }).token().catch((e) => e)
  assert.ok(rejected instanceof Error)
  assert.equal(Object.prototype.toString.call(rejected), '[object Error]')
})
