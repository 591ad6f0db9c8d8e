package io.cibmtrfhir

import java.io.File
import java.nio.file.Files
import java.util.concurrent.TimeUnit
import javax.tools.ToolProvider
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/** The examples in examples/java and examples/kotlin compile and run. */
class ExamplesTest {
    private val examplesDir = File(System.getProperty("cibmtr.examples.dir") ?: "../examples")

    @Test
    fun `the Java example compiles against the package and runs`() {
        val source = File(examplesDir, "java/Quickstart.java")
        assertTrue(source.isFile, "missing $source")
        val out = Files.createTempDirectory("java-example").toFile()
        val classpath = System.getProperty("java.class.path")
        val compiler = ToolProvider.getSystemJavaCompiler()
        val status = compiler.run(null, null, null,
            "-Werror", "-Xlint:all", "-proc:none", "-cp", classpath, "-d", out.path, source.path)
        assertEquals(0, status, "javac failed")

        val java = File(System.getProperty("java.home"), "bin/java").path
        val process = ProcessBuilder(java, "-cp", "${out.path}${File.pathSeparator}$classpath", "Quickstart")
            .redirectErrorStream(true)
            .start()
        val output = process.inputStream.bufferedReader().readText()
        assertTrue(process.waitFor(120, TimeUnit.SECONDS), "the example did not finish")
        assertEquals(0, process.exitValue(), output)
        assertTrue(Regex("CRID \\d{16}").containsMatchIn(output), output)
        assertTrue(output.contains("Hemoglobin CREATED"), output)
        assertTrue(output.contains("created 2, already present 0, failed 1"), output)
        assertTrue(output.contains("refused effective"), output)
        assertTrue(output.contains("observations 3"), output)
        assertTrue(output.contains("token requests 1"), output)
        out.deleteRecursively()
    }

    @Test
    fun `the Kotlin example runs`() {
        val captured = java.io.ByteArrayOutputStream()
        val original = System.out
        System.setOut(java.io.PrintStream(captured, true))
        try {
            examples.main()
        } finally {
            System.setOut(original)
        }
        val output = captured.toString()
        assertTrue(output.contains("created 2, already present 0, failed 1"), output)
        assertTrue(output.contains("item 2: effective"), output)
        assertTrue(output.contains("token requests 1"), output)
    }
}
