//! The Python exceptions, and the one place where a core error becomes one of them.
//!
//! Every exception carries `code` (the stable kind shared with Node and Kotlin: `VALIDATION`,
//! `AUTH`, ...) and `message`; each kind adds the fields a caller branches on. Core messages never
//! contain secrets, so nothing here needs redacting.
use cibmtr_fhir::Error;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use crate::convert::json_to_py;
use crate::runtime::with_python;

create_exception!(
    cibmtr_fhir,
    CibmtrFhirError,
    PyException,
    "Base class of every error the SDK raises. Attributes: `code` (VALIDATION, AUTH, RATE_LIMITED, HTTP, NETWORK or CONFIG) and `message`."
);
create_exception!(
    cibmtr_fhir,
    ValidationError,
    CibmtrFhirError,
    "Bad input, refused before anything was sent. Attributes: `field` (the offending argument or key) and `rule` (what it must be)."
);
create_exception!(
    cibmtr_fhir,
    AuthError,
    CibmtrFhirError,
    "The authorization server refused. Attributes: `error` (the OAuth error code, e.g. invalid_grant), `description` (str or None) and `status` (HTTP status or None)."
);
create_exception!(
    cibmtr_fhir,
    RateLimitedError,
    CibmtrFhirError,
    "Rate limited for longer than the SDK waits on its own. Attribute: `retry_after` (seconds, float, or None)."
);
create_exception!(
    cibmtr_fhir,
    HttpError,
    CibmtrFhirError,
    "The server answered with an unexpected HTTP status. Attributes: `status` (int) and `outcome` (the OperationOutcome as a dict, or None)."
);
create_exception!(
    cibmtr_fhir,
    NetworkError,
    CibmtrFhirError,
    "The request did not complete: connection refused or dropped, timeout, unreadable answer."
);
create_exception!(
    cibmtr_fhir,
    ConfigError,
    CibmtrFhirError,
    "The SDK is configured in a way that cannot work (e.g. credentials over plain http to a non-loopback host)."
);

/// The Python exception for a core error.
pub fn to_py_err(e: Error) -> PyErr {
    let fallback = e.to_string();
    with_python(|py| {
        let message = e.to_string();
        let err = match &e {
            Error::Validation { .. } => ValidationError::new_err(message.clone()),
            Error::Auth { .. } => AuthError::new_err(message.clone()),
            Error::RateLimited { .. } => RateLimitedError::new_err(message.clone()),
            Error::Http { .. } => HttpError::new_err(message.clone()),
            Error::Network { .. } => NetworkError::new_err(message.clone()),
            Error::Config { .. } => ConfigError::new_err(message.clone()),
        };
        if let Err(failed) = set_attributes(py, &err, &e, message) {
            return failed;
        }
        err
    })
    // The interpreter is exiting: nobody will look at the attributes.
    .unwrap_or_else(|| CibmtrFhirError::new_err(fallback))
}

fn set_attributes(py: Python<'_>, err: &PyErr, e: &Error, message: String) -> PyResult<()> {
    let v = err.value(py);
    v.setattr("code", e.kind().code())?;
    v.setattr("message", message)?;
    match e {
        Error::Validation { field, rule } => {
            v.setattr("field", field)?;
            v.setattr("rule", rule)?;
        }
        Error::Auth {
            error,
            description,
            status,
        } => {
            v.setattr("error", error)?;
            v.setattr("description", description)?;
            v.setattr("status", status)?;
        }
        Error::RateLimited { retry_after } => {
            v.setattr("retry_after", retry_after.map(|d| d.as_secs_f64()))?;
        }
        Error::Http {
            status, outcome, ..
        } => {
            v.setattr("status", status)?;
            let outcome = match outcome {
                Some(o) => Some(json_to_py(py, o)?),
                None => None,
            };
            v.setattr("outcome", outcome)?;
        }
        Error::Network { .. } | Error::Config { .. } => {}
    }
    Ok(())
}

/// `.or_raise()` ends every binding call: a core `Result` becomes a `PyResult`.
pub trait OrRaise<T> {
    fn or_raise(self) -> PyResult<T>;
}

impl<T> OrRaise<T> for cibmtr_fhir::Result<T> {
    fn or_raise(self) -> PyResult<T> {
        self.map_err(to_py_err)
    }
}

/// A validation error built in the binding (an argument of the wrong Python type), raised the
/// same way as the core's.
pub fn invalid(field: &str, rule: impl Into<String>) -> Error {
    Error::Validation {
        field: field.to_owned(),
        rule: rule.into(),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CibmtrFhirError", py.get_type::<CibmtrFhirError>())?;
    m.add("ValidationError", py.get_type::<ValidationError>())?;
    m.add("AuthError", py.get_type::<AuthError>())?;
    m.add("RateLimitedError", py.get_type::<RateLimitedError>())?;
    m.add("HttpError", py.get_type::<HttpError>())?;
    m.add("NetworkError", py.get_type::<NetworkError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    Ok(())
}
