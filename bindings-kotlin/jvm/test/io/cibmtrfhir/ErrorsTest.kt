package io.cibmtrfhir

import java.time.Duration
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance

/** Each exception kind, with its fields, from the situations that cause it. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ErrorsTest {
    // Many token requests from one user in a second here; Okta's limit is not under test.
    private val sb = Sandbox(SandboxOptions(oktaRatePerSecond = 1000))
    private val okta = sb.credentials().okta

    @AfterEach
    fun clear() = sb.clearFaults()

    @AfterAll
    fun stop() = sb.close()

    @Test
    fun `a wrong password is an Auth error, asked once`() {
        val auth = passwordGrant(sb, password = "not-the-password")
        val e = failsWith<CibmtrFhirException.Auth> { auth.token() }
        assertEquals("invalid_grant", e.error)
        assertTrue(e.status in 400..401, "status ${e.status}")
        assertEquals("AUTH", e.code())
        // Remembered: a second call does not hammer the account.
        val before = sb.tokenRequests(okta.clientId)
        failsWith<CibmtrFhirException.Auth> { auth.tokenBlocking() }
        assertEquals(before, sb.tokenRequests(okta.clientId))
    }

    @Test
    fun `a long Retry-After is RateLimited with its duration`() {
        sb.setFault("okta_token", Fault(status = 429, headers = mapOf("Retry-After" to "3600"),
            body = """{"errorCode":"E0000047","errorSummary":"API call exceeded rate limit due to too many requests."}"""))
        val auth = PasswordGrant(okta.tokenUrl, okta.clientId, okta.clientSecret.expose(), okta.username,
            okta.password.expose(), scope = "rate limited")
        val e = failsWith<CibmtrFhirException.RateLimited> { auth.token() }
        assertEquals(Duration.ofHours(1), e.retryAfter)
        assertEquals("RATE_LIMITED", e.code())
    }

    @Test
    fun `bad input is a Validation error naming the field, before any request`() {
        val client = sb.cibmtrClient()
        val crids = sb.requests("crid")
        val e = failsWith<CibmtrFhirException.Validation> {
            client.registerCrid("Jane", "Doe", "1970-02-30", "F")
        }
        assertEquals("birth_date", e.field)
        assertTrue(e.rule.isNotEmpty())
        assertEquals(crids, sb.requests("crid"))

        val lab = failsWith<CibmtrFhirException.Validation> {
            client.submitLab(1234567890123456L, "718-7", 12.5, "g/dL", "2024-05-01T08:30:00")
        }
        assertEquals("effective", lab.field)
        assertEquals("VALIDATION", lab.code())

        val json = failsWith<CibmtrFhirException.Validation> { FhirClient(sb.urls().fhirBase).create("{not json") }
        assertEquals("resource", json.field)
        val version = failsWith<CibmtrFhirException.Validation> { FhirClient(sb.urls().fhirBase, fhirVersion = "R5") }
        assertEquals("fhir_version", version.field)
        val concurrency = failsWith<CibmtrFhirException.Validation> {
            client.submitLabs(1L, listOf(LabResult("718-7", 1.0, "g/dL", EFFECTIVE)), concurrency = 0)
        }
        assertEquals("concurrency", concurrency.field)
    }

    @Test
    fun `a server 400 is an Http error with its status and OperationOutcome`() = runBlocking {
        val client = sb.cibmtrClient()
        val crid = client.registerCrid("Jane", "Doe", "1970-01-31", "F")
        client.ensurePatient(crid)
        sb.setFault("observation_create", Fault(status = 400, headers = mapOf("Content-Type" to "application/fhir+json"),
            body = """{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"Observation.code: unknown code"}]}"""))
        val e = failsWith<CibmtrFhirException.Http> {
            client.submitLab(crid, "718-7", 13.5, "g/dL", EFFECTIVE)
        }
        assertEquals(400, e.status)
        assertTrue(e.detail.contains("unknown code"), e.detail)
        assertTrue(e.outcome!!.contains("OperationOutcome"), e.outcome)
        assertEquals("HTTP", e.code())
    }

    @Test
    fun `connection refused is a Network error`() {
        val auth = PasswordGrant("http://127.0.0.1:1/token", "id", "secret", "user", "password")
        val e = failsWith<CibmtrFhirException.Network> { auth.token() }
        assertTrue(e.detail.contains("127.0.0.1:1"), e.detail)
        assertEquals("NETWORK", e.code())
    }

    @Test
    fun `plain http to a remote host is a Config error`() {
        val e = failsWith<CibmtrFhirException.Config> {
            PasswordGrant("http://okta.example.org/token", "id", "secret", "user", "password")
        }
        assertTrue(e.detail.contains("https"), e.detail)
        assertEquals("CONFIG", e.code())
        val fhir = failsWith<CibmtrFhirException.Config> {
            CibmtrClient("12345", passwordGrant(sb), baseUrl = "http://cibmtr.example.org/v1")
        }
        assertTrue(fhir.detail.contains("base_url"), fhir.detail)
    }

    @Test
    fun `one sealed class, a when over the kinds is exhaustive`() {
        val kinds = listOf<CibmtrFhirException>(
            CibmtrFhirException.Validation("f", "r"),
            CibmtrFhirException.Auth("invalid_grant", null, 400),
            CibmtrFhirException.RateLimited(null),
            CibmtrFhirException.Http(503, "busy", null),
            CibmtrFhirException.Network("down"),
            CibmtrFhirException.Config("bad"),
        ).map {
            when (it) {
                is CibmtrFhirException.Validation -> "VALIDATION"
                is CibmtrFhirException.Auth -> "AUTH"
                is CibmtrFhirException.RateLimited -> "RATE_LIMITED"
                is CibmtrFhirException.Http -> "HTTP"
                is CibmtrFhirException.Network -> "NETWORK"
                is CibmtrFhirException.Config -> "CONFIG"
            } to it.code()
        }
        kinds.forEach { (expected, code) -> assertEquals(expected, code) }
    }

    @Test
    fun `a stopped sandbox says so`() {
        val other = Sandbox()
        other.stop()
        val e = failsWith<CibmtrFhirException.Config> { other.requests("crid") }
        assertTrue(e.detail.contains("stopped"))
        val route = failsWith<CibmtrFhirException.Validation> { sb.requests("nowhere") }
        assertEquals("route", route.field)
        other.close()
    }
}
