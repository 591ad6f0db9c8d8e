//! JVM bindings (uniffi) of the cibmtr-fhir SDK: the native library `cibmtr_fhir_uniffi` and the
//! Kotlin it generates (`io.cibmtrfhir`). One module per concept of the core; every method
//! marshals its arguments, awaits the core once on the binding's runtime, and maps the error.
//! Each `suspend` function has a `…Blocking` twin for Java.
//!
//! Diagnostic logging: `CIBMTR_FHIR_LOG=error|warn|info|debug|trace` (unset or `off`: nothing)
//! makes the SDK print its events (retries, waits, rate limiting, refreshes) to the process's
//! standard error, file descriptor 2, not `System.err`; read once, when the binding's runtime
//! starts (`runtime.rs`). No event carries a secret or patient data.
uniffi::setup_scaffolding!("CibmtrFhir");

mod auth;
mod cibmtr;
mod error;
mod fhir;
mod http;
mod runtime;
mod sandbox;
mod secret;

pub use auth::{
    Auth, AuthorizationCode, BackendServices, CacheStats, ClientCredentials, GeneratedKey,
    PasswordGrant, RegisteredClient, TokenProvider,
};
pub use cibmtr::{
    CibmtrClient, ItemResult, ItemStatus, LabDefinition, LabResult, LabSubmission, Progress,
    ProgressListener, SubmissionReport,
};
pub use error::CibmtrFhirError;
pub use fhir::{CreateOutcome, FhirClient};
pub use http::{HttpOptions, JavaDuration};
pub use sandbox::{Fault, Sandbox, SandboxOptions};
