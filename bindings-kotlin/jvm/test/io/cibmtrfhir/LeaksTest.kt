package io.cibmtrfhir

import java.io.File
import java.net.URLEncoder
import java.nio.file.Files
import java.nio.file.attribute.PosixFilePermissions
import java.util.Properties
import java.util.concurrent.TimeUnit
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/**
 * No secret and no patient data in anything a program using the package prints, with the SDK's
 * own logging at `trace`: [LeakScenario] runs every flow in a child JVM (the native library logs
 * to file descriptor 2, which only a child's captured standard error shows), and every value the
 * sandbox recorded on its wire (`Sandbox.secretsSeen()`) is searched for in its output.
 */
class LeaksTest {
    /** The secrets of `seen` (and their form-encoded spellings) that occur in `text`. */
    private fun leaks(text: String, seen: Collection<String>): List<String> =
        seen.filter { s -> s in text || URLEncoder.encode(s, Charsets.UTF_8) in text }

    @Test
    fun `the scanner finds a secret`() {
        val seen = listOf("Quillfeather", "a+b c/d=e%f")
        assertEquals(listOf("Quillfeather"), leaks("patient Quillfeather admitted", seen))
        assertEquals(listOf("a+b c/d=e%f"), leaks("body: x=a%2Bb+c%2Fd%3De%25f", seen))
        assertEquals(emptyList<String>(), leaks("nothing here", seen))
    }

    @Test
    fun `nothing the sandbox saw shows in the output of a program at trace level`() {
        Sandbox(SandboxOptions(oktaRatePerSecond = 1000)).use { sb ->
            val dir = Files.createTempDirectory("leaks", PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------"))).toFile()
            try {
                val input = File(dir, "input.properties")
                val result = File(dir, "result.properties")
                input.writer().use { scenarioInput(sb).store(it, null) }

                val java = File(System.getProperty("java.home"), "bin/java").path
                val pb = ProcessBuilder(java, "-cp", System.getProperty("java.class.path"), LeakScenario::class.java.name)
                pb.environment() += mapOf(
                    "CIBMTR_FHIR_LOG" to "trace",
                    "CIBMTR_LEAK_INPUT" to input.path,
                    "CIBMTR_LEAK_RESULT" to result.path,
                )
                pb.redirectOutput(File(dir, "stdout")).redirectError(File(dir, "stderr"))
                val child = pb.start()
                assertTrue(child.waitFor(180, TimeUnit.SECONDS), "the scenario did not finish")
                val stdout = File(dir, "stdout").readText()
                val stderr = File(dir, "stderr").readText()
                assertEquals(0, child.exitValue(), "the scenario failed:\n$stdout\n$stderr")

                val got = Properties().apply { result.reader().use { load(it) } }
                val seen = sb.secretsSeen()
                assertRecordingComplete(seen, got, sb.credentials())

                // The generated private key never reached the sandbox; it is searched for too,
                // whole and line by line.
                val pem = got.getProperty("generated_key_pem")
                val secrets = seen + pem + pem.lines().filter { it.length >= 6 && !it.startsWith("-----") }
                val output = stdout + stderr
                assertEquals(emptyList<String>(), leaks(output, secrets), "secrets in the scenario's output")

                // Logging was on, and the run did what the scan relies on.
                assertTrue(Regex("TRACE|DEBUG").containsMatchIn(stderr), "no log lines in:\n$stderr")
                assertTrue(stderr.contains("cibmtr_fhir"), "no event of the SDK in:\n$stderr")
                assertTrue(stdout.contains("wrong password: io.cibmtrfhir.CibmtrFhirException\$Auth"), stdout)
                assertTrue(stdout.contains("replayed complete: io.cibmtrfhir.CibmtrFhirException\$Auth"), stdout)
                assertTrue(stdout.contains("invalid create: io.cibmtrfhir.CibmtrFhirException\$Http"), stdout)
                assertTrue(stderr.contains("retrying") && stderr.contains("rate limited"), "no retry logged:\n$stderr")
                println("leak scan: ${secrets.size} secrets, ${seen.size} from secretsSeen(), in ${output.toByteArray().size} bytes " +
                    "(${stdout.toByteArray().size} stdout, ${stderr.toByteArray().size} stderr, ${stderr.lines().size} stderr lines)")
            } finally {
                dir.deleteRecursively()
            }
        }
    }

    /** The sandbox's URLs and test credentials, for the child (a file: not its command line). */
    private fun scenarioInput(sb: Sandbox): Properties {
        val u = sb.urls()
        val c = sb.credentials()
        return Properties().apply {
            putAll(mapOf(
                "admin" to u.admin, "aidboxFhir" to u.aidboxFhir, "mskFhir" to u.mskFhir, "cibmtrBase" to u.cibmtrBase,
                "okta.tokenUrl" to c.okta.tokenUrl, "okta.clientId" to c.okta.clientId,
                "okta.clientSecret" to c.okta.clientSecret.expose(), "okta.username" to c.okta.username,
                "okta.password" to c.okta.password.expose(), "okta.scope" to c.okta.scope,
                "backend.tokenUrl" to c.backend.tokenUrl, "backend.fhirBase" to c.backend.fhirBase,
                "backend.clientId" to c.backend.clientId, "backend.privateKeyPem" to c.backend.privateKeyPem.expose(),
                "backend.keyId" to c.backend.keyId, "backend.scope" to c.backend.scope,
                "smart.clientId" to c.smart.clientId, "smart.clientSecret" to c.smart.clientSecret.expose(),
                "smart.redirectUri" to c.smart.redirectUri, "smart.scope" to c.smart.scope,
                "smart.fhirBase" to c.smart.fhirBase, "smart.registrationUrl" to c.smart.registrationUrl,
            ))
            for ((name, cc) in listOf("msk" to c.msk, "mskBasic" to c.mskBasic)) {
                putAll(mapOf("$name.tokenUrl" to cc.tokenUrl, "$name.clientId" to cc.clientId,
                    "$name.clientSecret" to cc.clientSecret.expose(), "$name.scope" to cc.scope))
            }
        }
    }

    /** The sandbox recorded what the scenario sent and got, so that the scan can fail. */
    private fun assertRecordingComplete(seen: List<String>, got: Properties, c: SandboxCredentials) {
        val tokens = got.stringPropertyNames().filter { it.startsWith("access_token.") }
        assertEquals(8, tokens.size, "access tokens of the scenario: $tokens")
        tokens.forEach { assertTrue(got.getProperty(it) in seen, "$it not recorded") }
        assertTrue(got.getProperty("authorization_code") in seen, "the authorization code not recorded")
        for (v in listOf("123-45-6789", "Zephyrine", "Quillfeather", "Wolverstone", "1968-07-23", c.okta.password.expose())) {
            assertTrue(v in seen, "$v not recorded")
        }
        assertTrue("Wrong-${c.okta.password.expose()}" in seen, "the wrong password not recorded")
        assertTrue(seen.any { it.startsWith("ey") && it.count { ch -> ch == '.' } == 2 }, "no client assertion recorded")
        // Refresh tokens are the sandbox's only 48-character alphanumeric values.
        assertTrue(got.getProperty("access_token.refreshed") != got.getProperty("access_token.authorization_code"), "no refresh")
        assertTrue(seen.any { it.matches(Regex("[A-Za-z0-9]{48}")) }, "no refresh token recorded")
    }
}
