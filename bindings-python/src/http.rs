//! HTTP settings (`cibmtr_fhir::http`): `HttpConfig`, given as `http=` to a flow, a client or
//! a registration. The core validates them ([`HttpClient::from_options`]); this module only turns
//! Python values (seconds, paths) into the core's options.
use std::path::PathBuf;
use std::time::Duration;

use cibmtr_fhir::http::{self as core, HttpClient, HttpOptions};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyString};

use crate::error::{OrRaise, invalid};
use crate::runtime;

/// How the SDK talks HTTP: timeouts, a proxy, extra trusted CA certificates, hosts allowed over
/// plain http, and retry bounds. Every argument is optional and keyword-only; durations are
/// seconds (int, float or `timedelta`), as in `requests`. Checked here, before any request
/// (`ValidationError` naming the argument). A flow's `http` governs its token requests, a
/// client's its FHIR requests. Objects given the same `HttpConfig` share one connection pool
/// (and flows with the same credentials, one token); `repr` never shows a proxy password.
///
/// `timeout` (whole request, default 30), `connect_timeout` (default 10), `proxy` (a URL such
/// as `http://user:password@proxy.hospital.org:3128`; default: the `HTTPS_PROXY`/`NO_PROXY`
/// environment), `ca_files` (one PEM file or a list; for a TLS-inspecting proxy),
/// `allow_http_hosts` (host names to which plain http is allowed although not loopback),
/// `max_rate_limit_wait` (the longest a rate-limited token request is waited out, default 60),
/// `token_retries` (after a 5xx or network error, default 3), `request_retries` (of an
/// idempotent FHIR request, default 4), `max_retry_time` (all retries of one FHIR request
/// together, default 60).
#[pyclass(module = "cibmtr_fhir", frozen)]
pub struct HttpConfig {
    /// What the caller gave, with the proxy's credentials removed (the client holds the rest).
    shown: HttpOptions,
    client: HttpClient,
}

impl HttpConfig {
    /// The core client of `http=`, or the process's default one.
    pub fn client_or_default(http: Option<&Bound<'_, HttpConfig>>) -> HttpClient {
        match http {
            Some(h) => h.get().client.clone(),
            None => runtime::http(),
        }
    }
}

/// A duration in seconds from an int, a float or a `timedelta`.
fn duration(obj: Option<&Bound<'_, PyAny>>, field: &str) -> PyResult<Option<Duration>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    let secs = if obj.is_instance_of::<PyBool>() {
        None
    } else if obj.hasattr("total_seconds")? {
        Some(obj.call_method0("total_seconds")?.extract::<f64>()?)
    } else {
        obj.extract::<f64>().ok()
    };
    let Some(secs) = secs else {
        return Err(PyTypeError::new_err(format!(
            "{field} must be a number of seconds (int or float) or a timedelta, not {}",
            type_name(obj)
        )));
    };
    core::seconds(field, secs).map(Some).or_raise()
}

/// A count of retries: a whole number, 0 or more.
fn count(obj: Option<&Bound<'_, PyAny>>, field: &str) -> PyResult<Option<u32>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    let n = match obj.is_instance_of::<PyBool>() {
        true => None,
        false => obj.extract::<i64>().ok(),
    };
    let Some(n) = n else {
        return Err(PyTypeError::new_err(format!(
            "{field} must be an int, not {}",
            type_name(obj)
        )));
    };
    u32::try_from(n)
        .map(Some)
        .map_err(|_| invalid(field, "must be a whole number, 0 or more"))
        .or_raise()
}

/// One path (str or `os.PathLike`) or an iterable of them.
fn paths(obj: Option<&Bound<'_, PyAny>>, field: &str) -> PyResult<Vec<PathBuf>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(Vec::new());
    };
    let wrong = || {
        PyTypeError::new_err(format!(
            "{field} must be a path (str or os.PathLike) or a list of paths, not {}",
            type_name(obj)
        ))
    };
    if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
        return Ok(vec![obj.extract().map_err(|_| wrong())?]);
    }
    let mut out = Vec::new();
    for item in obj.try_iter().map_err(|_| wrong())? {
        out.push(item?.extract().map_err(|_| wrong())?);
    }
    Ok(out)
}

/// One host name or an iterable of them.
fn hosts(obj: Option<&Bound<'_, PyAny>>, field: &str) -> PyResult<Vec<String>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(Vec::new());
    };
    let wrong = || {
        PyTypeError::new_err(format!(
            "{field} must be a host name or a list of host names (str), not {}",
            type_name(obj)
        ))
    };
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(vec![s.to_cow()?.into_owned()]);
    }
    let mut out = Vec::new();
    for item in obj.try_iter().map_err(|_| wrong())? {
        out.push(item?.extract().map_err(|_| wrong())?);
    }
    Ok(out)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

#[pymethods]
impl HttpConfig {
    #[new]
    #[pyo3(signature = (*, timeout = None, connect_timeout = None, proxy = None, ca_files = None, allow_http_hosts = None, max_rate_limit_wait = None, token_retries = None, request_retries = None, max_retry_time = None))]
    fn new(
        py: Python<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        connect_timeout: Option<&Bound<'_, PyAny>>,
        proxy: Option<String>,
        ca_files: Option<&Bound<'_, PyAny>>,
        allow_http_hosts: Option<&Bound<'_, PyAny>>,
        max_rate_limit_wait: Option<&Bound<'_, PyAny>>,
        token_retries: Option<&Bound<'_, PyAny>>,
        request_retries: Option<&Bound<'_, PyAny>>,
        max_retry_time: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let options = HttpOptions {
            timeout: duration(timeout, "timeout")?,
            connect_timeout: duration(connect_timeout, "connect_timeout")?,
            proxy,
            ca_files: paths(ca_files, "ca_files")?,
            allow_http_hosts: hosts(allow_http_hosts, "allow_http_hosts")?,
            max_rate_limit_wait: duration(max_rate_limit_wait, "max_rate_limit_wait")?,
            token_retries: count(token_retries, "token_retries")?,
            request_retries: count(request_retries, "request_retries")?,
            max_retry_time: duration(max_retry_time, "max_retry_time")?,
        };
        let shown = HttpOptions {
            proxy: options
                .proxy
                .as_deref()
                .map(core::proxy_without_credentials),
            ..options.clone()
        };
        // Reads the CA files: off the GIL.
        let client = py.detach(|| HttpClient::from_options(options)).or_raise()?;
        Ok(HttpConfig { shown, client })
    }

    /// Whole-request timeout in seconds, or None (the default, 30).
    #[getter]
    fn timeout(&self) -> Option<f64> {
        self.shown.timeout.map(|d| d.as_secs_f64())
    }
    /// Connection timeout in seconds, or None (the default, 10).
    #[getter]
    fn connect_timeout(&self) -> Option<f64> {
        self.shown.connect_timeout.map(|d| d.as_secs_f64())
    }
    /// The proxy URL without its credentials, or None.
    #[getter]
    fn proxy(&self) -> Option<&str> {
        self.shown.proxy.as_deref()
    }
    /// The extra CA files.
    #[getter]
    fn ca_files(&self) -> Vec<String> {
        self.shown
            .ca_files
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }
    /// Hosts to which plain http is allowed.
    #[getter]
    fn allow_http_hosts(&self) -> Vec<String> {
        self.shown.allow_http_hosts.clone()
    }
    /// The longest wait for a rate-limited token request, in seconds, or None (default 60).
    #[getter]
    fn max_rate_limit_wait(&self) -> Option<f64> {
        self.shown.max_rate_limit_wait.map(|d| d.as_secs_f64())
    }
    /// Retries of a token request, or None (default 3).
    #[getter]
    fn token_retries(&self) -> Option<u32> {
        self.shown.token_retries
    }
    /// Retries of an idempotent FHIR request, or None (default 4).
    #[getter]
    fn request_retries(&self) -> Option<u32> {
        self.shown.request_retries
    }
    /// The longest one FHIR request spends in retries, in seconds, or None (default 60).
    #[getter]
    fn max_retry_time(&self) -> Option<f64> {
        self.shown.max_retry_time.map(|d| d.as_secs_f64())
    }

    /// The arguments given, in Python's keyword style; a proxy without its credentials.
    fn __repr__(&self) -> String {
        let o = &self.shown;
        let secs = |d: Option<Duration>| d.map(|d| format!("{:?}", d.as_secs_f64()));
        let text = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
        let list = |items: Vec<String>| format!("[{}]", items.join(", "));
        let fields = [
            ("timeout", secs(o.timeout)),
            ("connect_timeout", secs(o.connect_timeout)),
            ("proxy", o.proxy.as_deref().map(text)),
            (
                "ca_files",
                (!o.ca_files.is_empty())
                    .then(|| list(self.ca_files().iter().map(|p| text(p)).collect())),
            ),
            (
                "allow_http_hosts",
                (!o.allow_http_hosts.is_empty())
                    .then(|| list(o.allow_http_hosts.iter().map(|h| text(h)).collect())),
            ),
            ("max_rate_limit_wait", secs(o.max_rate_limit_wait)),
            ("token_retries", o.token_retries.map(|n| n.to_string())),
            ("request_retries", o.request_retries.map(|n| n.to_string())),
            ("max_retry_time", secs(o.max_retry_time)),
        ];
        let given: Vec<String> = fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
            .collect();
        format!("HttpConfig({})", given.join(", "))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<HttpConfig>()?;
    Ok(())
}
