//! The one place where the core's error becomes the JVM's: a sealed `CibmtrFhirException` with
//! one subclass per kind (`Validation`, `Auth`, `RateLimited`, `Http`, `Network`, `Config`) and
//! the fields a caller branches on, the same kinds and fields as the Python and Node packages.
//!
//! Kotlin builds each exception's `message` from its fields (`field=…, rule=…`); the core puts
//! no secret in any of them. The server's or the transport's own words are in `detail` (Kotlin
//! exceptions already have a `message`, so the field cannot take that name).
use std::time::Duration;

use cibmtr_fhir::Error;

/// An error of the SDK. `code()` is the stable kind: `VALIDATION`, `AUTH`, `RATE_LIMITED`,
/// `HTTP`, `NETWORK` or `CONFIG`.
#[derive(Debug, Clone, PartialEq, uniffi::Error)]
pub enum CibmtrFhirError {
    /// Bad input, refused before any byte left the process: which field, and the rule it broke.
    Validation { field: String, rule: String },
    /// The authorization server refused: the OAuth `error` code (`invalid_grant`,
    /// `invalid_client`, `state_mismatch`, …), its description and the HTTP status if any.
    Auth {
        error: String,
        description: Option<String>,
        status: Option<i32>,
    },
    /// Rate limited for longer than the SDK waits; `retry_after` is when to try again.
    RateLimited { retry_after: Option<Duration> },
    /// The server answered with an unexpected status; `detail` is its message and `outcome` its
    /// `OperationOutcome` (JSON) when it sent one.
    Http {
        status: i32,
        detail: String,
        outcome: Option<String>,
    },
    /// The request did not complete: connection refused or dropped, timeout, unreadable answer.
    Network { detail: String },
    /// The SDK was configured in a way that cannot work (plain http to a remote host, ...).
    Config { detail: String },
}

impl CibmtrFhirError {
    pub(crate) fn config(detail: impl Into<String>) -> Self {
        CibmtrFhirError::Config {
            detail: detail.into(),
        }
    }
}

#[uniffi::export]
impl CibmtrFhirError {
    /// The stable kind, as Node's `err.code`: `VALIDATION`, `AUTH`, `RATE_LIMITED`, `HTTP`,
    /// `NETWORK` or `CONFIG`.
    pub fn code(&self) -> String {
        match self {
            CibmtrFhirError::Validation { .. } => "VALIDATION",
            CibmtrFhirError::Auth { .. } => "AUTH",
            CibmtrFhirError::RateLimited { .. } => "RATE_LIMITED",
            CibmtrFhirError::Http { .. } => "HTTP",
            CibmtrFhirError::Network { .. } => "NETWORK",
            CibmtrFhirError::Config { .. } => "CONFIG",
        }
        .to_owned()
    }
}

impl From<Error> for CibmtrFhirError {
    fn from(e: Error) -> Self {
        match e {
            Error::Validation { field, rule } => CibmtrFhirError::Validation { field, rule },
            Error::Auth {
                error,
                description,
                status,
            } => CibmtrFhirError::Auth {
                error,
                description,
                status: status.map(i32::from),
            },
            Error::RateLimited { retry_after } => CibmtrFhirError::RateLimited { retry_after },
            Error::Http {
                status,
                message,
                outcome,
            } => CibmtrFhirError::Http {
                status: i32::from(status),
                detail: message,
                outcome: outcome.map(|o| o.to_string()),
            },
            Error::Network { message } => CibmtrFhirError::Network { detail: message },
            Error::Config { message } => CibmtrFhirError::Config { detail: message },
        }
    }
}

impl From<CibmtrFhirError> for Error {
    fn from(e: CibmtrFhirError) -> Self {
        match e {
            CibmtrFhirError::Validation { field, rule } => Error::Validation { field, rule },
            CibmtrFhirError::Auth {
                error,
                description,
                status,
            } => Error::Auth {
                error,
                description,
                status: status.and_then(|s| u16::try_from(s).ok()),
            },
            CibmtrFhirError::RateLimited { retry_after } => Error::RateLimited { retry_after },
            CibmtrFhirError::Http {
                status,
                detail,
                outcome,
            } => Error::Http {
                status: u16::try_from(status).unwrap_or(0),
                message: detail,
                outcome: outcome
                    .and_then(|o| serde_json::from_str(&o).ok())
                    .map(Box::new),
            },
            CibmtrFhirError::Network { detail } => Error::Network { message: detail },
            CibmtrFhirError::Config { detail } => Error::Config { message: detail },
        }
    }
}

/// A callback implemented in Kotlin or Java (an `Auth`) that threw, or returned `null` from Java,
/// where it must not: a `Config` error naming the callback, with the first line of what the JVM
/// reported (the exception; uniffi sends its whole stack trace, which would say nothing more).
impl From<uniffi::UnexpectedUniFFICallbackError> for CibmtrFhirError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        let first = e.reason.lines().next().unwrap_or_default().trim();
        CibmtrFhirError::config(format!("the Auth implementation failed: {first}"))
    }
}

/// The core's wording (`invalid birth_date: …`, `HTTP 400: …`).
impl std::fmt::Display for CibmtrFhirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Error::from(self.clone()).fmt(f)
    }
}

impl std::error::Error for CibmtrFhirError {}

/// The binding's result type.
pub type Result<T, E = CibmtrFhirError> = std::result::Result<T, E>;

/// A `Validation` error naming `field` and the `rule` it broke.
pub(crate) fn validation(field: &str, rule: &str) -> CibmtrFhirError {
    CibmtrFhirError::Validation {
        field: field.to_owned(),
        rule: rule.to_owned(),
    }
}

/// JSON text from the caller, parsed; a parse failure names the argument.
pub(crate) fn parse_json(field: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| CibmtrFhirError::Validation {
        field: field.to_owned(),
        rule: format!("must be JSON ({e})"),
    })
}
