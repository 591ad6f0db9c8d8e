// The Node package against the Rust core and against a plain `fetch` loop:
//
//   1. a cached `token()`: Node awaiting the binding vs Rust awaiting the core;
//   2. `submitLab` one at a time and from 8 callers at once: Node vs Rust;
//   3. 10,000 labs with `submitLabs` (concurrency 8) vs a `fetch` loop POSTing the same
//      Observation JSON with a cached bearer token, 8 requests in flight.
//
// Every side talks to a sandbox in its own process. Build both sides in release mode first:
//   (cd bindings-node && npx napi build --platform --release) && node bindings-node/bench/bench.mjs
// CIBMTR_BENCH_QUICK=1 runs small sizes with whatever is built (the test script's smoke run).
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import { CibmtrClient, PasswordGrant, Sandbox } from 'cibmtr-fhir'

const quick = process.env.CIBMTR_BENCH_QUICK === '1'
const sizes = quick
  ? { tokenCalls: 2_000, sequentialLabs: 20, batchLabs: 200, concurrency: 8 }
  : { tokenCalls: 200_000, sequentialLabs: 500, batchLabs: 10_000, concurrency: 8 }
const root = fileURLToPath(new URL('../..', import.meta.url))

function rustBaseline() {
  const args = ['run', '--locked', '-q', '-p', 'cibmtr-fhir-node', '--example', 'rust_baseline']
  if (!quick) args.splice(1, 0, '--release')
  args.push('--')
  if (quick) args.push('--quick')
  const out = execFileSync('cargo', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  return JSON.parse(out.trim().split('\n').at(-1))
}

const lab = (i, day) => ({
  loinc: '718-7',
  value: 10 + i / 1000,
  unit: 'g/dL',
  effective: `2024-05-${String(day).padStart(2, '0')}T08:30:00-05:00`,
})

async function pool(count, concurrency, task) {
  let next = 0
  const worker = async () => {
    while (next < count) await task(next++)
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
}

async function nodeSide() {
  const sb = await Sandbox.start({ oktaRatePerSecond: 1_000_000, oktaRatePerMinute: 1_000_000 })
  try {
    const o = sb.credentials.okta
    const auth = new PasswordGrant(o.tokenUrl, o.clientId, o.clientSecret, o.username, o.password, { scope: o.scope })
    const client = new CibmtrClient('12345', auth, { baseUrl: sb.urls.cibmtrBase })

    const token = await auth.token()
    let t = performance.now()
    for (let i = 0; i < sizes.tokenCalls; i++) await auth.token()
    const tokenNs = ((performance.now() - t) * 1e6) / sizes.tokenCalls

    let crid = await client.registerCrid('Bench', 'Node', '1970-01-31', 'F')
    await client.ensurePatient(crid)
    t = performance.now()
    for (let i = 0; i < sizes.sequentialLabs; i++) await client.submitLab(crid, lab(i, 1))
    const submitLabUs = ((performance.now() - t) * 1e3) / sizes.sequentialLabs
    t = performance.now()
    await pool(sizes.sequentialLabs, sizes.concurrency, (i) => client.submitLab(crid, lab(i, 2)))
    const submitLabConcurrentUs = ((performance.now() - t) * 1e3) / sizes.sequentialLabs

    crid = await client.registerCrid('Batch', 'Node', '1971-02-28', 'M')
    await client.ensurePatient(crid)
    const labs = Array.from({ length: sizes.batchLabs }, (_, i) => lab(i, 3))
    t = performance.now()
    const report = await client.submitLabs(crid, labs, { concurrency: sizes.concurrency })
    const batchMs = performance.now() - t
    if (report.created !== sizes.batchLabs) throw new Error(`batch created ${report.created}`)

    // The fetch loop posts the Observation the SDK built, as the server's client would.
    const { id, meta, ...stored } = sb.observations().at(-1)
    const body = JSON.stringify({ ...stored, meta: { security: meta.security } })
    const url = `${sb.urls.cibmtrBase}/Observation`
    const headers = {
      authorization: `Bearer ${token}`,
      'content-type': 'application/fhir+json',
      accept: 'application/fhir+json',
    }
    t = performance.now()
    await pool(sizes.batchLabs, sizes.concurrency, async () => {
      const res = await fetch(url, { method: 'POST', headers, body })
      await res.arrayBuffer()
      if (res.status !== 201) throw new Error(`fetch POST answered ${res.status}`)
    })
    const fetchMs = performance.now() - t
    return { tokenNs, submitLabUs, submitLabConcurrentUs, batchMs, fetchMs, tokenRequests: auth.stats().tokenRequests }
  } finally {
    sb.stop()
  }
}

const rust = rustBaseline()
const node = await nodeSide()
const rows = [
  ['cached token()', `${node.tokenNs.toFixed(0)} ns`, `${rust.token_ns.toFixed(0)} ns`, node.tokenNs / rust.token_ns],
  ['submitLab, one at a time', `${node.submitLabUs.toFixed(0)} µs`, `${rust.submit_lab_us.toFixed(0)} µs`, node.submitLabUs / rust.submit_lab_us],
  [`submitLab, ${sizes.concurrency} callers`, `${node.submitLabConcurrentUs.toFixed(0)} µs`, `${rust.submit_lab_concurrent_us.toFixed(0)} µs`, node.submitLabConcurrentUs / rust.submit_lab_concurrent_us],
  [`submitLabs, ${sizes.batchLabs} labs`, `${node.batchMs.toFixed(0)} ms`, `${rust.batch_ms.toFixed(0)} ms`, node.batchMs / rust.batch_ms],
]
console.log(`${quick ? 'quick mode (sizes too small to mean anything)' : 'release'}; concurrency ${sizes.concurrency}`)
console.log('operation'.padEnd(30), 'Node'.padStart(12), 'Rust'.padStart(12), 'Node/Rust'.padStart(10))
for (const [name, n, r, ratio] of rows) {
  console.log(name.padEnd(30), n.padStart(12), r.padStart(12), ratio.toFixed(2).padStart(10))
}
console.log(
  `${sizes.batchLabs} labs: submitLabs ${node.batchMs.toFixed(0)} ms vs a fetch loop of the same POSTs ` +
    `${node.fetchMs.toFixed(0)} ms (submitLabs/fetch ${(node.batchMs / node.fetchMs).toFixed(2)}); ` +
    `token requests: ${node.tokenRequests}`,
)
console.log(JSON.stringify({ quick, sizes, node, rust }))
