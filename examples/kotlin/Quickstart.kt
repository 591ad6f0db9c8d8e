// The CIBMTR workflow from Kotlin, with suspend functions, against the local sandbox.
// Compiled with the JVM package's tests (bindings-kotlin/pom.xml), which also run it.
package examples

import io.cibmtrfhir.CibmtrClient
import io.cibmtrfhir.CibmtrFhirException
import io.cibmtrfhir.HttpOptions
import io.cibmtrfhir.LabResult
import io.cibmtrfhir.PasswordGrant
import io.cibmtrfhir.ProgressListener
import io.cibmtrfhir.Sandbox
import java.time.Duration
import kotlinx.coroutines.runBlocking

fun main() = runBlocking {
    Sandbox().use { sandbox ->
        val okta = sandbox.credentials().okta
        // Your Okta service account; the token is cached and refreshed ahead of expiry.
        val auth = PasswordGrant(
            okta.tokenUrl, okta.clientId, okta.clientSecret.expose(),
            okta.username, okta.password.expose(), scope = okta.scope,
        )
        // HTTP settings are optional everywhere (timeouts, proxy, extra CAs, retry bounds).
        val http = HttpOptions(timeout = Duration.ofSeconds(20), requestRetries = 2)
        val client = CibmtrClient("12345", auth, baseUrl = sandbox.urls().cibmtrBase, http = http)

        val crid = client.registerCrid("Jane", "Doe", "1970-01-31", "F", race = listOf("2106-3"))
        println("CRID $crid")
        println("Patient ${client.ensurePatient(crid)}")

        val lab = client.submitLab(crid, "718-7", 12.5, "g/dL", "2024-05-01T08:30:00-05:00",
            referenceLow = 12.0, referenceHigh = 16.0)
        println("Hemoglobin ${lab.status} ${lab.id}")

        val labs = listOf(
            LabResult("26464-8", 6.1, "10*9/L", "2024-05-01T08:30:00-05:00"),
            LabResult("777-3", 250.0, "10*9/L", "2024-05-01T08:30:00-05:00"),
            LabResult("718-7", 12.5, "g/dL", "2024-05-01T08:30:00"), // no timezone: refused
        )
        val report = client.submitLabs(crid, labs, progress = object : ProgressListener {
            override fun onProgress(progress: io.cibmtrfhir.Progress) =
                println("  ${progress.done}/${progress.total}")
        })
        println("created ${report.created}, already present ${report.alreadyPresent}, failed ${report.failed}")
        for (item in report.items) {
            when (val e = item.error) {
                is CibmtrFhirException.Validation -> println("  item ${item.index}: ${e.field}: ${e.rule}")
                null -> {}
                else -> println("  item ${item.index}: ${e.code()} ${e.message}")
            }
        }
        println("observations ${client.observations(crid).size}")
        println("token requests ${auth.stats().tokenRequests}")
    }
}
