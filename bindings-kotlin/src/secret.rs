//! Secrets cross to the JVM as `io.cibmtrfhir.Secret` (a hand-written Kotlin class whose
//! `toString()` is `[REDACTED]`), so a record holding one (a generated key, a registered client,
//! the sandbox's credentials) can be printed or logged without showing it.
use cibmtr_fhir::Secret;

uniffi::custom_type!(Secret, String, {
    remote,
    lower: |s| s.expose().to_owned(),
    try_lift: |s| Ok(Secret::new(s)),
});
