package io.cibmtrfhir

/**
 * A duration in nanoseconds as the native library takes it (see `HttpOptions`), saturated at
 * `Long.MIN_VALUE` / `Long.MAX_VALUE` beyond about ±292 years. A negative one is passed on, to be
 * refused there as a `CibmtrFhirException.Validation` naming the field.
 */
internal fun javaDurationNanos(d: java.time.Duration): Long =
    try {
        d.toNanos()
    } catch (e: ArithmeticException) {
        if (d.isNegative) Long.MIN_VALUE else Long.MAX_VALUE
    }
