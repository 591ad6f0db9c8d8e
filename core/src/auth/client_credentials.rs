//! The client-credentials grant with a shared secret, as MSK's Blaze server uses it:
//! `grant_type=client_credentials`, `scope`, and the client id/secret in the form body
//! (`client_secret_post`, the default) or as HTTP Basic (`client_secret_basic`).
use std::fmt;
use std::str::FromStr;

use super::cache::{BoxFuture, CacheKey, Fetch, TokenCell, TokenProvider};
use super::password::required;
use super::{RequestCounter, Token, TokenRequest, TokenStore, exchange, normalise_scopes};
use crate::error::{Error, Result};
use crate::http::HttpClient;
use crate::secret::Secret;

/// Where the client secret goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// In the form body (`client_id`, `client_secret`): what MSK documents.
    #[default]
    ClientSecretPost,
    /// As HTTP Basic, form-urlencoded first (RFC 6749 §2.3.1).
    ClientSecretBasic,
}

impl FromStr for ClientAuthMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "client_secret_post" => Ok(ClientAuthMethod::ClientSecretPost),
            "client_secret_basic" => Ok(ClientAuthMethod::ClientSecretBasic),
            _ => Err(Error::validation(
                "auth_method",
                "must be \"client_secret_post\" or \"client_secret_basic\"",
            )),
        }
    }
}

/// The MSK flow. Cheap to clone; equal configurations share one cached token.
#[derive(Clone)]
pub struct ClientCredentials {
    provider: TokenProvider,
    token_url: String,
    client_id: String,
    scope: Option<String>,
    auth_method: ClientAuthMethod,
}

/// Builds a [`ClientCredentials`]; see [`ClientCredentials::builder`].
pub struct ClientCredentialsBuilder {
    token_url: String,
    client_id: String,
    client_secret: Secret,
    scope: Option<String>,
    auth_method: ClientAuthMethod,
    store: TokenStore,
    http: Option<HttpClient>,
}

struct Grant {
    url: url::Url,
    client_id: String,
    client_secret: Secret,
    scope: Option<String>,
    auth_method: ClientAuthMethod,
}

impl Fetch for Grant {
    fn fetch<'a>(
        &'a self,
        http: &'a HttpClient,
        _previous: Option<&'a Token>,
        counter: &'a dyn RequestCounter,
    ) -> BoxFuture<'a, Result<Token>> {
        Box::pin(async move {
            let mut form = vec![("grant_type", "client_credentials".to_owned())];
            if let Some(s) = &self.scope {
                form.push(("scope", s.clone()));
            }
            let basic = match self.auth_method {
                ClientAuthMethod::ClientSecretBasic => {
                    Some((self.client_id.as_str(), &self.client_secret))
                }
                ClientAuthMethod::ClientSecretPost => {
                    form.push(("client_id", self.client_id.clone()));
                    form.push(("client_secret", self.client_secret.expose().to_owned()));
                    None
                }
            };
            exchange(
                http,
                TokenRequest {
                    url: &self.url,
                    form,
                    basic,
                },
                counter,
            )
            .await
        })
    }
}

impl ClientCredentials {
    pub fn builder(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<Secret>,
    ) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder {
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scope: None,
            auth_method: ClientAuthMethod::default(),
            store: TokenStore::Memory,
            http: None,
        }
    }
    pub fn auth_method(&self) -> ClientAuthMethod {
        self.auth_method
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .field("auth_method", &self.auth_method)
            .finish_non_exhaustive()
    }
}

impl ClientCredentialsBuilder {
    /// Scopes to ask for (MSK: `full`).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }
    pub fn auth_method(mut self, m: ClientAuthMethod) -> Self {
        self.auth_method = m;
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

    pub fn build(self) -> Result<ClientCredentials> {
        let http = self.http.unwrap_or_else(HttpClient::shared);
        required("client_id", &self.client_id)?;
        required("client_secret", self.client_secret.expose())?;
        let url = http.secure_url("token_url", &self.token_url)?;
        let scope = self.scope.filter(|s| !s.trim().is_empty());
        let key = CacheKey {
            flow: match self.auth_method {
                ClientAuthMethod::ClientSecretPost => "client_credentials/post",
                ClientAuthMethod::ClientSecretBasic => "client_credentials/basic",
            },
            token_url: url.to_string(),
            client_id: self.client_id.clone(),
            user: String::new(),
            scopes: normalise_scopes(scope.as_deref()),
            secret_material: self.client_secret.clone(),
        };
        let grant = Grant {
            url,
            client_id: self.client_id.clone(),
            client_secret: self.client_secret,
            scope: scope.clone(),
            auth_method: self.auth_method,
        };
        let cell = TokenCell::shared(key, &self.store, http, Box::new(grant))?;
        Ok(ClientCredentials {
            provider: TokenProvider(cell),
            token_url: self.token_url,
            client_id: self.client_id,
            scope,
            auth_method: self.auth_method,
        })
    }
}

impl std::ops::Deref for ClientCredentials {
    type Target = TokenProvider;
    /// `token()`, `invalidate_token()`, `invalidate()` and `stats()` come from the provider.
    fn deref(&self) -> &TokenProvider {
        &self.provider
    }
}
