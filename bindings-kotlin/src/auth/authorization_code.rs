//! `AuthorizationCode`: SMART App Launch (authorization code + PKCE), and RFC 7591 registration.
use std::sync::Arc;
use std::time::SystemTime;

use cibmtr_fhir::Secret;
use cibmtr_fhir::http::HttpClient;

use crate::error::Result;
use crate::http::HttpOptions;
use crate::runtime::{block, run};

/// SMART App Launch for one user session: `authorizationUrl()` → the user's browser →
/// `complete(redirectUrl)`; then `token()` refreshes with the refresh token. Give `fhirBase`
/// (discovery and `aud`) or both `authorizeUrl` and `tokenUrl`; a `clientSecret` makes the
/// client confidential.
#[derive(uniffi::Object)]
#[uniffi::export(Debug)]
pub struct AuthorizationCode(pub(crate) cibmtr_fhir::auth::AuthorizationCode);

/// A client registered with `registerClient` or `registerPublicClient`.
#[derive(Debug, Clone, uniffi::Record)]
pub struct RegisteredClient {
    pub client_id: String,
    /// Absent for a public client.
    pub client_secret: Option<Secret>,
}

#[uniffi::export]
impl AuthorizationCode {
    /// `session`: a name under which processes sharing the `tokenStore` file resume the session;
    /// `http`: timeouts, proxy, CAs and retry bounds of its discovery and token requests.
    #[uniffi::constructor(default(
        client_secret = None,
        fhir_base = None,
        authorize_url = None,
        token_url = None,
        token_store = None,
        session = None,
        http = None
    ))]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client_id: String,
        redirect_uri: String,
        scope: String,
        client_secret: Option<String>,
        fhir_base: Option<String>,
        authorize_url: Option<String>,
        token_url: Option<String>,
        token_store: Option<String>,
        session: Option<String>,
        http: Option<HttpOptions>,
    ) -> Result<Arc<Self>> {
        let mut b = cibmtr_fhir::auth::AuthorizationCode::builder(client_id, redirect_uri, scope)
            .token_store(super::token_store(token_store)?);
        if let Some(s) = client_secret {
            b = b.client_secret(s);
        }
        if let Some(u) = fhir_base {
            b = b.fhir_base(u);
        }
        if let Some(u) = authorize_url {
            b = b.authorize_url(u);
        }
        if let Some(u) = token_url {
            b = b.token_url(u);
        }
        if let Some(n) = session {
            b = b.session(n);
        }
        if let Some(h) = crate::http::client(http)? {
            b = b.http(h);
        }
        Ok(Arc::new(AuthorizationCode(b.build()?)))
    }

    /// The URL to open in the user's browser; starts a new login (new `state` and PKCE verifier).
    pub async fn authorization_url(&self) -> Result<String> {
        let flow = self.0.clone();
        run(async move { flow.authorization_url().await }).await
    }
    /// `authorizationUrl()`, blocking the calling thread (for Java).
    pub fn authorization_url_blocking(&self) -> Result<String> {
        block(self.authorization_url())
    }

    /// Finishes the login from the URL the browser was redirected to: checks `state`, exchanges
    /// the code.
    pub async fn complete(&self, redirect_url: String) -> Result<()> {
        let flow = self.0.clone();
        run(async move { flow.complete(&redirect_url).await }).await
    }
    /// `complete()`, blocking the calling thread (for Java).
    pub fn complete_blocking(&self, redirect_url: String) -> Result<()> {
        block(self.complete(redirect_url))
    }

    /// The launch context of the latest token response (`patient`, `encounter`, `scope`, ...) as
    /// a JSON object; never the tokens.
    pub fn context(&self) -> String {
        self.0.context().to_string()
    }

    /// Resumes a session from saved tokens.
    #[uniffi::method(default(refresh_token = None))]
    pub fn restore(
        &self,
        access_token: String,
        expires_at: SystemTime,
        refresh_token: Option<String>,
    ) -> Result<()> {
        Ok(self
            .0
            .restore(access_token, refresh_token.map(Secret::new), expires_at)?)
    }
}

super::token_flow!(AuthorizationCode);

/// Registers a confidential client (RFC 7591, `client_secret_basic`); `http`: timeouts, proxy,
/// CAs and retry bounds of the request.
#[uniffi::export(default(http = None))]
pub async fn register_client(
    registration_url: String,
    client_name: String,
    redirect_uris: Vec<String>,
    scope: String,
    http: Option<HttpOptions>,
) -> Result<RegisteredClient> {
    let http = crate::http::client(http)?.unwrap_or_else(HttpClient::shared);
    run(async move {
        let c = cibmtr_fhir::auth::register_client(
            &http,
            &registration_url,
            &client_name,
            &redirect_uris,
            &scope,
        )
        .await?;
        Ok(RegisteredClient {
            client_id: c.client_id,
            client_secret: c.client_secret,
        })
    })
    .await
}

/// `registerClient()`, blocking the calling thread (for Java).
#[uniffi::export(default(http = None))]
pub fn register_client_blocking(
    registration_url: String,
    client_name: String,
    redirect_uris: Vec<String>,
    scope: String,
    http: Option<HttpOptions>,
) -> Result<RegisteredClient> {
    block(register_client(
        registration_url,
        client_name,
        redirect_uris,
        scope,
        http,
    ))
}

/// Registers a public client (`token_endpoint_auth_method: none`; PKCE protects the code).
#[uniffi::export(default(http = None))]
pub async fn register_public_client(
    registration_url: String,
    client_name: String,
    redirect_uris: Vec<String>,
    scope: String,
    http: Option<HttpOptions>,
) -> Result<RegisteredClient> {
    let http = crate::http::client(http)?.unwrap_or_else(HttpClient::shared);
    run(async move {
        let c = cibmtr_fhir::auth::register_public_client(
            &http,
            &registration_url,
            &client_name,
            &redirect_uris,
            &scope,
        )
        .await?;
        Ok(RegisteredClient {
            client_id: c.client_id,
            client_secret: c.client_secret,
        })
    })
    .await
}

/// `registerPublicClient()`, blocking the calling thread (for Java).
#[uniffi::export(default(http = None))]
pub fn register_public_client_blocking(
    registration_url: String,
    client_name: String,
    redirect_uris: Vec<String>,
    scope: String,
    http: Option<HttpOptions>,
) -> Result<RegisteredClient> {
    block(register_public_client(
        registration_url,
        client_name,
        redirect_uris,
        scope,
        http,
    ))
}
