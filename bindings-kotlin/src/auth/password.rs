//! `PasswordGrant`: the resource-owner password grant (CIBMTR's Okta).
use std::sync::Arc;

use crate::error::Result;
use crate::http::HttpOptions;

/// The password grant (CIBMTR via Okta): username, password and scope in the form body, the
/// client id and secret as HTTP Basic. Every argument is checked when the object is built.
#[derive(uniffi::Object)]
#[uniffi::export(Debug)]
pub struct PasswordGrant(pub(crate) cibmtr_fhir::auth::PasswordGrant);

#[uniffi::export]
impl PasswordGrant {
    /// `tokenStore`: a file path shared by processes (mode 0600), or `null` for memory; `http`:
    /// timeouts, proxy, CAs and retry bounds of its token requests.
    #[uniffi::constructor(default(scope = None, token_store = None, http = None))]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        token_url: String,
        client_id: String,
        client_secret: String,
        username: String,
        password: String,
        scope: Option<String>,
        token_store: Option<String>,
        http: Option<HttpOptions>,
    ) -> Result<Arc<Self>> {
        let mut b = cibmtr_fhir::auth::PasswordGrant::builder(
            token_url,
            client_id,
            client_secret,
            username,
            password,
        )
        .token_store(super::token_store(token_store)?);
        if let Some(s) = scope {
            b = b.scope(s);
        }
        if let Some(h) = crate::http::client(http)? {
            b = b.http(h);
        }
        Ok(Arc::new(PasswordGrant(b.build()?)))
    }
}

super::token_flow!(PasswordGrant);
