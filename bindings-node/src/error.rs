//! The one place where a core [`Error`] becomes a JavaScript `Error`.
//!
//! Every error the package throws or rejects with is a plain `Error` whose `code` is the core's
//! stable [`ErrorKind::code`] (`VALIDATION`, `AUTH`, `RATE_LIMITED`, `HTTP`, `NETWORK`, `CONFIG`),
//! whose `name` is the Python exception's class name, and which carries the fields a caller
//! branches on (`field`, `rule`, `error`, `description`, `status`, `outcome`, `retryAfter`). The
//! core never puts a secret in a message or a field, so nothing here needs redacting.
//!
//! The object is built on the JavaScript thread: synchronously for a thrown error, in the
//! promise's settle callback for a rejection ([`settle`]), or in the value conversion of a
//! search iterator's step. napi hands an `Error` made from a JavaScript value back verbatim.
use std::future::Future;

use cibmtr_fhir::{Error, ErrorKind};
use napi::bindgen_prelude::*;
use napi::{Env, JsValue};
use napi_derive::napi;

/// What the core returns (napi's prelude has its own `Result`).
pub(crate) type CoreResult<T> = cibmtr_fhir::Result<T>;

/// An error as plain data: the fields of a thrown error, and the `error` of a failed item in a
/// submission report.
#[napi(object, object_from_js = false)]
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// The stable code to branch on.
    #[napi(ts_type = "ErrorCode")]
    pub code: String,
    pub message: String,
    /// `VALIDATION`: the input field that was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// `VALIDATION`: the rule it broke.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `AUTH`: the OAuth error code (`invalid_grant`, `invalid_client`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `AUTH`: the server's description of the refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `AUTH`, `HTTP`: the HTTP status of the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    /// `HTTP`: the `OperationOutcome` the server sent, if any.
    #[napi(ts_type = "Resource")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<serde_json::Value>,
    /// `RATE_LIMITED`: seconds to wait before trying again, when the server said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<f64>,
}

impl ErrorInfo {
    pub(crate) fn from_core(e: &Error) -> ErrorInfo {
        let mut info = ErrorInfo {
            code: e.kind().code().to_owned(),
            message: e.to_string(),
            field: None,
            rule: None,
            error: None,
            description: None,
            status: None,
            outcome: None,
            retry_after: None,
        };
        match e {
            Error::Validation { field, rule } => {
                info.field = Some(field.clone());
                info.rule = Some(rule.clone());
            }
            Error::Auth {
                error,
                description,
                status,
            } => {
                info.error = Some(error.clone());
                info.description = description.clone();
                info.status = status.map(u32::from);
            }
            Error::RateLimited { retry_after } => {
                info.retry_after = retry_after.map(|d| d.as_secs_f64());
            }
            Error::Http {
                status, outcome, ..
            } => {
                info.status = Some(u32::from(*status));
                info.outcome = outcome.as_deref().cloned();
            }
            Error::Network { .. } | Error::Config { .. } => {}
        }
        info
    }
}

/// The class name of the matching Python exception, used as the error's `name`.
fn name_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Validation => "ValidationError",
        ErrorKind::Auth => "AuthError",
        ErrorKind::RateLimited => "RateLimitedError",
        ErrorKind::Http => "HttpError",
        ErrorKind::Network => "NetworkError",
        ErrorKind::Config => "ConfigError",
    }
}

/// The JavaScript `Error` for `e`, as a napi error that rethrows that very object.
pub(crate) fn js_error(env: &Env, e: &Error) -> napi::Error {
    let build = || -> napi::Result<napi::Error> {
        let info = ErrorInfo::from_core(e);
        let mut obj = env.create_error(napi::Error::from_reason(info.message.clone()))?;
        obj.set("name", name_of(e.kind()))?;
        obj.set("code", info.code)?;
        let optional = [
            ("field", info.field),
            ("rule", info.rule),
            ("error", info.error),
            ("description", info.description),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                obj.set(key, v)?;
            }
        }
        if let Some(s) = info.status {
            obj.set("status", s)?;
        }
        if let Some(o) = info.outcome {
            obj.set("outcome", o)?;
        }
        if let Some(r) = info.retry_after {
            obj.set("retryAfter", r)?;
        }
        Ok(napi::Error::from(obj.to_unknown()))
    };
    // Building the object can only fail while the environment shuts down; the message then
    // still says what happened.
    build().unwrap_or_else(|_| napi::Error::from_reason(e.to_string()))
}

/// `.or_throw(&env)` on a core result: the error becomes the package's JavaScript error.
pub(crate) trait OrThrow<T> {
    fn or_throw(self, env: &Env) -> napi::Result<T>;
}

impl<T> OrThrow<T> for CoreResult<T> {
    fn or_throw(self, env: &Env) -> napi::Result<T> {
        self.map_err(|e| js_error(env, &e))
    }
}

/// Runs `fut` on the binding's tokio runtime and returns a Promise of its value; a core error
/// rejects the promise with the package's JavaScript error. The JavaScript thread never waits.
pub(crate) fn settle<T, F>(env: &Env, fut: F) -> napi::Result<AsyncBlock<T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = CoreResult<T>> + Send + 'static,
{
    AsyncBlockBuilder::build_with_map(env, async move { Ok(fut.await) }, |env, result| {
        result.map_err(|e| js_error(&env, &e))
    })
}

/// An input the binding refused before calling the core (a CRID that lost digits, a route name
/// the sandbox does not have): the same `VALIDATION` error the core gives for bad input.
pub(crate) fn invalid(field: &str, rule: impl Into<String>) -> Error {
    Error::Validation {
        field: field.to_owned(),
        rule: rule.into(),
    }
}
