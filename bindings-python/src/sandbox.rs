//! The local emulator (`cibmtr_fhir_sandbox`), running on the binding's runtime for as long as
//! the Python object lives (or until `stop()` / the end of a `with` block).
use std::sync::RwLock;
use std::time::Duration;

use cibmtr_fhir::Error;
use cibmtr_fhir_sandbox::{self as core, CridResponseShape, DropMode, Fault, Route, SandboxConfig};
use pyo3::prelude::*;
use serde_json::Value;

use crate::convert::{Json, JsonList, py_to_json};
use crate::error::{OrRaise, invalid};
use crate::runtime::{Born, wait};

/// The local emulator of Okta, MSK's Blaze, a SMART authorization server (Backend Services and
/// App Launch) and CIBMTR's Direct FHIR API, on 127.0.0.1. `urls` and `credentials` are dicts;
/// `cibmtr_client()` gives a client for it; faults (`set_fault`) and request counters are for
/// tests. Stops with `stop()`, at the end of a `with` block, or when garbage-collected.
#[pyclass(module = "cibmtr_fhir", subclass, frozen)]
pub struct Sandbox {
    running: RwLock<Option<core::Sandbox>>,
    urls: Value,
    credentials: Value,
    born: Born,
}

fn seconds(s: Option<f64>, default: Duration, field: &str) -> Result<Duration, Error> {
    match s {
        None => Ok(default),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s)),
        Some(_) => Err(invalid(field, "must be a number of seconds, 0 or more")),
    }
}

fn parse_route(name: &str) -> Result<Route, Error> {
    name.parse::<Route>().map_err(|e| invalid("route", e))
}

impl Sandbox {
    /// Runs `f` on the running sandbox (the server runs in the process that started it: a forked
    /// child's copy would only show stale counters).
    fn with<T>(&self, f: impl FnOnce(&core::Sandbox) -> T) -> PyResult<T> {
        self.born.check()?;
        let running = self.running.read().unwrap_or_else(|p| p.into_inner());
        match running.as_ref() {
            Some(sb) => Ok(f(sb)),
            None => Err(Error::Config {
                message: "the sandbox is stopped; start a new Sandbox()".into(),
            })
            .or_raise(),
        }
    }
}

#[pymethods]
impl Sandbox {
    /// Starts the sandbox. Token lifetimes (`*_token_ttl`) are in seconds.
    #[new]
    #[pyo3(signature = (*, port = 0, okta_token_ttl = None, msk_token_ttl = None, backend_token_ttl = None, smart_token_ttl = None, okta_rate_per_second = 4, okta_rate_per_minute = 600, deny_authorization = false, rotate_refresh_tokens = true, crid_response = "perfect_match", patient_id_only_in_location = false, accept_bundles = true))]
    fn new(
        py: Python<'_>,
        port: u16,
        okta_token_ttl: Option<f64>,
        msk_token_ttl: Option<f64>,
        backend_token_ttl: Option<f64>,
        smart_token_ttl: Option<f64>,
        okta_rate_per_second: u32,
        okta_rate_per_minute: u32,
        deny_authorization: bool,
        rotate_refresh_tokens: bool,
        crid_response: &str,
        patient_id_only_in_location: bool,
        accept_bundles: bool,
    ) -> PyResult<Self> {
        let d = SandboxConfig::default();
        let config = SandboxConfig {
            port,
            okta_token_ttl: seconds(okta_token_ttl, d.okta_token_ttl, "okta_token_ttl")
                .or_raise()?,
            msk_token_ttl: seconds(msk_token_ttl, d.msk_token_ttl, "msk_token_ttl").or_raise()?,
            backend_token_ttl: seconds(backend_token_ttl, d.backend_token_ttl, "backend_token_ttl")
                .or_raise()?,
            smart_token_ttl: seconds(smart_token_ttl, d.smart_token_ttl, "smart_token_ttl")
                .or_raise()?,
            okta_rate_per_second,
            okta_rate_per_minute,
            deny_authorization,
            rotate_refresh_tokens,
            crid_response: match crid_response {
                "perfect_match" => CridResponseShape::PerfectMatch,
                "top_level" => CridResponseShape::TopLevel,
                _ => {
                    return Err(invalid(
                        "crid_response",
                        "must be \"perfect_match\" or \"top_level\"",
                    ))
                    .or_raise();
                }
            },
            patient_id_only_in_location,
            accept_bundles,
        };
        let sb = wait(py, async {
            core::Sandbox::start(config)
                .await
                .map_err(|e| Error::Config {
                    message: format!("cannot start the sandbox: {e}"),
                })
        })?;
        let urls = serde_json::to_value(&sb.urls).unwrap_or_default();
        let credentials = serde_json::to_value(&sb.credentials).unwrap_or_default();
        Ok(Sandbox {
            running: RwLock::new(Some(sb)),
            urls,
            credentials,
            born: Born::now(),
        })
    }

    /// The endpoint URLs: `base`, `okta_token`, `msk_token`, `smart_token`, `fhir_base`,
    /// `smart_authorize`, `smart_register`, `admin`, `cibmtr_base`, `cibmtr_fhir_r3`,
    /// `msk_fhir`, `aidbox_fhir`, ...
    #[getter]
    fn urls(&self) -> Json {
        Json(self.urls.clone())
    }

    /// The test credentials, per server: `okta`, `msk`, `msk_basic`, `backend`, `smart`.
    #[getter]
    fn credentials(&self) -> Json {
        Json(self.credentials.clone())
    }

    /// Whether the sandbox is serving.
    #[getter]
    fn running(&self) -> bool {
        self.running.read().map(|r| r.is_some()).unwrap_or(false)
    }

    /// Requests that reached a token route for `client_id`.
    fn token_requests(&self, client_id: &str) -> PyResult<u64> {
        self.with(|sb| sb.token_requests(client_id))
    }

    /// Requests that reached any token route.
    fn token_requests_total(&self) -> PyResult<u64> {
        self.with(|sb| sb.token_requests_total())
    }

    /// Access tokens issued so far.
    fn tokens_issued(&self) -> PyResult<u64> {
        self.with(|sb| sb.tokens_issued())
    }

    /// Requests that reached `route` (`"okta_token"`, `"msk_token"`, `"smart_token"`, `"crid"`,
    /// `"patient_create"`, `"patient_search"`, `"observation_create"`, `"observation_search"`,
    /// `"msk_fhir"`, `"aidbox_fhir"`, `"protected"`).
    fn requests(&self, route: &str) -> PyResult<u64> {
        let r = parse_route(route).or_raise()?;
        self.with(|sb| sb.requests(r))
    }

    /// Injects a fault on `route`: answer `status` (with `headers` and `body`) instead, after
    /// `delay` seconds; or close the connection (`drop_connection="before"` or `"after"` the
    /// request took effect). `times` limits it to that many hits (0: until cleared); `share`
    /// hits only that fraction of requests.
    #[pyo3(signature = (route, *, status = 0, headers = None, body = "", delay = 0.0, times = 0, drop_connection = None, share = 0.0))]
    fn set_fault(
        &self,
        route: &str,
        status: u16,
        headers: Option<std::collections::HashMap<String, String>>,
        body: &str,
        delay: f64,
        times: u32,
        drop_connection: Option<&str>,
        share: f64,
    ) -> PyResult<()> {
        let r = parse_route(route).or_raise()?;
        let fault = Fault {
            status,
            headers: headers.unwrap_or_default().into_iter().collect(),
            body: body.to_owned(),
            delay: seconds(Some(delay), Duration::ZERO, "delay").or_raise()?,
            times,
            drop_connection: drop_connection
                .map(|d| {
                    d.parse::<DropMode>()
                        .map_err(|e| invalid("drop_connection", e))
                })
                .transpose()
                .or_raise()?,
            share,
        };
        fault
            .check()
            .map_err(|(field, rule)| invalid(field, rule))
            .or_raise()?;
        self.with(|sb| sb.set_fault(r, fault))
    }

    /// Removes every fault.
    fn clear_faults(&self) -> PyResult<()> {
        self.with(|sb| sb.clear_faults())
    }

    /// Makes every access token issued so far invalid.
    fn revoke_all_tokens(&self) -> PyResult<()> {
        self.with(|sb| sb.revoke_all_tokens())
    }

    /// Registers a SMART Backend Services client with its public JWK Set (e.g. a
    /// `generate_key().jwks`).
    fn register_backend_client(&self, client_id: &str, jwks: &Bound<'_, PyAny>) -> PyResult<()> {
        let jwks = py_to_json(jwks, "jwks").or_raise()?;
        self.with(|sb| sb.register_backend_client(client_id, jwks))?
            .map_err(|e| invalid("jwks", e))
            .or_raise()
    }

    /// Distinct patients registered through `PUT /CRID`.
    fn crids_registered(&self) -> PyResult<usize> {
        self.with(|sb| sb.crids_registered())
    }

    /// The Patients the CIBMTR API stores (redacted, with server ids).
    fn patients(&self) -> PyResult<JsonList> {
        self.with(|sb| JsonList(sb.patients()))
    }

    /// The Observations the CIBMTR API stores.
    fn observations(&self) -> PyResult<JsonList> {
        self.with(|sb| JsonList(sb.observations()))
    }

    /// Every secret and piece of patient data this sandbox has seen or issued, for leak tests
    /// (a list of str, sorted): its own client secrets, password and private key (whole and line
    /// by line); every access and refresh token it issued; every authorization code, PKCE
    /// verifier, client assertion, client secret and password presented to it; and every string
    /// of the demographics sent to its CRID service except the gender. Values shorter than 6
    /// characters are left out, so use test names at least that long. Scan your program's
    /// output, logs and exceptions for these: none should appear. `repr` never shows them.
    fn secrets_seen(&self) -> PyResult<Vec<String>> {
        self.with(|sb| sb.secrets_seen())
    }

    /// Stops the server (idempotent).
    fn stop(&self) {
        let stopped = self
            .running
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(stopped);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.stop();
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "Sandbox(base={:?}, running={})",
            self.urls["base"].as_str().unwrap_or(""),
            if self.running() { "True" } else { "False" }
        )
        .replace('"', "'")
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Sandbox>()
}
