package io.cibmtrfhir

import java.util.concurrent.CopyOnWriteArrayList
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance

/** The CIBMTR Direct FHIR workflow: CRID, Patient, labs one by one and in bulk, search. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class CibmtrWorkflowTest {
    private val sb = Sandbox()
    private val client = sb.cibmtrClient()

    @AfterAll
    fun stop() = sb.close()

    @Test
    fun `the whole workflow`() = runBlocking {
        val crid = client.registerCrid("Jane", "Doe", "1970-01-31", "F", race = listOf("2106-3"), ethnicity = "2186-5")
        assertTrue(crid > (1L shl 53), "a 16-digit CRID stays exact: $crid")
        assertEquals(crid, client.registerCrid("Jane", "Doe", "1970-01-31", "F", race = listOf("2106-3"), ethnicity = "2186-5"))
        assertEquals(1L, sb.cridsRegistered())

        val patient = client.ensurePatient(crid)
        assertEquals(patient, client.ensurePatient(crid))
        assertEquals(1, sb.patients().size)
        assertTrue(sb.patients()[0].contains("rc_12345"))

        val lab = client.submitLab(crid, "718-7", 12.5, "g/dL", EFFECTIVE, referenceLow = 12.0, referenceHigh = 16.0)
        assertEquals(ItemStatus.CREATED, lab.status)
        assertTrue(lab.submissionId.isNotEmpty())
        val again = client.submitLabResult(crid, LabResult("718-7", 12.5, "g/dL", EFFECTIVE, referenceLow = 12.0, referenceHigh = 16.0))
        assertEquals(ItemStatus.ALREADY_PRESENT, again.status)
        assertEquals(lab.id, again.id)

        val labs = listOf(
            LabResult("718-7", 12.5, "g/dL", EFFECTIVE, referenceLow = 12.0, referenceHigh = 16.0), // already there
            LabResult("26464-8", 6.1, "10*9/L", EFFECTIVE),
            LabResult("777-3", 250.0, "10*9/L", EFFECTIVE),
            LabResult("26515-7", 5.0, "10*9/L", EFFECTIVE, comparator = "<"),
            LabResult("777-3", 250.0, "10*9/L", "2024-05-01T08:30:00"), // no timezone
        )
        val seen = CopyOnWriteArrayList<Progress>()
        val report = client.submitLabs(crid, labs, concurrency = 4, progress = object : ProgressListener {
            override fun onProgress(progress: Progress) {
                seen.add(progress)
            }
        })
        assertEquals(5L, report.total)
        assertEquals(3L, report.created)
        assertEquals(1L, report.alreadyPresent)
        assertEquals(1L, report.failed)
        assertEquals(listOf(ItemStatus.ALREADY_PRESENT, ItemStatus.CREATED, ItemStatus.CREATED, ItemStatus.CREATED, ItemStatus.FAILED), report.items.map { it.status })
        val failed = report.items[4].error as CibmtrFhirException.Validation
        assertEquals("effective", failed.field)
        assertNull(report.items[1].error)
        assertTrue(report.json.contains("\"already_present\":1"), report.json)
        assertEquals(5L, seen.maxOf { it.done })
        assertTrue(seen.all { it.total == 5L })

        // A re-run sends nothing new.
        val posts = sb.requests("observation_create")
        val rerun = client.submitLabsBlocking(crid, labs.take(4), 8, false, 50, null)
        assertEquals(4L, rerun.alreadyPresent)
        assertEquals(posts, sb.requests("observation_create"))

        val observations = client.observations(crid)
        assertEquals(4, observations.size)
        assertTrue(observations.all { it.contains("\"resourceType\":\"Observation\"") })
        assertEquals(4, sb.observations().size)
    }

    @Test
    fun `bundles where the server takes them`() = runBlocking {
        val crid = client.registerCrid("John", "Roe", "1980-02-29", "M")
        val labs = (1..30).map { LabResult("718-7", 10.0 + it / 10.0, "g/dL", EFFECTIVE) }
        val report = client.submitLabs(crid, labs, useBundles = true, bundleSize = 10)
        assertEquals(30L, report.created)
        assertEquals(30, client.observations(crid).size)
    }

    @Test
    fun `the lab catalog`() {
        val catalog = labCatalog()
        assertEquals(11, catalog.size)
        val hemoglobin = catalog.first { it.name == "Hemoglobin" }
        assertEquals("g/dL", hemoglobin.unit)
        assertTrue("718-7" in hemoglobin.loincCodes)
    }

    @Test
    fun `the FHIR client under the CIBMTR client`() = runBlocking {
        val fhir = client.fhir()
        assertTrue(fhir.baseUrl().startsWith(sb.urls().cibmtrBase))
        val crid = client.registerCrid("Ann", "Poe", "1975-06-01", "F")
        client.ensurePatient(crid)
        val page = fhir.searchPage("Patient", mapOf("identifier" to crid.toString()))
        assertTrue(page.contains("\"searchset\""), page)
    }
}
