package io.cibmtrfhir

import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance

/**
 * Values that Kotlin's types let through but the SDK refuses: each is a
 * `CibmtrFhirException.Validation` naming the field, raised before any request (null arguments
 * from Java: `JavaNullsTest`).
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ArgumentsTest {
    private val sb = Sandbox()
    private val creds = sb.credentials()
    private val client = sb.cibmtrClient()

    @AfterAll
    fun stop() = sb.close()

    /** Each call with the field its Validation error must name: the calls that break the rule. */
    private fun refused(vararg cases: Pair<String, suspend () -> Any?>) {
        val requests = sb.tokenRequestsTotal() to sb.requests("crid") + sb.requests("observation_create")
        val named = cases.map { (field, call) ->
            val e = failsWith<CibmtrFhirException.Validation> { call() }
            assert(e.rule.isNotBlank()) { "no rule for ${e.field}" }
            field to e.field
        }
        assertEquals(named.map { it.first }, named.map { it.second })
        assertEquals(requests, sb.tokenRequestsTotal() to sb.requests("crid") + sb.requests("observation_create"), "a refused call sent a request")
    }

    @Test
    fun `the four flows`() {
        val o = creds.okta
        val b = creds.backend
        val s = creds.smart
        refused(
            "client_id" to { PasswordGrant(o.tokenUrl, "", o.clientSecret.expose(), o.username, o.password.expose()) },
            "username" to { PasswordGrant(o.tokenUrl, o.clientId, o.clientSecret.expose(), " ", o.password.expose()) },
            "token_url" to { PasswordGrant("not a url", o.clientId, o.clientSecret.expose(), o.username, o.password.expose()) },
            "token_url" to { ClientCredentials("127.0.0.1:8080/token", "id", "secret") },
            "auth_method" to { ClientCredentials(creds.msk.tokenUrl, "id", "secret", authMethod = "private_key_jwt") },
            "algorithm" to { BackendServices(b.clientId, b.privateKeyPem.expose(), tokenUrl = b.tokenUrl, algorithm = "HS256") },
            "private_key" to { BackendServices(b.clientId, "not a key", tokenUrl = b.tokenUrl, algorithm = "ES384") },
            "client_id" to { AuthorizationCode("", s.redirectUri, s.scope, fhirBase = s.fhirBase) },
            "redirect_uri" to { AuthorizationCode(s.clientId, "::not a url", s.scope, fhirBase = s.fhirBase) },
            "registration_url" to { registerClient("not a url", "app", listOf(s.redirectUri), s.scope) },
            "algorithm" to { generateKey("HS256") },
            "private_key" to { publicJwks("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----", "RS384") },
        )
    }

    @Test
    fun `the FHIR and CIBMTR clients`() {
        val auth = passwordGrant(sb)
        val fhir = FhirClient(sb.urls().fhirBase)
        refused(
            "base_url" to { FhirClient("htp//nowhere") },
            "resource.resourceType" to { fhir.create("""{"name":"no resourceType"}""") },
            "ccn" to { CibmtrClient("1234", auth, baseUrl = sb.urls().cibmtrBase) },
            "environment" to { CibmtrClient("12345", auth, environment = "staging") },
            "first_name" to { client.registerCrid("", "Quillfeather", "1968-07-23", "F") },
            "birth_date" to { client.registerCrid("Zephyrine", "Quillfeather", "2024-02-30", "F") },
            "gender" to { client.registerCrid("Zephyrine", "Quillfeather", "1968-07-23", "X") },
            "ssn" to { client.registerCrid("Zephyrine", "Quillfeather", "1968-07-23", "F", ssn = "12-345") },
            "loinc" to { client.submitLab(1L, "", 12.5, "g/dL", EFFECTIVE) },
            "value" to { client.submitLab(1L, "718-7", Double.NaN, "g/dL", EFFECTIVE) },
            "effective" to { client.submitLab(1L, "718-7", 12.5, "g/dL", "2024-02-30T08:30:00-05:00") },
            "loinc" to { client.submitLabResult(1L, LabResult("", 12.5, "g/dL", EFFECTIVE)) },
            "value" to { client.submitLabResult(1L, LabResult("718-7", Double.POSITIVE_INFINITY, "g/dL", EFFECTIVE)) },
        )
        // In bulk, a bad lab is an item of the report, the others are sent.
        val report = failsOrReport { client.submitLabs(1L, listOf(LabResult("", 1.0, "g/dL", EFFECTIVE))) }
        assertEquals("loinc", report)
    }

    @Test
    fun `the sandbox`() {
        refused(
            "port" to { Sandbox(SandboxOptions(port = 70000)) },
            "route" to { sb.setFault("nowhere", Fault(status = 503)) },
            "drop_connection" to { sb.setFault("okta_token", Fault(dropConnection = "sideways")) },
            "status" to { sb.setFault("okta_token", Fault(status = 1000)) },
            "status" to { sb.setFault("okta_token", Fault(status = -1)) },
            "share" to { sb.setFault("okta_token", Fault(status = 503, share = 50.0)) },
            "share" to { sb.setFault("okta_token", Fault(status = 503, share = Double.NaN)) },
            "delay_ms" to { sb.setFault("okta_token", Fault(delayMs = -5)) },
            "times" to { sb.setFault("okta_token", Fault(status = 503, times = -1)) },
            "jwks" to { sb.registerBackendClient("kt-bad", "not json") },
            "jwks" to { sb.registerBackendClient("kt-bad", """{"keys":[]}""") },
        )
    }

    /** The field a bad lab of `submitLabs` is refused for, as an item's error or as the call's. */
    private fun failsOrReport(call: suspend () -> SubmissionReport): String = try {
        val r = kotlinx.coroutines.runBlocking { call() }
        (r.items.single().error as CibmtrFhirException.Validation).field
    } catch (e: CibmtrFhirException.Validation) {
        e.field
    }
}
