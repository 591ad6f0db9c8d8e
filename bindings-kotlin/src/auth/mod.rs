//! Token flows: the four core flows, each behind its own cache, and the `Auth` interface that
//! `FhirClient` and `CibmtrClient` accept so that any flow can be passed to them.
use std::sync::Arc;

use crate::error::Result;
use crate::runtime::{block, run};

mod authorization_code;
mod backend_services;
mod client_credentials;
mod keys;
mod password;

pub use authorization_code::{AuthorizationCode, RegisteredClient};
pub use backend_services::BackendServices;
pub use client_credentials::ClientCredentials;
pub use keys::GeneratedKey;
pub use password::PasswordGrant;

/// Something that hands out access tokens: every flow (`PasswordGrant`, `ClientCredentials`,
/// `BackendServices`, `AuthorizationCode`) is one. Pass a flow wherever an `Auth` is asked for.
///
/// To see what the flows and clients do (token requests, refreshes, retries, rate-limit waits),
/// start the JVM with `CIBMTR_FHIR_LOG=debug` (or `error`, `warn`, `info`, `trace`): the native
/// library prints its events to the process's standard error (file descriptor 2, not
/// `System.err`), never a secret or patient data.
#[uniffi::export(foreign)]
pub trait Auth: Send + Sync {
    /// The flow's token cache. (Fallible so that a foreign implementation that throws or, from
    /// Java, returns `null` is a `Config` error of the call that used it, not a native panic.)
    fn token_provider(&self) -> Result<Arc<TokenProvider>>;
}

/// The token cache of a flow: shared by every object built with the same URL, client, user,
/// scopes and secret.
#[derive(uniffi::Object)]
#[uniffi::export(Debug)]
pub struct TokenProvider(pub(crate) cibmtr_fhir::auth::TokenProvider);

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Counters of a token cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct CacheStats {
    /// Requests sent to the token endpoint, retries included.
    pub token_requests: i64,
    /// `token()` calls answered from the cache.
    pub cache_hits: i64,
    /// New tokens obtained to replace an existing one.
    pub refreshes: i64,
    /// Failed attempts to obtain a token.
    pub failures: i64,
}

impl From<cibmtr_fhir::auth::CacheStats> for CacheStats {
    fn from(s: cibmtr_fhir::auth::CacheStats) -> Self {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        CacheStats {
            token_requests: n(s.token_requests),
            cache_hits: n(s.cache_hits),
            refreshes: n(s.refreshes),
            failures: n(s.failures),
        }
    }
}

#[uniffi::export]
impl TokenProvider {
    /// A valid access token, from the cache when possible (refreshed ahead of expiry).
    pub async fn token(&self) -> Result<String> {
        token(self.0.clone()).await
    }
    /// `token()`, blocking the calling thread (for Java).
    pub fn token_blocking(&self) -> Result<String> {
        block(self.token())
    }
    /// Drops the current token; the next `token()` obtains a new one.
    pub fn invalidate(&self) {
        self.0.invalidate()
    }
    /// Token requests, cache hits, refreshes and failures so far.
    pub fn stats(&self) -> CacheStats {
        self.0.stats().into()
    }
}

/// The token methods every flow has (`token`, `tokenBlocking`, `invalidate`, `stats`) and its
/// `Auth` implementation, for a newtype whose field derefs to the core `TokenProvider`.
macro_rules! token_flow {
    ($flow:ident) => {
        #[uniffi::export]
        impl $flow {
            /// A valid access token, from the cache when possible (refreshed ahead of expiry).
            pub async fn token(&self) -> $crate::error::Result<String> {
                $crate::auth::token(::cibmtr_fhir::auth::TokenProvider::clone(&self.0)).await
            }
            /// `token()`, blocking the calling thread (for Java).
            pub fn token_blocking(&self) -> $crate::error::Result<String> {
                $crate::runtime::block(self.token())
            }
            /// Drops the current token; the next `token()` obtains a new one.
            pub fn invalidate(&self) {
                self.0.invalidate()
            }
            /// Token requests, cache hits, refreshes and failures so far.
            pub fn stats(&self) -> $crate::auth::CacheStats {
                self.0.stats().into()
            }
        }

        #[uniffi::export]
        impl $crate::auth::Auth for $flow {
            fn token_provider(
                &self,
            ) -> $crate::error::Result<::std::sync::Arc<$crate::auth::TokenProvider>> {
                Ok(::std::sync::Arc::new($crate::auth::TokenProvider(
                    ::cibmtr_fhir::auth::TokenProvider::clone(&self.0),
                )))
            }
        }

        impl ::std::fmt::Debug for $flow {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}
pub(crate) use token_flow;

/// The access token of `provider`: a fresh cached one at once, else obtained on the binding's
/// runtime.
pub(crate) async fn token(provider: cibmtr_fhir::auth::TokenProvider) -> Result<String> {
    if let Some(fresh) = provider.fresh_token() {
        return Ok(fresh.secret().to_owned());
    }
    run(async move { Ok(provider.token().await?.secret().to_owned()) }).await
}

/// `None` (memory), a file path shared by processes, or a `redis://` URL shared by hosts (see
/// the core's `TokenStore::parse`).
pub(crate) fn token_store(location: Option<String>) -> Result<cibmtr_fhir::auth::TokenStore> {
    match location.filter(|p| !p.trim().is_empty()) {
        Some(p) => Ok(cibmtr_fhir::auth::TokenStore::parse(&p)?),
        None => Ok(cibmtr_fhir::auth::TokenStore::Memory),
    }
}
