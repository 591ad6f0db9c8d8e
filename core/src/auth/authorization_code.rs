//! SMART App Launch (standalone): the authorization-code grant with PKCE (S256), `state`, the
//! `aud` parameter, refresh tokens and dynamic client registration (RFC 7591).
//!
//! 1. [`AuthorizationCode::authorization_url`] gives the URL to open in the user's browser (the
//!    `state` and PKCE verifier stay inside the flow object, never shown by `Debug`).
//! 2. [`AuthorizationCode::complete`] takes the URL the browser was redirected to, checks `state`
//!    and exchanges the code.
//! 3. `token()` (through `Deref` to [`TokenProvider`]) then refreshes with the refresh token, at
//!    most one refresh at a time (servers that rotate refresh tokens revoke the whole grant when a
//!    rotated token is presented twice, so single-flight refresh is a correctness requirement).
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use rand::Rng;
use serde_json::{Map, Value};

use super::cache::{BoxFuture, CacheKey, Fetch, TokenCell, TokenProvider, hex};
use super::password::required;
use super::{RequestCounter, Token, TokenRequest, TokenStore, exchange, normalise_scopes};
use crate::error::{Error, Result};
use crate::http::HttpClient;
use crate::secret::Secret;

/// The SMART App Launch flow for one user session. Cheap to clone; clones share the session
/// (its pending login, tokens and launch context). Two separately built flows never share tokens.
#[derive(Clone)]
pub struct AuthorizationCode {
    provider: TokenProvider,
    shared: Arc<Shared>,
}

/// Builds an [`AuthorizationCode`]; see [`AuthorizationCode::builder`].
pub struct AuthorizationCodeBuilder {
    client_id: String,
    client_secret: Option<Secret>,
    redirect_uri: String,
    scope: String,
    fhir_base: Option<String>,
    authorize_url: Option<String>,
    token_url: Option<String>,
    store: TokenStore,
    http: Option<HttpClient>,
    session: Option<String>,
}

/// `state` and PKCE verifier of the login in progress.
struct Pending {
    state: Secret,
    verifier: Secret,
}

struct Shared {
    client_id: String,
    client_secret: Option<Secret>,
    redirect_uri: String,
    scope: String,
    fhir_base: Option<url::Url>,
    given: (Option<url::Url>, Option<url::Url>),
    /// (authorization_endpoint, token_endpoint) from discovery.
    discovered: OnceLock<(Option<url::Url>, url::Url)>,
    pending: Mutex<Option<Pending>>,
    context: Mutex<Map<String, Value>>,
    /// The newest refresh token, kept even when the cached access token is invalidated.
    refresh: Mutex<Option<Secret>>,
}

impl Shared {
    async fn discover(&self, http: &HttpClient) -> Result<&(Option<url::Url>, url::Url)> {
        if let Some(d) = self.discovered.get() {
            return Ok(d);
        }
        let base = self.fhir_base.as_ref().ok_or_else(|| {
            Error::validation(
                "fhir_base",
                "fhir_base is required unless authorize_url and token_url are given",
            )
        })?;
        let found = super::smart_configuration(http, base).await?;
        let (authorize, token) = (found.authorization_endpoint, found.token_endpoint.1);
        let _ = self.discovered.set((authorize, token));
        Ok(self.discovered.get().expect("just set"))
    }

    async fn authorize_endpoint(&self, http: &HttpClient) -> Result<url::Url> {
        if let Some(u) = &self.given.0 {
            return Ok(u.clone());
        }
        self.discover(http)
            .await?
            .0
            .clone()
            .ok_or_else(|| Error::Network {
                message: "smart-configuration has no authorization_endpoint".into(),
            })
    }

    async fn token_endpoint(&self, http: &HttpClient) -> Result<url::Url> {
        if let Some(u) = &self.given.1 {
            return Ok(u.clone());
        }
        Ok(self.discover(http).await?.1.clone())
    }

    /// Client authentication: HTTP Basic for a confidential client, `client_id` in the form for
    /// a public one.
    async fn request(
        &self,
        http: &HttpClient,
        mut form: Vec<(&'static str, String)>,
        counter: &dyn RequestCounter,
    ) -> Result<Token> {
        let url = self.token_endpoint(http).await?;
        let basic = match &self.client_secret {
            Some(secret) => Some((self.client_id.as_str(), secret)),
            None => {
                form.push(("client_id", self.client_id.clone()));
                None
            }
        };
        let token = exchange(
            http,
            TokenRequest {
                url: &url,
                form,
                basic,
            },
            counter,
        )
        .await?;
        let mut ctx = self.context.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in &token.extra {
            ctx.insert(k.clone(), v.clone());
        }
        if let Some(s) = &token.scope {
            ctx.insert("scope".into(), Value::String(s.clone()));
        }
        Ok(token)
    }
}

struct Grant {
    shared: Arc<Shared>,
}

impl Fetch for Grant {
    fn fetch<'a>(
        &'a self,
        http: &'a HttpClient,
        previous: Option<&'a Token>,
        counter: &'a dyn RequestCounter,
    ) -> BoxFuture<'a, Result<Token>> {
        Box::pin(async move {
            let refresh = previous.and_then(|p| p.refresh_token.clone()).or_else(|| {
                self.shared
                    .refresh
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            });
            let Some(refresh) = refresh else {
                return Err(login_required());
            };
            let form = vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", refresh.expose().to_owned()),
            ];
            let mut token = self.shared.request(http, form, counter).await?;
            if token.refresh_token.is_none() {
                // Non-rotating server: the presented refresh token stays valid.
                token.refresh_token = Some(refresh.clone());
            }
            if let Some(prev) = previous {
                for (k, v) in &prev.extra {
                    token.extra.entry(k.clone()).or_insert_with(|| v.clone());
                }
                if token.scope.is_none() {
                    token.scope = prev.scope.clone();
                }
            }
            *self
                .shared
                .refresh
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = token.refresh_token.clone();
            Ok(token)
        })
    }
}

fn login_required() -> Error {
    Error::Auth {
        error: "login_required".into(),
        description: Some("call authorization_url() and complete() first".into()),
        status: None,
    }
}

impl AuthorizationCode {
    /// Starts a builder. Give `fhir_base` (discovery, and the `aud` parameter) or both
    /// `authorize_url` and `token_url`; a `client_secret` makes the client confidential.
    pub fn builder(
        client_id: impl Into<String>,
        redirect_uri: impl Into<String>,
        scope: impl Into<String>,
    ) -> AuthorizationCodeBuilder {
        AuthorizationCodeBuilder {
            client_id: client_id.into(),
            client_secret: None,
            redirect_uri: redirect_uri.into(),
            scope: scope.into(),
            fhir_base: None,
            authorize_url: None,
            token_url: None,
            store: TokenStore::Memory,
            http: None,
            session: None,
        }
    }

    /// The URL to open in the user's browser. Each call starts a new login (new `state` and PKCE
    /// verifier), replacing any login in progress.
    pub async fn authorization_url(&self) -> Result<String> {
        let http = &self.provider.0.http_client();
        let mut url = self.shared.authorize_endpoint(http).await?;
        let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256();
        let state = oauth2::CsrfToken::new_random();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.shared.client_id)
                .append_pair("redirect_uri", &self.shared.redirect_uri)
                .append_pair("scope", &self.shared.scope)
                .append_pair("state", state.secret())
                .append_pair("code_challenge", challenge.as_str())
                .append_pair("code_challenge_method", "S256");
            if let Some(aud) = &self.shared.fhir_base {
                q.append_pair("aud", aud.as_str().trim_end_matches('/'));
            }
        }
        *self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Pending {
            state: Secret::new(state.secret().clone()),
            verifier: Secret::new(verifier.secret().clone()),
        });
        Ok(url.into())
    }

    /// Finishes the login from the URL the browser was redirected to: checks `state` (before any
    /// request), exchanges the code with the PKCE verifier, and caches the token.
    pub async fn complete(&self, redirect_url: &str) -> Result<()> {
        let (code, verifier) = {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let code = read_redirect(redirect_url, pending.as_ref().map(|p| &p.state))?;
            // The state matched: this login is over, with or without a code.
            let verifier = pending.take().expect("checked above").verifier;
            (code.ok_or_else(no_code)?, verifier)
        };
        let form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code),
            ("redirect_uri", self.shared.redirect_uri.clone()),
            ("code_verifier", verifier.expose().to_owned()),
        ];
        let cell = &self.provider.0;
        let token = self
            .shared
            .request(&cell.http_client(), form, cell.counter())
            .await?;
        *self
            .shared
            .refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = token.refresh_token.clone();
        cell.install(token)
    }

    /// The launch context of the latest token response (`patient`, `encounter`, `scope`,
    /// `id_token`, `need_patient_banner`, ...). Never contains the access or refresh token.
    pub fn context(&self) -> Value {
        Value::Object(
            self.shared
                .context
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// Resumes a session from saved tokens (no login needed while the refresh token is valid).
    pub fn restore(
        &self,
        access_token: impl Into<Secret>,
        refresh_token: Option<Secret>,
        expires_at: SystemTime,
    ) -> Result<()> {
        let now = crate::clock::now();
        let token = Token {
            access_token: access_token.into(),
            issued_at: now.min(expires_at),
            expires_at,
            refresh_token,
            scope: None,
            extra: Map::new(),
        };
        *self
            .shared
            .refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = token.refresh_token.clone();
        self.provider.0.install(token)
    }
}

/// The authorization code in the URL the browser was redirected to, once its `state` is that of
/// the login in progress (`expected`; `None` if it carries none); the server's `error` if it sent
/// one; never anything from a redirect that is not the answer to our own request.
pub(crate) fn read_redirect(
    redirect_url: &str,
    expected: Option<&Secret>,
) -> Result<Option<String>> {
    let url = url::Url::parse(redirect_url)
        .map_err(|_| Error::validation("redirect_url", "is not a valid URL"))?;
    let get = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(error) = get("error") {
        return Err(Error::Auth {
            error,
            description: get("error_description"),
            status: None,
        });
    }
    let matches = match (expected, get("state")) {
        (Some(p), Some(s)) => constant_time_eq(p.expose().as_bytes(), s.as_bytes()),
        _ => false,
    };
    if !matches {
        return Err(Error::Auth {
            error: "state_mismatch".into(),
            description: Some("the redirect's state does not match the login in progress".into()),
            status: None,
        });
    }
    Ok(get("code").filter(|c| !c.is_empty()))
}

fn no_code() -> Error {
    Error::Auth {
        error: "invalid_request".into(),
        description: Some("the redirect has no code".into()),
        status: None,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl fmt::Debug for AuthorizationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pending = self
            .shared
            .pending
            .lock()
            .map(|p| p.is_some())
            .unwrap_or(false);
        f.debug_struct("AuthorizationCode")
            .field("client_id", &self.shared.client_id)
            .field("confidential", &self.shared.client_secret.is_some())
            .field("redirect_uri", &self.shared.redirect_uri)
            .field("scope", &self.shared.scope)
            .field(
                "fhir_base",
                &self.shared.fhir_base.as_ref().map(|u| u.as_str()),
            )
            .field("login_pending", &pending)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl AuthorizationCodeBuilder {
    /// Makes the client confidential (HTTP Basic at the token endpoint).
    pub fn client_secret(mut self, secret: impl Into<Secret>) -> Self {
        self.client_secret = Some(secret.into());
        self
    }
    /// FHIR base URL: discovery of the endpoints and the `aud` parameter.
    pub fn fhir_base(mut self, url: impl Into<String>) -> Self {
        self.fhir_base = Some(url.into());
        self
    }
    pub fn authorize_url(mut self, url: impl Into<String>) -> Self {
        self.authorize_url = Some(url.into());
        self
    }
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = Some(url.into());
        self
    }
    pub fn token_store(mut self, store: TokenStore) -> Self {
        self.store = store;
        self
    }
    pub fn http(mut self, http: HttpClient) -> Self {
        self.http = Some(http);
        self
    }
    /// Names the user session, so that objects in other processes built with the same name,
    /// client and [`TokenStore::File`] resume it: they read the tokens from the store and take
    /// turns refreshing them under the store's lock (a rotated refresh token presented twice
    /// revokes the whole grant on strict servers). Without a name every object is a session of
    /// its own.
    pub fn session(mut self, name: impl Into<String>) -> Self {
        self.session = Some(name.into());
        self
    }

    /// Validates every field (before any request).
    pub fn build(self) -> Result<AuthorizationCode> {
        let http = self.http.unwrap_or_else(HttpClient::shared);
        required("client_id", &self.client_id)?;
        required("redirect_uri", &self.redirect_uri)?;
        required("scope", &self.scope)?;
        if let Some(s) = &self.client_secret {
            required("client_secret", s.expose())?;
        }
        url::Url::parse(&self.redirect_uri)
            .map_err(|_| Error::validation("redirect_uri", "is not a valid URL"))?;
        let fhir_base = self
            .fhir_base
            .as_deref()
            .map(|u| http.secure_url("fhir_base", u))
            .transpose()?;
        let authorize = self
            .authorize_url
            .as_deref()
            .map(|u| http.secure_url("authorize_url", u))
            .transpose()?;
        let token = self
            .token_url
            .as_deref()
            .map(|u| http.secure_url("token_url", u))
            .transpose()?;
        if fhir_base.is_none() && (authorize.is_none() || token.is_none()) {
            return Err(Error::validation(
                "fhir_base",
                "fhir_base is required unless authorize_url and token_url are given",
            ));
        }
        if let Some(name) = &self.session {
            required("session", name)?;
        }
        let session = match &self.session {
            Some(name) => format!("named:{name}"),
            None => hex(&rand::thread_rng().r#gen::<[u8; 16]>()),
        };
        let key = CacheKey {
            flow: "authorization_code",
            token_url: token
                .as_ref()
                .or(fhir_base.as_ref())
                .map(|u| u.to_string())
                .unwrap_or_default(),
            client_id: self.client_id.clone(),
            // Every flow object is its own user session unless the caller names it.
            user: session,
            scopes: normalise_scopes(Some(&self.scope)),
            secret_material: self
                .client_secret
                .clone()
                .unwrap_or_else(|| Secret::new("")),
        };
        let shared = Arc::new(Shared {
            client_id: self.client_id,
            client_secret: self.client_secret,
            redirect_uri: self.redirect_uri,
            scope: self.scope,
            fhir_base,
            given: (authorize, token),
            discovered: OnceLock::new(),
            pending: Mutex::new(None),
            context: Mutex::new(Map::new()),
            refresh: Mutex::new(None),
        });
        let cell = TokenCell::shared(
            key,
            &self.store,
            http,
            Box::new(Grant {
                shared: shared.clone(),
            }),
        )?;
        Ok(AuthorizationCode {
            provider: TokenProvider(cell),
            shared,
        })
    }
}

impl std::ops::Deref for AuthorizationCode {
    type Target = TokenProvider;
    /// `token()`, `invalidate_token()`, `invalidate()` and `stats()` come from the provider.
    fn deref(&self) -> &TokenProvider {
        &self.provider
    }
}

/// A client registered with [`register_client`]. `Debug` never shows the secret.
#[derive(Clone, Debug)]
pub struct RegisteredClient {
    pub client_id: String,
    /// Absent for a public client.
    pub client_secret: Option<Secret>,
}

/// Registers a confidential client (RFC 7591 dynamic registration, `client_secret_basic`).
pub async fn register_client(
    http: &HttpClient,
    registration_url: &str,
    client_name: &str,
    redirect_uris: &[String],
    scope: &str,
) -> Result<RegisteredClient> {
    register(
        http,
        registration_url,
        client_name,
        redirect_uris,
        scope,
        "client_secret_basic",
    )
    .await
}

/// Registers a public client (`token_endpoint_auth_method: none`; PKCE protects the code).
pub async fn register_public_client(
    http: &HttpClient,
    registration_url: &str,
    client_name: &str,
    redirect_uris: &[String],
    scope: &str,
) -> Result<RegisteredClient> {
    register(
        http,
        registration_url,
        client_name,
        redirect_uris,
        scope,
        "none",
    )
    .await
}

async fn register(
    http: &HttpClient,
    registration_url: &str,
    client_name: &str,
    redirect_uris: &[String],
    scope: &str,
    method: &str,
) -> Result<RegisteredClient> {
    let url = http.secure_url("registration_url", registration_url)?;
    if redirect_uris.is_empty() {
        return Err(Error::validation(
            "redirect_uris",
            "at least one is required",
        ));
    }
    let body = serde_json::json!({
        "client_name": client_name,
        "redirect_uris": redirect_uris,
        "scope": scope,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": method,
    });
    let resp = http
        .client(url.as_str())?
        .post(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&body)
        .send()
        .await
        .map_err(|e| Error::network(&e))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| Error::network(&e))?;
    if !(status.as_u16() == 201 || status.as_u16() == 200) {
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        return match v.get("error").and_then(Value::as_str) {
            Some(e) => Err(Error::Auth {
                error: e.into(),
                description: v
                    .get("error_description")
                    .and_then(Value::as_str)
                    .map(Into::into),
                status: Some(status.as_u16()),
            }),
            None => Err(Error::Http {
                status: status.as_u16(),
                message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                outcome: None,
            }),
        };
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| Error::Network {
        message: "registration response is not JSON".into(),
    })?;
    let client_id = v
        .get("client_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::Network {
            message: "registration response has no client_id".into(),
        })?;
    let client_secret = v
        .get("client_secret")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(Secret::new);
    Ok(RegisteredClient {
        client_id: client_id.into(),
        client_secret,
    })
}
