package io.cibmtrfhir.interop

import com.sun.net.httpserver.HttpServer
import java.io.BufferedReader
import java.io.File
import java.io.InputStreamReader
import java.net.CookieManager
import java.net.CookiePolicy
import java.net.InetSocketAddress
import java.net.URI
import java.net.URLEncoder
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.nio.charset.StandardCharsets.UTF_8
import java.security.SecureRandom
import java.util.Base64
import java.util.concurrent.CompletableFuture
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import org.junit.jupiter.api.Assertions.assertEquals

// Helpers of the interop tests: the independent servers of tests/interop/ started on 127.0.0.1
// (port 0) as child processes that print one JSON line when ready and exit when their stdin
// closes; a loopback JWKS host; and a browser for oidc-provider's development login forms.

/** tests/interop in the source tree (Maven runs the tests from bindings-kotlin). */
val interopDir: File = System.getenv("CIBMTR_INTEROP_DIR")?.let(::File)
    ?: File(System.getProperty("user.dir")).absoluteFile.resolve("../tests/interop").normalize()

/** The interop virtualenv's interpreter (scripts/test-interop.sh installs authlib there). */
val interopPython: String = System.getenv("CIBMTR_INTEROP_PYTHON")
    ?: interopDir.resolve("../../target/interop-venv/bin/python").normalize().path

const val OIDC = "oidc-provider"
const val AUTHLIB = "authlib"
const val REDIRECT_URI = "http://127.0.0.1:9/callback"
const val SMART_SCOPE = "openid offline_access launch/patient patient/*.read"

/** Fails the test with [message]. */
fun die(message: String): Nothing = throw AssertionError(message)

private val random = SecureRandom()
fun randomHex(bytes: Int): String = ByteArray(bytes).also(random::nextBytes).joinToString("") { "%02x".format(it) }

/** A JSON string literal. */
fun js(s: String): String = buildString {
    append('"')
    for (c in s) when {
        c == '"' -> append("\\\"")
        c == '\\' -> append("\\\\")
        c < ' ' -> append("\\u%04x".format(c.code))
        else -> append(c)
    }
    append('"')
}

/** A string member of a flat JSON object (enough for the servers' small answers). */
fun jsonString(json: String, key: String): String? =
    Regex("\"${Regex.escape(key)}\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"").find(json)?.groupValues?.get(1)?.replace("\\/", "/")

fun jsonNumber(json: String, key: String): Long? =
    Regex("\"${Regex.escape(key)}\"\\s*:\\s*(-?\\d+)").find(json)?.groupValues?.get(1)?.toLong()

fun jsonBoolean(json: String, key: String): Boolean? =
    Regex("\"${Regex.escape(key)}\"\\s*:\\s*(true|false)").find(json)?.groupValues?.get(1)?.toBoolean()

fun formEncode(s: String): String = URLEncoder.encode(s, UTF_8)

/** HTTP Basic with id and secret form-encoded first (RFC 6749 §2.3.1). */
fun basic(id: String, secret: String): String =
    "Basic " + Base64.getEncoder().encodeToString("${formEncode(id)}:${formEncode(secret)}".toByteArray())

val http: HttpClient = HttpClient.newBuilder().followRedirects(HttpClient.Redirect.NEVER).build()

fun postForm(url: String, form: Map<String, String>, authorization: String? = null): HttpResponse<String> {
    val body = form.entries.joinToString("&") { "${formEncode(it.key)}=${formEncode(it.value)}" }
    val req = HttpRequest.newBuilder(URI.create(url))
        .header("content-type", "application/x-www-form-urlencoded")
        .apply { if (authorization != null) header("authorization", authorization) }
        .POST(HttpRequest.BodyPublishers.ofString(body)).build()
    return http.send(req, HttpResponse.BodyHandlers.ofString())
}

fun getWithBearer(url: String, token: String): HttpResponse<String> =
    http.send(
        HttpRequest.newBuilder(URI.create(url)).header("authorization", "Bearer $token").GET().build(),
        HttpResponse.BodyHandlers.ofString(),
    )

/** A server process; [close] closes its stdin (it exits) and kills it if it lingers. */
class Peer(val name: String, command: List<String>, cwd: File? = null) : AutoCloseable {
    private val stderrFile: File = File.createTempFile("interop-peer", ".stderr").also { it.deleteOnExit() }
    private val process: Process
    val ready: String

    init {
        process = try {
            ProcessBuilder(command).directory(cwd).redirectError(stderrFile).start()
        } catch (e: Exception) {
            die("$name could not be started (${command.first()}): $e")
        }
        val out = BufferedReader(InputStreamReader(process.inputStream, UTF_8))
        val line = CompletableFuture.supplyAsync { out.readLine() }
        val first = try {
            line.get(60, TimeUnit.SECONDS)
        } catch (e: Exception) {
            null
        }
        if (first == null) {
            close()
            die("$name did not start; stderr:\n${stderr()}")
        }
        ready = first
        // Keep draining stdout so the server never blocks on a full pipe.
        Thread { out.readLines() }.apply { isDaemon = true }.start()
    }

    fun field(key: String): String = jsonString(ready, key) ?: die("$name: no $key in its ready line: $ready")

    fun stderr(): String = stderrFile.readText()

    override fun close() {
        runCatching { process.outputStream.close() }
        if (!process.waitFor(2, TimeUnit.SECONDS)) {
            process.destroyForcibly()
            process.waitFor()
        }
    }
}

/** oidc-provider (npm) as tests/interop/node/oidc-server.mjs configures it. */
class OidcProvider(clientsJson: List<String>, ttlJson: String? = null) : AutoCloseable {
    private val introspector = "interop-resource-server" to randomHex(16)
    val peer: Peer
    val tokenUrl: String
    val authorizeUrl: String
    val registrationUrl: String
    val userinfoUrl: String
    private val introspectionUrl: String

    init {
        val rs = """{"client_id":${js(introspector.first)},"client_secret":${js(introspector.second)},
            "grant_types":["client_credentials"],"redirect_uris":[],"response_types":[],
            "token_endpoint_auth_method":"client_secret_basic"}"""
        val config = """{"clients":[${(clientsJson + rs).joinToString(",")}]${if (ttlJson != null) ",\"ttl\":$ttlJson" else ""}}"""
        val node = interopDir.resolve("node")
        peer = Peer(OIDC, listOf("node", node.resolve("oidc-server.mjs").path, config), node)
        tokenUrl = peer.field("token_endpoint")
        authorizeUrl = peer.field("authorization_endpoint")
        registrationUrl = peer.field("registration_endpoint")
        userinfoUrl = peer.field("userinfo_endpoint")
        introspectionUrl = peer.field("introspection_endpoint")
    }

    /** The server's RFC 7662 answer for [token]. */
    fun introspect(token: String): String {
        val resp = postForm(introspectionUrl, mapOf("token" to token), basic(introspector.first, introspector.second))
        assertEquals(200, resp.statusCode(), "$OIDC introspection: ${resp.body()}")
        return resp.body()
    }

    fun isActive(token: String): Boolean = jsonBoolean(introspect(token), "active") == true

    override fun close() = peer.close()
}

/** The authlib password server of tests/interop/authlib/password_server.py. */
class PasswordServer(lifetime: Int) : AutoCloseable {
    val clientId = "okta-like-${randomHex(4)}"
    val clientSecret = "s%3A:${randomHex(12)}+/="
    val username = "recipient.coordinator@center.example"
    val password = "pw:${randomHex(8)}%+"
    val peer: Peer
    val tokenUrl: String
    private val protectedUrl: String
    private val statsUrl: String

    init {
        val config = """{"client_id":${js(clientId)},"client_secret":${js(clientSecret)},"username":${js(username)},
            "password":${js(password)},"lifetime":$lifetime,"scope":"cibmtr_fhir"}"""
        peer = Peer("$AUTHLIB password server", listOf(interopPython, interopDir.resolve("authlib/password_server.py").path, config))
        tokenUrl = peer.field("token_endpoint")
        protectedUrl = peer.field("protected_url")
        statsUrl = peer.field("stats_url")
    }

    fun stats(): String = http.send(HttpRequest.newBuilder(URI.create(statsUrl)).GET().build(), HttpResponse.BodyHandlers.ofString()).body()

    fun tokenRequests(): Long = jsonNumber(stats(), "token_requests") ?: -1

    fun protectedStatus(token: String): Int = getWithBearer(protectedUrl, token).statusCode()

    override fun close() = peer.close()
}

/** Serves a JWKS on a loopback port (a client's `jwks_uri`), counting fetches. */
class JwksHost(jwks: String) : AutoCloseable {
    val fetches = AtomicInteger()
    private val server: HttpServer = HttpServer.create(InetSocketAddress("127.0.0.1", 0), 0)
    val url: String

    init {
        val body = jwks.toByteArray()
        server.createContext("/jwks.json") { ex ->
            fetches.incrementAndGet()
            ex.responseHeaders.add("content-type", "application/json")
            ex.sendResponseHeaders(200, body.size.toLong())
            ex.responseBody.use { it.write(body) }
        }
        server.start()
        url = "http://127.0.0.1:${server.address.port}/jwks.json"
    }

    override fun close() = server.stop(0)
}

/**
 * The user's browser: follows redirects by hand with a cookie jar, submits oidc-provider's
 * development login (any login) and consent forms, and returns the redirect to the app.
 */
fun browserLogin(op: OidcProvider, authorizationUrl: String, login: String): String {
    val browser = HttpClient.newBuilder()
        .followRedirects(HttpClient.Redirect.NEVER)
        .cookieHandler(CookieManager(null, CookiePolicy.ACCEPT_ALL))
        .build()
    var req = HttpRequest.newBuilder(URI.create(authorizationUrl)).GET().build()
    repeat(16) {
        val resp = browser.send(req, HttpResponse.BodyHandlers.ofString())
        val url = resp.uri()
        if (resp.statusCode() in 300..399) {
            val target = url.resolve(resp.headers().firstValue("location").orElseThrow()).toString()
            if (target.startsWith(REDIRECT_URI)) return target
            req = HttpRequest.newBuilder(URI.create(target)).GET().build()
            return@repeat
        }
        assertEquals(200, resp.statusCode(), "$OIDC at $url: ${resp.body().take(300)}\n${op.peer.stderr()}")
        val action = Regex("<form[^>]*action=\"([^\"]+)\"").find(resp.body())?.groupValues?.get(1)
        val prompt = Regex("name=\"prompt\" value=\"(\\w+)\"").find(resp.body())?.groupValues?.get(1)
        if (action == null || prompt == null) die("$OIDC: no interaction form at $url")
        val form = buildMap {
            put("prompt", prompt)
            if (prompt == "login") {
                put("login", login)
                put("password", "any password")
            }
        }.entries.joinToString("&") { "${formEncode(it.key)}=${formEncode(it.value)}" }
        val target = url.resolve(action.replace("&#x2F;", "/").replace("&amp;", "&"))
        req = HttpRequest.newBuilder(target)
            .header("content-type", "application/x-www-form-urlencoded")
            .POST(HttpRequest.BodyPublishers.ofString(form)).build()
    }
    die("$OIDC: never got back to the app")
}

fun queryParam(url: String, name: String): String? =
    URI.create(url).rawQuery?.split("&")?.map { it.split("=", limit = 2) }
        ?.firstOrNull { it[0] == name }?.getOrNull(1)?.let { java.net.URLDecoder.decode(it, UTF_8) }
