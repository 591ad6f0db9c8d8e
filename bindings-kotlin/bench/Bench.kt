// The JVM side of the benchmark (bench/run.sh): a cached token() and submitLab from Kotlin, and
// labs at concurrency 8 and 32: 10,000 in one submitLabs call (the median of 5 runs), and 2,000
// with one coroutine per lab through a Semaphore (each submitLab searches the sandbox's store,
// which the sandbox scans: more labs would measure the sandbox). Each bulk run gets a fresh
// sandbox; the JIT is warmed on every path first. The same operations
// as examples/jvm_baseline.rs. Prints one JSON object per measurement: wall time and the
// process's CPU time per operation (the sandbox runs in the same process on the SDK's runtime,
// as in the Rust run). CIBMTR_BENCH_QUICK=1 runs a small version (the test command does).
//
// The token calls are measured beside the floor of any call into the library: a trivial method
// returning a short String (BackendServices.algorithm(), which answers "ES384"), made the same
// way (clone the object's handle, call, lift the String). The three run in interleaved rounds,
// so that the shared machine's noise falls on all of them alike; each line gives the median per
// call over the rounds, the fastest and slowest round, and the process's CPU per call.
package io.cibmtrfhir.bench

import io.cibmtrfhir.BackendServices
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

/**
 * Runs `block` `runs` times (`setup` before each run, untimed, gives it what it works on) and
 * prints the median wall time in seconds, the fastest and slowest run, and the median CPU time.
 */
private suspend fun <T> measureRuns(name: String, ops: Int, runs: Int, setup: suspend () -> T, block: suspend (T) -> Unit) {
    val wall = DoubleArray(runs)
    val cpu = DoubleArray(runs)
    for (r in 0 until runs) {
        val input = setup()
        settle()
        val cpu0 = os.processCpuTime
        val wall0 = System.nanoTime()
        block(input)
        wall[r] = (System.nanoTime() - wall0) / 1e9
        cpu[r] = (os.processCpuTime - cpu0) / 1e9
        (input as? AutoCloseable)?.close()
    }
    wall.sort()
    cpu.sort()
    println(
        """{"side":"kotlin","op":"$name","ops":$ops,"unit":"s","wall":${"%.3f".format(wall[runs / 2])},""" +
            """"wall_min":${"%.3f".format(wall.first())},"wall_max":${"%.3f".format(wall.last())},"cpu":${"%.3f".format(cpu[runs / 2])}}""",
    )
}

/**
 * Runs `ops` in `rounds` interleaved rounds of `calls` calls each (each round starting with the
 * next op, so that none always follows the same one and inherits its garbage) and prints, per op,
 * the median wall time per call over the rounds, the fastest and slowest round, and the process's
 * CPU time per call over all rounds.
 */
private suspend fun interleaved(rounds: Int, calls: Int, ops: List<Pair<String, suspend () -> Unit>>) {
    val wall = ops.map { DoubleArray(rounds) }
    val cpu = LongArray(ops.size)
    for (r in 0 until rounds) {
        for (k in ops.indices) {
            val i = (r + k) % ops.size
            val op = ops[i].second
            val cpu0 = os.processCpuTime
            val wall0 = System.nanoTime()
            for (c in 0 until calls) op()
            wall[i][r] = (System.nanoTime() - wall0).toDouble() / calls
            cpu[i] += os.processCpuTime - cpu0
        }
    }
    ops.forEachIndexed { i, (name, _) ->
        val w = wall[i].sorted()
        val perCallCpu = cpu[i].toDouble() / (rounds.toLong() * calls)
        println(
            """{"side":"kotlin","op":"$name","ops":${rounds.toLong() * calls},"unit":"ns","wall":${"%.0f".format(w[rounds / 2])},""" +
                """"wall_min":${"%.0f".format(w.first())},"wall_max":${"%.0f".format(w.last())},"cpu":${"%.0f".format(perCallCpu)}}""",
        )
    }
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
    val tokenCalls = env("CIBMTR_BENCH_TOKEN_CALLS", if (quick) 10_000 else 210_000)
    val tokenRounds = if (quick) 5 else 21
    val singleLabs = if (quick) 100 else 2_000
    val bulk = env("CIBMTR_BENCH_LABS", if (quick) 500 else 10_000)
    val perLab = env("CIBMTR_BENCH_TASK_LABS", if (quick) 500 else 2_000)
    val bulkRuns = env("CIBMTR_BENCH_RUNS", if (quick) 1 else 5)

    // Warm up the JIT on both submitLab paths, on a sandbox of its own: on two cores, the JIT's
    // compiler threads would otherwise compete with the first measurements.
    Fresh().use { f ->
        val crid = f.client.registerCrid("Warm", "Up", "1970-01-31", "F")
        for (lab in labs(singleLabs / 2, 7)) f.client.submitLabResult(crid, lab)
        for (lab in labs(singleLabs / 2, 6)) f.client.submitLabResultBlocking(crid, lab)
        // And the bulk path: lowering a list of labs, lifting the report.
        for (salt in 10 until 13) f.client.submitLabs(crid, labs(bulk / 5, salt), concurrency = 8)
    }
    // One lab at a time, each variant on a fresh sandbox holding the same 300 labs first (each
    // submitLab searches the store, which the sandbox scans), as in jvm_baseline.rs.
    for (blocking in listOf(false, true)) {
        Fresh().use { f ->
            val client = f.client
            val crid = client.registerCrid("Jane", "Doe", "1970-01-31", "F")
            client.ensurePatient(crid)
            for (lab in labs(150, 9)) client.submitLabResult(crid, lab)
            for (lab in labs(150, 8)) client.submitLabResultBlocking(crid, lab)
            settle()
            val one = labs(singleLabs, 0)
            if (blocking) {
                measure("submit_lab_blocking", singleLabs, "us") { for (lab in one) client.submitLabResultBlocking(crid, lab) }
            } else {
                measure("submit_lab", singleLabs, "us") { for (lab in one) client.submitLabResult(crid, lab) }
            }
        }
    }

    for (concurrency in listOf(8, 32)) {
        // Each run on a fresh sandbox.
        class Batch(val f: Fresh, val crid: Long, val labs: List<LabResult>) : AutoCloseable by f
        val setup: suspend () -> Batch = {
            val f = Fresh()
            Batch(f, f.client.registerCrid("Batch", "Kotlin", "1970-01-31", "F"), labs(bulk, 1))
        }
        measureRuns("submit_labs_c$concurrency", bulk, bulkRuns, setup) { b ->
            val report = b.f.client.submitLabs(b.crid, b.labs, concurrency = concurrency)
            check(report.created == bulk.toLong()) {
                "created ${report.created}, already present ${report.alreadyPresent}, failed ${report.failed}: " +
                    report.items.firstOrNull { it.error != null }?.error
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
        val b = f.sb.credentials().backend
        val floor = BackendServices(b.clientId, b.privateKeyPem.expose(), tokenUrl = b.tokenUrl, algorithm = "ES384")
        val ops = listOf<Pair<String, suspend () -> Unit>>(
            "floor_call" to { check(floor.algorithm() == "ES384") },
            "token" to { auth.token() },
            "token_blocking" to { auth.tokenBlocking() },
        )
        // Warm up the JIT and the connection before measuring.
        interleaved(1, minOf(tokenCalls, 50_000), ops.map { (name, op) -> "warmup_$name" to op })
        settle()
        interleaved(tokenRounds, tokenCalls / tokenRounds, ops)
        check(auth.stats().tokenRequests == 1L)
    }
}
