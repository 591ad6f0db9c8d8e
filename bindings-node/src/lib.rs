//! Node bindings of the cibmtr-fhir SDK (napi-rs): the package `cibmtr-fhir`.
//!
//! One module per concept of the core, each a thin layer: marshal the JavaScript arguments,
//! await the core once on the binding's tokio runtime (napi's), and map the core's error to a
//! JavaScript `Error` with a stable `code` in [`error`]. Network calls return Promises and never
//! block the JavaScript thread. The TypeScript declarations (`index.d.ts`) are generated from
//! this code by `napi build`; the types the Rust signatures cannot name are in `header.d.ts`.
#![deny(clippy::all)]
// `cargo test` of the workspace compiles this crate without napi's registration glue.
#![cfg_attr(test, allow(dead_code))]

mod args;
mod auth;
mod cibmtr;
mod error;
mod fhir;
mod http;
mod sandbox;

/// Runs once when Node loads the addon: `CIBMTR_FHIR_LOG=debug` (or `error`, `warn`, `info`,
/// `trace`) prints the SDK's retries, waits and refreshes to standard error; unset or `off`,
/// nothing. No event carries a secret or patient data.
#[napi_derive::module_init]
fn init_logging() {
    cibmtr_fhir::logging::init_from_env();
}
