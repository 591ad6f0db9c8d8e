package io.cibmtrfhir

import java.io.File
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/** Many coroutines, one token, and a runtime that runs them together. */
class ConcurrencyTest {
    @Test
    fun `1,000 concurrent coroutines submitting labs make one token request`() = runBlocking {
        Sandbox().use { sb ->
            val client = sb.cibmtrClient()
            val crid = client.registerCrid("Jane", "Doe", "1970-01-31", "F")
            val results = (0 until 1000).map { i ->
                async(Dispatchers.Default) {
                    client.submitLab(crid, "718-7", 10.0 + i / 1000.0, "g/dL", EFFECTIVE)
                }
            }.awaitAll()
            assertEquals(1000, results.count { it.status == ItemStatus.CREATED })
            assertEquals(1000, results.map { it.id }.toSet().size)
            assertEquals(1L, sb.tokenRequests(sb.credentials().okta.clientId))
            assertEquals(1000, sb.observations().size)
            assertEquals(1, sb.patients().size)
        }
    }

    @Test
    fun `slow answers overlap instead of queueing`() = runBlocking {
        Sandbox().use { sb ->
            val client = sb.cibmtrClient()
            val crid = client.registerCrid("Jane", "Doe", "1970-01-31", "F")
            client.ensurePatient(crid)
            sb.setFault("observation_create", Fault(delayMs = 500))
            val started = System.nanoTime()
            withTimeout(20_000) {
                (0 until 64).map { i ->
                    async { client.submitLab(crid, "718-7", 10.0 + i / 100.0, "g/dL", EFFECTIVE) }
                }.awaitAll()
            }
            val seconds = (System.nanoTime() - started) / 1e9
            // One after another this would take 32 s.
            assertTrue(seconds < 8, "64 submissions of 0.5 s each took $seconds s")
        }
    }

    @Test
    fun `the runtime has a worker per core, not one helper thread`() = runBlocking {
        Sandbox().use { sb -> passwordGrant(sb).token() }
        val names = File("/proc/self/task").listFiles()!!.mapNotNull {
            runCatching { File(it, "comm").readText().trim() }.getOrNull()
        }
        val workers = names.count { it == "cibmtr-fhir" }
        val cores = Runtime.getRuntime().availableProcessors()
        assertTrue(workers >= minOf(cores, 2), "$workers runtime threads for $cores cores: $names")
    }

    @Test
    fun `blocking calls from many Java threads share the token`() {
        Sandbox().use { sb ->
            val auth = passwordGrant(sb)
            val threads = (0 until 16).map { Thread { repeat(50) { auth.tokenBlocking() } } }
            threads.forEach(Thread::start)
            threads.forEach(Thread::join)
            assertEquals(1L, auth.stats().tokenRequests)
            assertEquals(799L, auth.stats().cacheHits)
        }
    }
}
