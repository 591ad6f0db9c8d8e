//! JVM bindings (uniffi) of the cibmtr-fhir SDK: the native library `cibmtr_fhir_uniffi` and the
//! Kotlin it generates (`io.cibmtrfhir`). One module per concept of the core; every method
//! marshals its arguments, awaits the core once on the binding's runtime, and maps the error.
//! Each `suspend` function has a `…Blocking` twin for Java.
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
