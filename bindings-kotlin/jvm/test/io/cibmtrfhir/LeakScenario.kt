package io.cibmtrfhir

import java.io.File
import java.net.HttpURLConnection
import java.net.URI
import java.util.Properties
import kotlinx.coroutines.runBlocking

/**
 * The child JVM of [LeaksTest]: runs every flow and workflow of the package against the
 * parent's sandbox with `CIBMTR_FHIR_LOG=trace`, printing everything a careless program would
 * print (each object's `toString()`, each exception's message, fields and stack trace), so that
 * the parent can search its standard output and error for the secrets the sandbox saw.
 *
 * Its input (URLs and credentials) comes from the file named by `CIBMTR_LEAK_INPUT`, never from
 * the command line; what the parent checks the sandbox's record against (the access tokens and
 * the authorization code it obtained, the generated private key) goes to the file named by
 * `CIBMTR_LEAK_RESULT`, never to its output.
 */
object LeakScenario {
    private val results = Properties()

    /** What a careless program prints of an object it got. */
    private fun show(label: String, value: Any?) = println("$label: $value")

    /** What a careless program prints of an exception: everything. */
    private fun showError(label: String, e: Throwable) {
        println("$label: $e")
        println("$label message: ${e.message}")
        println("$label localized: ${e.localizedMessage}")
        e.javaClass.methods
            .filter { it.parameterCount == 0 && it.declaringClass != Throwable::class.java && it.declaringClass != Any::class.java }
            .filter { it.name.startsWith("get") || it.name == "code" }
            .forEach { println("$label ${it.name}: ${runCatching { it.invoke(e) }.getOrElse { x -> x }}") }
        e.printStackTrace()
        e.printStackTrace(System.out)
    }

    /** Runs `block`, printing its result or its exception (the error paths expect one). */
    private fun attempt(label: String, block: suspend () -> Any?) {
        try {
            show(label, runBlocking { block() })
        } catch (e: Exception) {
            showError(label, e)
        }
    }

    /** A token obtained by the scenario: kept for the parent, never printed. */
    private fun obtained(name: String, token: String) {
        results["access_token.$name"] = token
    }

    /** POSTs `json` to the sandbox's admin API (`faults`: set, or with `add` queue, a fault). */
    private fun admin(url: String, json: String) {
        val c = URI(url).toURL().openConnection() as HttpURLConnection
        c.requestMethod = "POST"
        c.doOutput = true
        c.setRequestProperty("Content-Type", "application/json")
        c.outputStream.use { it.write(json.toByteArray()) }
        check(c.responseCode in 200..299) { "$url answered ${c.responseCode}" }
    }

    /** The `Location` that `url` redirects to, without following it to the callback. */
    private fun redirect(url: String): String {
        val c = URI(url).toURL().openConnection() as HttpURLConnection
        c.instanceFollowRedirects = false
        check(c.responseCode in 300..399) { "no redirect: ${c.responseCode}" }
        return c.getHeaderField("Location")
    }

    @JvmStatic
    fun main(args: Array<String>) {
        val input = Properties().apply { File(System.getenv("CIBMTR_LEAK_INPUT")).reader().use { load(it) } }
        val v = { key: String -> input.getProperty(key) ?: error("missing $key") }
        val admin = v("admin")
        runBlocking { scenario(v, admin) }
        File(System.getenv("CIBMTR_LEAK_RESULT")).writer().use { results.store(it, null) }
    }

    private suspend fun scenario(v: (String) -> String, admin: String) {
        // Password grant: a 503, then a 429 with Retry-After 0, then the token.
        admin("$admin/faults", """{"route":"okta_token","status":503,"times":1}""")
        admin("$admin/faults", """{"route":"okta_token","status":429,"headers":{"Retry-After":"0"},"times":1,"add":true}""")
        val password = PasswordGrant(v("okta.tokenUrl"), v("okta.clientId"), v("okta.clientSecret"), v("okta.username"), v("okta.password"), scope = v("okta.scope"))
        obtained("password", password.token())
        show("password grant", password)
        show("password stats", password.stats())
        show("password provider", password.tokenProvider())

        // Client credentials, secret in the body and as HTTP Basic.
        val post = ClientCredentials(v("msk.tokenUrl"), v("msk.clientId"), v("msk.clientSecret"), scope = v("msk.scope"))
        obtained("client_secret_post", post.token())
        val basic = ClientCredentials(v("mskBasic.tokenUrl"), v("mskBasic.clientId"), v("mskBasic.clientSecret"), scope = v("mskBasic.scope"), authMethod = "client_secret_basic")
        obtained("client_secret_basic", basic.tokenBlocking())
        show("client credentials post", post)
        show("client credentials basic", basic)

        // Backend Services: a generated RS384 key registered with the sandbox, and the sandbox's ES384 key.
        val key = generateKey("RS384")
        results["generated_key_pem"] = key.privatePem.expose()
        val rsClient = "leak-backend-rs384"
        admin("$admin/backend-clients", """{"client_id":"$rsClient","jwks":${key.jwks}}""")
        show("generated key", key)
        val rs = BackendServices(rsClient, key.privatePem.expose(), fhirBase = v("backend.fhirBase"), algorithm = "RS384")
        obtained("backend_rs384", rs.token())
        val es = BackendServices(v("backend.clientId"), v("backend.privateKeyPem"), tokenUrl = v("backend.tokenUrl"), keyId = v("backend.keyId"), algorithm = "ES384", scope = v("backend.scope"))
        obtained("backend_es384", es.token())
        show("backend rs384", rs)
        show("backend es384", es)
        val aidbox = FhirClient(v("aidboxFhir"), auth = rs)
        show("aidbox create", aidbox.create("""{"resourceType":"Patient","name":[{"family":"Leakcheck"}]}"""))
        show("aidbox client", aidbox)

        // Authorization code + PKCE, then a forced refresh so that a refresh token crosses the wire.
        val smart = AuthorizationCode(v("smart.clientId"), v("smart.redirectUri"), v("smart.scope"), clientSecret = v("smart.clientSecret"), fhirBase = v("smart.fhirBase"))
        val location = redirect(smart.authorizationUrl())
        results["authorization_code"] = Regex("[?&]code=([^&]+)").find(location)!!.groupValues[1]
        smart.complete(location)
        obtained("authorization_code", smart.token())
        smart.invalidate()
        obtained("refreshed", smart.token())
        show("authorization code", smart)
        show("authorization code stats", smart.stats())
        show("launch context", smart.context())
        attempt("replayed complete") { smart.complete(location) }

        // Dynamic registration, then a login with the registered client.
        val registered = registerClient(v("smart.registrationUrl"), "leak test", listOf("http://127.0.0.1:9/leak"), v("smart.scope"))
        show("registered client", registered)
        val app = AuthorizationCode(registered.clientId, "http://127.0.0.1:9/leak", v("smart.scope"), clientSecret = registered.clientSecret?.expose(), fhirBase = v("smart.fhirBase"))
        app.complete(redirect(app.authorizationUrl()))
        obtained("registered", app.token())
        show("registered app", app)

        // The CIBMTR workflow, with distinctive demographics.
        val client = CibmtrClient("12345", password, baseUrl = v("cibmtrBase"))
        val crid = client.registerCrid("Zephyrine", "Quillfeather", "1968-07-23", "F", ssn = "123-45-6789", mothersMaidenName = "Wolverstone")
        show("crid", crid)
        show("patient", client.ensurePatient(crid))
        admin("$admin/faults", """{"route":"observation_create","status":503,"times":1}""")
        val labs = listOf(
            LabResult("718-7", 12.5, "g/dL", EFFECTIVE),
            LabResult("777-3", 250.0, "10*9/L", EFFECTIVE),
            LabResult("777-3", 250.0, "10*9/L", "2024-05-01T08:30:00"),
        )
        val report = client.submitLabs(crid, labs, concurrency = 2)
        show("report", report)
        show("report json", report.json)
        report.items.mapNotNull { it.error }.forEach { showError("report item", it) }
        show("one lab", client.submitLab(crid, "26464-8", 6.1, "10*9/L", EFFECTIVE))
        show("observations", client.observations(crid))
        show("cibmtr client", client)
        show("cibmtr fhir", client.fhir())

        // Error paths.
        attempt("wrong password") {
            PasswordGrant(v("okta.tokenUrl"), v("okta.clientId"), v("okta.clientSecret"), v("okta.username"), "Wrong-${v("okta.password")}", scope = v("okta.scope")).token()
        }
        attempt("wrong secret") {
            ClientCredentials(v("msk.tokenUrl"), v("msk.clientId"), "Wrong-${v("msk.clientSecret")}", scope = v("msk.scope")).token()
        }
        val msk = FhirClient(v("mskFhir"), auth = post, defaultParams = mapOf("researchstudy" to "leak"))
        show("msk search", msk.search("Patient", mapOf("name" to "Leakcheck")))
        show("msk client", msk)
        attempt("invalid create") { client.fhir().create("""{"resourceType":"Observation","status":"bogus"}""") }
        attempt("invalid lab") { client.submitLab(crid, "718-7", 12.5, "g/dL", "2024-02-30T08:00:00Z") }
        attempt("invalid crid") { client.registerCrid("Zephyrine", "Quillfeather", "1968-02-30", "F", ssn = "123-45-6789") }
    }
}
