//! The Python exceptions, and the one place where a core error becomes one of them.
//!
//! Every exception carries `code` (the stable kind shared with Node and Kotlin: `VALIDATION`,
//! `AUTH`, ...) and `message`; each kind adds the fields a caller branches on. Core messages never
//! contain secrets, so nothing here needs redacting.
use cibmtr_fhir::Error;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::convert::json_to_py;
use crate::runtime::with_python;

create_exception!(
    cibmtr_fhir,
    CibmtrFhirError,
    PyException,
    "Base class of every error the SDK raises. Attributes: `code` (VALIDATION, AUTH, RATE_LIMITED, HTTP, NETWORK or CONFIG) and `message`."
);
/// `ValidationError` is a `CibmtrFhirError` and a `ValueError` (bad values are `ValueError`s in
/// Python), so `create_exception!`, which takes one base, cannot make it: it is made once with
/// `type(name, bases, dict)`.
static VALIDATION_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

const VALIDATION_DOC: &str = "Bad input, refused before anything was sent; also a ValueError. Attributes: `field` (the offending argument or key) and `rule` (what it must be).";

fn validation_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    VALIDATION_ERROR
        .get_or_try_init(py, || {
            let bases = PyTuple::new(
                py,
                [
                    py.get_type::<CibmtrFhirError>(),
                    py.get_type::<PyValueError>(),
                ],
            )?;
            let dict = PyDict::new(py);
            dict.set_item("__doc__", VALIDATION_DOC)?;
            dict.set_item("__module__", "cibmtr_fhir")?;
            Ok::<_, PyErr>(
                py.get_type::<PyType>()
                    .call1(("ValidationError", bases, dict))?
                    .cast_into::<PyType>()?
                    .unbind(),
            )
        })
        .map(|t| t.bind(py))
}

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
            Error::Validation { .. } => match validation_error(py) {
                Ok(t) => PyErr::from_type(t.clone(), message.clone()),
                Err(e) => return e,
            },
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

/// The `TypeError` of an argument of the wrong Python type: `{field} must be {expected}, not
/// {type}` (the parameter named in the message itself, on every Python version).
pub fn wrong_type(field: &str, expected: &str, obj: &Bound<'_, PyAny>) -> PyErr {
    let got = if obj.is_none() {
        "None".to_owned()
    } else {
        obj.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    };
    PyTypeError::new_err(format!("{field} must be {expected}, not {got}"))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CibmtrFhirError", py.get_type::<CibmtrFhirError>())?;
    m.add("ValidationError", validation_error(py)?)?;
    m.add("AuthError", py.get_type::<AuthError>())?;
    m.add("RateLimitedError", py.get_type::<RateLimitedError>())?;
    m.add("HttpError", py.get_type::<HttpError>())?;
    m.add("NetworkError", py.get_type::<NetworkError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    Ok(())
}
