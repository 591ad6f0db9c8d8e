// Fleet scale from Node: the tokenStore location string (a file or a redis:// URL, parsed by the
// core) and the submission journal (`journal` / `resume` options of submitLabs). The Redis store
// itself is tested against a real redis-server by scripts/test-fleet.sh.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'

import { cf, freshLab, rejectsWith, startSandbox } from './helpers.mjs'

function grant(sb, tokenStore) {
  const o = sb.credentials.okta
  return new cf.PasswordGrant(o.tokenUrl, o.clientId, o.clientSecret, o.username, o.password, {
    scope: o.scope,
    tokenStore,
  })
}

function withEnv(vars, fn) {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]))
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k]
    else process.env[k] = v
  }
  try {
    return fn()
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  }
}

test('a redis:// tokenStore needs the deployment key and never shows its password', async (t) => {
  const sb = await startSandbox(t)
  const err = await rejectsWith(
    () => withEnv({ CIBMTR_FHIR_STORE_KEY: undefined, CIBMTR_FHIR_STORE_KEY_FILE: undefined },
      () => grant(sb, 'redis://:redis-pw-123@127.0.0.1:1/0')),
    'CONFIG',
  )
  assert.match(err.message, /CIBMTR_FHIR_STORE_KEY/)
  assert.doesNotMatch(err.message, /redis-pw-123/)
  await rejectsWith(() => grant(sb, 'http://cache:6379'), 'VALIDATION', { field: 'token_store' })
})

test('an unreachable Redis store falls back to this process', async (t) => {
  const sb = await startSandbox(t)
  const auth = withEnv({ CIBMTR_FHIR_STORE_KEY: randomBytes(32).toString('base64') },
    () => grant(sb, 'redis://127.0.0.1:1/0?timeout_ms=200'))
  const tokens = await Promise.all(Array.from({ length: 20 }, () => auth.token()))
  assert.equal(new Set(tokens).size, 1)
  assert.equal(auth.stats().tokenRequests, 1)
})

test('submitLabs records a journal batch and resumes it without sending twice', async (t) => {
  const sb = await startSandbox(t)
  const client = sb.cibmtrClient()
  const crid = await client.registerCrid('Jo', 'Journal', '1970-01-31', 'F')
  const journal = join(mkdtempSync(join(tmpdir(), 'cf-journal-')), 'journal.sqlite3')
  const labs = Array.from({ length: 12 }, () => freshLab())
  const report = await client.submitLabs(crid, labs, { journal })
  assert.equal(report.created, 12)
  assert.match(report.batchId, /^\d{8}T\d{6}Z-[0-9a-f]{6}$/)
  const posts = sb.requests('observation_create')
  const again = await client.submitLabs(crid, labs, { journal, resume: report.batchId })
  assert.equal(again.batchId, report.batchId)
  assert.equal(again.created, 12)
  assert.equal(sb.requests('observation_create'), posts, 'nothing sent again')
  assert.match(again.items[0].warnings[0], /earlier run/)
  await rejectsWith(() => client.submitLabs(crid, labs, { resume: report.batchId }), 'VALIDATION', { field: 'resume' })
  await rejectsWith(client.submitLabs(crid, labs, { journal, resume: 'nope' }), 'VALIDATION')
  const plain = await client.submitLabs(crid, [freshLab()])
  assert.ok(plain.batchId == null, 'no journal, no batch')
})
