// A Node client process for benches/run_all.py, against a sandbox in another process.
//   node benches/node_client.mjs token            warm token() ns per call (median of batches)
//   node benches/node_client.mjs bulk N C         submitLabs of N labs at concurrency C, timed
// The sandbox's URLs and Okta credentials come as JSON in CIBMTR_BENCH_SERVER; one JSON line out.
// The addon is bindings-node's (NAPI_RS_NATIVE_LIBRARY_PATH picks the release build).
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const { CibmtrClient, PasswordGrant } = require(fileURLToPath(new URL('../bindings-node/index.js', import.meta.url)))

const [mode, nArg, cArg] = process.argv.slice(2)
const info = JSON.parse(process.env.CIBMTR_BENCH_SERVER)
const auth = new PasswordGrant(info.token_url, info.client_id, info.client_secret, info.username, info.password, {
  scope: info.scope,
})

if (mode === 'token') {
  const calls = Number(nArg || 20000)
  await auth.token()
  const samples = []
  for (let b = 0; b < 7; b++) {
    const t = process.hrtime.bigint()
    for (let i = 0; i < calls; i++) await auth.token()
    samples.push(Number(process.hrtime.bigint() - t) / calls)
  }
  samples.sort((a, b) => a - b)
  console.log(JSON.stringify({ token_ns: samples[3], samples, token_requests: auth.stats().tokenRequests }))
} else if (mode === 'bulk') {
  const n = Number(nArg)
  const concurrency = Number(cArg)
  const client = new CibmtrClient('12345', auth, { baseUrl: info.cibmtr_base })
  const crid = await client.registerCrid('Bench', 'Node', '1970-01-31', 'F')
  await client.ensurePatient(crid)
  const start = Date.UTC(2024, 0, 1)
  const labs = Array.from({ length: n }, (_, i) => ({
    loinc: '718-7',
    value: 12.5,
    unit: 'g/dL',
    effective: new Date(start + i * 60_000).toISOString().replace('.000Z', 'Z'),
  }))
  const t = performance.now()
  const report = await client.submitLabs(crid, labs, { concurrency })
  const seconds = (performance.now() - t) / 1000
  if (report.created !== n || report.failed !== 0) throw new Error(`created ${report.created}, failed ${report.failed}`)
  console.log(JSON.stringify({ n, concurrency, seconds }))
} else {
  throw new Error(`mode: token | bulk N C, not ${mode}`)
}
