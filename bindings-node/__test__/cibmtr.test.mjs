// The CIBMTR workflow from Node: CRID (exact, as string or bigint), Patient, labs one by one and
// in bulk with progress, searches, one token for a thousand concurrent calls, and a JavaScript
// thread that stays free while a batch runs.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { cf, freshLab, oktaGrant, rejectsWith, startSandbox } from './helpers.mjs'

const JANE = { firstName: 'Jane', lastName: 'Doe', birthDate: '1970-01-31', gender: 'F' }

test('the workflow: CRID, Patient, labs, a re-run that sends nothing, observations', async (t) => {
  const sb = await startSandbox(t)
  const client = sb.cibmtrClient()
  assert.equal(client.ccn, '12345')

  const crid = await client.registerCrid(JANE)
  assert.equal(typeof crid, 'string')
  assert.ok(BigInt(crid) > 2n ** 53n, `the sandbox's CRIDs are above 2^53: ${crid}`)
  // The positional form gives the same CRID for the same person.
  assert.equal(await client.registerCrid('Jane', 'Doe', '1970-01-31', 'F'), crid)
  assert.equal(await client.registerCrid('Jane', 'Doe', '1970-01-31', 'F', { race: ['2106-3'] }), crid)
  assert.equal(sb.cridsRegistered(), 1)

  const patientId = await client.ensurePatient(crid)
  assert.equal(await client.ensurePatient(BigInt(crid)), patientId, 'a bigint CRID is the same CRID')
  const patients = sb.patients()
  assert.equal(patients.length, 1, 'never a duplicate Patient')
  assert.equal(patients[0].identifier[0].value, crid, 'the CRID is exact on the server')
  const found = await client.findPatient(crid)
  assert.equal(found.id, patientId)
  assert.equal(await client.findPatient('1234567'), null)

  const first = await client.submitLab(crid, '718-7', 10.9, 'g/dL', '2024-03-01T07:45:00-06:00', {
    referenceRange: [12, 16],
  })
  assert.equal(first.status, 'created')
  assert.ok(first.id)
  assert.match(first.submissionId, /^[0-9a-f]{32}$/)
  const same = await client.submitLab(crid, {
    loinc: '718-7',
    value: 10.9,
    unit: 'g/dL',
    effective: '2024-03-01T07:45:00-06:00',
    referenceRange: [12, 16],
  })
  assert.deepEqual(same, { ...first, status: 'already_present' })

  const labs = [
    freshLab(),
    { loinc: '777-3', value: 142, unit: '10*9/L', effective: '2024-03-01T07:45:00-06:00' },
    { loinc: '26515-7', value: '<5', unit: '10*9/L', effective: '2024-03-01T13:45:00Z' },
    { loinc: '718-7', value: 11, unit: 'g/dL', effective: '2024-03-01T07:45:00' }, // no timezone
    freshLab({ unit: 'g/L' }), // a unit that is not the preferred one: a warning
  ]
  const progress = []
  const report = await client.submitLabs(crid, labs, { concurrency: 4, progress: (p) => progress.push(p) })
  assert.equal(report.total, 5)
  assert.equal(report.created, 4)
  assert.equal(report.failed, 1)
  assert.equal(report.items[3].status, 'failed')
  assert.equal(report.items[3].error.code, 'VALIDATION')
  assert.equal(report.items[3].error.field, 'effective')
  assert.ok(report.items[4].warnings.length > 0, 'the unit warning is in the report')
  // Plain objects of exactly these fields: absent optional ones are left out, not undefined.
  const keys = (o) => Object.keys(o).sort()
  assert.deepEqual(keys(report), ['alreadyPresent', 'created', 'elapsedMs', 'failed', 'items', 'total'])
  assert.equal(Object.getPrototypeOf(report), Object.prototype)
  assert.ok(Array.isArray(report.items) && report.items.every((item, i) => item.index === i))
  assert.deepEqual(keys(report.items[0]), ['id', 'index', 'status', 'submissionId', 'warnings'])
  assert.match(report.items[0].submissionId, /^[0-9a-f]{32}$/)
  assert.deepEqual(report.items[0].warnings, [])
  assert.deepEqual(keys(report.items[3]), ['error', 'index', 'status', 'warnings'])
  assert.deepEqual(keys(report.items[3].error), ['code', 'field', 'message', 'rule'])
  assert.ok(report.elapsedMs > 0 && typeof report.elapsedMs === 'number')
  assert.equal(progress.length, 5, 'one progress call per item, all before the promise resolved')
  assert.deepEqual(progress.at(-1), { done: 5, total: 5, created: 4, alreadyPresent: 0, failed: 1 })
  assert.ok(progress.every((p, i) => p.done === i + 1))

  const posts = sb.requests('observation_create')
  const rerun = await client.submitLabs(crid, labs)
  assert.equal(rerun.created, 0)
  assert.equal(rerun.alreadyPresent, 4)
  assert.equal(sb.requests('observation_create'), posts, 'a re-run sends no POST')

  const observations = await client.observations(crid)
  assert.equal(observations.length, 5)
  assert.equal(sb.observations().length, 5)
  // The same through the FHIR client's async iterator.
  const ids = []
  for await (const obs of client.fhir.search('Observation', { 'subject:Patient.identifier': crid })) {
    ids.push(obs.id)
  }
  assert.deepEqual(ids.sort(), observations.map((o) => o.id).sort())
})

test('a CRID never loses digits: strings and bigints in, strings out, lossy numbers refused', async (t) => {
  const sb = await startSandbox(t)
  const client = sb.cibmtrClient()
  const crid = await client.registerCrid(JANE)
  const lossy = Number(crid)
  assert.notEqual(String(lossy), crid, 'the number form has lost a digit')
  await rejectsWith(client.ensurePatient(lossy), 'VALIDATION', { field: 'crid' })
  await rejectsWith(client.submitLab(lossy, freshLab()), 'VALIDATION', { field: 'crid' })
  await rejectsWith(client.ensurePatient('12x'), 'VALIDATION', { field: 'crid' })
  await rejectsWith(client.ensurePatient(2n ** 70n), 'VALIDATION', { field: 'crid' })
  // A number that is still exact is accepted as what it is.
  await rejectsWith(client.ensurePatient(-5), 'VALIDATION', { field: 'crid' })
  const viaBigint = await client.submitLab(BigInt(crid), freshLab())
  assert.equal(viaBigint.status, 'created')
  assert.equal(sb.patients().length, 1)
  assert.equal(sb.patients()[0].identifier[0].value, crid)
})

test('1,000 concurrent submitLab promises make one token request', async (t) => {
  const sb = await startSandbox(t)
  const auth = oktaGrant(sb)
  const client = new cf.CibmtrClient('12345', auth, { baseUrl: sb.urls.cibmtrBase })
  const crid = await client.registerCrid(JANE)
  const results = await Promise.all(Array.from({ length: 1000 }, () => client.submitLab(crid, freshLab())))
  assert.equal(results.filter((r) => r.status === 'created').length, 1000)
  assert.equal(sb.tokenRequests(sb.credentials.okta.clientId), 1)
  assert.equal(auth.stats().tokenRequests, 1)
  assert.equal(sb.patients().length, 1)
  assert.equal(sb.observations().length, 1000)
})

test('the event loop stays responsive while a batch runs', async (t) => {
  const sb = await startSandbox(t)
  const client = sb.cibmtrClient()
  const crid = await client.registerCrid(JANE)
  await client.ensurePatient(crid)
  const labs = Array.from({ length: 1500 }, () => freshLab())
  const period = 10
  const ticks = []
  const timer = setInterval(() => ticks.push(performance.now()), period)
  let progressCalls = 0
  const started = performance.now()
  const report = await client.submitLabs(crid, labs, { concurrency: 16, progress: () => { progressCalls += 1 } })
  const elapsed = performance.now() - started
  clearInterval(timer)
  assert.equal(report.created, 1500)
  assert.equal(progressCalls, 1500)
  assert.ok(elapsed > 100, `the batch ran long enough to measure (${elapsed.toFixed(0)} ms)`)
  const gaps = ticks.slice(1).map((x, i) => x - ticks[i])
  const worst = Math.max(...gaps)
  // The timer fired at its period (within slack) the whole time the batch ran.
  assert.ok(worst < 100, `longest gap between timer ticks ${worst.toFixed(1)} ms`)
  assert.ok(ticks.length >= (elapsed / period) * 0.5, `${ticks.length} ticks in ${elapsed.toFixed(0)} ms`)
})

test('labCatalog and environment presets', () => {
  const catalog = cf.labCatalog()
  assert.equal(catalog.length, 11)
  const hgb = catalog.find((l) => l.name === 'Hemoglobin')
  assert.equal(hgb.unit, 'g/dL')
  assert.ok(hgb.loincCodes.includes('718-7'))
  assert.ok(hgb.molarCodes.length > 0)
  const test = cf.environment('test')
  assert.match(test.tokenUrl, /^https:\/\/.*okta/)
  assert.match(cf.environment('production').apiBase, /^https:\/\/api\.nmdp\.org/)
})

test('client options: r3 root, terminology URIs, top-level CRID answers, strict labs', async (t) => {
  const sb = await startSandbox(t, { cridResponse: 'top_level', patientIdOnlyInLocation: true })
  const auth = oktaGrant(sb)
  const client = new cf.CibmtrClient('12345', auth, {
    baseUrl: sb.urls.cibmtrBase,
    fhirPath: 'r3',
    uriFamily: 'terminology',
    labOptions: { strict: true, convertUnits: true },
  })
  const crid = await client.registerCrid(JANE)
  assert.match(crid, /^\d+$/)
  const id = await client.ensurePatient(crid)
  assert.ok(id)
  assert.match(sb.patients()[0].identifier[0].system, /terminology\.cibmtr\.org/)
  const converted = await client.submitLab(crid, freshLab({ value: 120, unit: 'g/L' }))
  assert.ok(converted.warnings.some((w) => /convert/i.test(w)), converted.warnings.join('; '))
  await rejectsWith(client.submitLab(crid, freshLab({ loinc: '2345-7' })), 'VALIDATION', { field: 'loinc' })
  await rejectsWith(
    () => new cf.CibmtrClient('12345', auth, { environment: 'staging' }),
    'VALIDATION',
    { field: 'environment' },
  )
})

test('submitLabsCsv: every row in the report with its line; bad rows and other patients fail', async (t) => {
  const { mkdtemp, rm, writeFile } = await import('node:fs/promises')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = await mkdtemp(join(tmpdir(), 'cibmtr-fhir-csv-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const sb = await startSandbox(t)
  const client = sb.cibmtrClient()
  const crid = await client.registerCrid(JANE)
  const path = join(dir, 'labs.csv')
  await writeFile(
    path,
    'loinc,value,unit,effective,reference_low,reference_high,crid\n' +
      `718-7,10.9,g/dL,2024-03-01T07:45:00-06:00,12,16,${crid}\n` +
      '\n' + // blank lines are skipped but still counted
      '777-3,142,10*9/L,2024-03-01T07:45:00,,,\n' + // no timezone: a failed row
      '718-7,11.2,g/dL,2024-03-02T07:45:00-06:00,,,1234\n' + // another patient's row
      '26515-7,<5,10*9/L,2024-03-01T13:45:00Z,,,\n',
  )
  const progress = []
  const report = await client.submitLabsCsv(crid, path, { concurrency: 2, progress: (p) => progress.push(p) })
  assert.equal(report.total, 4)
  assert.equal(report.created, 2)
  assert.equal(report.failed, 2)
  assert.deepEqual(report.items.map((i) => i.line), [2, 4, 5, 6])
  assert.deepEqual(report.items.map((i) => i.index), [0, 1, 2, 3])
  const failed = report.items.filter((i) => i.status === 'failed')
  assert.deepEqual(failed.map((i) => [i.line, i.error.code, i.error.field]), [
    [4, 'VALIDATION', 'effective'],
    [5, 'VALIDATION', 'crid'],
  ])
  assert.match(failed[1].error.message, /1234/)
  assert.deepEqual(progress.at(-1), { done: 4, total: 4, created: 2, alreadyPresent: 0, failed: 2 })
  assert.equal(sb.observations().length, 2, 'nothing sent for the bad rows')

  // submitLabs takes the path too; a re-run sends nothing.
  const posts = sb.requests('observation_create')
  const again = await client.submitLabs(crid, path)
  assert.equal(again.alreadyPresent, 2)
  assert.deepEqual(again.items.map((i) => i.line), [2, 4, 5, 6])
  assert.equal(sb.requests('observation_create'), posts)
  // Lab arrays carry no line.
  const plain = await client.submitLabs(crid, [freshLab()])
  assert.equal(plain.items[0].line, undefined)

  // A file that cannot be opened, or lacks a column, rejects the whole call.
  const missing = await rejectsWith(client.submitLabsCsv(crid, join(dir, 'absent.csv')), 'CONFIG')
  assert.match(missing.message, /absent\.csv/)
  const noUnit = join(dir, 'no-unit.csv')
  await writeFile(noUnit, 'loinc,value,effective\n718-7,1,2024-03-01T07:45:00Z\n')
  await rejectsWith(client.submitLabsCsv(crid, noUnit), 'VALIDATION', { field: 'csv' })
  await rejectsWith(client.submitLabsCsv('12x', path), 'VALIDATION', { field: 'crid' })
})
