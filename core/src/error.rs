//! One error type for the whole SDK, with a stable [`ErrorKind`] that every binding maps to its
//! own idiom (a Python exception class, a Node `err.code`, a Kotlin sealed exception).
//!
//! No variant ever carries a secret: messages are built from server error codes, field names and
//! rules, never from credentials or tokens.
use std::time::Duration;

/// The SDK's error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Bad input, refused before any byte left the process.
    #[error("invalid {field}: {rule}")]
    Validation { field: String, rule: String },
    /// The authorization server refused: an OAuth `error` code and its description.
    #[error("authorization failed: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Auth {
        error: String,
        description: Option<String>,
        status: Option<u16>,
    },
    /// Rate limited, and waiting it out would exceed the configured bound.
    #[error("rate limited{}; try again later", retry_after.map(|d| format!(", retry after {} s", d.as_secs_f64().ceil())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// The server answered with an unexpected HTTP status. `message` is the server's own message
    /// (from an `OperationOutcome`, a CIBMTR `errorMessage` or a short plain-text body);
    /// `outcome` is the `OperationOutcome` when the server sent one.
    #[error("HTTP {status}: {message}")]
    Http {
        status: u16,
        message: String,
        outcome: Option<Box<serde_json::Value>>,
    },
    /// The request did not complete: connection refused or dropped, timeout, bad body.
    #[error("network error: {message}")]
    Network { message: String },
    /// The SDK was configured in a way that cannot work (bad URL, insecure transport, ...).
    #[error("configuration error: {message}")]
    Config { message: String },
}

/// The stable category of an [`Error`], shared by every language binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Validation,
    Auth,
    RateLimited,
    Http,
    Network,
    Config,
}

impl ErrorKind {
    /// The code used by the Node binding and in logs: `VALIDATION`, `AUTH`, ...
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Validation => "VALIDATION",
            ErrorKind::Auth => "AUTH",
            ErrorKind::RateLimited => "RATE_LIMITED",
            ErrorKind::Http => "HTTP",
            ErrorKind::Network => "NETWORK",
            ErrorKind::Config => "CONFIG",
        }
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Validation { .. } => ErrorKind::Validation,
            Error::Auth { .. } => ErrorKind::Auth,
            Error::RateLimited { .. } => ErrorKind::RateLimited,
            Error::Http { .. } => ErrorKind::Http,
            Error::Network { .. } => ErrorKind::Network,
            Error::Config { .. } => ErrorKind::Config,
        }
    }
    pub(crate) fn validation(field: &str, rule: impl Into<String>) -> Self {
        Error::Validation {
            field: field.to_owned(),
            rule: rule.into(),
        }
    }
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
        }
    }
    /// Whether the request may still be in progress on the server although the SDK has no
    /// answer: it timed out, or a gateway did (504). Repeating a write at once could race it.
    pub(crate) fn may_still_be_processing(&self) -> bool {
        match self {
            Error::Network { message } => message.starts_with(TIMED_OUT),
            Error::Http { status, .. } => *status == 504,
            _ => false,
        }
    }
    pub(crate) fn network(err: &reqwest::Error) -> Self {
        // `without_url` keeps query strings (which may one day carry codes) out of the message.
        let kind = if err.is_timeout() {
            TIMED_OUT
        } else if err.is_connect() {
            "could not connect"
        } else if err.is_decode() {
            "could not read the response"
        } else {
            "request failed"
        };
        let mut message = kind.to_owned();
        if let Some(u) = err.url() {
            message.push_str(&format!(" to {}", origin_of(u)));
        }
        Error::Network { message }
    }
}

/// How the message of a [`Error::Network`] timeout starts.
const TIMED_OUT: &str = "timed out";

fn origin_of(u: &url::Url) -> String {
    format!(
        "{}://{}{}",
        u.scheme(),
        u.host_str().unwrap_or(""),
        u.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
