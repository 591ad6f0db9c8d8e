package io.cibmtrfhir

import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance

/** Every token flow against the sandbox, as a Kotlin caller uses it. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class FlowsTest {
    // Many token requests from one user in a second here; Okta's limit is not under test.
    private val sb = Sandbox(SandboxOptions(oktaRatePerSecond = 1000))
    private val creds = sb.credentials()

    @AfterAll
    fun stop() = sb.close()

    @Test
    fun `password grant caches its token`() = runBlocking {
        // A scope of its own: a cache cell no other test shares.
        val o = creds.okta
        val auth = PasswordGrant(o.tokenUrl, o.clientId, o.clientSecret.expose(), o.username, o.password.expose(), scope = "cibmtr_fhir caching")
        val requests = sb.tokenRequests(o.clientId)
        val first = auth.token()
        repeat(100) { assertEquals(first, auth.token()) }
        assertEquals(first, auth.tokenBlocking())
        val stats = auth.stats()
        assertEquals(1L, stats.tokenRequests)
        assertEquals(101L, stats.cacheHits)
        assertEquals(requests + 1, sb.tokenRequests(o.clientId))

        auth.invalidate()
        assertNotEquals(first, auth.token())
        assertEquals(requests + 2, sb.tokenRequests(o.clientId))
    }

    @Test
    fun `client credentials with the secret in the body`() = runBlocking {
        val m = creds.msk
        val auth = ClientCredentials(m.tokenUrl, m.clientId, m.clientSecret.expose(), scope = m.scope)
        assertTrue(auth.token().isNotEmpty())
        assertEquals(1L, sb.tokenRequests(m.clientId))
    }

    @Test
    fun `client credentials with HTTP Basic`() = runBlocking {
        val m = creds.mskBasic
        val auth = ClientCredentials(
            m.tokenUrl, m.clientId, m.clientSecret.expose(), scope = m.scope,
            authMethod = "client_secret_basic",
        )
        assertTrue(auth.token().isNotEmpty())
        // The same client with the secret in the body is refused by this endpoint.
        val post = ClientCredentials(m.tokenUrl, m.clientId, m.clientSecret.expose(), scope = "other")
        val e = failsWith<CibmtrFhirException.Auth> { post.token() }
        assertEquals("AUTH", e.code())
    }

    @Test
    fun `backend services with the sandbox's registered key`() = runBlocking {
        val b = creds.backend
        val auth = BackendServices(
            b.clientId, b.privateKeyPem.expose(), tokenUrl = b.tokenUrl,
            keyId = b.keyId, algorithm = "ES384", scope = b.scope,
        )
        assertTrue(auth.token().isNotEmpty())
        assertEquals(b.keyId, auth.keyId())
        assertEquals("ES384", auth.algorithm())
    }

    @Test
    fun `backend services with a generated key, token URL discovered`() = runBlocking {
        for (alg in listOf("RS384", "ES384")) {
            val key = generateKey(alg)
            assertTrue(key.jwks.contains(key.keyId))
            assertEquals(key.jwks, publicJwks(key.privatePem.expose(), alg))
            val clientId = "kotlin-backend-$alg"
            sb.registerBackendClient(clientId, key.jwks)
            val auth = BackendServices(clientId, key.privatePem.expose(), fhirBase = creds.backend.fhirBase, algorithm = alg)
            assertNull(auth.tokenUrl())
            assertTrue(auth.token().isNotEmpty())
            assertEquals(creds.backend.tokenUrl, auth.tokenUrl())
            assertEquals(1L, sb.tokenRequests(clientId))

            // The token opens the Aidbox-like FHIR server.
            val fhir = FhirClient(sb.urls().aidboxFhir, auth = auth)
            val created = fhir.create("""{"resourceType":"Patient","name":[{"family":"Kt$alg"}]}""")
            val id = Regex("\"id\":\"([^\"]+)\"").find(created)!!.groupValues[1]
            assertTrue(fhir.read("Patient", id).contains("Kt$alg"))
        }
    }

    @Test
    fun `authorization code through a browser-less redirect`() = runBlocking {
        val s = creds.smart
        val auth = AuthorizationCode(
            s.clientId, s.redirectUri, s.scope,
            clientSecret = s.clientSecret.expose(), fhirBase = s.fhirBase,
        )
        val login = failsWith<CibmtrFhirException.Auth> { auth.token() }
        assertEquals("login_required", login.error)

        val location = follow(auth.authorizationUrl())
        assertTrue(location.startsWith(s.redirectUri), location)
        auth.complete(location)
        assertTrue(auth.token().isNotEmpty())
        assertTrue(auth.context().contains(s.patient), auth.context())

        // A replayed redirect no longer matches the login in progress.
        val replay = failsWith<CibmtrFhirException.Auth> { auth.complete(location) }
        assertEquals("state_mismatch", replay.error)
    }

    @Test
    fun `dynamic registration, confidential and public`() = runBlocking {
        val s = creds.smart
        val redirect = "http://127.0.0.1:9/kotlin"
        val confidential = registerClient(s.registrationUrl, "kotlin test", listOf(redirect), s.scope)
        assertTrue(confidential.clientSecret != null)
        val public = registerPublicClientBlocking(s.registrationUrl, "kotlin public", listOf(redirect), s.scope)
        assertNull(public.clientSecret)

        for (reg in listOf(confidential, public)) {
            val auth = AuthorizationCode(
                reg.clientId, redirect, s.scope,
                clientSecret = reg.clientSecret?.expose(), fhirBase = s.fhirBase,
            )
            auth.complete(follow(auth.authorizationUrl()))
            assertTrue(auth.token().isNotEmpty())
        }
    }

    @Test
    fun `the token provider of a flow is its cache`() = runBlocking {
        val auth = passwordGrant(sb)
        val provider = auth.tokenProvider()
        assertEquals(auth.token(), provider.token())
        assertEquals(auth.stats().tokenRequests, provider.stats().tokenRequests)
    }

    /** GET `url` without following redirects; the `Location` it answers with. */
    private fun follow(url: String): String {
        val http = HttpClient.newBuilder().followRedirects(HttpClient.Redirect.NEVER).build()
        val resp = http.send(HttpRequest.newBuilder(URI.create(url)).GET().build(), HttpResponse.BodyHandlers.discarding())
        assertTrue(resp.statusCode() in 300..399, "status ${resp.statusCode()}")
        return resp.headers().firstValue("location").orElseThrow()
    }
}
