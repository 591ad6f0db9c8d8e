//! SMART Backend Services: `client_credentials` with a signed JWT client assertion
//! (`private_key_jwt`, RS384 / ES384 / RS256). Every token request carries a fresh assertion
//! (new `jti`, `exp` 240 s ahead); the token endpoint is given or discovered from
//! `{fhir_base}/.well-known/smart-configuration` on the first fetch.
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::UNIX_EPOCH;

use rand::Rng;
use serde::Serialize;

use super::cache::{BoxFuture, CacheKey, Fetch, TokenCell, TokenProvider, hex};
use super::keys::{KeyAlgorithm, PrivateKey};
use super::password::required;
use super::{RequestCounter, Token, TokenRequest, TokenStore, exchange, normalise_scopes};
use crate::error::{Error, Result};
use crate::http::HttpClient;
use crate::secret::Secret;

/// Lifetime of each client assertion (the spec caps it at 5 minutes).
pub const ASSERTION_LIFETIME_SECS: u64 = 240;
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The SMART Backend Services flow. Cheap to clone; equal configurations share one cached token.
#[derive(Clone)]
pub struct BackendServices {
    provider: TokenProvider,
    endpoint: Arc<Endpoint>,
    client_id: String,
    key_id: String,
    algorithm: KeyAlgorithm,
    scope: String,
}

/// Builds a [`BackendServices`]; see [`BackendServices::builder`].
pub struct BackendServicesBuilder {
    client_id: String,
    private_key: Secret,
    token_url: Option<String>,
    fhir_base: Option<String>,
    key_id: Option<String>,
    algorithm: KeyAlgorithm,
    scope: String,
    store: TokenStore,
    http: Option<HttpClient>,
}

/// The token endpoint: known, or discovered once and then remembered.
struct Endpoint {
    given: Option<(String, url::Url)>,
    fhir_base: Option<url::Url>,
    discovered: OnceLock<(String, url::Url)>,
}

impl Endpoint {
    fn known(&self) -> Option<&(String, url::Url)> {
        self.given.as_ref().or_else(|| self.discovered.get())
    }

    async fn resolve(&self, http: &HttpClient) -> Result<(String, url::Url)> {
        if let Some(k) = self.known() {
            return Ok(k.clone());
        }
        let base = self
            .fhir_base
            .as_ref()
            .ok_or_else(|| Error::validation("token_url", "token_url or fhir_base is required"))?;
        let found = super::smart_configuration(http, base).await?.token_endpoint;
        let _ = self.discovered.set(found.clone());
        Ok(self.discovered.get().cloned().unwrap_or(found))
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

struct Grant {
    endpoint: Arc<Endpoint>,
    client_id: String,
    key: jsonwebtoken::EncodingKey,
    key_id: String,
    algorithm: KeyAlgorithm,
    scope: String,
}

impl Grant {
    fn assertion(&self, aud: &str) -> Result<String> {
        let now = crate::clock::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let jti = hex(&rand::thread_rng().r#gen::<[u8; 16]>());
        let claims = Claims {
            iss: &self.client_id,
            sub: &self.client_id,
            aud,
            jti,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        let mut header = jsonwebtoken::Header::new(self.algorithm.jwt());
        header.kid = Some(self.key_id.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| Error::config(format!("cannot sign the client assertion: {e}")))
    }
}

impl Fetch for Grant {
    fn fetch<'a>(
        &'a self,
        http: &'a HttpClient,
        _previous: Option<&'a Token>,
        counter: &'a dyn RequestCounter,
    ) -> BoxFuture<'a, Result<Token>> {
        Box::pin(async move {
            let (aud, url) = self.endpoint.resolve(http).await?;
            let form = vec![
                ("grant_type", "client_credentials".to_owned()),
                ("client_assertion_type", ASSERTION_TYPE.to_owned()),
                ("client_assertion", self.assertion(&aud)?),
                ("scope", self.scope.clone()),
            ];
            exchange(
                http,
                TokenRequest {
                    url: &url,
                    form,
                    basic: None,
                },
                counter,
            )
            .await
        })
    }
}

impl BackendServices {
    /// `private_key`: PKCS#8, PKCS#1 or SEC1 PEM, or a private JWK (JSON).
    pub fn builder(
        client_id: impl Into<String>,
        private_key: impl Into<Secret>,
    ) -> BackendServicesBuilder {
        BackendServicesBuilder {
            client_id: client_id.into(),
            private_key: private_key.into(),
            token_url: None,
            fhir_base: None,
            key_id: None,
            algorithm: KeyAlgorithm::RS384,
            scope: "system/*.read".into(),
            store: TokenStore::Memory,
            http: None,
        }
    }
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }
    /// The token endpoint, if given or already discovered.
    pub fn token_url(&self) -> Option<&str> {
        self.endpoint.known().map(|(s, _)| s.as_str())
    }
}

impl fmt::Debug for BackendServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendServices")
            .field("token_url", &self.token_url())
            .field(
                "fhir_base",
                &self.endpoint.fhir_base.as_ref().map(|u| u.as_str()),
            )
            .field("client_id", &self.client_id)
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl BackendServicesBuilder {
    /// The token endpoint (used verbatim as the assertion's `aud`).
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = Some(url.into());
        self
    }
    /// The FHIR base; the token endpoint is discovered from its `.well-known/smart-configuration`.
    pub fn fhir_base(mut self, url: impl Into<String>) -> Self {
        self.fhir_base = Some(url.into());
        self
    }
    /// `kid` of the assertion header (default: the RFC 7638 thumbprint of the public key).
    pub fn key_id(mut self, kid: impl Into<String>) -> Self {
        self.key_id = Some(kid.into());
        self
    }
    pub fn algorithm(mut self, alg: KeyAlgorithm) -> Self {
        self.algorithm = alg;
        self
    }
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
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

    pub fn build(self) -> Result<BackendServices> {
        let http = self.http.unwrap_or_else(HttpClient::shared);
        required("client_id", &self.client_id)?;
        required("private_key", self.private_key.expose())?;
        required("scope", &self.scope)?;
        let key = PrivateKey::parse(self.private_key.expose())?;
        key.check_alg(self.algorithm)?;
        let key_id = match self.key_id.filter(|k| !k.trim().is_empty()) {
            Some(k) => k,
            None => key.thumbprint(),
        };
        let given = match self.token_url.filter(|u| !u.trim().is_empty()) {
            Some(u) => {
                let parsed = http.secure_url("token_url", &u)?;
                Some((u, parsed))
            }
            None => None,
        };
        let fhir_base = match self.fhir_base.filter(|u| !u.trim().is_empty()) {
            Some(u) => Some(http.secure_url("fhir_base", &u)?),
            None => None,
        };
        let cache_url = match (&given, &fhir_base) {
            (Some((s, _)), _) => s.clone(),
            (None, Some(b)) => format!("discover:{b}"),
            (None, None) => {
                return Err(Error::validation(
                    "token_url",
                    "token_url or fhir_base is required",
                ));
            }
        };
        let endpoint = Arc::new(Endpoint {
            given,
            fhir_base,
            discovered: OnceLock::new(),
        });
        let key_cache = CacheKey {
            flow: "backend_services",
            token_url: cache_url,
            client_id: self.client_id.clone(),
            user: format!("{}#{}", self.algorithm, key_id),
            scopes: normalise_scopes(Some(&self.scope)),
            secret_material: self.private_key.clone(),
        };
        let grant = Grant {
            endpoint: endpoint.clone(),
            client_id: self.client_id.clone(),
            key: key.encoding_key()?,
            key_id: key_id.clone(),
            algorithm: self.algorithm,
            scope: self.scope.clone(),
        };
        let cell = TokenCell::shared(key_cache, &self.store, http, Box::new(grant))?;
        Ok(BackendServices {
            provider: TokenProvider(cell),
            endpoint,
            client_id: self.client_id,
            key_id,
            algorithm: self.algorithm,
            scope: self.scope,
        })
    }
}

impl std::ops::Deref for BackendServices {
    type Target = TokenProvider;
    /// `token()`, `invalidate_token()`, `invalidate()` and `stats()` come from the provider.
    fn deref(&self) -> &TokenProvider {
        &self.provider
    }
}
