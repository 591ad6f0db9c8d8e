//! # cibmtr-fhir
//!
//! The Rust core of the cibmtr-fhir SDK: OAuth token flows behind one single-flight token cache,
//! and (in later modules) the FHIR client and the CIBMTR Direct FHIR workflow.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cibmtr_fhir::Error> {
//! use cibmtr_fhir::auth::PasswordGrant;
//! let auth = PasswordGrant::builder(
//!     "https://oktapreview.nmdp.org/oauth2/ausaexcazhLhxKnJs0h7/v1/token",
//!     "client-id", "client-secret", "svc-user", "svc-password",
//! ).scope("cibmtr_fhir").build()?;
//! let token = auth.token().await?;      // cached; refreshed ahead of expiry
//! # let _ = token.secret(); Ok(()) }
//! ```
// One `unsafe` call in the whole core, allowed where it is: `pthread_atfork` (journal/fork_gate.rs).
#![deny(unsafe_code)]

pub mod auth;
pub mod cibmtr;
#[doc(hidden)]
pub mod clock;
pub mod error;
pub mod fhir;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod journal;
pub mod logging;
pub mod secret;

pub use error::{Error, ErrorKind, Result};
pub use secret::Secret;
