//! `BackendServices`: SMART Backend Services (`private_key_jwt`).
use std::sync::Arc;

use crate::error::Result;
use crate::http::HttpOptions;

/// SMART Backend Services: a freshly signed JWT client assertion per token request. Give the
/// `tokenUrl`, or the `fhirBase` to discover it.
#[derive(uniffi::Object)]
#[uniffi::export(Debug)]
pub struct BackendServices(pub(crate) cibmtr_fhir::auth::BackendServices);

#[uniffi::export]
impl BackendServices {
    /// `privateKey`: PKCS#8, PKCS#1 or SEC1 PEM, or a private JWK. `keyId` defaults to the key's
    /// RFC 7638 thumbprint; `algorithm`: `RS384`, `ES384` or `RS256`; `http`: timeouts, proxy,
    /// CAs and retry bounds of its discovery and token requests.
    #[uniffi::constructor(default(
        token_url = None,
        fhir_base = None,
        key_id = None,
        algorithm = "RS384",
        scope = "system/*.read",
        token_store = None,
        http = None
    ))]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client_id: String,
        private_key: String,
        token_url: Option<String>,
        fhir_base: Option<String>,
        key_id: Option<String>,
        algorithm: String,
        scope: String,
        token_store: Option<String>,
        http: Option<HttpOptions>,
    ) -> Result<Arc<Self>> {
        let mut b = cibmtr_fhir::auth::BackendServices::builder(client_id, private_key)
            .algorithm(algorithm.parse()?)
            .scope(scope)
            .token_store(super::token_store(token_store)?);
        if let Some(u) = token_url {
            b = b.token_url(u);
        }
        if let Some(u) = fhir_base {
            b = b.fhir_base(u);
        }
        if let Some(k) = key_id {
            b = b.key_id(k);
        }
        if let Some(h) = crate::http::client(http)? {
            b = b.http(h);
        }
        Ok(Arc::new(BackendServices(b.build()?)))
    }

    /// The `kid` of the client assertions.
    pub fn key_id(&self) -> String {
        self.0.key_id().to_owned()
    }

    /// `RS384`, `ES384` or `RS256`.
    pub fn algorithm(&self) -> String {
        self.0.algorithm().as_str().to_owned()
    }

    /// The token URL, given or discovered (`null` until discovered).
    pub fn token_url(&self) -> Option<String> {
        self.0.token_url().map(str::to_owned)
    }
}

super::token_flow!(BackendServices);
