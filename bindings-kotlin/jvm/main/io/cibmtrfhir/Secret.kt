package io.cibmtrfhir

/**
 * A secret string (a client secret, a password, a private key) as the SDK hands it out:
 * `toString()` is `[REDACTED]`, so a record holding one can be printed or logged. Call
 * [expose] only where the value is needed.
 */
class Secret(private val value: String) {
    /** The secret value. */
    fun expose(): String = value

    override fun toString(): String = "[REDACTED]"

    override fun equals(other: Any?): Boolean = other is Secret && other.value == value

    override fun hashCode(): Int = value.hashCode()
}
