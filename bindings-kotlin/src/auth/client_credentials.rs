//! `ClientCredentials`: the client-credentials grant (MSK's Blaze).
use std::sync::Arc;

use crate::error::Result;
use crate::http::HttpOptions;

/// The client-credentials grant: the secret in the form body (`client_secret_post`, default) or
/// as HTTP Basic (`client_secret_basic`).
#[derive(uniffi::Object)]
#[uniffi::export(Debug)]
pub struct ClientCredentials(pub(crate) cibmtr_fhir::auth::ClientCredentials);

#[uniffi::export]
impl ClientCredentials {
    /// `authMethod`: `client_secret_post` or `client_secret_basic`; `tokenStore`: a file path
    /// shared by processes, or `null` for memory; `http`: timeouts, proxy, CAs and retry bounds
    /// of its token requests.
    #[uniffi::constructor(default(
        scope = None,
        auth_method = "client_secret_post",
        token_store = None,
        http = None
    ))]
    pub fn new(
        token_url: String,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
        auth_method: String,
        token_store: Option<String>,
        http: Option<HttpOptions>,
    ) -> Result<Arc<Self>> {
        let mut b =
            cibmtr_fhir::auth::ClientCredentials::builder(token_url, client_id, client_secret)
                .auth_method(auth_method.parse()?)
                .token_store(super::token_store(token_store)?);
        if let Some(s) = scope {
            b = b.scope(s);
        }
        if let Some(h) = crate::http::client(http)? {
            b = b.http(h);
        }
        Ok(Arc::new(ClientCredentials(b.build()?)))
    }
}

super::token_flow!(ClientCredentials);
