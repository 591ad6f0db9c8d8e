// The JVM side of the benchmark (bench/run.sh): a cached token() and submitLab from Kotlin, and
// labs at concurrency 8 and 32: 10,000 in one submitLabs call, and 2,000 with one coroutine per
// lab through a Semaphore (each submitLab searches the sandbox's store, which the sandbox scans:
// more labs would measure the sandbox). Each bulk run gets a fresh sandbox. The same operations
// as examples/jvm_baseline.rs. Prints one JSON object per measurement: wall time and the
// process's CPU time per operation (the sandbox runs in the same process on the SDK's runtime,
// as in the Rust run). CIBMTR_BENCH_QUICK=1 runs a small version (the test command does).
package io.cibmtrfhir.bench

import io.cibmtrfhir.CibmtrClient
import io.cibmtrfhir.LabResult
import io.cibmtrfhir.PasswordGrant
import io.cibmtrfhir.Sandbox
import java.lang.management.ManagementFactory
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.sync.Semaphore
import kotlinx.coroutines.sync.withPermit

private const val EFFECTIVE = "2024-05-01T08:30:00-05:00"

private fun labs(n: Int, salt: Int) =
    (0 until n).map { LabResult("718-7", 5.0 + (salt * n + it) / 1e5, "g/dL", EFFECTIVE) }

private val os = ManagementFactory.getOperatingSystemMXBean() as com.sun.management.OperatingSystemMXBean

/** Runs `block` (which performs `ops` operations) and prints wall and CPU time per operation. */
private suspend fun measure(name: String, ops: Int, unit: String, block: suspend () -> Unit) {
    val scale = if (unit == "ns") 1.0 else if (unit == "us") 1e3 else 1e9
    val cpu0 = os.processCpuTime
    val wall0 = System.nanoTime()
    block()
    val wall = (System.nanoTime() - wall0) / scale / (if (unit == "s") 1 else ops)
    val cpu = (os.processCpuTime - cpu0) / scale / (if (unit == "s") 1 else ops)
    println("""{"side":"kotlin","op":"$name","ops":$ops,"unit":"$unit","wall":${"%.2f".format(wall)},"cpu":${"%.2f".format(cpu)}}""")
}

/** A fresh sandbox and a client of its CIBMTR API, so no run sees a store grown by another. */
private class Fresh : AutoCloseable {
    val sb = Sandbox()
    val auth: PasswordGrant = sb.credentials().okta.let {
        PasswordGrant(it.tokenUrl, it.clientId, it.clientSecret.expose(), it.username, it.password.expose(), scope = it.scope)
    }
    val client = CibmtrClient("12345", auth, baseUrl = sb.urls().cibmtrBase)
    override fun close() = sb.close()
}

/** Lets the JVM collect (and JNA free) what the previous measurement left behind. */
private fun settle() {
    System.gc()
    Thread.sleep(500)
}

fun main() = runBlocking {
    val quick = System.getenv("CIBMTR_BENCH_QUICK") != null
    val env = { name: String, default: Int -> System.getenv(name)?.toInt() ?: default }
    val tokenCalls = env("CIBMTR_BENCH_TOKEN_CALLS", if (quick) 20_000 else 200_000)
    val singleLabs = if (quick) 100 else 2_000
    val bulk = env("CIBMTR_BENCH_LABS", if (quick) 500 else 10_000)
    val perLab = env("CIBMTR_BENCH_TASK_LABS", if (quick) 500 else 2_000)

    Fresh().use { f ->
        val (auth, client) = f.auth to f.client
        val crid = client.registerCrid("Jane", "Doe", "1970-01-31", "F")
        client.ensurePatient(crid)
        // Warm up the JIT on the submitLab path.
        for (lab in labs(300, 9)) client.submitLabResult(crid, lab)
        for (lab in labs(300, 8)) client.submitLabResultBlocking(crid, lab)
        settle()
        val one = labs(singleLabs, 0)
        measure("submit_lab", singleLabs, "us") { for (lab in one) client.submitLabResult(crid, lab) }
        val two = labs(singleLabs, 3)
        settle()
        measure("submit_lab_blocking", singleLabs, "us") { for (lab in two) client.submitLabResultBlocking(crid, lab) }
    }

    for (concurrency in listOf(8, 32)) {
        Fresh().use { f ->
            val crid = f.client.registerCrid("Batch", "Kotlin", "1970-01-31", "F")
            val batch = labs(bulk, 1)
            settle()
            measure("submit_labs_c$concurrency", bulk, "s") {
                val report = f.client.submitLabs(crid, batch, concurrency = concurrency)
                check(report.created == bulk.toLong()) {
                    "created ${report.created}, already present ${report.alreadyPresent}, failed ${report.failed}: " +
                        report.items.firstOrNull { it.error != null }?.error
                }
            }
        }
        Fresh().use { f ->
            val crid = f.client.registerCrid("Tasks", "Kotlin", "1970-01-31", "F")
            f.client.ensurePatient(crid)
            val permits = Semaphore(concurrency)
            val each = labs(perLab, 2)
            settle()
            measure("submit_lab_tasks_c$concurrency", perLab, "s") {
                each.map { lab ->
                    async(Dispatchers.Default) { permits.withPermit { f.client.submitLabResult(crid, lab) } }
                }.awaitAll()
            }
            check(f.sb.tokenRequests(f.sb.credentials().okta.clientId) == 1L)
        }
    }
    // Last: the token loops leave garbage (JNA structures) that the JVM cleans up afterwards.
    settle()
    Fresh().use { f ->
        val auth = f.auth
        // Warm up the JIT and the connection before measuring.
        repeat(minOf(tokenCalls, 50_000)) { auth.token() }
        repeat(minOf(tokenCalls, 50_000)) { auth.tokenBlocking() }
        settle()
        measure("token", tokenCalls, "ns") { repeat(tokenCalls) { auth.token() } }
        settle()
        measure("token_blocking", tokenCalls, "ns") { repeat(tokenCalls) { auth.tokenBlocking() } }
    }
}
