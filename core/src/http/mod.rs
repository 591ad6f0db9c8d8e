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
#[derive(Debug, Clone)]
pub struct HttpClient {
    pool: std::sync::Arc<std::sync::Mutex<Pool>>,
    pub(crate) config: std::sync::Arc<HttpConfig>,
}

/// The reqwest client and the process it belongs to.
#[derive(Debug)]
struct Pool {
    pid: u32,
    client: reqwest::Client,
}

fn build(config: &HttpConfig) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.connect_timeout)
        .user_agent(concat!("cibmtr-fhir/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(p) = &config.proxy {
        b = b.proxy(reqwest::Proxy::all(p).map_err(|_| Error::config("proxy is not a valid URL"))?);
    }
    for pem in &config.extra_ca_pems {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|_| Error::config("extra CA certificate is not valid PEM"))?;
        for cert in certs {
            b = b.add_root_certificate(cert);
        }
    }
    b.build()
        .map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))
}

impl HttpClient {
    pub fn new(config: HttpConfig) -> Result<Self> {
        let client = build(&config)?;
        Ok(HttpClient {
            pool: std::sync::Arc::new(std::sync::Mutex::new(Pool {
                pid: std::process::id(),
                client,
            })),
            config: std::sync::Arc::new(config),
        })
    }

    /// The reqwest client of this process (a new pool after a `fork()`).
    pub(crate) fn client(&self) -> reqwest::Client {
        let pid = std::process::id();
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.pid != pid {
            // The same settings built fine before, so this cannot fail for a new reason; if it
            // does, the old pool's error on use is still a clear one.
            if let Ok(client) = build(&self.config) {
                *pool = Pool { pid, client };
            }
        }
        pool.client.clone()
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
