//! `Sandbox`: the local emulator of Okta, MSK's Blaze, a SMART server and CIBMTR's Direct FHIR
//! API, started from the JVM for tests and demos. `close()` (or `stop()`) stops it.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cibmtr_fhir::Secret;
use cibmtr_fhir_sandbox as sb;
use serde_json::Value;

use crate::auth::PasswordGrant;
use crate::cibmtr::CibmtrClient;
use crate::error::{CibmtrFhirError, Result, parse_json, validation};
use crate::runtime::block_in_runtime;

/// Behaviour settings of a `Sandbox`.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SandboxOptions {
    /// Port at 127.0.0.1 (0: any free port).
    #[uniffi(default = 0)]
    pub port: i32,
    /// Lifetime of Okta access tokens in seconds.
    #[uniffi(default = 1800)]
    pub okta_token_ttl_seconds: i64,
    /// Okta requests allowed per user per second.
    #[uniffi(default = 4)]
    pub okta_rate_per_second: i32,
    /// Accept transaction Bundles at the CIBMTR FHIR root.
    #[uniffi(default = true)]
    pub accept_bundles: bool,
    /// Answer the SMART authorization endpoint with `error=access_denied`.
    #[uniffi(default = false)]
    pub deny_authorization: bool,
}

/// An injected failure or delay on a route (see `Sandbox.setFault`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Fault {
    /// Status to answer instead (0: only the delay, then the real answer).
    #[uniffi(default = 0)]
    pub status: i32,
    /// Headers of the faulted answer (e.g. `Retry-After`).
    #[uniffi(default)]
    pub headers: HashMap<String, String>,
    #[uniffi(default = "")]
    pub body: String,
    /// Sleep before answering, in milliseconds.
    #[uniffi(default = 0)]
    pub delay_ms: i64,
    /// Requests the fault hits before it clears itself (0: until cleared).
    #[uniffi(default = 0)]
    pub times: i32,
    /// `before` or `after` processing: close the connection without an answer.
    #[uniffi(default = None)]
    pub drop_connection: Option<String>,
    /// Fraction of the route's requests hit, at random, from 0 to 1 (0 or 1: every request).
    #[uniffi(default = 0.0)]
    pub share: f64,
}

/// URLs of a running sandbox.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SandboxUrls {
    pub base: String,
    pub okta_token: String,
    pub msk_token: String,
    pub protected: String,
    pub admin: String,
    pub smart_token: String,
    pub fhir_base: String,
    pub smart_configuration: String,
    pub smart_authorize: String,
    pub smart_register: String,
    pub cibmtr_base: String,
    pub cibmtr_fhir_r3: String,
    pub msk_fhir: String,
    pub aidbox_fhir: String,
}

/// The Okta-like password-grant user and client.
#[derive(Debug, Clone, uniffi::Record)]
pub struct OktaCredentials {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub username: String,
    pub password: Secret,
    pub scope: String,
}

/// A client-credentials client.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ClientCredentialsInfo {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: String,
}

/// The pre-registered SMART Backend Services client (ES384).
#[derive(Debug, Clone, uniffi::Record)]
pub struct BackendCredentials {
    pub token_url: String,
    pub fhir_base: String,
    pub client_id: String,
    pub private_key_pem: Secret,
    pub key_id: String,
    pub scope: String,
}

/// The pre-registered confidential SMART App Launch client.
#[derive(Debug, Clone, uniffi::Record)]
pub struct SmartAppCredentials {
    pub fhir_base: String,
    pub authorize_url: String,
    pub token_url: String,
    pub registration_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub redirect_uri: String,
    pub scope: String,
    /// The patient the sandbox's user launches with.
    pub patient: String,
}

/// Every credential registered in a running sandbox.
#[derive(Debug, Clone, uniffi::Record)]
pub struct SandboxCredentials {
    /// Okta password grant (client auth via HTTP Basic only).
    pub okta: OktaCredentials,
    /// MSK client that sends its secret in the form body.
    pub msk: ClientCredentialsInfo,
    /// MSK client that uses HTTP Basic.
    pub msk_basic: ClientCredentialsInfo,
    pub backend: BackendCredentials,
    pub smart: SmartAppCredentials,
}

/// A running emulator on 127.0.0.1. `close()` or `stop()` stops it.
#[derive(uniffi::Object)]
#[uniffi::export(Debug)]
pub struct Sandbox {
    running: Mutex<Option<Arc<sb::Sandbox>>>,
    urls: SandboxUrls,
    credentials: SandboxCredentials,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("base", &self.urls.base)
            .field(
                "running",
                &self.running.lock().map(|r| r.is_some()).unwrap_or(false),
            )
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    fn running(&self) -> Result<Arc<sb::Sandbox>> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| CibmtrFhirError::config("the sandbox has been stopped"))
    }
}

fn route(name: &str) -> Result<sb::Route> {
    name.parse().map_err(|_| CibmtrFhirError::Validation {
        field: "route".into(),
        rule: format!(
            "must be one of {}",
            sb::Route::ALL.map(sb::Route::name).join(", ")
        ),
    })
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_strings(values: Vec<Value>) -> Vec<String> {
    values.iter().map(Value::to_string).collect()
}

#[uniffi::export]
impl Sandbox {
    /// Starts the emulator on 127.0.0.1 (on the SDK's runtime).
    #[uniffi::constructor(default(options))]
    pub fn new(options: SandboxOptions) -> Result<Arc<Self>> {
        let config = sb::SandboxConfig {
            port: u16::try_from(options.port).map_err(|_| CibmtrFhirError::Validation {
                field: "port".into(),
                rule: "must be between 0 and 65535".into(),
            })?,
            okta_token_ttl: Duration::from_secs(
                u64::try_from(options.okta_token_ttl_seconds).unwrap_or(0),
            ),
            okta_rate_per_second: u32::try_from(options.okta_rate_per_second).unwrap_or(0),
            accept_bundles: options.accept_bundles,
            deny_authorization: options.deny_authorization,
            ..sb::SandboxConfig::default()
        };
        let started = block_in_runtime(sb::Sandbox::start(config))?
            .map_err(|e| CibmtrFhirError::config(format!("cannot start the sandbox: {e}")))?;
        let (u, c) = (&started.urls, &started.credentials);
        let urls = SandboxUrls {
            base: u.base.clone(),
            okta_token: u.okta_token.clone(),
            msk_token: u.msk_token.clone(),
            protected: u.protected.clone(),
            admin: u.admin.clone(),
            smart_token: u.smart_token.clone(),
            fhir_base: u.fhir_base.clone(),
            smart_configuration: u.smart_configuration.clone(),
            smart_authorize: u.smart_authorize.clone(),
            smart_register: u.smart_register.clone(),
            cibmtr_base: u.cibmtr_base.clone(),
            cibmtr_fhir_r3: u.cibmtr_fhir_r3.clone(),
            msk_fhir: u.msk_fhir.clone(),
            aidbox_fhir: u.aidbox_fhir.clone(),
        };
        let cc = |i: &sb::ClientCredentialsInfo| ClientCredentialsInfo {
            token_url: i.token_url.clone(),
            client_id: i.client_id.clone(),
            client_secret: Secret::new(i.client_secret.clone()),
            scope: i.scope.clone(),
        };
        let credentials = SandboxCredentials {
            okta: OktaCredentials {
                token_url: c.okta.token_url.clone(),
                client_id: c.okta.client_id.clone(),
                client_secret: Secret::new(c.okta.client_secret.clone()),
                username: c.okta.username.clone(),
                password: Secret::new(c.okta.password.clone()),
                scope: c.okta.scope.clone(),
            },
            msk: cc(&c.msk),
            msk_basic: cc(&c.msk_basic),
            backend: BackendCredentials {
                token_url: c.backend.token_url.clone(),
                fhir_base: c.backend.fhir_base.clone(),
                client_id: c.backend.client_id.clone(),
                private_key_pem: Secret::new(c.backend.private_key_pem.clone()),
                key_id: c.backend.key_id.clone(),
                scope: c.backend.scope.clone(),
            },
            smart: SmartAppCredentials {
                fhir_base: c.smart.fhir_base.clone(),
                authorize_url: c.smart.authorize_url.clone(),
                token_url: c.smart.token_url.clone(),
                registration_url: c.smart.registration_url.clone(),
                client_id: c.smart.client_id.clone(),
                client_secret: Secret::new(c.smart.client_secret.clone()),
                redirect_uri: c.smart.redirect_uri.clone(),
                scope: c.smart.scope.clone(),
                patient: c.smart.patient.clone(),
            },
        };
        Ok(Arc::new(Sandbox {
            running: Mutex::new(Some(Arc::new(started))),
            urls,
            credentials,
        }))
    }

    /// The endpoint URLs.
    pub fn urls(&self) -> SandboxUrls {
        self.urls.clone()
    }

    /// The registered test credentials (secrets as `Secret`, shown by `expose()` only).
    pub fn credentials(&self) -> SandboxCredentials {
        self.credentials.clone()
    }

    /// A `CibmtrClient` for the sandbox's CIBMTR API: the Okta test user, CCN 12345.
    pub fn cibmtr_client(&self) -> Result<Arc<CibmtrClient>> {
        let o = &self.credentials.okta;
        let auth = PasswordGrant::new(
            o.token_url.clone(),
            o.client_id.clone(),
            o.client_secret.expose().to_owned(),
            o.username.clone(),
            o.password.expose().to_owned(),
            Some(o.scope.clone()),
            None,
            None,
        )?;
        CibmtrClient::new(
            "12345".into(),
            auth,
            "test".into(),
            Some(self.urls.cibmtr_base.clone()),
            None,
            "cibmtr".into(),
            "STU3".into(),
            false,
            false,
            None,
        )
    }

    /// Stops the server (also done by `close()`); later calls fail with a config error.
    pub fn stop(&self) {
        let stopped = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(stopped);
    }

    /// Requests that reached a token route for `clientId`.
    pub fn token_requests(&self, client_id: String) -> Result<i64> {
        Ok(count(self.running()?.token_requests(&client_id)))
    }

    /// Requests that reached any token route.
    pub fn token_requests_total(&self) -> Result<i64> {
        Ok(count(self.running()?.token_requests_total()))
    }

    /// Requests that reached `route` (`okta_token`, `msk_token`, `smart_token`, `crid`,
    /// `patient_create`, `patient_search`, `observation_create`, `observation_search`, ...).
    pub fn requests(&self, route: String) -> Result<i64> {
        Ok(count(self.running()?.requests(self::route(&route)?)))
    }

    /// Sets the fault on `route`, replacing any previous one.
    pub fn set_fault(&self, route: String, fault: Fault) -> Result<()> {
        let drop_connection = match fault.drop_connection.as_deref() {
            None => None,
            Some(m) => Some(
                m.parse()
                    .map_err(|rule: String| validation("drop_connection", &rule))?,
            ),
        };
        let fault = sb::Fault {
            // Outside u16: a status `check` refuses, with its rule.
            status: u16::try_from(fault.status).unwrap_or(u16::MAX),
            headers: fault.headers.into_iter().collect(),
            body: fault.body,
            delay: Duration::from_millis(
                u64::try_from(fault.delay_ms)
                    .map_err(|_| validation("delay_ms", "must not be negative"))?,
            ),
            times: u32::try_from(fault.times)
                .map_err(|_| validation("times", "must not be negative"))?,
            drop_connection,
            share: fault.share,
        };
        fault
            .check()
            .map_err(|(field, rule)| validation(field, rule))?;
        self.running()?.set_fault(self::route(&route)?, fault);
        Ok(())
    }

    /// Removes every fault.
    pub fn clear_faults(&self) -> Result<()> {
        self.running()?.clear_faults();
        Ok(())
    }

    /// Distinct patients registered through `PUT /CRID`.
    pub fn crids_registered(&self) -> Result<i64> {
        Ok(count(self.running()?.crids_registered() as u64))
    }

    /// Patients stored by the CIBMTR API (JSON each, as stored: redacted, with ids).
    pub fn patients(&self) -> Result<Vec<String>> {
        Ok(to_strings(self.running()?.patients()))
    }

    /// Observations stored by the CIBMTR API (JSON each).
    pub fn observations(&self) -> Result<Vec<String>> {
        Ok(to_strings(self.running()?.observations()))
    }

    /// Registers (or replaces) a Backend Services client with its public JWK Set (JSON).
    pub fn register_backend_client(&self, client_id: String, jwks: String) -> Result<()> {
        let jwks = parse_json("jwks", &jwks)?;
        self.running()?
            .register_backend_client(&client_id, jwks)
            .map_err(|rule| CibmtrFhirError::Validation {
                field: "jwks".into(),
                rule,
            })
    }

    /// Every secret and piece of patient data this sandbox has seen, for leak tests: its own
    /// client secrets, password and private key (whole and line by line); every access and
    /// refresh token it issued; every authorization code, PKCE verifier, client assertion,
    /// client secret and password presented to it; and every string of the demographics sent to
    /// its CRID service except the gender. Values shorter than 6 characters are left out (they
    /// would match innocent text), so a leak test should use names at least that long. Search
    /// your program's output for each: none should be found.
    pub fn secrets_seen(&self) -> Result<Vec<String>> {
        Ok(self.running()?.secrets_seen())
    }

    /// Makes every access token issued so far invalid.
    pub fn revoke_all_tokens(&self) -> Result<()> {
        self.running()?.revoke_all_tokens();
        Ok(())
    }
}
