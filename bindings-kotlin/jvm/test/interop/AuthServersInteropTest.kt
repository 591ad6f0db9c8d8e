package io.cibmtrfhir.interop

import io.cibmtrfhir.AuthorizationCode
import io.cibmtrfhir.BackendServices
import io.cibmtrfhir.CibmtrFhirException
import io.cibmtrfhir.ClientCredentials
import io.cibmtrfhir.PasswordGrant
import io.cibmtrfhir.generateKey
import io.cibmtrfhir.publicJwks
import io.cibmtrfhir.registerClient
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Tag
import org.junit.jupiter.api.Test
import org.junit.jupiter.params.ParameterizedTest
import org.junit.jupiter.params.provider.CsvSource
import org.junit.jupiter.params.provider.ValueSource

/**
 * The JVM package against authorization servers nobody here wrote, each started on 127.0.0.1
 * (port 0) by its test and stopped with it: oidc-provider (npm, tests/interop/node/oidc-server.mjs)
 * and an authlib password server (tests/interop/authlib/password_server.py). Every flow once; the
 * Rust suite (tests/interop/tests/auth_servers.rs) covers more cases.
 *
 * Tagged `interop`: scripts/test-interop.sh runs them (`mvn -Dgroups=interop`) after installing
 * the servers; the package's own run leaves them out (`-DexcludedGroups=interop`).
 */
@Tag("interop")
class AuthServersInteropTest {
    /** Runs [block] and returns the package's Auth exception it throws, failing otherwise. */
    private fun authError(flow: String, block: suspend () -> Any?): CibmtrFhirException.Auth {
        try {
            val r = runBlocking { block() }
            die("$flow: expected an Auth error, got $r")
        } catch (e: CibmtrFhirException.Auth) {
            return e
        }
    }

    private fun ccClient(id: String, secret: String, method: String) =
        """{"client_id":${js(id)},"client_secret":${js(secret)},"grant_types":["client_credentials"],
           "redirect_uris":[],"response_types":[],"token_endpoint_auth_method":${js(method)},
           "scope":"system/*.read"}"""

    private fun smartApp(id: String, secret: String) =
        """{"client_id":${js(id)},"client_secret":${js(secret)},"grant_types":["authorization_code","refresh_token"],
           "response_types":["code"],"redirect_uris":[${js(REDIRECT_URI)}],"scope":${js(SMART_SCOPE)},
           "token_endpoint_auth_method":"client_secret_basic"}"""

    private suspend fun login(op: OidcProvider, auth: AuthorizationCode, user: String) {
        val url = auth.authorizationUrl()
        assertEquals("S256", queryParam(url, "code_challenge_method"))
        val back = browserLogin(op, url, user)
        assertEquals(queryParam(url, "state"), queryParam(back, "state"))
        assertTrue(queryParam(back, "code")!!.isNotEmpty())
        auth.complete(back)
    }

    // -----------------------------------------------------------------------------------------
    // oidc-provider
    // -----------------------------------------------------------------------------------------

    @ParameterizedTest(name = "ClientCredentials ({0}) against oidc-provider")
    @ValueSource(strings = ["client_secret_post", "client_secret_basic"])
    fun `client credentials`(method: String) = runBlocking {
        val flow = "ClientCredentials ($method) against $OIDC"
        // `%`, `:` and `+` in the secret: Basic must form-encode it.
        val secret = "kt%25:${randomHex(8)}+/="
        OidcProvider(listOf(ccClient("cc", secret, method))).use { op ->
            val auth = ClientCredentials(op.tokenUrl, "cc", secret, scope = "system/*.read unknown/scope", authMethod = method)
            val token = try {
                auth.token()
            } catch (e: CibmtrFhirException) {
                die("$flow: $e\n${op.peer.stderr()}")
            }
            val live = op.introspect(token)
            assertEquals(true, jsonBoolean(live, "active"), "$flow: $live")
            assertEquals("cc", jsonString(live, "client_id"), flow)
            assertEquals("system/*.read", jsonString(live, "scope"), "$flow: unknown scope dropped")
            assertEquals(token, auth.token())
            assertEquals(1L, auth.stats().tokenRequests, flow)
            val wrong = ClientCredentials(op.tokenUrl, "cc", "wrong", scope = "system/*.read", authMethod = method)
            assertEquals("invalid_client", authError(flow) { wrong.token() }.error, flow)
        }
    }

    @ParameterizedTest(name = "BackendServices (private_key_jwt {0}, jwks_uri={1}) against oidc-provider")
    @CsvSource("RS384,false", "ES384,false", "RS384,true", "ES384,true")
    fun `private key jwt`(algorithm: String, byUri: Boolean) = runBlocking {
        val flow = "BackendServices (private_key_jwt $algorithm, ${if (byUri) "jwks_uri" else "inline JWKS"}) against $OIDC"
        val key = generateKey(algorithm)
        val jwks = publicJwks(key.privatePem.expose(), algorithm)
        assertEquals(key.jwks, jwks)
        val host = if (byUri) JwksHost(jwks) else null
        try {
            val keys = if (host != null) "\"jwks_uri\":${js(host.url)}" else "\"jwks\":$jwks"
            val client = """{"client_id":"backend","grant_types":["client_credentials"],"redirect_uris":[],
                "response_types":[],"token_endpoint_auth_method":"private_key_jwt",
                "token_endpoint_auth_signing_alg":${js(algorithm)},"scope":"system/*.read",$keys}"""
            OidcProvider(listOf(client)).use { op ->
                val auth = BackendServices("backend", key.privatePem.expose(), tokenUrl = op.tokenUrl, algorithm = algorithm, scope = "system/*.read")
                assertEquals(key.keyId, auth.keyId())
                val first = try {
                    auth.token()
                } catch (e: CibmtrFhirException) {
                    die("$flow: $e\n${op.peer.stderr()}")
                }
                val live = op.introspect(first)
                assertEquals(true, jsonBoolean(live, "active"), "$flow: $live")
                assertEquals("backend", jsonString(live, "client_id"))
                // A second token needs a fresh assertion (oidc-provider refuses a replayed jti).
                auth.invalidate()
                val second = auth.token()
                assertNotEquals(first, second)
                assertTrue(op.isActive(second), "$flow: second token")
                assertEquals(2L, auth.stats().tokenRequests)
                if (host != null) assertTrue(host.fetches.get() >= 1, "$flow: the jwks_uri was never fetched")
                val stranger = generateKey(algorithm)
                val impostor = BackendServices("backend", stranger.privatePem.expose(), tokenUrl = op.tokenUrl, algorithm = algorithm, scope = "system/*.read")
                assertEquals("invalid_client", authError(flow) { impostor.token() }.error, "$flow: unregistered key")
            }
        } finally {
            host?.close()
        }
    }

    @Test
    fun `authorization code with PKCE and refresh rotation against oidc-provider`() = runBlocking {
        val flow = "AuthorizationCode (PKCE S256, refresh rotation) against $OIDC"
        val secret = "app:${randomHex(8)}%+"
        OidcProvider(listOf(smartApp("smart-app", secret))).use { op ->
            val auth = AuthorizationCode(
                "smart-app", REDIRECT_URI, SMART_SCOPE,
                clientSecret = secret, authorizeUrl = op.authorizeUrl, tokenUrl = op.tokenUrl,
            )
            login(op, auth, "alice")
            val first = auth.token()
            val live = op.introspect(first)
            assertEquals(true, jsonBoolean(live, "active"), "$flow: $live")
            assertEquals("alice", jsonString(live, "sub"))
            val me = getWithBearer(op.userinfoUrl, first)
            assertEquals(200, me.statusCode(), "$flow: userinfo")
            assertEquals("alice", jsonString(me.body(), "sub"))
            assertTrue(auth.context().contains("id_token") && !auth.context().contains(first))

            // Forced refresh from 50 coroutines at once: one refresh-token request. oidc-provider
            // rotates strictly; a duplicate refresh would revoke the grant.
            auth.invalidate()
            val tokens = coroutineScope { (1..50).map { async(Dispatchers.Default) { auth.token() } }.awaitAll() }.toSet()
            assertEquals(1, tokens.size, flow)
            val second = tokens.single()
            assertNotEquals(first, second)
            assertEquals(2L, auth.stats().tokenRequests, flow)
            assertTrue(op.isActive(second), "$flow: the grant survived")
            auth.invalidate()
            assertTrue(op.isActive(auth.token()), "$flow: the rotated refresh token works")
        }
    }

    @Test
    fun `dynamic registration then login against oidc-provider`() = runBlocking {
        val flow = "registerClient (RFC 7591) + AuthorizationCode against $OIDC"
        OidcProvider(emptyList()).use { op ->
            val reg = registerClient(op.registrationUrl, "cibmtr-fhir kotlin interop", listOf(REDIRECT_URI), SMART_SCOPE)
            val secret = reg.clientSecret ?: die("$flow: no client secret")
            assertTrue(!reg.toString().contains(secret.expose()), "toString hides the secret")
            val auth = AuthorizationCode(
                reg.clientId, REDIRECT_URI, SMART_SCOPE,
                clientSecret = secret.expose(), authorizeUrl = op.authorizeUrl, tokenUrl = op.tokenUrl,
            )
            login(op, auth, "carol")
            val live = op.introspect(auth.token())
            assertEquals(true, jsonBoolean(live, "active"), "$flow: $live")
            assertEquals(reg.clientId, jsonString(live, "client_id"))
        }
    }

    // -----------------------------------------------------------------------------------------
    // authlib: the password grant
    // -----------------------------------------------------------------------------------------

    private fun PasswordServer.grant(pw: String = password) =
        PasswordGrant(tokenUrl, clientId, clientSecret, username, pw, scope = "cibmtr_fhir")

    @Test
    fun `password grant against authlib - one request for many callers, sent with Basic`() = runBlocking {
        val flow = "PasswordGrant against $AUTHLIB"
        PasswordServer(300).use { s ->
            val auth = s.grant()
            val tokens = coroutineScope { (1..100).map { async(Dispatchers.Default) { auth.token() } }.awaitAll() }.toSet()
            assertEquals(1, tokens.size, flow)
            assertEquals(200, s.protectedStatus(tokens.single()), flow)
            val stats = s.stats()
            assertEquals(1L, jsonNumber(stats, "token_requests"), "$flow: $stats")
            assertEquals(1L, jsonNumber(stats, "client_secret_basic"), "$flow: $stats")
            // The same secret in the body is refused, so the SDK's success means it sent Basic.
            val body = postForm(s.tokenUrl, mapOf(
                "grant_type" to "password", "username" to s.username, "password" to s.password,
                "client_id" to s.clientId, "client_secret" to s.clientSecret,
            ))
            assertEquals(401, body.statusCode())
            assertEquals("invalid_client", jsonString(body.body(), "error"))
        }
    }

    @Test
    fun `password grant against authlib - refresh ahead over short lifetimes`() = runBlocking {
        val flow = "PasswordGrant (refresh ahead, 2 s tokens) against $AUTHLIB"
        val lifetime = 2
        PasswordServer(lifetime).use { s ->
            val auth = s.grant()
            val deadline = System.nanoTime() + (3 * lifetime * 1000L + 500) * 1_000_000
            val seen = HashSet<String>()
            while (System.nanoTime() < deadline) {
                val token = auth.token()
                seen.add(token)
                assertEquals(200, s.protectedStatus(token), "$flow: a handed-out token was refused")
                delay(50)
            }
            val requests = s.tokenRequests()
            assertTrue(requests in 3..6, "$flow: $requests token requests")
            assertEquals(requests, seen.size.toLong())
            assertEquals(requests, auth.stats().tokenRequests)
        }
    }

    @Test
    fun `password grant against authlib - wrong password is invalid_grant, not retried`() {
        val flow = "PasswordGrant (wrong password) against $AUTHLIB"
        PasswordServer(300).use { s ->
            val auth = s.grant("not-the-password")
            repeat(3) {
                val e = authError(flow) { auth.token() }
                assertEquals("invalid_grant", e.error, flow)
                assertEquals(400, e.status, flow)
            }
            assertEquals(1L, s.tokenRequests(), "$flow: retried or asked again")
        }
    }
}
