// No secret and no patient data in anything a program using the package prints, logs at
// `trace` included: a child `node` runs every flow against this process's sandbox
// (leak-scenario.mjs), and its whole stdout and stderr are scanned for every value the sandbox
// saw (`secretsSeen()`). Also: CIBMTR_FHIR_LOG switches the SDK's log on and off.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

import { startSandbox } from './helpers.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const packageMain = createRequire(import.meta.url).resolve('cibmtr-fhir')

/** Runs `node args` with `env` added; resolves with its exit code and whole output. */
function runNode(args, env) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      args,
      { cwd: here, env: { ...process.env, CIBMTR_FHIR_LOG: '', ...env }, maxBuffer: 256 << 20 },
      (error, stdout, stderr) => resolve({ code: error ? (error.code ?? 1) : 0, stdout, stderr }),
    )
  })
}

/** The values of `secrets` that occur in `text`. */
function leaksIn(text, secrets) {
  return secrets.filter((s) => text.includes(s))
}

/** A temporary directory for one test. */
function tempDir(t) {
  const dir = mkdtempSync(path.join(tmpdir(), 'cibmtr-leaks-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** The credentials with their secrets, which JSON.stringify leaves out. */
function credentialsOf(sb) {
  const c = sb.credentials
  const copy = (group, keys) => Object.fromEntries(keys.map((k) => [k, group[k]]))
  const secretKeys = ['clientSecret', 'password', 'privateKeyPem']
  return Object.fromEntries(
    Object.entries(c).map(([name, group]) => [
      name,
      copy(group, [...Object.keys(group), ...secretKeys.filter((k) => group[k] !== undefined)]),
    ]),
  )
}

test('every flow, the CIBMTR workflow and the error paths at trace: no secret in the output', async (t) => {
  const sb = await startSandbox(t, { oktaRatePerSecond: 100 })
  const dir = tempDir(t)
  const config = path.join(dir, 'config.json')
  const resultFile = path.join(dir, 'result.json')
  const tokenStore = path.join(dir, 'tokens')
  const credentials = credentialsOf(sb)
  writeFileSync(config, JSON.stringify({ urls: sb.urls, credentials, tokenStore }), { mode: 0o600 })

  const run = await runNode([path.join(here, 'leak-scenario.mjs')], {
    CIBMTR_FHIR_LOG: 'trace',
    CIBMTR_LEAK_CONFIG: config,
    CIBMTR_LEAK_RESULT: resultFile,
  })
  assert.equal(run.code, 0, `the scenario failed:\n${run.stderr.slice(-4000)}`)
  const output = `${run.stdout}\n${run.stderr}`
  const seen = sb.secretsSeen()
  const result = JSON.parse(readFileSync(resultFile, 'utf8'))
  t.diagnostic(`scanned ${Buffer.byteLength(output)} bytes of output for ${seen.length} values`)

  // Logging was really on.
  assert.match(run.stderr, /\b(TRACE|DEBUG)\b.*cibmtr_fhir/, 'trace/debug lines of the SDK on stderr')
  assert.match(run.stderr, /retrying/, 'the token retries were logged')

  // The recording is complete, so the scan below can fail.
  const has = (value, what) => assert.ok(seen.includes(value), `secretsSeen() lacks ${what}`)
  assert.equal(result.accessTokens.length, 7)
  result.accessTokens.forEach((tok, i) => has(tok, `access token ${i}`))
  has(result.codes[0], 'the authorization code')
  has('123-45-6789', 'the SSN')
  has('Zephyrine', 'the first name')
  has('Quillfeather', 'the last name')
  has('1967-03-14', 'the birth date')
  has(credentials.okta.password, 'the password')
  has(credentials.okta.clientSecret, 'the Okta client secret')
  has('Wrong-Password-1234', 'a wrong password presented')
  assert.ok(
    seen.some((s) => s.startsWith('ey') && s.split('.').length === 3),
    'a client assertion',
  )
  const stored = readFileSync(tokenStore, 'utf8')
  const refreshTokens = seen.filter((s) => stored.includes(s) && !result.accessTokens.includes(s))
  assert.ok(refreshTokens.length >= 1, 'a refresh token (the one the token store holds)')

  // The control: the scan finds a secret where there is one.
  assert.deepEqual(leaksIn(`printed: ${refreshTokens[0]}!`, seen), [refreshTokens[0]])

  // The scan: what crossed the wire, and the generated private key (whole and line by line).
  const pem = result.generatedKey
  assert.match(pem, /PRIVATE KEY/)
  const keyLines = pem.split('\n').filter((l) => l.length >= 16 && !l.startsWith('-----'))
  assert.ok(keyLines.length > 10, 'the key has body lines to look for')
  const leaks = leaksIn(output, [...seen, pem, ...keyLines])
  const context = leaks.map((s) => {
    const at = output.indexOf(s)
    return `${JSON.stringify(s.slice(0, 12))}…: ${JSON.stringify(output.slice(Math.max(0, at - 200), at + 40))}`
  })
  assert.deepEqual(context, [], 'secrets or patient data in the output')
})

test('CIBMTR_FHIR_LOG=debug prints a token retry to stderr; unset, nothing', async (t) => {
  const sb = await startSandbox(t)
  const o = credentialsOf(sb).okta
  const script = `
    const cf = require(${JSON.stringify(packageMain)})
    const o = JSON.parse(process.env.OKTA)
    new cf.PasswordGrant(o.tokenUrl, o.clientId, o.clientSecret, o.username, o.password, { scope: o.scope })
      .token().then(() => console.log('token ok'))`
  for (const level of ['debug', '']) {
    sb.setFault('okta_token', { status: 503, times: 1 })
    const run = await runNode(['-e', script], { CIBMTR_FHIR_LOG: level, OKTA: JSON.stringify(o) })
    assert.equal(run.stdout.trim(), 'token ok', run.stderr)
    if (level) {
      assert.match(run.stderr, /DEBUG.*cibmtr_fhir.*retrying/)
    } else {
      assert.equal(run.stderr, '')
    }
  }
})
