// A typed use of the package, compiled with `tsc --noEmit` by scripts/test-node.sh: the committed
// declarations must describe what the package does.
import {
  AuthFlow,
  BackendServices,
  CibmtrClient,
  CibmtrFhirError,
  ClientCredentials,
  Crid,
  ErrorCode,
  FhirClient,
  HttpConfig,
  LabInput,
  PasswordGrant,
  Progress,
  Resource,
  Sandbox,
  SubmissionReport,
  generateKey,
  labCatalog,
  registerClient,
} from 'cibmtr-fhir'

function isSdkError(e: unknown): e is CibmtrFhirError {
  return e instanceof Error && typeof (e as CibmtrFhirError).code === 'string'
}

async function submitAll(client: CibmtrClient, crid: Crid, labs: LabInput[]): Promise<SubmissionReport> {
  const seen: Progress[] = []
  const report = await client.submitLabs(crid, labs, { concurrency: 8, progress: (p) => seen.push(p) })
  for (const item of report.items) {
    if (item.status === 'failed' && item.error?.code === 'VALIDATION') {
      console.log(item.index, item.error.field, item.error.rule)
    }
  }
  return report
}

export async function main(): Promise<void> {
  const sandbox: Sandbox = await Sandbox.start({ oktaTokenTtl: 1800 })
  const { okta, msk, backend } = sandbox.credentials
  // Timeouts in milliseconds, a proxy, extra CA certificates, retry bounds.
  const http: HttpConfig = { timeout: 30_000, connectTimeout: 10_000, caFiles: [], requestRetries: 4 }
  const auth: AuthFlow = new PasswordGrant(okta.tokenUrl, okta.clientId, okta.clientSecret,
    okta.username, okta.password, { scope: okta.scope, http })
  const client = new CibmtrClient('12345', auth, { baseUrl: sandbox.urls.cibmtrBase, http })
  const crid: string = await client.registerCrid({ firstName: 'Jane', lastName: 'Doe', birthDate: '1970-01-31', gender: 'F' })
  const patientId: string = await client.ensurePatient(BigInt(crid))
  const lab: LabInput = { loinc: '718-7', value: 12.5, unit: 'g/dL', effective: '2024-05-01T08:30:00-05:00' }
  const one = await client.submitLab(crid, lab)
  const two = await client.submitLab(crid, '718-7', '<5', 'g/dL', '2024-05-02T08:30:00Z', { referenceRange: [12, null] })
  const status: 'created' | 'already_present' = one.status
  await submitAll(client, crid, [lab])
  const fromCsv = await client.submitLabsCsv(crid, 'labs.csv', { concurrency: 4 })
  const lines: Array<number | undefined> = fromCsv.items.map((item) => item.line)
  const registered = await registerClient(sandbox.urls.smartRegister, 'typed', ['http://127.0.0.1/cb'], 'openid', { http })
  const observations: Resource[] = await client.observations(crid)

  const mskAuth = new ClientCredentials(msk.tokenUrl, msk.clientId, msk.clientSecret,
    { scope: msk.scope, authMethod: 'client_secret_post' })
  const fhir = new FhirClient(sandbox.urls.mskFhir, { auth: mskAuth, defaultParams: { researchstudy: 'x' } })
  for await (const p of fhir.search('Patient', { name: 'Doe', _count: 10 })) {
    const id: string | undefined = p.id
    console.log(p.resourceType, id)
  }
  const created = await fhir.createIfNoneExist({ resourceType: 'Patient' }, 'identifier=urn:x|1')
  const wasCreated: boolean = created.created

  const key = await generateKey('ES384')
  sandbox.registerBackendClient('typed', key.jwks)
  const backendAuth = new BackendServices('typed', key.privatePem, { tokenUrl: backend.tokenUrl, algorithm: key.algorithm })
  const token: string = await backendAuth.token()
  const stats = backendAuth.stats()
  const requests: number = stats.tokenRequests + sandbox.tokenRequests(okta.clientId) + sandbox.requests('okta_token')

  try {
    await new PasswordGrant(okta.tokenUrl, okta.clientId, okta.clientSecret, okta.username, 'wrong').token()
  } catch (e) {
    if (isSdkError(e)) {
      const code: ErrorCode = e.code
      const retry: number | undefined = e.retryAfter
      console.log(code, e.error, e.status, retry)
    }
  }
  console.log(patientId, two.id, status, observations.length, wasCreated, token.length, requests, labCatalog().length,
    lines.length, registered.clientId)
  sandbox.stop()
}
