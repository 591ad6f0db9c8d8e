//! Local emulator of the servers the SDK talks to.
//!
//! [`Sandbox::start`] binds `127.0.0.1:0` on the caller's tokio runtime and serves an
//! Okta-like password-grant endpoint, an MSK-like client-credentials endpoint, SMART Backend
//! Services and App Launch authorization servers, the CIBMTR Direct FHIR API, an MSK-like
//! (Blaze) and an Aidbox-like FHIR store, a bearer-protected resource and a small admin API.
//! Any route can be given a [`Fault`]: another status, a slow answer, or a connection closed
//! without a response. The server stops when the [`Sandbox`] is dropped.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::{Value, json};
use tokio::sync::watch;

mod app_launch;
mod cibmtr;
mod faults;
mod fhir;
mod smart;
mod wire;
pub use app_launch::SmartAppCredentials;
pub use cibmtr::CridResponseShape;
pub(crate) use faults::apply_fault;
pub use faults::{DropMode, Fault, Route};
pub use fhir::Store;
pub use smart::BackendCredentials;

const OKTA_PATH: &str = "/oauth2/aussandbox/v1/token";
const MSK_PATH: &str = "/msk-apim/external/msk-oidc/oauth2/token";

/// Behaviour settings of a [`Sandbox`].
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Port to listen on at 127.0.0.1 (default 0: any free port; see [`SandboxUrls::base`]).
    pub port: u16,
    /// Lifetime of Okta access tokens (default 1800 s).
    pub okta_token_ttl: Duration,
    /// Lifetime of MSK access tokens (default 3600 s).
    pub msk_token_ttl: Duration,
    /// Okta requests allowed per username per 1-second window (default 4).
    pub okta_rate_per_second: u32,
    /// Okta requests allowed for the whole org per minute window (default 600).
    pub okta_rate_per_minute: u32,
    /// Lifetime of SMART Backend Services access tokens (default 300 s).
    pub backend_token_ttl: Duration,
    /// Lifetime of SMART App Launch access tokens (default 3600 s).
    pub smart_token_ttl: Duration,
    /// Make the authorization endpoint answer `error=access_denied` (default false).
    pub deny_authorization: bool,
    /// Issue a new refresh token on every refresh, invalidating the presented one (default
    /// true). When false, refresh responses carry no refresh token and the old one stays valid.
    pub rotate_refresh_tokens: bool,
    /// Shape of the CIBMTR CRID registration response (default [`CridResponseShape::PerfectMatch`]).
    pub crid_response: CridResponseShape,
    /// Answer a CIBMTR Patient create with an empty body, so the new id is only in the
    /// `Location` header (default false).
    pub patient_id_only_in_location: bool,
    /// Accept transaction Bundles at the CIBMTR FHIR root (default true; false answers 400
    /// like the guide's "cannot accept resources formatted as a bundle").
    pub accept_bundles: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            port: 0,
            okta_token_ttl: Duration::from_secs(1800),
            msk_token_ttl: Duration::from_secs(3600),
            okta_rate_per_second: 4,
            okta_rate_per_minute: 600,
            backend_token_ttl: Duration::from_secs(300),
            smart_token_ttl: Duration::from_secs(3600),
            deny_authorization: false,
            rotate_refresh_tokens: true,
            crid_response: CridResponseShape::default(),
            patient_id_only_in_location: false,
            accept_bundles: true,
        }
    }
}

/// Credentials for the Okta-like password grant.
#[derive(Clone, serde::Serialize)]
pub struct OktaCredentials {
    /// Token endpoint URL.
    pub token_url: String,
    /// Client id (sent with HTTP Basic).
    pub client_id: String,
    /// Client secret (sent with HTTP Basic); contains characters needing URL-encoding.
    pub client_secret: String,
    /// Resource-owner username.
    pub username: String,
    /// Resource-owner password.
    pub password: String,
    /// Scope to request.
    pub scope: String,
}

impl fmt::Debug for OktaCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OktaCredentials")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("scope", &self.scope)
            .finish()
    }
}

/// Credentials for a client-credentials grant.
#[derive(Clone, serde::Serialize)]
pub struct ClientCredentialsInfo {
    /// Token endpoint URL.
    pub token_url: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// Scope to request.
    pub scope: String,
}

impl fmt::Debug for ClientCredentialsInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentialsInfo")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("scope", &self.scope)
            .finish()
    }
}

/// All credentials registered in a running sandbox.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SandboxCredentials {
    /// Okta password-grant user and client (client auth via HTTP Basic only).
    pub okta: OktaCredentials,
    /// MSK client that must send its secret in the form body.
    pub msk: ClientCredentialsInfo,
    /// MSK client that must use HTTP Basic.
    pub msk_basic: ClientCredentialsInfo,
    /// Pre-registered SMART Backend Services client (`private_key_jwt`, ES384).
    pub backend: BackendCredentials,
    /// Pre-registered confidential SMART App Launch client (authorization code + PKCE).
    pub smart: SmartAppCredentials,
}

/// URLs of a running sandbox.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SandboxUrls {
    /// Base URL, e.g. `http://127.0.0.1:PORT`.
    pub base: String,
    /// Okta token endpoint.
    pub okta_token: String,
    /// MSK token endpoint.
    pub msk_token: String,
    /// Bearer-protected resource (`GET`).
    pub protected: String,
    /// Admin API prefix (`/admin`).
    pub admin: String,
    /// SMART Backend Services token endpoint.
    pub smart_token: String,
    /// FHIR base URL.
    pub fhir_base: String,
    /// SMART discovery document.
    pub smart_configuration: String,
    /// SMART App Launch authorization endpoint.
    pub smart_authorize: String,
    /// Dynamic client registration endpoint (RFC 7591).
    pub smart_register: String,
    /// CIBMTR Direct FHIR API base (`{base}/cibmtr/v1`): `PUT {cibmtr_base}/CRID` and the FHIR
    /// resources.
    pub cibmtr_base: String,
    /// The same CIBMTR FHIR API under the `/r3` root of later guide versions.
    pub cibmtr_fhir_r3: String,
    /// MSK-like (Blaze, R4) FHIR base; needs an MSK token and `researchstudy` on every request.
    pub msk_fhir: String,
    /// Aidbox-like (R4) FHIR base; needs a SMART Backend Services token.
    pub aidbox_fhir: String,
}

struct TokenInfo {
    client_id: String,
    scope: String,
    expires_at: Instant,
    generation: u64,
}

#[derive(Default)]
struct RateState {
    per_user: HashMap<String, (u64, u32)>,
    org: (u64, u32),
}

struct Inner {
    config: SandboxConfig,
    creds: SandboxCredentials,
    requests: Mutex<HashMap<String, u64>>,
    requests_total: AtomicU64,
    issued: AtomicU64,
    generation: AtomicU64,
    tokens: Mutex<HashMap<String, TokenInfo>>,
    faults: faults::FaultTable,
    rate: Mutex<RateState>,
    stores: fhir::Stores,
    crids: Mutex<cibmtr::CridRegistry>,
    base: String,
    smart: Mutex<smart::SmartState>,
    app: Mutex<app_launch::AppState>,
    /// Secrets and patient data seen on the wire, for leak tests.
    seen: wire::Seen,
    /// Requests are finished even when their client hangs up first.
    detached: Arc<std::sync::atomic::AtomicBool>,
}

impl Inner {
    fn count(&self, client_id: &str) {
        *self
            .requests
            .lock()
            .unwrap()
            .entry(client_id.to_string())
            .or_default() += 1;
        self.requests_total.fetch_add(1, Ordering::SeqCst);
    }

    fn issue(&self, client_id: &str, scope: &str, ttl: Duration) -> String {
        let mut bytes = [0u8; 48];
        rand::thread_rng().fill(&mut bytes[..]);
        let token = URL_SAFE_NO_PAD.encode(bytes);
        self.tokens.lock().unwrap().insert(
            token.clone(),
            TokenInfo {
                client_id: client_id.to_string(),
                scope: scope.to_string(),
                expires_at: Instant::now() + ttl,
                generation: self.generation.load(Ordering::SeqCst),
            },
        );
        self.issued.fetch_add(1, Ordering::SeqCst);
        token
    }
}

/// A running emulator; dropping it stops the server.
pub struct Sandbox {
    /// Endpoint URLs.
    pub urls: SandboxUrls,
    /// Registered credentials.
    pub credentials: SandboxCredentials,
    inner: Arc<Inner>,
    /// Dropping it (with the sandbox) stops the accept loop and every connection.
    _shutdown: watch::Sender<()>,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("urls", &self.urls)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

fn random_string(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

impl Sandbox {
    /// Binds `127.0.0.1:{config.port}` and serves on the current tokio runtime.
    pub async fn start(config: SandboxConfig) -> std::io::Result<Sandbox> {
        let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let base = format!("http://{addr}");
        let urls = SandboxUrls {
            okta_token: format!("{base}{OKTA_PATH}"),
            msk_token: format!("{base}{MSK_PATH}"),
            protected: format!("{base}/protected"),
            admin: format!("{base}/admin"),
            smart_token: format!("{base}{}", smart::TOKEN_PATH),
            fhir_base: format!("{base}/fhir"),
            smart_configuration: format!("{base}{}", smart::DISCOVERY_PATH),
            smart_authorize: format!("{base}{}", app_launch::AUTHORIZE_PATH),
            smart_register: format!("{base}{}", app_launch::REGISTER_PATH),
            cibmtr_base: format!("{base}{}", cibmtr::PATH),
            cibmtr_fhir_r3: format!("{base}{}/r3", cibmtr::PATH),
            msk_fhir: format!("{base}{}", fhir::MSK_PATH),
            aidbox_fhir: format!("{base}{}", fhir::AIDBOX_PATH),
            base,
        };
        let (backend_pem, backend_jwks, backend_kid) = smart::generate_es384();
        let credentials = SandboxCredentials {
            okta: OktaCredentials {
                token_url: urls.okta_token.clone(),
                client_id: format!("0oa{}", random_string(17)),
                client_secret: format!("{}%+:/ &={}", random_string(20), random_string(20)),
                username: "svc-sandbox@example.org".to_string(),
                password: format!("Pw-{}!", random_string(16)),
                scope: "cibmtr_fhir".to_string(),
            },
            msk: ClientCredentialsInfo {
                token_url: urls.msk_token.clone(),
                client_id: format!("msk-body-{}", random_string(12)),
                client_secret: random_string(32),
                scope: "full".to_string(),
            },
            msk_basic: ClientCredentialsInfo {
                token_url: urls.msk_token.clone(),
                client_id: format!("msk-basic-{}", random_string(12)),
                client_secret: format!("{}+%:{}", random_string(16), random_string(16)),
                scope: "full".to_string(),
            },
            backend: BackendCredentials {
                token_url: urls.smart_token.clone(),
                fhir_base: urls.fhir_base.clone(),
                client_id: "sandbox-backend".to_string(),
                private_key_pem: backend_pem,
                key_id: backend_kid,
                scope: "system/*.read".to_string(),
            },
            smart: SmartAppCredentials {
                fhir_base: urls.fhir_base.clone(),
                authorize_url: urls.smart_authorize.clone(),
                token_url: urls.smart_token.clone(),
                registration_url: urls.smart_register.clone(),
                client_id: format!("smart-app-{}", random_string(12)),
                client_secret: format!("{}+%:{}", random_string(16), random_string(16)),
                redirect_uri: "http://127.0.0.1:9/callback".to_string(),
                scope: "launch/patient patient/*.read offline_access openid fhirUser".to_string(),
                patient: "smart-1288992".to_string(),
            },
        };
        let app_state = app_launch::AppState::with_client(
            &credentials.smart.client_id,
            &credentials.smart.client_secret,
            &credentials.smart.redirect_uri,
        );
        let mut smart_state = smart::SmartState::default();
        smart_state
            .clients
            .insert("sandbox-backend".to_string(), backend_jwks);
        let seen = wire::Seen::default();
        for secret in [
            &credentials.okta.client_secret,
            &credentials.okta.password,
            &credentials.msk.client_secret,
            &credentials.msk_basic.client_secret,
            &credentials.backend.private_key_pem,
            &credentials.smart.client_secret,
        ] {
            seen.add_with_lines(secret);
        }
        let inner = Arc::new(Inner {
            seen,
            config,
            creds: credentials.clone(),
            requests: Mutex::new(HashMap::new()),
            requests_total: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            tokens: Mutex::new(HashMap::new()),
            faults: faults::FaultTable::default(),
            rate: Mutex::new(RateState::default()),
            stores: fhir::Stores::default(),
            crids: Mutex::new(cibmtr::CridRegistry::default()),
            base: urls.base.clone(),
            smart: Mutex::new(smart_state),
            app: Mutex::new(app_state),
            detached: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        });
        let router = Router::new()
            .route(OKTA_PATH, post(okta_token))
            .route(MSK_PATH, post(msk_token))
            .route("/protected", get(protected))
            .route(smart::TOKEN_PATH, post(smart::token))
            .route(smart::DISCOVERY_PATH, get(smart::discovery))
            .route("/admin/backend-clients", post(smart::admin_register))
            .route(app_launch::AUTHORIZE_PATH, get(app_launch::authorize))
            .route(app_launch::REGISTER_PATH, post(app_launch::register))
            .route("/admin/stats", get(admin_stats))
            .route("/admin/revoke", post(admin_revoke))
            .route(
                "/admin/faults",
                post(admin_set_fault).delete(admin_clear_faults),
            )
            .route(cibmtr::PATH, any(cibmtr::handle))
            .route(&format!("{}/", cibmtr::PATH), any(cibmtr::handle))
            .route(&format!("{}/{{*rest}}", cibmtr::PATH), any(cibmtr::handle))
            .route(fhir::MSK_PATH, any(fhir::msk))
            .route(&format!("{}/{{*rest}}", fhir::MSK_PATH), any(fhir::msk))
            .route(fhir::AIDBOX_PATH, any(fhir::aidbox))
            .route(
                &format!("{}/{{*rest}}", fhir::AIDBOX_PATH),
                any(fhir::aidbox),
            )
            .layer(axum::middleware::from_fn_with_state(
                inner.clone(),
                wire::record,
            ))
            .with_state(inner.clone());
        let (shutdown, stopped) = watch::channel(());
        faults::spawn_server(listener, router, stopped, inner.detached.clone());
        Ok(Sandbox {
            urls,
            credentials,
            inner,
            _shutdown: shutdown,
        })
    }

    /// Every secret and piece of patient data this sandbox has seen, for leak tests: its own
    /// client secrets, password and private key (whole and line by line); every access and
    /// refresh token it issued; every authorization code, PKCE verifier, client assertion,
    /// client secret and password presented to it; and every string of the demographics sent
    /// to its CRID service except the gender. Values shorter than 6 characters are left out (they
    /// would match innocent text), so a leak test should use names at least that long.
    pub fn secrets_seen(&self) -> Vec<String> {
        self.inner.seen.all()
    }

    /// Requests that reached a token route for `client_id` (faulted or not, success or failure).
    pub fn token_requests(&self, client_id: &str) -> u64 {
        self.inner
            .requests
            .lock()
            .unwrap()
            .get(client_id)
            .copied()
            .unwrap_or(0)
    }

    /// Requests that reached any token route.
    pub fn token_requests_total(&self) -> u64 {
        self.inner.requests_total.load(Ordering::SeqCst)
    }

    /// Access tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.inner.issued.load(Ordering::SeqCst)
    }

    /// Sets the fault on `route`, replacing any previous one.
    pub fn set_fault(&self, route: Route, fault: Fault) {
        self.inner.faults.set(route, fault);
    }

    /// Adds `fault` to the faults of `route`, keeping the others: each request is offered to the
    /// route's faults in the order they were added, and the first that hits answers. Several
    /// faults with small shares make a mix.
    pub fn add_fault(&self, route: Route, fault: Fault) {
        self.inner.faults.add(route, fault);
    }

    /// Makes a random `share` of the requests on `route` revoke every access token issued so far
    /// before they are answered (so that request, and every other carrying an old token, gets a
    /// 401): a token revoked server-side in the middle of a batch. 0 turns it off;
    /// [`clear_faults`](Self::clear_faults) does too.
    pub fn set_token_revocation(&self, route: Route, share: f64) {
        self.inner.faults.set_revocation(route, share);
    }

    /// Removes every fault and every token revocation switch.
    pub fn clear_faults(&self) {
        self.inner.faults.clear();
    }

    /// Whether a request is processed to the end even when its client hangs up first (default
    /// false: it is abandoned where it stands). With it on, a request held by a slow [`Fault`]
    /// past the client's timeout is still processed afterwards (its resource stored), as most
    /// servers do; dropped-connection faults behave the same either way.
    pub fn set_finish_after_hang_up(&self, on: bool) {
        self.inner.detached.store(on, Ordering::SeqCst);
    }

    /// Requests on `route` that a fault hit so far.
    pub fn faults_hit(&self, route: Route) -> u64 {
        self.inner.faults.hits(route)
    }

    /// Requests that reached `route` so far, faulted or not, successful or not.
    pub fn requests(&self, route: Route) -> u64 {
        self.inner.faults.requests(route)
    }

    /// Distinct patients registered through `PUT /CRID` (one per CRID handed out).
    pub fn crids_registered(&self) -> usize {
        self.inner.crids.lock().unwrap().len()
    }

    /// Patients stored by the CIBMTR API (as stored: redacted, with server ids).
    pub fn patients(&self) -> Vec<Value> {
        self.resources_of(Store::Cibmtr, "Patient")
    }

    /// Observations stored by the CIBMTR API.
    pub fn observations(&self) -> Vec<Value> {
        self.resources_of(Store::Cibmtr, "Observation")
    }

    /// Every resource held by `store`, in creation order (current versions).
    pub fn fhir_resources(&self, store: Store) -> Vec<Value> {
        self.inner.stores.get(store).lock().unwrap().all()
    }

    fn resources_of(&self, store: Store, rtype: &str) -> Vec<Value> {
        let store = self.inner.stores.get(store).lock().unwrap();
        store.of_type(rtype).cloned().collect()
    }

    /// Registers (or replaces) a SMART Backend Services client with its public JWKS
    /// (`{"keys":[...]}`, each key with a `kid`).
    pub fn register_backend_client(&self, client_id: &str, jwks: Value) -> Result<(), String> {
        smart::validate_jwks(&jwks)?;
        self.inner
            .smart
            .lock()
            .unwrap()
            .clients
            .insert(client_id.to_string(), jwks);
        Ok(())
    }

    /// Makes every access token issued so far invalid.
    pub fn revoke_all_tokens(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// How many times every token was revoked so far ([`revoke_all_tokens`](Self::revoke_all_tokens),
    /// `POST /admin/revoke` and [`set_token_revocation`](Self::set_token_revocation) hits).
    pub fn revocations(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }
}

// ---------- helpers ----------

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

fn invalid_client(description: &str) -> Response {
    oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description)
}

/// Percent-decodes a form-urlencoded component (`+` means space).
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `Some(Ok((id, secret)))` for valid Basic, `Some(Err(()))` for malformed, `None` if absent.
fn basic_auth(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let parse = || -> Option<(String, String)> {
        let raw = STANDARD.decode(rest.trim()).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (id, secret) = raw.split_once(':')?;
        Some((form_decode(id)?, form_decode(secret)?))
    };
    Some(parse().ok_or(()))
}

fn form(body: &Bytes) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The client id of the valid (known, unexpired, unrevoked) bearer token in `headers`.
pub(crate) fn bearer_client(inner: &Inner, headers: &HeaderMap) -> Option<String> {
    valid_bearer(inner, headers).map(|(client_id, _)| client_id)
}

/// Client id and scope of the valid bearer token in `headers`.
fn valid_bearer(inner: &Inner, headers: &HeaderMap) -> Option<(String, String)> {
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))?
        .1
        .trim();
    let generation = inner.generation.load(Ordering::SeqCst);
    let tokens = inner.tokens.lock().unwrap();
    let info = tokens.get(token)?;
    (info.generation == generation && info.expires_at > Instant::now())
        .then(|| (info.client_id.clone(), info.scope.clone()))
}

// ---------- handlers ----------

async fn okta_token(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let basic = basic_auth(&headers);
    let params = form(&body);
    let counted_id = match &basic {
        Some(Ok((id, _))) => id.clone(),
        _ => params
            .get("client_id")
            .cloned()
            .unwrap_or_else(|| "unknown".to_string()),
    };
    inner.count(&counted_id);

    if let Some(resp) = apply_fault(&inner, Route::OktaToken).await {
        return resp;
    }

    // Rate limits (the request is counted above even if limited).
    let now = epoch_secs();
    let username = params.get("username").cloned().unwrap_or_default();
    {
        let cfg = &inner.config;
        let mut rate = inner.rate.lock().unwrap();
        let minute = now / 60;
        if rate.org.0 != minute {
            rate.org = (minute, 0);
        }
        rate.org.1 += 1;
        let org_count = rate.org.1;
        let user = rate.per_user.entry(username).or_insert((now, 0));
        if user.0 != now {
            *user = (now, 0);
        }
        user.1 += 1;
        let user_count = user.1;
        let limited = if user_count > cfg.okta_rate_per_second {
            Some((cfg.okta_rate_per_second, now + 1))
        } else if org_count > cfg.okta_rate_per_minute {
            Some((cfg.okta_rate_per_minute, (minute + 1) * 60))
        } else {
            None
        };
        if let Some((limit, reset)) = limited {
            drop(rate);
            let body = json!({
                "errorCode": "E0000047",
                "errorSummary": "API call exceeded rate limit due to too many requests.",
                "errorLink": "E0000047",
                "errorId": "sandbox",
                "errorCauses": []
            });
            let mut resp = json_response(StatusCode::TOO_MANY_REQUESTS, body);
            let h = resp.headers_mut();
            h.insert("x-rate-limit-limit", HeaderValue::from(limit));
            h.insert("x-rate-limit-remaining", HeaderValue::from(0u32));
            h.insert("x-rate-limit-reset", HeaderValue::from(reset));
            return resp;
        }
    }

    let creds = &inner.creds.okta;
    match basic {
        Some(Ok((id, secret))) if id == creds.client_id && secret == creds.client_secret => {}
        Some(_) => return invalid_client("Invalid value for 'client_id' or 'client_secret'."),
        None => {
            return invalid_client(
                "Client authentication failed. Use HTTP Basic (client_secret_basic).",
            );
        }
    }
    if params.get("grant_type").map(String::as_str) != Some("password") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server.",
        );
    }
    if params.get("username") != Some(&creds.username)
        || params.get("password") != Some(&creds.password)
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The credentials provided were invalid.",
        );
    }
    let scope = params.get("scope").cloned().unwrap_or_default();
    let ttl = inner.config.okta_token_ttl;
    let token = inner.issue(&creds.client_id, &scope, ttl);
    json_response(
        StatusCode::OK,
        json!({
            "token_type": "Bearer",
            "expires_in": ttl.as_secs(),
            "access_token": token,
            "scope": scope,
        }),
    )
}

async fn msk_token(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let basic = basic_auth(&headers);
    let params = form(&body);
    let counted_id = match &basic {
        Some(Ok((id, _))) => id.clone(),
        _ => params
            .get("client_id")
            .cloned()
            .unwrap_or_else(|| "unknown".to_string()),
    };
    inner.count(&counted_id);

    if let Some(resp) = apply_fault(&inner, Route::MskToken).await {
        return resp;
    }

    let body_creds = &inner.creds.msk;
    let basic_creds = &inner.creds.msk_basic;
    let client_id = match basic {
        Some(Ok((id, secret))) => {
            if id != basic_creds.client_id {
                return invalid_client("Client authentication failed.");
            }
            if secret != basic_creds.client_secret {
                return invalid_client("Client authentication failed.");
            }
            id
        }
        Some(Err(())) => return invalid_client("Malformed Basic authorization."),
        None => {
            let id = params.get("client_id").cloned().unwrap_or_default();
            let secret = params.get("client_secret").cloned().unwrap_or_default();
            if id != body_creds.client_id || secret != body_creds.client_secret {
                return invalid_client("Client authentication failed.");
            }
            id
        }
    };
    if params.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server.",
        );
    }
    if params.get("scope").map(String::as_str) != Some("full") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "The requested scope is invalid, unknown, or malformed.",
        );
    }
    let ttl = inner.config.msk_token_ttl;
    let token = inner.issue(&client_id, "full", ttl);
    json_response(
        StatusCode::OK,
        json!({
            "token_type": "Bearer",
            "access_token": token,
            "scope": "full",
            "expires_in": ttl.as_secs(),
            "consented_on": epoch_secs(),
        }),
    )
}

async fn protected(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    if let Some(resp) = apply_fault(&inner, Route::Protected).await {
        return resp;
    }
    if let Some((client_id, scope)) = valid_bearer(&inner, &headers) {
        return json_response(
            StatusCode::OK,
            json!({"client_id": client_id, "scope": scope}),
        );
    }
    let mut resp = json_response(StatusCode::UNAUTHORIZED, json!({"error": "invalid_token"}));
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    resp
}

async fn admin_stats(State(inner): State<Arc<Inner>>) -> Response {
    let requests: serde_json::Map<String, Value> = inner
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let routes: serde_json::Map<String, Value> = Route::ALL
        .iter()
        .map(|r| (r.name().to_string(), json!(inner.faults.requests(*r))))
        .collect();
    let hits: serde_json::Map<String, Value> = Route::ALL
        .iter()
        .map(|r| (r.name().to_string(), json!(inner.faults.hits(*r))))
        .collect();
    json_response(
        StatusCode::OK,
        json!({
            "token_requests": requests,
            "token_requests_total": inner.requests_total.load(Ordering::SeqCst),
            "tokens_issued": inner.issued.load(Ordering::SeqCst),
            "routes": routes,
            "faults_hit": hits,
        }),
    )
}

/// Without a body: revokes every token issued so far. With `{"route": .., "share": ..}`: from
/// now on, that share of the route's requests revokes every token first (0 turns it off).
async fn admin_revoke(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    if body.iter().all(u8::is_ascii_whitespace) {
        inner.generation.fetch_add(1, Ordering::SeqCst);
        return StatusCode::NO_CONTENT.into_response();
    }
    #[derive(serde::Deserialize)]
    struct RevokeRequest {
        route: String,
        share: f64,
    }
    let req: RevokeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    };
    match req.route.parse::<Route>() {
        Ok(route) if req.share.is_finite() => {
            inner.faults.set_revocation(route, req.share);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(_) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "share must be a finite number",
        ),
        Err(e) => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e),
    }
}

#[derive(serde::Deserialize)]
struct FaultRequest {
    route: String,
    #[serde(default)]
    status: u16,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    times: u32,
    /// `"before"` or `"after"`.
    #[serde(default)]
    drop_connection: Option<String>,
    #[serde(default)]
    share: f64,
    /// Add to the route's faults instead of replacing them.
    #[serde(default)]
    add: bool,
}

async fn admin_set_fault(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let req: FaultRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    };
    let route: Route = match req.route.parse() {
        Ok(r) => r,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e),
    };
    let drop_connection = match req.drop_connection.as_deref().map(str::parse::<DropMode>) {
        None => None,
        Some(Ok(mode)) => Some(mode),
        Some(Err(e)) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e),
    };
    let fault = Fault {
        status: req.status,
        headers: req.headers.into_iter().collect(),
        body: req.body,
        delay: Duration::from_millis(req.delay_ms),
        times: req.times,
        drop_connection,
        share: req.share,
    };
    if req.add {
        inner.faults.add(route, fault);
    } else {
        inner.faults.set(route, fault);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_clear_faults(State(inner): State<Arc<Inner>>) -> StatusCode {
    inner.faults.clear();
    StatusCode::NO_CONTENT
}
