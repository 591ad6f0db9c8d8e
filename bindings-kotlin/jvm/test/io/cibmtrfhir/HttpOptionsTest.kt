package io.cibmtrfhir

import java.io.File
import java.time.Duration
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance

/** `HttpOptions` on every constructor: applied to the requests, and checked before any of them. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class HttpOptionsTest {
    // Many token requests from one user in a second here; Okta's limit is not under test.
    private val sb = Sandbox(SandboxOptions(oktaRatePerSecond = 1000))
    private val creds = sb.credentials()
    private val okta = creds.okta

    @AfterEach
    fun clear() = sb.clearFaults()

    @AfterAll
    fun stop() = sb.close()

    private fun grant(http: HttpOptions? = null, scope: String = okta.scope) = PasswordGrant(
        okta.tokenUrl, okta.clientId, okta.clientSecret.expose(), okta.username, okta.password.expose(),
        scope = scope, http = http,
    )

    private fun client(http: HttpOptions? = null) =
        CibmtrClient("12345", grant(), baseUrl = sb.urls().cibmtrBase, http = http)

    private fun seconds(block: () -> Unit): Double {
        val started = System.nanoTime()
        block()
        return (System.nanoTime() - started) / 1e9
    }

    @Test
    fun `a short timeout against a slow server fails with Network, quickly`() = runBlocking {
        val client = client(HttpOptions(timeout = Duration.ofMillis(300), requestRetries = 0))
        val crid = client.registerCrid("Jane", "Doe", "1970-01-31", "F")
        sb.setFault("observation_search", Fault(delayMs = 10_000))
        var e: CibmtrFhirException.Network? = null
        val took = seconds { e = failsWith<CibmtrFhirException.Network> { client.observations(crid) } }
        assertTrue(took < 5, "took $took s against a 10 s delay")
        assertTrue(e!!.detail.contains("timed out"), e!!.detail)
        assertEquals("NETWORK", e!!.code())

        // A flow's token requests too (blocking twin, for Java).
        sb.setFault("okta_token", Fault(delayMs = 10_000))
        val auth = grant(HttpOptions(timeout = Duration.ofMillis(300), tokenRetries = 0), scope = "slow")
        val tookToken = seconds { failsWith<CibmtrFhirException.Network> { auth.tokenBlocking() } }
        assertTrue(tookToken < 5, "took $tookToken s against a 10 s delay")
    }

    @Test
    fun `requestRetries = 0 makes one attempt where the default retries`() = runBlocking {
        val default = client()
        val once = client(HttpOptions(requestRetries = 0))
        val crid = default.registerCrid("Jane", "Doe", "1970-01-31", "F")
        default.ensurePatient(crid)
        once.observations(crid) // the token, outside the count

        val unavailable = Fault(status = 503, times = 1)
        sb.setFault("observation_search", unavailable)
        var before = sb.requests("observation_search")
        default.observations(crid)
        assertEquals(2L, sb.requests("observation_search") - before, "the default retries the 503")

        sb.setFault("observation_search", unavailable)
        before = sb.requests("observation_search")
        val e = failsWith<CibmtrFhirException.Http> { once.observations(crid) }
        assertEquals(503, e.status)
        assertEquals(1L, sb.requests("observation_search") - before, "requestRetries = 0: one attempt")
    }

    @Test
    fun `tokenRetries = 0 makes one token request where the default retries`() = runBlocking {
        sb.setFault("okta_token", Fault(status = 503, times = 1))
        var before = sb.requests("okta_token")
        grant(scope = "retried").token()
        assertEquals(2L, sb.requests("okta_token") - before, "the default retries the 503")

        sb.setFault("okta_token", Fault(status = 503, times = 1))
        before = sb.requests("okta_token")
        failsWith<CibmtrFhirException> { grant(HttpOptions(tokenRetries = 0), scope = "once").token() }
        assertEquals(1L, sb.requests("okta_token") - before, "tokenRetries = 0: one request")
    }

    @Test
    fun `the proxy is used for every request`() = runBlocking {
        // Nothing listens on port 9 of the loopback: through that "proxy" no request gets out.
        val auth = grant(HttpOptions(proxy = Secret("http://127.0.0.1:9"), tokenRetries = 0), scope = "proxied")
        val before = sb.tokenRequestsTotal()
        val e = failsWith<CibmtrFhirException.Network> { auth.token() }
        assertTrue(e.detail.contains("connect"), e.detail)
        assertEquals(before, sb.tokenRequestsTotal())
    }

    @Test
    fun `bad values are Validation errors naming the field, before any request`() = runBlocking {
        val missingCa = File.createTempFile("no-such-ca", ".pem").also { it.delete() }.path
        val bad = listOf(
            "timeout" to HttpOptions(timeout = Duration.ZERO),
            "timeout" to HttpOptions(timeout = Duration.ofSeconds(-1)),
            "connect_timeout" to HttpOptions(connectTimeout = Duration.ofMillis(-5)),
            "max_rate_limit_wait" to HttpOptions(maxRateLimitWait = Duration.ofSeconds(-60)),
            "max_retry_time" to HttpOptions(maxRetryTime = Duration.ofDays(-1)),
            "proxy" to HttpOptions(proxy = Secret("proxy.example.org:3128")),
            "ca_files" to HttpOptions(caFiles = listOf(missingCa)),
            "allow_http_hosts" to HttpOptions(allowHttpHosts = listOf("http://fhir.internal")),
            "token_retries" to HttpOptions(tokenRetries = -1),
            "request_retries" to HttpOptions(requestRetries = -1),
        )
        val m = creds.msk
        val b = creds.backend
        val s = creds.smart
        val auth = grant()
        val constructors: List<Pair<String, suspend (HttpOptions) -> Any>> = listOf(
            "PasswordGrant" to { h -> grant(h) },
            "ClientCredentials" to { h -> ClientCredentials(m.tokenUrl, m.clientId, m.clientSecret.expose(), http = h) },
            "BackendServices" to { h -> BackendServices(b.clientId, b.privateKeyPem.expose(), fhirBase = b.fhirBase, algorithm = "ES384", http = h) },
            "AuthorizationCode" to { h -> AuthorizationCode(s.clientId, s.redirectUri, s.scope, fhirBase = s.fhirBase, http = h) },
            "registerClient" to { h -> registerClient(s.registrationUrl, "bad", listOf(s.redirectUri), s.scope, http = h) },
            "registerPublicClientBlocking" to { h -> registerPublicClientBlocking(s.registrationUrl, "bad", listOf(s.redirectUri), s.scope, h) },
            "FhirClient" to { h -> FhirClient(sb.urls().mskFhir, auth = auth, http = h) },
            "CibmtrClient" to { h -> CibmtrClient("12345", auth, baseUrl = sb.urls().cibmtrBase, http = h) },
        )
        // (A registration that went out would have succeeded instead of failing.)
        val routes = listOf(
            "okta_token", "msk_token", "smart_token", "crid", "patient_create", "patient_search",
            "observation_create", "observation_search", "msk_fhir", "aidbox_fhir",
        )
        val requests = { routes.sumOf { sb.requests(it) } }
        val before = requests()
        for ((name, make) in constructors) {
            for ((field, options) in bad) {
                val e = failsWith<CibmtrFhirException.Validation> { make(options) }
                assertEquals(field, e.field, "$name with $options")
                assertTrue(e.rule.isNotEmpty())
            }
        }
        assertEquals(before, requests(), "no request was made")
    }

    @Test
    fun `good values build, and the Java constructor takes nulls`() = runBlocking {
        val h = HttpOptions(
            Duration.ofSeconds(20), Duration.ofSeconds(5), Duration.ofSeconds(10), Duration.ofSeconds(30),
            null, listOf(), listOf("fhir.internal"), 1, 2,
        )
        val client = client(h)
        val crid = client.registerCrid("Jane", "Doe", "1970-01-31", "F")
        assertTrue(crid > 0)
        assertEquals(HttpOptions(), HttpOptions(null, null, null, null, null, listOf(), listOf(), null, null))
        // Durations beyond what nanoseconds hold are taken as "very long", not an error.
        grant(HttpOptions(maxRateLimitWait = Duration.ofDays(365L * 1000)), scope = "long wait").token()
        Unit
    }

    @Test
    fun `a proxy password never shows`() = runBlocking {
        val password = "hunter2-proxy-pass"
        val h = HttpOptions(proxy = Secret("http://svc:$password@127.0.0.1:9"), tokenRetries = 0)
        val auth = grant(h, scope = "proxy secret")
        val client = CibmtrClient("12345", auth, baseUrl = sb.urls().cibmtrBase, http = h)
        val e = failsWith<CibmtrFhirException> { auth.token() }
        val bad = failsWith<CibmtrFhirException.Validation> {
            grant(HttpOptions(proxy = Secret("svc:$password@proxy")))
        }
        for (text in listOf(h.toString(), auth.toString(), client.toString(), client.fhir().toString(),
                e.toString(), e.message ?: "", bad.toString(), bad.message ?: "")) {
            assertFalse(text.contains(password), "the proxy password shows in: $text")
        }
        assertTrue(h.toString().contains("[REDACTED]"), h.toString())
    }
}
