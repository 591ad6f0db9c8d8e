package io.cibmtrfhir

import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance

/** No secret, token or key in any `toString()` or exception message. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class SecretsTest {
    // Many token requests from one user in a second here; Okta's limit is not under test.
    private val sb = Sandbox(SandboxOptions(oktaRatePerSecond = 1000))
    private val creds = sb.credentials()

    @AfterAll
    fun stop() = sb.close()

    private fun secrets(): List<String> = listOf(
        creds.okta.clientSecret.expose(),
        creds.okta.password.expose(),
        creds.msk.clientSecret.expose(),
        creds.mskBasic.clientSecret.expose(),
        creds.smart.clientSecret.expose(),
        creds.backend.privateKeyPem.expose(),
    )

    private fun assertClean(text: String, extra: List<String> = emptyList()) {
        for (s in secrets() + extra) {
            assertFalse(text.contains(s), "a secret shows in: $text")
            // The PEM body is secret line by line too.
            s.lines().filter { it.length > 20 && !it.startsWith("-----") }.forEach {
                assertFalse(text.contains(it), "a key line shows in: $text")
            }
        }
    }

    @Test
    fun `objects and records print no secret`() = runBlocking {
        val password = passwordGrant(sb)
        val token = password.token()
        val m = creds.msk
        val cc = ClientCredentials(m.tokenUrl, m.clientId, m.clientSecret.expose(), scope = m.scope)
        val ccToken = cc.token()
        val b = creds.backend
        val backend = BackendServices(b.clientId, b.privateKeyPem.expose(), tokenUrl = b.tokenUrl, algorithm = "ES384")
        val backendToken = backend.token()
        val s = creds.smart
        val code = AuthorizationCode(s.clientId, s.redirectUri, s.scope, clientSecret = s.clientSecret.expose(), fhirBase = s.fhirBase)
        val url = code.authorizationUrl()
        val key = generateKey("ES384")
        val registered = registerClient(s.registrationUrl, "secrets", listOf("http://127.0.0.1:9/s"), s.scope)
        val client = CibmtrClient("12345", password, baseUrl = sb.urls().cibmtrBase)
        val fhir = FhirClient(sb.urls().mskFhir, auth = cc, defaultParams = mapOf("researchstudy" to "x"))

        val printed = listOf(
            password, cc, backend, code, client, fhir, sb, creds, key, registered,
            password.tokenProvider(), creds.okta, creds.backend, creds.smart,
        ).map { it.toString() }
        printed.forEach { assertClean(it, listOf(token, ccToken, backendToken, key.privatePem.expose(), registered.clientSecret!!.expose())) }
        assertTrue(printed[0].contains("PasswordGrant"), printed[0])
        assertTrue(creds.toString().contains("[REDACTED]"))
        // The state and PKCE verifier of the login in progress stay inside.
        val state = Regex("state=([^&]+)").find(url)!!.groupValues[1]
        assertFalse(code.toString().contains(state))
        assertEquals("[REDACTED]", Secret("x").toString())
    }

    @Test
    fun `exception messages carry no secret`() {
        val o = creds.okta
        val wrong = PasswordGrant(o.tokenUrl, o.clientId, o.clientSecret.expose(), o.username, "wrong-${o.password.expose()}", scope = o.scope)
        val auth = failsWith<CibmtrFhirException.Auth> { wrong.token() }
        val badClient = PasswordGrant(o.tokenUrl, o.clientId, "x${o.clientSecret.expose()}", o.username, o.password.expose(), scope = o.scope)
        val client = failsWith<CibmtrFhirException.Auth> { badClient.token() }
        val refused = failsWith<CibmtrFhirException.Network> {
            PasswordGrant("http://127.0.0.1:1/token?secret=${o.clientSecret.expose()}", o.clientId, o.clientSecret.expose(), o.username, o.password.expose()).token()
        }
        val tried = listOf("wrong-${o.password.expose()}", "x${o.clientSecret.expose()}")
        for (e in listOf(auth, client, refused)) {
            assertClean(e.toString(), tried)
            assertClean(e.message ?: "", tried)
            assertClean(e.stackTraceToString(), tried)
        }
    }
}
