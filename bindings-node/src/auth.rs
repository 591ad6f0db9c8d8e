//! The four OAuth flows, key generation and client registration (core `auth`).
//!
//! Each flow object owns a place in the core's token cache: `token()` answers from the cache
//! when it can, and one token request serves every caller waiting at the same time. No flow
//! object shows a secret: its fields live in Rust (`util.inspect` prints `PasswordGrant {}`),
//! `toString()` and `toJSON()` give the core's redacted description.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cibmtr_fhir::auth::{self, KeyAlgorithm, TokenProvider, TokenStore};
use napi::Env;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::args::{self, HTTP_ONLY, Kind, text};
use crate::error::{CoreResult, OrThrow, invalid, settle};
use crate::http::{self, HTTP_CONFIG, HttpConfig};

/// `builder` with the `tokenStore` and `http` options every flow takes.
macro_rules! store_and_http {
    ($env:expr, $builder:expr, $options:ident) => {{
        let b = $builder.token_store(store($options.token_store).or_throw($env)?);
        match http::client($options.http).or_throw($env)? {
            Some(h) => b.http(h),
            None => b,
        }
    }};
}

/// The JavaScript types of the options every flow shares.
macro_rules! flow_options {
    ($name:literal $(, $key:literal => $kind:expr)* $(,)?) => {
        Kind::Options(
            $name,
            &[
                $(($key, $kind),)*
                ("tokenStore", Kind::Text),
                ("http", HTTP_CONFIG),
            ],
        )
    };
}

/// Counters of a flow's token cache.
#[napi(object, object_from_js = false)]
pub struct TokenStats {
    /// HTTP requests sent to the token endpoint, retries included.
    pub token_requests: i64,
    /// `token()` calls answered from the cache.
    pub cache_hits: i64,
    /// New tokens obtained to replace an existing one.
    pub refreshes: i64,
    /// Failed attempts to obtain a token.
    pub failures: i64,
}

/// `tokenStore`: absent (this process), a file path, or a `redis://` / `rediss://` URL (a fleet
/// sharing one token; the key comes from `$CIBMTR_FHIR_STORE_KEY`), as the core parses it.
fn store(location: Option<String>) -> CoreResult<TokenStore> {
    location
        .map(TokenStore::parse)
        .transpose()
        .map(Option::unwrap_or_default)
}

fn algorithm(alg: Option<String>) -> CoreResult<KeyAlgorithm> {
    alg.as_deref()
        .map(str::parse)
        .transpose()
        .map(Option::unwrap_or_default)
}

/// The Promise `token()` returns. A fresh cached token (the core's `fresh_token()`: before the
/// refresh-ahead margin, no I/O, counted as a cache hit exactly as `token()` counts it) resolves
/// a Promise made here on the JavaScript thread: no task, no trip through the runtime's threads.
/// Otherwise (no token yet, refresh-ahead due, expired) the core's `token()` runs on the runtime
/// like any other call, so a refresh, its signing and any store I/O never run on this thread,
/// and a failure rejects the Promise.
fn token_promise<'env>(
    env: &'env Env,
    provider: &TokenProvider,
) -> Result<Either<PromiseRaw<'env, String>, AsyncBlock<String>>> {
    if let Some(fresh) = provider.fresh_token() {
        let resolved = PromiseRaw::<&str>::resolve(env, fresh.secret())?;
        return Ok(Either::A(PromiseRaw::new(env.raw(), resolved.raw())));
    }
    let provider = provider.clone();
    settle(env, async move {
        Ok(provider.token().await?.secret().to_owned())
    })
    .map(Either::B)
}

/// `token()`, `invalidate()`, `invalidateToken()`, `stats()`, `toString()` and `toJSON()`: what
/// every flow offers through the core's `TokenProvider`.
macro_rules! token_provider {
    ($flow:ident) => {
        #[napi]
        impl $flow {
            /// A valid access token: from the cache, or obtained (once, however many callers
            /// wait) and refreshed ahead of expiry.
            #[napi(ts_return_type = "Promise<string>")]
            pub fn token<'env>(
                &self,
                env: &'env Env,
            ) -> Result<Either<PromiseRaw<'env, String>, AsyncBlock<String>>> {
                token_promise(env, &self.inner)
            }

            /// Drops the current token; the next `token()` obtains a new one.
            #[napi]
            pub fn invalidate(&self) {
                self.provider().invalidate()
            }

            /// Drops `token` if it is still the current one (after a 401); says whether it did.
            #[napi]
            pub fn invalidate_token(&self, token: String) -> bool {
                self.provider().invalidate_token(&token)
            }

            /// Token requests, cache hits, refreshes and failures so far.
            #[napi]
            pub fn stats(&self) -> TokenStats {
                let s = self.provider().stats();
                TokenStats {
                    token_requests: s.token_requests as i64,
                    cache_hits: s.cache_hits as i64,
                    refreshes: s.refreshes as i64,
                    failures: s.failures as i64,
                }
            }

            /// The flow's settings without any secret.
            #[napi(js_name = "toString")]
            pub fn describe(&self) -> String {
                format!("{:?}", self.inner)
            }

            /// The flow's settings without any secret (what `JSON.stringify` shows).
            #[napi(js_name = "toJSON")]
            pub fn to_json(&self) -> String {
                format!("{:?}", self.inner)
            }
        }

        impl $flow {
            pub(crate) fn provider(&self) -> TokenProvider {
                (*self.inner).clone()
            }
        }
    };
}

/// Options of `PasswordGrant`.
#[napi(object)]
#[derive(Default)]
pub struct PasswordGrantOptions {
    /// Scopes to ask for (CIBMTR: `cibmtr_fhir`).
    pub scope: Option<String>,
    /// Where the token is shared: a file (mode 0600) for the processes of one host, or a
    /// `redis://` / `rediss://` URL for a fleet (key in `$CIBMTR_FHIR_STORE_KEY`); default: memory.
    pub token_store: Option<String>,
    /// Timeouts, a proxy, extra CA certificates and retry bounds for this flow's requests.
    pub http: Option<HttpConfig>,
}

/// CIBMTR's token flow: Okta's password grant (`grant_type=password`, client id and secret as
/// HTTP Basic).
#[napi]
pub struct PasswordGrant {
    inner: auth::PasswordGrant,
}

#[napi]
impl PasswordGrant {
    /// Checks every argument before any request (`VALIDATION`, or `CONFIG` for plain http to a
    /// host that is not loopback).
    #[napi(constructor)]
    pub fn new(
        env: Env,
        #[napi(ts_arg_type = "string")] token_url: Unknown<'_>,
        #[napi(ts_arg_type = "string")] client_id: Unknown<'_>,
        #[napi(ts_arg_type = "string")] client_secret: Unknown<'_>,
        #[napi(ts_arg_type = "string")] username: Unknown<'_>,
        #[napi(ts_arg_type = "string")] password: Unknown<'_>,
        #[napi(ts_arg_type = "PasswordGrantOptions | undefined | null")] options: Option<
            Unknown<'_>,
        >,
    ) -> Result<Self> {
        const OPTIONS: Kind = flow_options!("PasswordGrantOptions", "scope" => Kind::Text);
        let mut b = auth::PasswordGrant::builder(
            text(&env, "tokenUrl", token_url)?,
            text(&env, "clientId", client_id)?,
            text(&env, "clientSecret", client_secret)?,
            text(&env, "username", username)?,
            text(&env, "password", password)?,
        );
        let o: PasswordGrantOptions = args::options(&env, &OPTIONS, options)?;
        b = store_and_http!(&env, b, o);
        if let Some(s) = o.scope {
            b = b.scope(s);
        }
        Ok(PasswordGrant {
            inner: b.build().or_throw(&env)?,
        })
    }
}
token_provider!(PasswordGrant);

/// Options of `ClientCredentials`.
#[napi(object)]
#[derive(Default)]
pub struct ClientCredentialsOptions {
    /// Scopes to ask for (MSK: `full`).
    pub scope: Option<String>,
    /// Where the secret goes (default `client_secret_post`).
    #[napi(ts_type = "'client_secret_post' | 'client_secret_basic'")]
    pub auth_method: Option<String>,
    /// Where the token is shared: a file (mode 0600) for the processes of one host, or a
    /// `redis://` / `rediss://` URL for a fleet (key in `$CIBMTR_FHIR_STORE_KEY`); default: memory.
    pub token_store: Option<String>,
    /// Timeouts, a proxy, extra CA certificates and retry bounds for this flow's requests.
    pub http: Option<HttpConfig>,
}

/// The client-credentials grant with a shared secret (MSK's Blaze).
#[napi]
pub struct ClientCredentials {
    inner: auth::ClientCredentials,
}

#[napi]
impl ClientCredentials {
    #[napi(constructor)]
    pub fn new(
        env: Env,
        #[napi(ts_arg_type = "string")] token_url: Unknown<'_>,
        #[napi(ts_arg_type = "string")] client_id: Unknown<'_>,
        #[napi(ts_arg_type = "string")] client_secret: Unknown<'_>,
        #[napi(ts_arg_type = "ClientCredentialsOptions | undefined | null")] options: Option<
            Unknown<'_>,
        >,
    ) -> Result<Self> {
        const OPTIONS: Kind = flow_options!(
            "ClientCredentialsOptions",
            "scope" => Kind::Text,
            "authMethod" => Kind::Text,
        );
        let mut b = auth::ClientCredentials::builder(
            text(&env, "tokenUrl", token_url)?,
            text(&env, "clientId", client_id)?,
            text(&env, "clientSecret", client_secret)?,
        );
        let o: ClientCredentialsOptions = args::options(&env, &OPTIONS, options)?;
        b = store_and_http!(&env, b, o);
        if let Some(s) = o.scope {
            b = b.scope(s);
        }
        if let Some(m) = o.auth_method {
            b = b.auth_method(m.parse().or_throw(&env)?);
        }
        Ok(ClientCredentials {
            inner: b.build().or_throw(&env)?,
        })
    }
}
token_provider!(ClientCredentials);

/// Options of `BackendServices`.
#[napi(object)]
#[derive(Default)]
pub struct BackendServicesOptions {
    /// The token endpoint (also the assertion's `aud`).
    pub token_url: Option<String>,
    /// The FHIR base: the token endpoint is discovered from its `.well-known/smart-configuration`.
    pub fhir_base: Option<String>,
    /// `kid` of the assertion (default: the RFC 7638 thumbprint of the key).
    pub key_id: Option<String>,
    /// Signing algorithm (default `RS384`).
    #[napi(ts_type = "KeyAlgorithm")]
    pub algorithm: Option<String>,
    /// Scopes to ask for (default `system/*.read`).
    pub scope: Option<String>,
    /// Where the token is shared: a file (mode 0600) for the processes of one host, or a
    /// `redis://` / `rediss://` URL for a fleet (key in `$CIBMTR_FHIR_STORE_KEY`); default: memory.
    pub token_store: Option<String>,
    /// Timeouts, a proxy, extra CA certificates and retry bounds for this flow's requests.
    pub http: Option<HttpConfig>,
}

/// SMART Backend Services: client credentials with a freshly signed JWT assertion per request.
#[napi]
pub struct BackendServices {
    inner: auth::BackendServices,
}

#[napi]
impl BackendServices {
    /// `privateKey`: PKCS#8, PKCS#1 or SEC1 PEM, or a private JWK as JSON text.
    #[napi(constructor)]
    pub fn new(
        env: Env,
        #[napi(ts_arg_type = "string")] client_id: Unknown<'_>,
        #[napi(ts_arg_type = "string")] private_key: Unknown<'_>,
        #[napi(ts_arg_type = "BackendServicesOptions | undefined | null")] options: Option<
            Unknown<'_>,
        >,
    ) -> Result<Self> {
        const OPTIONS: Kind = flow_options!(
            "BackendServicesOptions",
            "tokenUrl" => Kind::Text,
            "fhirBase" => Kind::Text,
            "keyId" => Kind::Text,
            "algorithm" => Kind::Text,
            "scope" => Kind::Text,
        );
        let b = auth::BackendServices::builder(
            text(&env, "clientId", client_id)?,
            text(&env, "privateKey", private_key)?,
        );
        let o: BackendServicesOptions = args::options(&env, &OPTIONS, options)?;
        let b = b.algorithm(algorithm(o.algorithm).or_throw(&env)?);
        let mut b = store_and_http!(&env, b, o);
        if let Some(u) = o.token_url {
            b = b.token_url(u);
        }
        if let Some(u) = o.fhir_base {
            b = b.fhir_base(u);
        }
        if let Some(k) = o.key_id {
            b = b.key_id(k);
        }
        if let Some(s) = o.scope {
            b = b.scope(s);
        }
        Ok(BackendServices {
            inner: b.build().or_throw(&env)?,
        })
    }

    /// The `kid` the assertions carry.
    #[napi(getter)]
    pub fn key_id(&self) -> String {
        self.inner.key_id().to_owned()
    }
}
token_provider!(BackendServices);

/// Options of `AuthorizationCode`.
#[napi(object)]
#[derive(Default)]
pub struct AuthorizationCodeOptions {
    /// Makes the client confidential (HTTP Basic at the token endpoint).
    pub client_secret: Option<String>,
    /// The FHIR base: discovery, and the `aud` parameter.
    pub fhir_base: Option<String>,
    /// Needed with `tokenUrl` when there is no `fhirBase`.
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    /// Where the token is shared: a file (mode 0600) for the processes of one host, or a
    /// `redis://` / `rediss://` URL for a fleet (key in `$CIBMTR_FHIR_STORE_KEY`); default: memory.
    pub token_store: Option<String>,
    /// A session name: with `tokenStore`, another process resumes the same login.
    pub session: Option<String>,
    /// Timeouts, a proxy, extra CA certificates and retry bounds for this flow's requests.
    pub http: Option<HttpConfig>,
}

/// Options of `AuthorizationCode.restore`.
#[napi(object)]
#[derive(Default)]
pub struct RestoreOptions {
    pub refresh_token: Option<String>,
    /// When the access token expires, in milliseconds since the epoch (`Date.now()`,
    /// `date.getTime()`); default: now, so the first `token()` refreshes.
    pub expires_at: Option<f64>,
}

/// SMART App Launch (standalone): authorization code with PKCE, `state` and `aud`, refresh with
/// rotation, and the launch context.
#[napi]
pub struct AuthorizationCode {
    inner: auth::AuthorizationCode,
}

#[napi]
impl AuthorizationCode {
    #[napi(constructor)]
    pub fn new(
        env: Env,
        #[napi(ts_arg_type = "string")] client_id: Unknown<'_>,
        #[napi(ts_arg_type = "string")] redirect_uri: Unknown<'_>,
        #[napi(ts_arg_type = "string")] scope: Unknown<'_>,
        #[napi(ts_arg_type = "AuthorizationCodeOptions | undefined | null")] options: Option<
            Unknown<'_>,
        >,
    ) -> Result<Self> {
        const OPTIONS: Kind = flow_options!(
            "AuthorizationCodeOptions",
            "clientSecret" => Kind::Text,
            "fhirBase" => Kind::Text,
            "authorizeUrl" => Kind::Text,
            "tokenUrl" => Kind::Text,
            "session" => Kind::Text,
        );
        let mut b = auth::AuthorizationCode::builder(
            text(&env, "clientId", client_id)?,
            text(&env, "redirectUri", redirect_uri)?,
            text(&env, "scope", scope)?,
        );
        let o: AuthorizationCodeOptions = args::options(&env, &OPTIONS, options)?;
        b = store_and_http!(&env, b, o);
        if let Some(s) = o.client_secret {
            b = b.client_secret(s);
        }
        if let Some(u) = o.fhir_base {
            b = b.fhir_base(u);
        }
        if let Some(u) = o.authorize_url {
            b = b.authorize_url(u);
        }
        if let Some(u) = o.token_url {
            b = b.token_url(u);
        }
        if let Some(s) = o.session {
            b = b.session(s);
        }
        Ok(AuthorizationCode {
            inner: b.build().or_throw(&env)?,
        })
    }

    /// The URL to open in the user's browser; `state` and the PKCE verifier stay inside.
    #[napi]
    pub fn authorization_url(&self, env: Env) -> Result<AsyncBlock<String>> {
        let flow = self.inner.clone();
        settle(&env, async move { flow.authorization_url().await })
    }

    /// Finishes the login from the URL the browser was redirected to: checks `state`, exchanges
    /// the code.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn complete(
        &self,
        env: Env,
        #[napi(ts_arg_type = "string")] redirect_url: Unknown<'_>,
    ) -> Result<AsyncBlock<()>> {
        let redirect_url = text(&env, "redirectUrl", redirect_url)?;
        let flow = self.inner.clone();
        settle(&env, async move { flow.complete(&redirect_url).await })
    }

    /// The launch context of the latest token response (`patient`, `encounter`, `scope`, ...),
    /// never a token.
    #[napi(getter)]
    pub fn context(&self) -> serde_json::Value {
        self.inner.context()
    }

    /// Resumes a session from saved tokens.
    #[napi]
    pub fn restore(
        &self,
        env: Env,
        access_token: String,
        options: Option<RestoreOptions>,
    ) -> Result<()> {
        let o = options.unwrap_or_default();
        let expires_at = match o.expires_at {
            None => SystemTime::now(),
            Some(ms) if ms.is_finite() && ms >= 0.0 => {
                UNIX_EPOCH + Duration::from_millis(ms as u64)
            }
            Some(_) => {
                return Err(invalid("expiresAt", "must be a time after 1970")).or_throw(&env);
            }
        };
        self.inner
            .restore(access_token, o.refresh_token.map(Into::into), expires_at)
            .or_throw(&env)
    }
}
token_provider!(AuthorizationCode);

/// A client registered with `registerClient` or `registerPublicClient`. The secret is
/// readable as `clientSecret` but never shown by `util.inspect` or `JSON.stringify`.
#[napi]
pub struct RegisteredClient {
    inner: auth::RegisteredClient,
}

#[napi]
impl RegisteredClient {
    #[napi(getter)]
    pub fn client_id(&self) -> String {
        self.inner.client_id.clone()
    }
    /// Absent for a public client.
    #[napi(getter)]
    pub fn client_secret(&self) -> Option<String> {
        self.inner
            .client_secret
            .as_ref()
            .map(|s| s.expose().to_owned())
    }
    #[napi(js_name = "toJSON")]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "clientId": self.inner.client_id })
    }
}

/// Options of `registerClient` and `registerPublicClient`.
#[napi(object, object_to_js = false)]
#[derive(Default)]
pub struct RegisterClientOptions {
    /// Timeouts, a proxy, extra CA certificates and retry bounds for the registration request.
    pub http: Option<HttpConfig>,
}

const REGISTER_OPTIONS: Kind = Kind::Options("RegisterClientOptions", HTTP_ONLY);

/// The positional arguments of `registerClient` and `registerPublicClient`.
struct Registration {
    registration_url: String,
    client_name: String,
    redirect_uris: Vec<String>,
    scope: String,
}

impl Registration {
    fn new(
        env: &Env,
        registration_url: Unknown<'_>,
        client_name: Unknown<'_>,
        redirect_uris: Unknown<'_>,
        scope: Unknown<'_>,
    ) -> Result<Self> {
        Ok(Registration {
            registration_url: text(env, "registrationUrl", registration_url)?,
            client_name: text(env, "clientName", client_name)?,
            redirect_uris: args::arg(env, "redirectUris", &Kind::Texts, redirect_uris)?,
            scope: text(env, "scope", scope)?,
        })
    }
}

/// Registers a confidential client (RFC 7591 dynamic registration).
#[napi]
pub fn register_client(
    env: Env,
    #[napi(ts_arg_type = "string")] registration_url: Unknown<'_>,
    #[napi(ts_arg_type = "string")] client_name: Unknown<'_>,
    #[napi(ts_arg_type = "Array<string>")] redirect_uris: Unknown<'_>,
    #[napi(ts_arg_type = "string")] scope: Unknown<'_>,
    #[napi(ts_arg_type = "RegisterClientOptions | undefined | null")] options: Option<Unknown<'_>>,
) -> Result<AsyncBlock<RegisteredClient>> {
    let registration =
        Registration::new(&env, registration_url, client_name, redirect_uris, scope)?;
    let config = args::options::<RegisterClientOptions>(&env, &REGISTER_OPTIONS, options)?.http;
    let Registration {
        registration_url,
        client_name,
        redirect_uris,
        scope,
    } = registration;
    settle(&env, async move {
        let http = http::client_or_shared(config)?;
        let inner = auth::register_client(
            &http,
            &registration_url,
            &client_name,
            &redirect_uris,
            &scope,
        )
        .await?;
        Ok(RegisteredClient { inner })
    })
}

/// Registers a public client (no secret; PKCE protects the code).
#[napi]
pub fn register_public_client(
    env: Env,
    #[napi(ts_arg_type = "string")] registration_url: Unknown<'_>,
    #[napi(ts_arg_type = "string")] client_name: Unknown<'_>,
    #[napi(ts_arg_type = "Array<string>")] redirect_uris: Unknown<'_>,
    #[napi(ts_arg_type = "string")] scope: Unknown<'_>,
    #[napi(ts_arg_type = "RegisterClientOptions | undefined | null")] options: Option<Unknown<'_>>,
) -> Result<AsyncBlock<RegisteredClient>> {
    let registration =
        Registration::new(&env, registration_url, client_name, redirect_uris, scope)?;
    let config = args::options::<RegisterClientOptions>(&env, &REGISTER_OPTIONS, options)?.http;
    let Registration {
        registration_url,
        client_name,
        redirect_uris,
        scope,
    } = registration;
    settle(&env, async move {
        let http = http::client_or_shared(config)?;
        let inner = auth::register_public_client(
            &http,
            &registration_url,
            &client_name,
            &redirect_uris,
            &scope,
        )
        .await?;
        Ok(RegisteredClient { inner })
    })
}

/// A key pair for Backend Services: the private key (readable as `privatePem`, never shown by
/// `util.inspect` or `JSON.stringify`) and the public JWKS to register with the server.
#[napi]
pub struct GeneratedKey {
    inner: auth::GeneratedKey,
}

#[napi]
impl GeneratedKey {
    /// The private key, PKCS#8 PEM.
    #[napi(getter)]
    pub fn private_pem(&self) -> String {
        self.inner.private_pem.expose().to_owned()
    }
    /// The RFC 7638 thumbprint of the public key.
    #[napi(getter)]
    pub fn key_id(&self) -> String {
        self.inner.key_id.clone()
    }
    #[napi(getter, ts_return_type = "KeyAlgorithm")]
    pub fn algorithm(&self) -> String {
        self.inner.algorithm.as_str().to_owned()
    }
    /// The public JWK Set (`{ keys: [...] }`).
    #[napi(getter)]
    pub fn jwks(&self) -> serde_json::Value {
        self.inner.jwks.clone()
    }
    #[napi(js_name = "toJSON")]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "keyId": self.inner.key_id,
            "algorithm": self.inner.algorithm.as_str(),
            "jwks": self.inner.jwks,
        })
    }
}

/// Generates a key pair (RSA 2048 for `RS384`/`RS256`, P-384 for `ES384`) off the JavaScript
/// thread.
#[napi(ts_args_type = "algorithm?: KeyAlgorithm")]
pub fn generate_key(env: Env, algorithm: Option<Unknown<'_>>) -> Result<AsyncBlock<GeneratedKey>> {
    let algorithm: Option<String> = args::opt(&env, "algorithm", &Kind::Text, algorithm)?;
    settle(&env, async move {
        let alg = self::algorithm(algorithm)?;
        let inner = tokio::task::spawn_blocking(move || auth::generate_key(alg))
            .await
            .map_err(|_| cibmtr_fhir::Error::Config {
                message: "key generation was interrupted".into(),
            })??;
        Ok(GeneratedKey { inner })
    })
}

/// The public JWK Set of a private key (PEM or private JWK).
#[napi(ts_args_type = "privateKey: string, algorithm?: KeyAlgorithm")]
pub fn public_jwks(
    env: Env,
    private_key: Unknown<'_>,
    algorithm: Option<Unknown<'_>>,
) -> Result<serde_json::Value> {
    let private_key = text(&env, "privateKey", private_key)?;
    let algorithm: Option<String> = args::opt(&env, "algorithm", &Kind::Text, algorithm)?;
    let alg = self::algorithm(algorithm).or_throw(&env)?;
    auth::public_jwks(&private_key, alg).or_throw(&env)
}
