//! The local emulator (crate `cibmtr-fhir-sandbox`), started from Node on the binding's tokio
//! runtime: Okta-, MSK- and SMART-like authorization servers, the CIBMTR Direct FHIR API and two
//! FHIR stores on 127.0.0.1, with fault switches and request counters for tests.
use std::collections::HashMap;
use std::time::Duration;

use cibmtr_fhir::Error;
use cibmtr_fhir::auth::PasswordGrant;
use cibmtr_fhir::cibmtr;
use cibmtr_fhir_sandbox as sandbox;
use napi::bindgen_prelude::*;
use napi::{Env, Property, PropertyAttributes};
use napi_derive::napi;
use serde_json::Value;

use crate::args::{self, HTTP_ONLY, Kind, text};
use crate::cibmtr::CibmtrClient;
use crate::error::{CoreResult, OrThrow, invalid, settle};
use crate::fhir::{Resource, resources};
use crate::http::{self, HttpConfig};

/// Options of `Sandbox.start`. Durations are in seconds.
#[napi(object)]
#[derive(Default)]
pub struct SandboxOptions {
    /// Port on 127.0.0.1 (default 0: any free port).
    pub port: Option<u16>,
    /// Lifetime of Okta access tokens (default 1800).
    pub okta_token_ttl: Option<f64>,
    /// Lifetime of MSK access tokens (default 3600).
    pub msk_token_ttl: Option<f64>,
    /// Lifetime of SMART Backend Services tokens (default 300).
    pub backend_token_ttl: Option<f64>,
    /// Lifetime of SMART App Launch tokens (default 3600).
    pub smart_token_ttl: Option<f64>,
    /// Okta requests allowed per user per second (default 4).
    pub okta_rate_per_second: Option<u32>,
    /// Okta requests allowed per org per minute (default 600).
    pub okta_rate_per_minute: Option<u32>,
    /// The authorization endpoint answers `error=access_denied` (default false).
    pub deny_authorization: Option<bool>,
    /// A new refresh token on every refresh (default true).
    pub rotate_refresh_tokens: Option<bool>,
    /// Shape of the CRID answer (default `perfect_match`).
    #[napi(ts_type = "'perfect_match' | 'top_level'")]
    pub crid_response: Option<String>,
    /// A created Patient's id only in the `Location` header (default false).
    pub patient_id_only_in_location: Option<bool>,
    /// Accept transaction Bundles at the CIBMTR root (default true).
    pub accept_bundles: Option<bool>,
}

fn seconds(field: &str, s: Option<f64>, default: Duration) -> CoreResult<Duration> {
    match s {
        None => Ok(default),
        Some(s) => Duration::try_from_secs_f64(s)
            .map_err(|_| invalid(field, "must be a number of seconds, 0 or more")),
    }
}

fn config(o: SandboxOptions) -> CoreResult<sandbox::SandboxConfig> {
    let d = sandbox::SandboxConfig::default();
    Ok(sandbox::SandboxConfig {
        port: o.port.unwrap_or(d.port),
        okta_token_ttl: seconds("oktaTokenTtl", o.okta_token_ttl, d.okta_token_ttl)?,
        msk_token_ttl: seconds("mskTokenTtl", o.msk_token_ttl, d.msk_token_ttl)?,
        backend_token_ttl: seconds("backendTokenTtl", o.backend_token_ttl, d.backend_token_ttl)?,
        smart_token_ttl: seconds("smartTokenTtl", o.smart_token_ttl, d.smart_token_ttl)?,
        okta_rate_per_second: o.okta_rate_per_second.unwrap_or(d.okta_rate_per_second),
        okta_rate_per_minute: o.okta_rate_per_minute.unwrap_or(d.okta_rate_per_minute),
        deny_authorization: o.deny_authorization.unwrap_or(d.deny_authorization),
        rotate_refresh_tokens: o.rotate_refresh_tokens.unwrap_or(d.rotate_refresh_tokens),
        crid_response: match o.crid_response.as_deref() {
            None => d.crid_response,
            Some("perfect_match") => sandbox::CridResponseShape::PerfectMatch,
            Some("top_level") => sandbox::CridResponseShape::TopLevel,
            Some(_) => {
                return Err(invalid(
                    "cridResponse",
                    "must be perfect_match or top_level",
                ));
            }
        },
        patient_id_only_in_location: o
            .patient_id_only_in_location
            .unwrap_or(d.patient_id_only_in_location),
        accept_bundles: o.accept_bundles.unwrap_or(d.accept_bundles),
    })
}

/// Options of `Sandbox.cibmtrClient`.
#[napi(object, object_to_js = false)]
#[derive(Default)]
pub struct SandboxClientOptions {
    /// Timeouts, a proxy, extra CA certificates and retry bounds for the client and its grant.
    pub http: Option<HttpConfig>,
}

/// An injected failure or delay on a route (see `Sandbox.setFault`).
#[napi(object)]
#[derive(Default)]
pub struct Fault {
    /// Status to answer instead (0 or absent: only the delay, then the real answer).
    pub status: Option<u16>,
    pub headers: Option<HashMap<String, String>>,
    pub body: Option<String>,
    /// Seconds to wait before answering.
    pub delay: Option<f64>,
    /// Requests the fault hits before it clears itself (0 or absent: until cleared).
    pub times: Option<u32>,
    /// Close the connection without an answer, before or after the request took effect.
    #[napi(ts_type = "'before' | 'after'")]
    pub drop_connection: Option<String>,
    /// Share of the route's requests the fault hits (absent: all).
    pub share: Option<f64>,
}

fn route(name: &str) -> CoreResult<sandbox::Route> {
    name.parse().map_err(|e: String| invalid("route", e))
}

fn fault(f: Fault) -> CoreResult<sandbox::Fault> {
    let mut headers: Vec<_> = f.headers.unwrap_or_default().into_iter().collect();
    headers.sort();
    let fault = sandbox::Fault {
        status: f.status.unwrap_or(0),
        headers,
        body: f.body.unwrap_or_default(),
        delay: seconds("delay", f.delay, Duration::ZERO)?,
        times: f.times.unwrap_or(0),
        drop_connection: f
            .drop_connection
            .map(|d| d.parse().map_err(|e: String| invalid("dropConnection", e)))
            .transpose()?,
        share: f.share.unwrap_or(0.0),
    };
    fault
        .check()
        .map_err(|(field, rule)| invalid(field, rule))?;
    Ok(fault)
}

/// The endpoints of a running sandbox.
#[napi(object, object_from_js = false)]
pub struct SandboxUrls {
    /// `http://127.0.0.1:PORT`.
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
    /// The CIBMTR Direct FHIR API base (`PUT {cibmtrBase}/CRID`, Patient, Observation).
    pub cibmtr_base: String,
    /// The same API under the `/r3` root.
    pub cibmtr_fhir_r3: String,
    /// MSK-like (Blaze, R4) store: an MSK token and `researchstudy` on every request.
    pub msk_fhir: String,
    /// Aidbox-like (R4) store behind Backend Services.
    pub aidbox_fhir: String,
}

/// The Okta-like password-grant client and user.
#[napi(object, object_from_js = false)]
pub struct OktaCredentials {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    pub password: String,
    pub scope: String,
}

/// A client-credentials client.
#[napi(object, object_from_js = false)]
pub struct ClientCredentialsInfo {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub scope: String,
}

/// The pre-registered Backend Services client (ES384).
#[napi(object, object_from_js = false)]
pub struct BackendCredentials {
    pub token_url: String,
    pub fhir_base: String,
    pub client_id: String,
    pub private_key_pem: String,
    pub key_id: String,
    pub scope: String,
}

/// The pre-registered confidential App Launch client.
#[napi(object, object_from_js = false)]
pub struct SmartAppCredentials {
    pub fhir_base: String,
    pub authorize_url: String,
    pub token_url: String,
    pub registration_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub scope: String,
    /// The patient the sandbox's user launches with.
    pub patient: String,
}

/// Every credential of a running sandbox. The secrets (`clientSecret`, `password`,
/// `privateKeyPem`) are readable but are non-enumerable getters, so `util.inspect` and
/// `JSON.stringify` leave them out.
#[napi(object, object_from_js = false)]
pub struct SandboxCredentials {
    pub okta: OktaCredentials,
    pub msk: ClientCredentialsInfo,
    pub msk_basic: ClientCredentialsInfo,
    pub backend: BackendCredentials,
    pub smart: SmartAppCredentials,
}

const SECRET_KEYS: [&str; 3] = ["clientSecret", "password", "privateKeyPem"];

/// The credentials with their secret properties made non-enumerable.
fn credentials_object(env: &Env, c: &sandbox::SandboxCredentials) -> napi::Result<Object<'static>> {
    let okta = &c.okta;
    let cc = |i: &sandbox::ClientCredentialsInfo| ClientCredentialsInfo {
        token_url: i.token_url.clone(),
        client_id: i.client_id.clone(),
        client_secret: i.client_secret.clone(),
        scope: i.scope.clone(),
    };
    let b = &c.backend;
    let s = &c.smart;
    let value = SandboxCredentials {
        okta: OktaCredentials {
            token_url: okta.token_url.clone(),
            client_id: okta.client_id.clone(),
            client_secret: okta.client_secret.clone(),
            username: okta.username.clone(),
            password: okta.password.clone(),
            scope: okta.scope.clone(),
        },
        msk: cc(&c.msk),
        msk_basic: cc(&c.msk_basic),
        backend: BackendCredentials {
            token_url: b.token_url.clone(),
            fhir_base: b.fhir_base.clone(),
            client_id: b.client_id.clone(),
            private_key_pem: b.private_key_pem.clone(),
            key_id: b.key_id.clone(),
            scope: b.scope.clone(),
        },
        smart: SmartAppCredentials {
            fhir_base: s.fhir_base.clone(),
            authorize_url: s.authorize_url.clone(),
            token_url: s.token_url.clone(),
            registration_url: s.registration_url.clone(),
            client_id: s.client_id.clone(),
            client_secret: s.client_secret.clone(),
            redirect_uri: s.redirect_uri.clone(),
            scope: s.scope.clone(),
            patient: s.patient.clone(),
        },
    };
    let raw = unsafe { SandboxCredentials::to_napi_value(env.raw(), value)? };
    let root = Object::from_raw(env.raw(), raw);
    for group in ["okta", "msk", "mskBasic", "backend", "smart"] {
        let mut obj: Object = root.get_named_property(group)?;
        for key in SECRET_KEYS {
            if let Some(secret) = obj.get::<String>(key)? {
                // An accessor: even `util.inspect(x, { showHidden: true })` shows `[Getter]`.
                obj.define_properties(&[Property::new()
                    .with_utf8_name(key)?
                    .with_getter_closure(move |_env, _this| Ok(secret.clone()))
                    .with_property_attributes(PropertyAttributes::Configurable)])?;
            }
        }
    }
    Ok(root)
}

/// A running sandbox; `stop()` (or the end of the process) shuts it down.
#[napi]
pub struct Sandbox {
    inner: Option<sandbox::Sandbox>,
}

impl Sandbox {
    fn running(&self, env: &Env) -> napi::Result<&sandbox::Sandbox> {
        self.inner
            .as_ref()
            .ok_or_else(|| Error::Config {
                message: "the sandbox is stopped".into(),
            })
            .or_throw(env)
    }
}

#[napi]
impl Sandbox {
    /// Starts a sandbox on 127.0.0.1 (any free port unless `port` is given).
    #[napi]
    pub fn start(
        env: Env,
        #[napi(ts_arg_type = "SandboxOptions | undefined | null")] options: Option<Unknown<'_>>,
    ) -> Result<AsyncBlock<Sandbox>> {
        const OPTIONS: Kind = Kind::Options(
            "SandboxOptions",
            &[
                ("port", Kind::Number),
                ("oktaTokenTtl", Kind::Number),
                ("mskTokenTtl", Kind::Number),
                ("backendTokenTtl", Kind::Number),
                ("smartTokenTtl", Kind::Number),
                ("oktaRatePerSecond", Kind::Number),
                ("oktaRatePerMinute", Kind::Number),
                ("denyAuthorization", Kind::Bool),
                ("rotateRefreshTokens", Kind::Bool),
                ("cridResponse", Kind::Text),
                ("patientIdOnlyInLocation", Kind::Bool),
                ("acceptBundles", Kind::Bool),
            ],
        );
        let options: SandboxOptions = args::options(&env, &OPTIONS, options)?;
        let config = config(options).or_throw(&env)?;
        settle(&env, async move {
            let inner = sandbox::Sandbox::start(config)
                .await
                .map_err(|e| Error::Config {
                    message: format!("the sandbox could not listen: {e}"),
                })?;
            Ok(Sandbox { inner: Some(inner) })
        })
    }

    /// Stops serving; idempotent.
    #[napi]
    pub fn stop(&mut self) {
        self.inner = None;
    }

    /// The endpoint URLs.
    #[napi(getter)]
    pub fn urls(&self, env: Env) -> Result<SandboxUrls> {
        let u = &self.running(&env)?.urls;
        Ok(SandboxUrls {
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
        })
    }

    /// The registered test credentials (secrets readable, not enumerable).
    #[napi(getter, ts_return_type = "SandboxCredentials")]
    pub fn credentials(&self, env: Env) -> Result<Object<'static>> {
        credentials_object(&env, &self.running(&env)?.credentials)
    }

    /// A `CibmtrClient` for CCN `12345` on this sandbox, authenticated with the Okta-like
    /// password grant. An `http` config serves the token requests too.
    #[napi]
    pub fn cibmtr_client(
        &self,
        env: Env,
        #[napi(ts_arg_type = "SandboxClientOptions | undefined | null")] options: Option<
            Unknown<'_>,
        >,
    ) -> Result<CibmtrClient> {
        const OPTIONS: Kind = Kind::Options("SandboxClientOptions", HTTP_ONLY);
        let options: SandboxClientOptions = args::options(&env, &OPTIONS, options)?;
        let sb = self.running(&env)?;
        let o = &sb.credentials.okta;
        let http = http::client_or_shared(options.http).or_throw(&env)?;
        let client = PasswordGrant::builder(
            &o.token_url,
            &o.client_id,
            o.client_secret.as_str(),
            &o.username,
            o.password.as_str(),
        )
        .scope(&o.scope)
        .http(http.clone())
        .build()
        .and_then(|auth| {
            cibmtr::CibmtrClient::builder("12345", &auth)
                .base_url(&sb.urls.cibmtr_base)
                .http_client(http)
                .build()
        })
        .or_throw(&env)?;
        Ok(CibmtrClient::wrap(client))
    }

    /// Requests that reached a token route for `clientId`.
    #[napi]
    pub fn token_requests(&self, env: Env, client_id: String) -> Result<i64> {
        Ok(self.running(&env)?.token_requests(&client_id) as i64)
    }

    /// Requests that reached any token route.
    #[napi]
    pub fn token_requests_total(&self, env: Env) -> Result<i64> {
        Ok(self.running(&env)?.token_requests_total() as i64)
    }

    /// Access tokens issued so far.
    #[napi]
    pub fn tokens_issued(&self, env: Env) -> Result<i64> {
        Ok(self.running(&env)?.tokens_issued() as i64)
    }

    /// Requests that reached `route` (`okta_token`, `observation_create`, ...).
    #[napi(ts_args_type = "route: Route")]
    pub fn requests(&self, env: Env, route: String) -> Result<i64> {
        let r = self::route(&route).or_throw(&env)?;
        Ok(self.running(&env)?.requests(r) as i64)
    }

    /// Injects `fault` on `route`, replacing any previous one.
    #[napi(ts_args_type = "route: Route, fault: Fault")]
    pub fn set_fault(&self, env: Env, route: Unknown<'_>, fault: Unknown<'_>) -> Result<()> {
        const FAULT: Kind = Kind::Options(
            "Fault",
            &[
                ("status", Kind::Number),
                ("headers", Kind::TextMap),
                ("body", Kind::Text),
                ("delay", Kind::Number),
                ("times", Kind::Number),
                ("dropConnection", Kind::Text),
                ("share", Kind::Number),
            ],
        );
        let route = text(&env, "route", route)?;
        let fault: Fault = args::arg(&env, "fault", &FAULT, fault)?;
        let r = self::route(&route).or_throw(&env)?;
        let f = self::fault(fault).or_throw(&env)?;
        self.running(&env)?.set_fault(r, f);
        Ok(())
    }

    /// Removes every fault.
    #[napi]
    pub fn clear_faults(&self, env: Env) -> Result<()> {
        self.running(&env)?.clear_faults();
        Ok(())
    }

    /// Makes every access token issued so far invalid.
    #[napi]
    pub fn revoke_all_tokens(&self, env: Env) -> Result<()> {
        self.running(&env)?.revoke_all_tokens();
        Ok(())
    }

    /// Registers (or replaces) a Backend Services client with its public JWKS.
    #[napi]
    pub fn register_backend_client(
        &self,
        env: Env,
        #[napi(ts_arg_type = "string")] client_id: Unknown<'_>,
        #[napi(ts_arg_type = "any")] jwks: Unknown<'_>,
    ) -> Result<()> {
        let client_id = text(&env, "clientId", client_id)?;
        let jwks: Value = args::arg(&env, "jwks", &Kind::Object("a JWK Set"), jwks)?;
        self.running(&env)?
            .register_backend_client(&client_id, jwks)
            .map_err(|e| invalid("jwks", e))
            .or_throw(&env)
    }

    /// Distinct patients registered through `PUT /CRID`.
    #[napi]
    pub fn crids_registered(&self, env: Env) -> Result<u32> {
        Ok(self.running(&env)?.crids_registered() as u32)
    }

    /// The Patients the CIBMTR API holds (redacted, with server ids).
    #[napi(ts_return_type = "Resource[]")]
    pub fn patients(&self, env: Env) -> Result<Vec<Resource>> {
        Ok(resources(self.running(&env)?.patients()))
    }

    /// The Observations the CIBMTR API holds.
    #[napi(ts_return_type = "Resource[]")]
    pub fn observations(&self, env: Env) -> Result<Vec<Resource>> {
        Ok(resources(self.running(&env)?.observations()))
    }

    /// Every resource of a FHIR store (`cibmtr`, `msk` or `aidbox`).
    #[napi(
        ts_args_type = "store: 'cibmtr' | 'msk' | 'aidbox'",
        ts_return_type = "Resource[]"
    )]
    pub fn fhir_resources(&self, env: Env, store: String) -> Result<Vec<Resource>> {
        let s = match store.as_str() {
            "cibmtr" => sandbox::Store::Cibmtr,
            "msk" => sandbox::Store::Msk,
            "aidbox" => sandbox::Store::Aidbox,
            _ => return Err(invalid("store", "must be cibmtr, msk or aidbox")).or_throw(&env),
        };
        Ok(resources(self.running(&env)?.fhir_resources(s)))
    }

    /// Every secret and piece of patient data this sandbox has seen, for leak tests: its own
    /// client secrets, password and private key (whole and line by line), every access and
    /// refresh token it issued, every authorization code, PKCE verifier, client assertion,
    /// client secret and password presented to it, and every string of the demographics sent to
    /// its CRID service except the gender. Values shorter than 6 characters are left out (they
    /// would match innocent text), so a leak test should use names at least that long. Scan
    /// your program's output for each: a hit is a leak.
    #[napi]
    pub fn secrets_seen(&self, env: Env) -> Result<Vec<String>> {
        Ok(self.running(&env)?.secrets_seen())
    }

    #[napi(js_name = "toJSON")]
    pub fn to_json(&self, env: Env) -> Result<Value> {
        Ok(serde_json::json!({ "base": self.running(&env)?.urls.base }))
    }
}
