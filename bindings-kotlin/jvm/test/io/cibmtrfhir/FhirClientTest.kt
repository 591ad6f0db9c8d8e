package io.cibmtrfhir

import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance

/** The generic FHIR client against the MSK-like store (client credentials, `researchstudy`). */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class FhirClientTest {
    private val sb = Sandbox()
    private val msk = sb.credentials().msk
    private val auth = ClientCredentials(msk.tokenUrl, msk.clientId, msk.clientSecret.expose(), scope = msk.scope)
    private val fhir = FhirClient(sb.urls().mskFhir, auth = auth, defaultParams = mapOf("researchstudy" to "kt-study"))

    @AfterAll
    fun stop() = sb.close()

    @Test
    fun `create, read, update, search with paging`() = runBlocking {
        val ids = (1..25).map { i ->
            val created = fhir.create("""{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"718-7"}]},"valueQuantity":{"value":$i}}""")
            Regex("\"id\":\"([^\"]+)\"").find(created)!!.groupValues[1]
        }
        val read = fhir.read("Observation", ids[0])
        assertTrue(read.contains("\"value\":1"), read)

        val updated = fhir.update(read.replace("\"final\"", "\"amended\""))
        assertTrue(updated.contains("amended"))

        val found = fhir.search("Observation", mapOf("code" to "718-7", "_count" to "10"))
        assertEquals(25, found.size)

        val first = fhir.searchPageBlocking("Observation", mapOf("_count" to "10"))
        val second = fhir.nextPage(first)!!
        assertTrue(second.contains("\"Bundle\""))
        assertTrue(fhir.capabilities().contains("CapabilityStatement"))
        assertEquals(1L, auth.stats().tokenRequests)
    }

    @Test
    fun `conditional create creates once`() = runBlocking {
        val patient = """{"resourceType":"Patient","identifier":[{"system":"urn:kt","value":"42"}]}"""
        val first = fhir.createIfNoneExist(patient, "identifier=urn:kt|42")
        val second = fhir.createIfNoneExistBlocking(patient, "identifier=urn:kt|42")
        assertTrue(first.created)
        assertFalse(second.created)
        val id = { r: String -> Regex("\"id\":\"([^\"]+)\"").find(r)!!.groupValues[1] }
        assertEquals(id(first.resource), id(second.resource))
    }

    @Test
    fun `the last page has no next`() = runBlocking {
        val page = fhir.searchPage("Patient", mapOf("_count" to "1000"))
        assertNull(fhir.nextPage(page))
    }
}
