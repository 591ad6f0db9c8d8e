//! One configured HTTP client for token and FHIR calls alike, and the transport-security rule:
//! credentials and bearer tokens travel only over https, except to loopback hosts or hosts the
//! caller explicitly allows.
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use rand::Rng;

use crate::error::{Error, Result};

mod options;
pub use options::{HttpOptions, millis, proxy_without_credentials, seconds};

/// Settings of the shared HTTP client.
#[derive(Clone)]
pub struct HttpConfig {
    /// Whole-request timeout.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// An explicit proxy URL (otherwise the usual `HTTPS_PROXY`/`NO_PROXY` environment applies).
    pub proxy: Option<String>,
    /// Extra trusted CA certificates, PEM (each may hold several).
    pub extra_ca_pems: Vec<Vec<u8>>,
    /// Hosts to which plain http is allowed although they are not loopback.
    pub allow_http_hosts: Vec<String>,
    /// The longest a rate-limited token request is waited out before giving up with
    /// [`Error::RateLimited`].
    pub max_rate_limit_wait: Duration,
    /// Retries of a token request after a 5xx or a network error.
    pub token_retries: u32,
    /// Retries of a FHIR request (GET, PUT, conditional create; a plain POST only when it never
    /// reached the server) after 429, 502, 503, 504 or a connection error.
    pub request_retries: u32,
    /// The longest one FHIR request may spend in retries and waits, all attempts together.
    pub max_retry_time: Duration,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "proxy",
                &self.proxy.as_deref().map(proxy_without_credentials),
            )
            .field("extra_ca_pems", &self.extra_ca_pems.len())
            .field("allow_http_hosts", &self.allow_http_hosts)
            .field("max_rate_limit_wait", &self.max_rate_limit_wait)
            .field("token_retries", &self.token_retries)
            .field("request_retries", &self.request_retries)
            .field("max_retry_time", &self.max_retry_time)
            .finish()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            proxy: None,
            extra_ca_pems: Vec::new(),
            allow_http_hosts: Vec::new(),
            max_rate_limit_wait: Duration::from_secs(60),
            token_retries: 3,
            request_retries: 4,
            max_retry_time: Duration::from_secs(60),
        }
    }
}

/// The configured client. Clone freely: clones share one connection pool.
///
/// Fork-aware: a connection pool is driven by the async runtime that opened its connections, and
/// a forked child inherits neither, so in a child process the first request builds a new pool
/// (objects created before a `fork()` keep working there).
///
/// The platform's root certificates (a few milliseconds of reading `/etc/ssl/certs`, and an
/// error on a machine that has none) are loaded the first time an https URL is used: a process
/// that only talks plain http to loopback or an allowed host, such as the CLI against the local
/// sandbox, never pays for them.
#[derive(Debug, Clone)]
pub struct HttpClient {
    pool: std::sync::Arc<std::sync::Mutex<Pool>>,
    pub(crate) config: std::sync::Arc<HttpConfig>,
    /// `extra_ca_pems`, parsed once (a bad PEM is refused by [`HttpClient::new`]).
    extra_cas: std::sync::Arc<[reqwest::Certificate]>,
    /// A configured or environment proxy reached over https: plain http requests go through a
    /// TLS connection too, so they take the client with the roots.
    tls_proxy: bool,
}

/// The reqwest clients of one process, each built when first needed.
#[derive(Debug)]
struct Pool {
    pid: u32,
    /// For https URLs: the platform's roots and the extra CAs.
    tls: Option<reqwest::Client>,
    /// For plain http URLs: no roots to load.
    plain: Option<reqwest::Client>,
}

/// The client for `config`. With `roots` (the extra CAs), it trusts the platform's root
/// certificates and those; without, it trusts nothing and loads nothing.
fn build(config: &HttpConfig, roots: Option<&[reqwest::Certificate]>) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.connect_timeout)
        .user_agent(concat!("cibmtr-fhir/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(p) = &config.proxy {
        b = b.proxy(reqwest::Proxy::all(p).map_err(|_| Error::config("proxy is not a valid URL"))?);
    }
    if let Some(extra_cas) = roots {
        for cert in extra_cas {
            b = b.add_root_certificate(cert.clone());
        }
    } else {
        // Never used for TLS (https URLs and TLS proxies take the other client): trusting
        // nothing, it loads nothing.
        b = b.tls_certs_only([]);
    }
    b.build().map_err(|e| {
        // reqwest says only "builder error"; the cause (no root certificates on this machine)
        // is in its sources. They carry no URL: the proxy was checked above.
        let mut text = format!("cannot build the HTTP client: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        Error::config(text)
    })
}

/// Whether a proxy of `config` or of the environment (reqwest's `HTTP_PROXY`/`ALL_PROXY`) for
/// plain http URLs is itself reached over https.
fn tls_proxy(config: &HttpConfig) -> bool {
    let https = |v: &str| {
        v.trim()
            .get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
    };
    config.proxy.as_deref().is_some_and(https)
        || ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .any(|k| std::env::var(k).is_ok_and(|v| https(&v)))
}

impl HttpClient {
    pub fn new(config: HttpConfig) -> Result<Self> {
        let mut extra_cas = Vec::new();
        for pem in &config.extra_ca_pems {
            extra_cas.extend(
                reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|_| Error::config("extra CA certificate is not valid PEM"))?,
            );
        }
        // Settings errors (a bad proxy URL) show now, not at the first request; this client
        // loads no roots, so it costs microseconds, and serves the first plain http request.
        let plain = build(&config, None)?;
        let tls_proxy = tls_proxy(&config);
        Ok(HttpClient {
            pool: std::sync::Arc::new(std::sync::Mutex::new(Pool {
                pid: std::process::id(),
                tls: None,
                plain: Some(plain),
            })),
            config: std::sync::Arc::new(config),
            extra_cas: extra_cas.into(),
            tls_proxy,
        })
    }

    /// The reqwest client of this process for `url` (a new pool after a `fork()`). The one for
    /// https is built, with the platform's roots, the first time it is needed; building it fails
    /// only where the platform has no usable root certificates (a [`Error::Config`]).
    pub(crate) fn client(&self, url: &str) -> Result<reqwest::Client> {
        let plain = !self.tls_proxy
            && url
                .get(..5)
                .is_some_and(|s| s.eq_ignore_ascii_case("http:"));
        let pid = std::process::id();
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.pid != pid {
            *pool = Pool {
                pid,
                tls: None,
                plain: None,
            };
        }
        let slot = if plain {
            &mut pool.plain
        } else {
            &mut pool.tls
        };
        if let Some(c) = slot {
            return Ok(c.clone());
        }
        let client = build(&self.config, (!plain).then_some(&*self.extra_cas))?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// The process-wide default client.
    pub fn shared() -> HttpClient {
        static SHARED: std::sync::LazyLock<HttpClient> = std::sync::LazyLock::new(|| {
            HttpClient::new(HttpConfig::default()).expect("default HTTP client")
        });
        SHARED.clone()
    }

    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// Parses `url` for `field` and refuses plain http to a non-loopback, non-allowed host:
    /// credentials and tokens must not cross a network in clear text.
    pub fn secure_url(&self, field: &str, url: &str) -> Result<url::Url> {
        let parsed = url::Url::parse(url)
            .map_err(|_| Error::validation(field, "must be an absolute http(s) URL"))?;
        match parsed.scheme() {
            "https" => Ok(parsed),
            "http" => {
                let host = parsed.host_str().unwrap_or("");
                if is_loopback(host)
                    || self
                        .config
                        .allow_http_hosts
                        .iter()
                        .any(|h| h.eq_ignore_ascii_case(host))
                {
                    Ok(parsed)
                } else {
                    Err(Error::config(format!(
                        "{field} uses plain http to {host}; credentials are sent only over https (or to loopback, or to a host listed in allow_http_hosts)"
                    )))
                }
            }
            _ => Err(Error::validation(field, "must be an absolute http(s) URL")),
        }
    }
}

/// Whether `host` names this machine (localhost, 127.0.0.0/8, ::1).
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// The longest wait a server's `Retry-After` or `X-Rate-Limit-Reset` is taken to ask for: a
/// longer one (a wrong clock, a garbled header, `18446744073709551615`) counts as this, which is
/// past every configured bound, so the caller gets [`Error::RateLimited`](crate::Error) rather
/// than an overflow.
pub(crate) const MAX_SERVER_WAIT: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After` (seconds or HTTP date) or Okta's `X-Rate-Limit-Reset` (epoch seconds), at most
/// [`MAX_SERVER_WAIT`].
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let now = crate::clock::now();
    let wait = |d: Duration| Some(d.min(MAX_SERVER_WAIT));
    if let Some(v) = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
    {
        if let Ok(secs) = v.trim().parse::<u64>() {
            return wait(Duration::from_secs(secs));
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return wait(at.duration_since(now).unwrap_or_default());
        }
    }
    let reset = headers
        .get("x-rate-limit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    let Some(at) = UNIX_EPOCH.checked_add(Duration::from_secs(reset)) else {
        return wait(MAX_SERVER_WAIT);
    };
    // The reset is whole seconds; a little slack avoids arriving a hair early.
    wait(at.duration_since(now).unwrap_or_default() + Duration::from_millis(50))
}

/// Jittered exponential backoff before retry number `attempt` (0-based): 100 ms, 200 ms, 400 ms,
/// ... capped at 6.4 s, each plus up to as much again at random so that many clients that failed
/// together do not come back together.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 100u64 << attempt.min(6);
    Duration::from_millis(base + rand::thread_rng().gen_range(0..=base))
}
