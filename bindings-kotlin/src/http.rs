//! `HttpOptions`: the HTTP settings a flow, a registration, `FhirClient` or `CibmtrClient` may be
//! given (`http = HttpOptions(timeout = Duration.ofSeconds(10))`), checked when the object is
//! built, before any request, with the field named in the `Validation` error.
use std::path::PathBuf;
use std::time::Duration;

use cibmtr_fhir::Secret;
use cibmtr_fhir::http::HttpClient;

use crate::error::{Result, validation};

/// A `java.time.Duration` as the JVM hands it over: signed nanoseconds (saturated beyond about
/// 292 years), so that a negative one reaches the SDK and is refused as a `Validation` error
/// naming its field. (uniffi's own `Duration` would fail in Kotlin with an
/// `IllegalArgumentException` instead.) Kotlin and Java see `java.time.Duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JavaDuration(i64);

uniffi::custom_type!(JavaDuration, i64, {
    lower: |d| d.0,
    try_lift: |nanos| Ok(JavaDuration(nanos)),
});

impl From<Duration> for JavaDuration {
    fn from(d: Duration) -> Self {
        JavaDuration(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

impl JavaDuration {
    fn checked(field: &str, d: Option<JavaDuration>) -> Result<Option<Duration>> {
        d.map(|JavaDuration(nanos)| {
            u64::try_from(nanos)
                .map(Duration::from_nanos)
                .map_err(|_| validation(field, "must not be negative"))
        })
        .transpose()
    }
}

/// HTTP settings; every field is optional and `null` (or empty) keeps the SDK's default. The
/// proxy URL may carry `user:password@`, so it is a `Secret`: `toString()` never shows it.
#[derive(Debug, Clone, Default, PartialEq, uniffi::Record)]
pub struct HttpOptions {
    /// The whole request, connection to last byte (default 30 s).
    #[uniffi(default = None)]
    pub timeout: Option<JavaDuration>,
    /// Establishing the connection (default 10 s).
    #[uniffi(default = None)]
    pub connect_timeout: Option<JavaDuration>,
    /// The longest a rate-limited token request is waited out (default 60 s); beyond it the call
    /// fails with `RateLimited`.
    #[uniffi(default = None)]
    pub max_rate_limit_wait: Option<JavaDuration>,
    /// The longest one FHIR request may spend in retries and waits (default 60 s).
    #[uniffi(default = None)]
    pub max_retry_time: Option<JavaDuration>,
    /// A proxy for every request, e.g. `Secret("http://user:password@proxy.example.org:3128")`
    /// (default: the `HTTPS_PROXY` / `NO_PROXY` environment).
    #[uniffi(default = None)]
    pub proxy: Option<Secret>,
    /// PEM files of extra CA certificates to trust (a TLS-inspecting hospital proxy).
    #[uniffi(default)]
    pub ca_files: Vec<String>,
    /// Host names to which plain http is allowed although they are not loopback.
    #[uniffi(default)]
    pub allow_http_hosts: Vec<String>,
    /// Retries of a token request after a 5xx or a network error (default 3; 0: one attempt).
    #[uniffi(default = None)]
    pub token_retries: Option<i32>,
    /// Retries of an idempotent FHIR request after 429, 502, 503, 504 or a connection error
    /// (default 4; 0: one attempt).
    #[uniffi(default = None)]
    pub request_retries: Option<i32>,
}

fn count(field: &str, n: Option<i32>) -> Result<Option<u32>> {
    n.map(|n| u32::try_from(n).map_err(|_| validation(field, "must not be negative")))
        .transpose()
}

impl HttpOptions {
    /// The core's options; a negative duration or count is refused here, the rest by the core.
    fn into_core(self) -> Result<cibmtr_fhir::http::HttpOptions> {
        Ok(cibmtr_fhir::http::HttpOptions {
            timeout: JavaDuration::checked("timeout", self.timeout)?,
            connect_timeout: JavaDuration::checked("connect_timeout", self.connect_timeout)?,
            max_rate_limit_wait: JavaDuration::checked(
                "max_rate_limit_wait",
                self.max_rate_limit_wait,
            )?,
            max_retry_time: JavaDuration::checked("max_retry_time", self.max_retry_time)?,
            proxy: self.proxy.map(|p| p.expose().to_owned()),
            ca_files: self.ca_files.into_iter().map(PathBuf::from).collect(),
            allow_http_hosts: self.allow_http_hosts,
            token_retries: count("token_retries", self.token_retries)?,
            request_retries: count("request_retries", self.request_retries)?,
        })
    }
}

/// The HTTP client for a constructor's `http` argument, validated now; `None` for the SDK's
/// shared client.
pub(crate) fn client(options: Option<HttpOptions>) -> Result<Option<HttpClient>> {
    options
        .map(|o| Ok(HttpClient::from_options(o.into_core()?)?))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CibmtrFhirError;

    fn field(options: HttpOptions) -> String {
        match client(Some(options)) {
            Err(CibmtrFhirError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn nothing_given_is_the_shared_client_and_durations_convert() {
        assert!(client(None).unwrap().is_none());
        let core = HttpOptions {
            timeout: Some(Duration::from_millis(1500).into()),
            request_retries: Some(0),
            ..Default::default()
        }
        .into_core()
        .unwrap();
        assert_eq!(core.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(core.request_retries, Some(0));
        assert_eq!(
            JavaDuration::from(Duration::MAX),
            JavaDuration(i64::MAX),
            "saturates"
        );
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let negative = Some(JavaDuration(-1));
        assert_eq!(
            field(HttpOptions {
                timeout: negative,
                ..Default::default()
            }),
            "timeout"
        );
        assert_eq!(
            field(HttpOptions {
                timeout: Some(JavaDuration(0)),
                ..Default::default()
            }),
            "timeout"
        );
        assert_eq!(
            field(HttpOptions {
                connect_timeout: negative,
                ..Default::default()
            }),
            "connect_timeout"
        );
        assert_eq!(
            field(HttpOptions {
                max_rate_limit_wait: negative,
                ..Default::default()
            }),
            "max_rate_limit_wait"
        );
        assert_eq!(
            field(HttpOptions {
                max_retry_time: negative,
                ..Default::default()
            }),
            "max_retry_time"
        );
        assert_eq!(
            field(HttpOptions {
                token_retries: Some(-1),
                ..Default::default()
            }),
            "token_retries"
        );
        assert_eq!(
            field(HttpOptions {
                request_retries: Some(-1),
                ..Default::default()
            }),
            "request_retries"
        );
        assert_eq!(
            field(HttpOptions {
                proxy: Some(Secret::new("svc:hunter2@proxy.example.org:3128")),
                ..Default::default()
            }),
            "proxy"
        );
    }

    #[test]
    fn a_proxy_password_is_never_printed() {
        let options = HttpOptions {
            proxy: Some(Secret::new("http://svc:hunter2@proxy.example.org:3128")),
            ..Default::default()
        };
        assert!(!format!("{options:?}").contains("hunter2"));
        let bad = HttpOptions {
            proxy: Some(Secret::new("svc:hunter2@proxy")),
            ..Default::default()
        };
        let e = client(Some(bad)).unwrap_err();
        assert!(!format!("{e} {e:?}").contains("hunter2"));
    }
}
