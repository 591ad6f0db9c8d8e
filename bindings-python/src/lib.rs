//! Python bindings: the native module `cibmtr_fhir._native`, re-exported by the `cibmtr_fhir`
//! package. One module per area of the core (`auth`, `fhir`, `cibmtr`, `journal`, `sandbox`), each method
//! marshalling its arguments, awaiting the core once and mapping errors in `error.rs`.
// Python's keyword arguments become Rust parameters one for one.
#![allow(clippy::too_many_arguments)]
mod auth;
mod cibmtr;
mod convert;
mod error;
mod fhir;
mod http;
mod journal;
mod logging;
mod runtime;
mod sandbox;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install();
    runtime::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // For the benchmark: figures from a debug build are not figures.
    m.setattr(
        "_build_profile",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    error::register(m)?;
    auth::register(m)?;
    fhir::register(m)?;
    http::register(m)?;
    cibmtr::register(m)?;
    journal::register(m)?;
    sandbox::register(m)?;
    Ok(())
}
