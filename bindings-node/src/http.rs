//! HTTP settings (core `http`): the `http` key of a flow's, a client's or a registration's
//! options. The core validates them ([`HttpClient::from_options`]); this module only turns
//! JavaScript values (milliseconds, arrays) into the core's options, naming fields as the caller
//! wrote them.
use cibmtr_fhir::http::{self, HttpClient, HttpOptions};
use napi_derive::napi;

use crate::args::Kind;
use crate::error::{CoreResult, invalid};

/// The keys of [`HttpConfig`] and their JavaScript types.
pub(crate) const HTTP_CONFIG: Kind = Kind::Options(
    "HttpConfig",
    &[
        ("timeout", Kind::Number),
        ("connectTimeout", Kind::Number),
        ("proxy", Kind::Text),
        ("caFiles", Kind::Texts),
        ("allowHttpHosts", Kind::Texts),
        ("maxRateLimitWait", Kind::Number),
        ("tokenRetries", Kind::Number),
        ("requestRetries", Kind::Number),
        ("maxRetryTime", Kind::Number),
    ],
);

/// How the package talks HTTP. Every key is optional; durations are milliseconds, as in Node's
/// own APIs. Checked when the object that receives it is built, before any request
/// (`VALIDATION` naming the key). A proxy's password is never shown.
#[napi(object)]
#[derive(Default)]
pub struct HttpConfig {
    /// Whole-request timeout in milliseconds (default 30000).
    pub timeout: Option<f64>,
    /// Connection timeout in milliseconds (default 10000).
    pub connect_timeout: Option<f64>,
    /// A proxy URL, e.g. `http://user:password@proxy.hospital.org:3128` (default: the
    /// `HTTPS_PROXY`/`NO_PROXY` environment).
    pub proxy: Option<String>,
    /// PEM files of extra CA certificates to trust (a hospital's TLS-inspecting proxy).
    pub ca_files: Option<Vec<String>>,
    /// Host names to which plain http is allowed although they are not loopback.
    pub allow_http_hosts: Option<Vec<String>>,
    /// The longest a rate-limited token request is waited out, in milliseconds (default 60000).
    pub max_rate_limit_wait: Option<f64>,
    /// Retries of a token request after a 5xx or a network error (default 3).
    pub token_retries: Option<f64>,
    /// Retries of an idempotent FHIR request (default 4).
    pub request_retries: Option<f64>,
    /// The longest one FHIR request may spend in retries and waits, in milliseconds (default
    /// 60000).
    pub max_retry_time: Option<f64>,
}

fn millis(field: &str, ms: Option<f64>) -> CoreResult<Option<std::time::Duration>> {
    ms.map(|ms| http::millis(field, ms)).transpose()
}

fn count(field: &str, n: Option<f64>) -> CoreResult<Option<u32>> {
    n.map(|n| {
        if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) {
            Ok(n as u32)
        } else {
            Err(invalid(field, "must be a whole number, 0 or more"))
        }
    })
    .transpose()
}

/// The core's name of a field, as this package's caller spelled it.
fn camel_case(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// The client of an `http` option, or `None` for the process's shared default.
pub(crate) fn client(config: Option<HttpConfig>) -> CoreResult<Option<HttpClient>> {
    let Some(c) = config else {
        return Ok(None);
    };
    let options = HttpOptions {
        timeout: millis("timeout", c.timeout)?,
        connect_timeout: millis("connectTimeout", c.connect_timeout)?,
        proxy: c.proxy,
        ca_files: c
            .ca_files
            .unwrap_or_default()
            .into_iter()
            .map(Into::into)
            .collect(),
        allow_http_hosts: c.allow_http_hosts.unwrap_or_default(),
        max_rate_limit_wait: millis("maxRateLimitWait", c.max_rate_limit_wait)?,
        token_retries: count("tokenRetries", c.token_retries)?,
        request_retries: count("requestRetries", c.request_retries)?,
        max_retry_time: millis("maxRetryTime", c.max_retry_time)?,
    };
    HttpClient::from_options(options)
        .map(Some)
        .map_err(|e| match e {
            cibmtr_fhir::Error::Validation { field, rule } => cibmtr_fhir::Error::Validation {
                field: camel_case(&field),
                rule,
            },
            other => other,
        })
}

/// [`client`], or the shared default.
pub(crate) fn client_or_shared(config: Option<HttpConfig>) -> CoreResult<HttpClient> {
    Ok(client(config)?.unwrap_or_else(HttpClient::shared))
}
