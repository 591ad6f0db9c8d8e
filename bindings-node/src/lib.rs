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

mod auth;
mod cibmtr;
mod error;
mod fhir;
mod http;
mod sandbox;
