package io.cibmtrfhir

import java.lang.management.ManagementFactory
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance

/**
 * The two edits bindings-kotlin/uniffi-bindgen makes to uniffi's Kotlin: a thread reuses one
 * idle call status (so an error must not leak into the next call, and a call made from inside
 * another call must get a status of its own), and the runtime's workers stay attached to the JVM
 * after resuming a coroutine instead of becoming a new Java thread per call.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class NativeCallsTest {
    private val sb = Sandbox(SandboxOptions(oktaRatePerSecond = 1000))

    @AfterAll
    fun stop() = sb.close()

    @Test
    fun `errors and successes alternate on one thread without leaking into each other`() {
        val url = sb.urls().mskFhir
        val client = sb.cibmtrClient()
        repeat(500) { i ->
            val e = failsWith<CibmtrFhirException.Validation> { FhirClient(url, fhirVersion = "R5") }
            assertEquals("fhir_version", e.field)
            assertTrue(FhirClient(url).baseUrl().startsWith(url.trimEnd('/')))
            val lab = failsWith<CibmtrFhirException.Validation> {
                client.submitLabBlocking(1L, "718-7", 1.0, "g/dL", "not a time", null, null, null, null, null)
            }
            assertEquals("effective", lab.field)
            assertEquals("12345", client.ccn())
            assertTrue(client.fhir().baseUrl().isNotEmpty(), "round $i")
        }
    }

    @Test
    fun `a call made from inside another call gets a status of its own`() = runBlocking {
        val inner = passwordGrant(sb)
        var nested = 0
        // Rust calls tokenProvider() during the constructor, on this thread, while the
        // constructor's own call is still in progress; each nested call here succeeds or fails.
        val kotlinAuth = object : Auth {
            override fun tokenProvider(): TokenProvider {
                nested++
                runCatching { FhirClient(sb.urls().mskFhir, fhirVersion = "R5") }
                check(inner.stats().failures == 0L)
                return inner.tokenProvider()
            }
        }
        // The outer call succeeds after a failed nested one ...
        val client = CibmtrClient("12345", kotlinAuth, baseUrl = sb.urls().cibmtrBase)
        val crid = client.registerCrid("Jane", "Doe", "1970-01-31", "F")
        assertTrue(crid > 0)
        // ... and fails, with its own error, after successful nested ones.
        val e = failsWith<CibmtrFhirException.Validation> {
            CibmtrClient("12345", kotlinAuth, environment = "staging", baseUrl = sb.urls().cibmtrBase)
        }
        assertEquals("environment", e.field)
        assertEquals(2, nested)
        // And the thread's next calls are unaffected.
        assertEquals("12345", client.ccn())
        assertTrue(inner.token().isNotEmpty())
    }

    @Test
    fun `coroutines resumed by the runtime do not start a Java thread each`() = runBlocking {
        val client = sb.cibmtrClient()
        val crid = client.registerCrid("Jane", "Doe", "1970-01-31", "F")
        repeat(20) { client.observations(crid) }
        val threads = ManagementFactory.getThreadMXBean()
        val started = threads.totalStartedThreadCount
        // Each call waits on the sandbox and is resumed from a runtime worker.
        repeat(300) { client.observations(crid) }
        val more = threads.totalStartedThreadCount - started
        assertTrue(more < 30, "$more threads started for 300 calls")
    }
}
