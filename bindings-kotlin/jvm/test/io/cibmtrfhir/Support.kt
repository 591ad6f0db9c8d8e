package io.cibmtrfhir

import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.fail

/** The Okta test user of `sb` as a password grant. */
fun passwordGrant(sb: Sandbox, password: String? = null): PasswordGrant {
    val o = sb.credentials().okta
    return PasswordGrant(
        o.tokenUrl, o.clientId, o.clientSecret.expose(), o.username,
        password ?: o.password.expose(), scope = o.scope,
    )
}

/** Runs `block` and returns the exception of type `T` it throws, failing otherwise. */
inline fun <reified T : Throwable> failsWith(noinline block: suspend () -> Any?): T {
    try {
        val r = runBlocking { block() }
        fail<Unit>("expected ${T::class.simpleName}, got $r")
    } catch (e: Throwable) {
        if (e is T) return e
        fail<Unit>("expected ${T::class.simpleName}, got $e", e)
    }
    throw AssertionError("unreachable")
}

const val EFFECTIVE = "2024-05-01T08:30:00-05:00"
