//! The HTTP settings a language binding receives from its caller, as plain optional values, and
//! their validation into an [`HttpConfig`]. Every binding converts its own idiom (Python seconds,
//! Node milliseconds, Kotlin `java.time.Duration`) into an [`HttpOptions`] and calls
//! [`HttpClient::from_options`]; the rules live here once.
use std::path::PathBuf;
use std::time::Duration;

use super::{HttpClient, HttpConfig};
use crate::error::{Error, Result};

/// Optional overrides of [`HttpConfig::default`]; `None` and empty keep the default. `Debug`
/// shows the proxy without its credentials.
#[derive(Clone, Default, PartialEq)]
pub struct HttpOptions {
    /// Whole-request timeout (default 30 s).
    pub timeout: Option<Duration>,
    /// Connection timeout (default 10 s).
    pub connect_timeout: Option<Duration>,
    /// A proxy URL for every request, e.g. `http://proxy.hospital.org:3128` (default: the
    /// `HTTPS_PROXY`/`NO_PROXY` environment). May carry `user:password@`; it is never printed.
    pub proxy: Option<String>,
    /// PEM files of extra CA certificates to trust (a hospital's TLS-inspecting proxy).
    pub ca_files: Vec<PathBuf>,
    /// Hosts to which plain http is allowed although they are not loopback.
    pub allow_http_hosts: Vec<String>,
    /// The longest a rate-limited token request is waited out (default 60 s).
    pub max_rate_limit_wait: Option<Duration>,
    /// Retries of a token request after a 5xx or a network error (default 3).
    pub token_retries: Option<u32>,
    /// Retries of an idempotent FHIR request (default 4).
    pub request_retries: Option<u32>,
    /// The longest one FHIR request may spend in retries and waits (default 60 s).
    pub max_retry_time: Option<Duration>,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "proxy",
                &self.proxy.as_deref().map(proxy_without_credentials),
            )
            .field("ca_files", &self.ca_files)
            .field("allow_http_hosts", &self.allow_http_hosts)
            .field("max_rate_limit_wait", &self.max_rate_limit_wait)
            .field("token_retries", &self.token_retries)
            .field("request_retries", &self.request_retries)
            .field("max_retry_time", &self.max_retry_time)
            .finish()
    }
}

/// A proxy URL without its `user:password@`, fit to print; otherwise as the caller wrote it.
pub fn proxy_without_credentials(proxy: &str) -> String {
    let Some((scheme, rest)) = proxy.split_once("://") else {
        return proxy.to_owned();
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => proxy.to_owned(),
    }
}

/// A duration given in seconds by a caller, for `field`: finite and not negative.
pub fn seconds(field: &str, secs: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| Error::validation(field, "must be a finite number of seconds, not negative"))
}

/// A duration given in milliseconds by a caller, for `field`: finite and not negative.
pub fn millis(field: &str, ms: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(ms / 1000.0).map_err(|_| {
        Error::validation(
            field,
            "must be a finite number of milliseconds, not negative",
        )
    })
}

fn positive(field: &str, d: Option<Duration>, default: Duration) -> Result<Duration> {
    match d {
        None => Ok(default),
        Some(d) if d.is_zero() => Err(Error::validation(field, "must be greater than zero")),
        Some(d) => Ok(d),
    }
}

impl HttpOptions {
    /// Checks every field and builds the configuration; an error names the field.
    pub fn into_config(self) -> Result<HttpConfig> {
        let d = HttpConfig::default();
        let proxy = match self.proxy {
            None => None,
            Some(p) => {
                let url = url::Url::parse(&p).ok().filter(|u| {
                    matches!(u.scheme(), "http" | "https" | "socks5" | "socks5h")
                        && u.host_str().is_some()
                });
                if url.is_none() {
                    return Err(Error::validation(
                        "proxy",
                        "must be a URL such as http://proxy.example.org:3128",
                    ));
                }
                Some(p)
            }
        };
        let mut extra_ca_pems = Vec::with_capacity(self.ca_files.len());
        for path in &self.ca_files {
            let pem = std::fs::read(path).map_err(|e| {
                Error::validation(
                    "ca_files",
                    format!("cannot read {}: {}", path.display(), e.kind()),
                )
            })?;
            if reqwest::Certificate::from_pem_bundle(&pem)
                .map(|certs| certs.is_empty())
                .unwrap_or(true)
            {
                return Err(Error::validation(
                    "ca_files",
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
            extra_ca_pems.push(pem);
        }
        for host in &self.allow_http_hosts {
            if host.is_empty() || host.contains(['/', ':', ' ']) {
                return Err(Error::validation(
                    "allow_http_hosts",
                    "must list host names only (no scheme, port or path)",
                ));
            }
        }
        Ok(HttpConfig {
            timeout: positive("timeout", self.timeout, d.timeout)?,
            connect_timeout: positive("connect_timeout", self.connect_timeout, d.connect_timeout)?,
            proxy,
            extra_ca_pems,
            allow_http_hosts: self.allow_http_hosts,
            max_rate_limit_wait: self.max_rate_limit_wait.unwrap_or(d.max_rate_limit_wait),
            token_retries: self.token_retries.unwrap_or(d.token_retries),
            request_retries: self.request_retries.unwrap_or(d.request_retries),
            max_retry_time: self.max_retry_time.unwrap_or(d.max_retry_time),
        })
    }
}

impl HttpClient {
    /// A client with these options over the defaults (see [`HttpOptions::into_config`]).
    pub fn from_options(options: HttpOptions) -> Result<HttpClient> {
        HttpClient::new(options.into_config()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: Error) -> String {
        match e {
            Error::Validation { field, .. } => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_when_nothing_is_given() {
        let c = HttpOptions::default().into_config().unwrap();
        let d = HttpConfig::default();
        assert_eq!(
            (c.timeout, c.connect_timeout),
            (d.timeout, d.connect_timeout)
        );
        assert_eq!((c.token_retries, c.request_retries), (3, 4));
        assert!(c.proxy.is_none() && c.extra_ca_pems.is_empty());
    }

    #[test]
    fn overrides_are_applied() {
        let c = HttpOptions {
            timeout: Some(Duration::from_millis(2500)),
            request_retries: Some(0),
            allow_http_hosts: vec!["fhir.internal".into()],
            proxy: Some("http://user:pw@proxy.example.org:3128".into()),
            ..Default::default()
        }
        .into_config()
        .unwrap();
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.request_retries, 0);
        assert_eq!(c.allow_http_hosts, ["fhir.internal"]);
        assert!(HttpClient::new(c).is_ok());
    }

    #[test]
    fn each_bad_field_is_named() {
        let zero = HttpOptions {
            timeout: Some(Duration::ZERO),
            ..Default::default()
        };
        assert_eq!(field_of(zero.into_config().unwrap_err()), "timeout");
        let proxy = HttpOptions {
            proxy: Some("proxy.example.org:3128".into()),
            ..Default::default()
        };
        assert_eq!(field_of(proxy.into_config().unwrap_err()), "proxy");
        let missing = HttpOptions {
            ca_files: vec!["/nonexistent/ca.pem".into()],
            ..Default::default()
        };
        assert_eq!(field_of(missing.into_config().unwrap_err()), "ca_files");
        let not_pem = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_pem.path(), "hello").unwrap();
        let bad = HttpOptions {
            ca_files: vec![not_pem.path().into()],
            ..Default::default()
        };
        assert_eq!(field_of(bad.into_config().unwrap_err()), "ca_files");
        let host = HttpOptions {
            allow_http_hosts: vec!["http://fhir.internal".into()],
            ..Default::default()
        };
        assert_eq!(
            field_of(host.into_config().unwrap_err()),
            "allow_http_hosts"
        );
        assert_eq!(field_of(seconds("timeout", -1.0).unwrap_err()), "timeout");
        assert_eq!(
            field_of(seconds("timeout", f64::NAN).unwrap_err()),
            "timeout"
        );
        assert_eq!(
            millis("timeout", 1500.0).unwrap(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn proxy_credentials_are_cut_and_the_rest_kept() {
        for (given, shown) in [
            (
                "http://svc:p%40ss@proxy.example.org:3128",
                "http://proxy.example.org:3128",
            ),
            (
                "http://proxy.example.org:3128",
                "http://proxy.example.org:3128",
            ),
            ("socks5h://u@p:1080/x?y=@", "socks5h://p:1080/x?y=@"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(proxy_without_credentials(given), shown);
        }
    }

    #[test]
    fn a_proxy_password_is_never_printed() {
        let c = HttpOptions {
            proxy: Some("http://svc:hunter2@proxy.example.org:3128".into()),
            ..Default::default()
        }
        .into_config()
        .unwrap();
        let client = HttpClient::new(c.clone()).unwrap();
        let options = HttpOptions {
            proxy: Some("http://svc:hunter2@proxy.example.org:3128".into()),
            ..Default::default()
        };
        for text in [
            format!("{c:?}"),
            format!("{client:?}"),
            format!("{options:?}"),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("proxy.example.org"), "{text}");
        }
    }
}
