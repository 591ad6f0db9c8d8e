//! Okta's resource-owner password grant, as CIBMTR uses it: `grant_type=password` with
//! `username`, `password` and `scope` in the form body and the client id/secret as HTTP Basic.
use std::fmt;

use super::cache::{BoxFuture, CacheKey, Fetch, TokenCell, TokenProvider};
use super::{RequestCounter, Token, TokenRequest, TokenStore, exchange, normalise_scopes};
use crate::error::{Error, Result};
use crate::http::HttpClient;
use crate::secret::Secret;

/// CIBMTR's token flow. Cheap to clone; clones (and any other `PasswordGrant` with the same
/// URL, client, user, scopes and secrets) share one cached token.
#[derive(Clone)]
pub struct PasswordGrant {
    provider: TokenProvider,
    token_url: String,
    client_id: String,
    username: String,
    scope: Option<String>,
}

/// Builds a [`PasswordGrant`]; see [`PasswordGrant::builder`].
pub struct PasswordGrantBuilder {
    token_url: String,
    client_id: String,
    client_secret: Secret,
    username: String,
    password: Secret,
    scope: Option<String>,
    store: TokenStore,
    http: Option<HttpClient>,
}

struct Grant {
    url: url::Url,
    client_id: String,
    client_secret: Secret,
    username: String,
    password: Secret,
    scope: Option<String>,
}

impl Fetch for Grant {
    fn fetch<'a>(
        &'a self,
        http: &'a HttpClient,
        _previous: Option<&'a Token>,
        counter: &'a dyn RequestCounter,
    ) -> BoxFuture<'a, Result<Token>> {
        Box::pin(async move {
            let mut form = vec![
                ("grant_type", "password".to_owned()),
                ("username", self.username.clone()),
                ("password", self.password.expose().to_owned()),
            ];
            if let Some(s) = &self.scope {
                form.push(("scope", s.clone()));
            }
            exchange(
                http,
                TokenRequest {
                    url: &self.url,
                    form,
                    basic: Some((&self.client_id, &self.client_secret)),
                },
                counter,
            )
            .await
        })
    }
}

pub(crate) fn required(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        Err(Error::validation(
            field,
            "is required and must not be empty",
        ))
    } else {
        Ok(())
    }
}

impl PasswordGrant {
    /// Starts a builder with the five required values; `scope`, `token_store` and `http` are optional.
    pub fn builder(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<Secret>,
        username: impl Into<String>,
        password: impl Into<Secret>,
    ) -> PasswordGrantBuilder {
        PasswordGrantBuilder {
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            username: username.into(),
            password: password.into(),
            scope: None,
            store: TokenStore::Memory,
            http: None,
        }
    }
}

impl fmt::Debug for PasswordGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordGrant")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl PasswordGrantBuilder {
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
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

    /// Validates every field (before any request) and joins the shared cache.
    pub fn build(self) -> Result<PasswordGrant> {
        let http = self.http.unwrap_or_else(HttpClient::shared);
        required("client_id", &self.client_id)?;
        required("client_secret", self.client_secret.expose())?;
        required("username", &self.username)?;
        required("password", self.password.expose())?;
        let url = http.secure_url("token_url", &self.token_url)?;
        let scope = self.scope.filter(|s| !s.trim().is_empty());
        let key = CacheKey {
            flow: "password",
            token_url: url.to_string(),
            client_id: self.client_id.clone(),
            user: self.username.clone(),
            scopes: normalise_scopes(scope.as_deref()),
            secret_material: Secret::new(format!(
                "{}\u{0}{}",
                self.client_secret.expose(),
                self.password.expose()
            )),
        };
        let grant = Grant {
            url,
            client_id: self.client_id.clone(),
            client_secret: self.client_secret,
            username: self.username.clone(),
            password: self.password,
            scope: scope.clone(),
        };
        let cell = TokenCell::shared(key, &self.store, http, Box::new(grant))?;
        Ok(PasswordGrant {
            provider: TokenProvider(cell),
            token_url: self.token_url,
            client_id: self.client_id,
            username: self.username,
            scope,
        })
    }
}

impl std::ops::Deref for PasswordGrant {
    type Target = TokenProvider;
    /// `token()`, `invalidate_token()`, `invalidate()` and `stats()` come from the provider.
    fn deref(&self) -> &TokenProvider {
        &self.provider
    }
}
