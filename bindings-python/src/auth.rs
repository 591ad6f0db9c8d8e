//! The token flows (`cibmtr_fhir::auth`): one base class, `TokenProvider`, with the cache's
//! methods, and one subclass per flow; client registration and key generation.
use std::path::PathBuf;

use cibmtr_fhir::auth::{self as core, ClientAuthMethod, KeyAlgorithm, TokenStore};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::convert::{Json, epoch_time, py_to_json, str_list};
use crate::error::{OrRaise, wrong_type};
use crate::http::HttpConfig;
use crate::runtime::{awaitable, awaitable_ready_first, wait, wait_ready_first};

/// `token_store=`: `None` (this process), a file path, or a `redis://` / `rediss://` URL (a fleet
/// sharing one token; the key comes from `$CIBMTR_FHIR_STORE_KEY`), as the core parses it.
fn store(location: Option<PathBuf>) -> PyResult<TokenStore> {
    location
        .map(TokenStore::parse)
        .transpose()
        .or_raise()
        .map(Option::unwrap_or_default)
}

/// What every flow offers: a valid access token on demand (cached, refreshed ahead of expiry,
/// one request in flight however many threads or tasks ask), invalidation and counters.
/// `FhirClient` and `CibmtrClient` accept any flow as `auth`.
#[pyclass(module = "cibmtr_fhir", subclass, frozen)]
pub struct TokenProvider {
    pub(crate) provider: core::TokenProvider,
    /// The last token handed out and its `str`: while the cache's token is fresh and still that
    /// one, `token()` returns the same object instead of building a new string. Holding the
    /// `AccessToken` keeps its allocation alive, so the pointer comparison cannot mistake a new
    /// token for it.
    last: std::sync::Mutex<Option<(core::AccessToken, Py<PyString>)>>,
}

#[pymethods]
impl TokenProvider {
    /// A valid access token (str), from the cache when possible. Blocks with the GIL released.
    fn token<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        // The cached token while it is fresh: no runtime, no future, the same `str` as before.
        if let Some(fresh) = self.provider.fresh_token() {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((held, text)) = last.as_ref()
                && std::ptr::eq(held.secret(), fresh.secret())
            {
                return Ok(text.bind(py).clone());
            }
            let text = PyString::new(py, fresh.secret());
            *last = Some((fresh, text.clone().unbind()));
            return Ok(text);
        }
        let token = wait_ready_first(py, self.provider.token())?;
        Ok(PyString::new(py, token.secret()))
    }

    /// `await auth.atoken()`: `token()` for asyncio.
    fn atoken<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let p = self.provider.clone();
        awaitable_ready_first(py, async move { Ok(p.token().await?.secret().to_owned()) })
    }

    /// Drops the current token; the next `token()` obtains a new one.
    fn invalidate(&self) {
        self.provider.invalidate()
    }

    /// Drops `token` if it is still the current one (after a 401); returns whether it did.
    fn invalidate_token(&self, token: &str) -> bool {
        self.provider.invalidate_token(token)
    }

    /// Counters of this flow's cache: `{"token_requests", "cache_hits", "refreshes", "failures"}`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.provider.stats();
        let d = PyDict::new(py);
        d.set_item("token_requests", s.token_requests)?;
        d.set_item("cache_hits", s.cache_hits)?;
        d.set_item("refreshes", s.refreshes)?;
        d.set_item("failures", s.failures)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("<{:?}>", self.provider)
    }
}

fn with_provider<T: pyo3::PyClass<BaseType = TokenProvider>>(
    provider: core::TokenProvider,
    flow: T,
) -> PyClassInitializer<T> {
    PyClassInitializer::from(TokenProvider {
        provider,
        last: std::sync::Mutex::new(None),
    })
    .add_subclass(flow)
}

/// CIBMTR's flow (Okta resource-owner password grant): username, password and scope in the form
/// body, the client id and secret as HTTP Basic.
#[pyclass(module = "cibmtr_fhir", extends = TokenProvider, frozen)]
pub struct PasswordGrant {
    inner: core::PasswordGrant,
}

#[pymethods]
impl PasswordGrant {
    #[new]
    #[pyo3(signature = (token_url, client_id, client_secret, username, password, scope = None, token_store = None, *, http = None))]
    fn new(
        token_url: String,
        client_id: String,
        client_secret: String,
        username: String,
        password: String,
        scope: Option<String>,
        token_store: Option<PathBuf>,
        http: Option<&Bound<'_, HttpConfig>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let mut b =
            core::PasswordGrant::builder(token_url, client_id, client_secret, username, password)
                .token_store(store(token_store)?)
                .http(HttpConfig::client_or_default(http));
        if let Some(s) = scope {
            b = b.scope(s);
        }
        let inner = b.build().or_raise()?;
        Ok(with_provider((*inner).clone(), PasswordGrant { inner }))
    }

    fn __repr__(&self) -> String {
        format!("<{:?}>", self.inner)
    }
}

/// The client-credentials grant with a shared secret (MSK): the secret in the form body
/// (`client_secret_post`, default) or as HTTP Basic (`client_secret_basic`).
#[pyclass(module = "cibmtr_fhir", extends = TokenProvider, frozen)]
pub struct ClientCredentials {
    inner: core::ClientCredentials,
}

#[pymethods]
impl ClientCredentials {
    #[new]
    #[pyo3(signature = (token_url, client_id, client_secret, scope = None, auth_method = "client_secret_post", token_store = None, *, http = None))]
    fn new(
        token_url: String,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
        auth_method: &str,
        token_store: Option<PathBuf>,
        http: Option<&Bound<'_, HttpConfig>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let method: ClientAuthMethod = auth_method.parse().or_raise()?;
        let mut b = core::ClientCredentials::builder(token_url, client_id, client_secret)
            .auth_method(method)
            .token_store(store(token_store)?)
            .http(HttpConfig::client_or_default(http));
        if let Some(s) = scope {
            b = b.scope(s);
        }
        let inner = b.build().or_raise()?;
        Ok(with_provider((*inner).clone(), ClientCredentials { inner }))
    }

    /// `"client_secret_post"` or `"client_secret_basic"`.
    #[getter]
    fn auth_method(&self) -> &'static str {
        match self.inner.auth_method() {
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
        }
    }

    fn __repr__(&self) -> String {
        format!("<{:?}>", self.inner)
    }
}

/// SMART Backend Services: `client_credentials` with a freshly signed JWT client assertion per
/// token request. `private_key` is a PEM string or a private JWK (str or dict); the token URL is
/// given or discovered from `fhir_base`.
#[pyclass(module = "cibmtr_fhir", extends = TokenProvider, frozen)]
pub struct BackendServices {
    inner: core::BackendServices,
}

#[pymethods]
impl BackendServices {
    #[new]
    #[pyo3(signature = (client_id, private_key, token_url = None, fhir_base = None, key_id = None, algorithm = "RS384", scope = "system/*.read", token_store = None, *, http = None))]
    fn new(
        client_id: String,
        private_key: &Bound<'_, PyAny>,
        token_url: Option<String>,
        fhir_base: Option<String>,
        key_id: Option<String>,
        algorithm: &str,
        scope: &str,
        token_store: Option<PathBuf>,
        http: Option<&Bound<'_, HttpConfig>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let key = key_text(private_key)?;
        let mut b = core::BackendServices::builder(client_id, key)
            .algorithm(algorithm.parse::<KeyAlgorithm>().or_raise()?)
            .scope(scope)
            .token_store(store(token_store)?)
            .http(HttpConfig::client_or_default(http));
        if let Some(u) = token_url {
            b = b.token_url(u);
        }
        if let Some(u) = fhir_base {
            b = b.fhir_base(u);
        }
        if let Some(k) = key_id {
            b = b.key_id(k);
        }
        let inner = b.build().or_raise()?;
        Ok(with_provider((*inner).clone(), BackendServices { inner }))
    }

    /// The `kid` sent in the assertion header (the key's RFC 7638 thumbprint unless given).
    #[getter]
    fn key_id(&self) -> &str {
        self.inner.key_id()
    }

    /// `"RS384"`, `"ES384"` or `"RS256"`.
    #[getter]
    fn algorithm(&self) -> &'static str {
        self.inner.algorithm().as_str()
    }

    /// The token URL, once given or discovered.
    #[getter]
    fn token_url(&self) -> Option<&str> {
        self.inner.token_url()
    }

    fn __repr__(&self) -> String {
        format!("<{:?}>", self.inner)
    }
}

/// A PEM string, or a JWK as str or dict.
fn key_text(key: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = key.extract::<String>() {
        return Ok(s);
    }
    if !key.is_instance_of::<PyDict>() {
        return Err(wrong_type(
            "private_key",
            "a PEM string or a JWK (str or dict)",
            key,
        ));
    }
    Ok(py_to_json(key, "private_key").or_raise()?.to_string())
}

/// SMART App Launch (standalone): `authorization_url()` gives the URL for the user's browser
/// (state and PKCE verifier stay inside this object), `complete(redirect_url)` checks the state
/// and exchanges the code; `token()` then refreshes with the refresh token, one refresh at a
/// time. A `client_secret` makes the client confidential. Give `fhir_base` (discovery and the
/// `aud` parameter) or both `authorize_url` and `token_url`.
#[pyclass(module = "cibmtr_fhir", extends = TokenProvider, frozen)]
pub struct AuthorizationCode {
    inner: core::AuthorizationCode,
}

impl AuthorizationCode {
    /// The core flow (usable after a `fork()` too: the core's HTTP pool is per process).
    fn core(&self) -> PyResult<&core::AuthorizationCode> {
        Ok(&self.inner)
    }
}

#[pymethods]
impl AuthorizationCode {
    #[new]
    #[pyo3(signature = (client_id, redirect_uri, scope, client_secret = None, fhir_base = None, authorize_url = None, token_url = None, token_store = None, session = None, *, http = None))]
    fn new(
        client_id: String,
        redirect_uri: String,
        scope: String,
        client_secret: Option<String>,
        fhir_base: Option<String>,
        authorize_url: Option<String>,
        token_url: Option<String>,
        token_store: Option<PathBuf>,
        session: Option<String>,
        http: Option<&Bound<'_, HttpConfig>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let mut b = core::AuthorizationCode::builder(client_id, redirect_uri, scope)
            .token_store(store(token_store)?)
            .http(HttpConfig::client_or_default(http));
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
        if let Some(s) = session {
            b = b.session(s);
        }
        let inner = b.build().or_raise()?;
        Ok(with_provider((*inner).clone(), AuthorizationCode { inner }))
    }

    /// The URL to open in the user's browser. Each call starts a new login.
    fn authorization_url(&self, py: Python<'_>) -> PyResult<String> {
        wait(py, self.core()?.authorization_url())
    }

    /// `await auth.aauthorization_url()`.
    fn aauthorization_url<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let a = self.core()?.clone();
        awaitable(py, async move { a.authorization_url().await })
    }

    /// Finishes the login from the URL the browser was redirected to: checks `state` before any
    /// request, exchanges the code with the PKCE verifier and caches the token.
    fn complete(&self, py: Python<'_>, redirect_url: &str) -> PyResult<()> {
        wait(py, self.core()?.complete(redirect_url))
    }

    /// `await auth.acomplete(redirect_url)`.
    fn acomplete<'py>(&self, py: Python<'py>, redirect_url: String) -> PyResult<Bound<'py, PyAny>> {
        let a = self.core()?.clone();
        awaitable(py, async move { a.complete(&redirect_url).await })
    }

    /// The launch context of the latest token response (`patient`, `encounter`, `scope`,
    /// `id_token`, ...); never the access or refresh token.
    #[getter]
    fn context(&self) -> Json {
        Json(self.inner.context())
    }

    /// Resumes a session from saved tokens. `expires_at` is a timezone-aware datetime or epoch
    /// seconds.
    #[pyo3(signature = (access_token, *, expires_at, refresh_token = None))]
    fn restore(
        &self,
        access_token: String,
        expires_at: &Bound<'_, PyAny>,
        refresh_token: Option<String>,
    ) -> PyResult<()> {
        let at = epoch_time(expires_at, "expires_at").or_raise()?;
        self.inner
            .restore(access_token, refresh_token.map(Into::into), at)
            .or_raise()
    }

    fn __repr__(&self) -> String {
        format!("<{:?}>", self.inner)
    }
}

/// A client registered by `register_client` / `register_public_client`. `client_secret` is
/// None for a public client; `repr` never shows it.
#[pyclass(module = "cibmtr_fhir", frozen)]
pub struct RegisteredClient {
    inner: core::RegisteredClient,
}

#[pymethods]
impl RegisteredClient {
    /// The registered client id.
    #[getter]
    fn client_id(&self) -> &str {
        &self.inner.client_id
    }
    /// The client secret (None for a public client).
    #[getter]
    fn client_secret(&self) -> Option<&str> {
        self.inner.client_secret.as_ref().map(|s| s.expose())
    }
    fn __repr__(&self) -> String {
        format!(
            "RegisteredClient(client_id={:?}, confidential={})",
            self.inner.client_id,
            if self.inner.client_secret.is_some() {
                "True"
            } else {
                "False"
            }
        )
    }
}

/// Registers a confidential client (RFC 7591 dynamic registration, `client_secret_basic`).
#[pyfunction]
#[pyo3(signature = (registration_url, client_name, redirect_uris, scope, *, http = None))]
pub fn register_client(
    py: Python<'_>,
    registration_url: &str,
    client_name: &str,
    redirect_uris: &Bound<'_, PyAny>,
    scope: &str,
    http: Option<&Bound<'_, HttpConfig>>,
) -> PyResult<RegisteredClient> {
    let redirect_uris = str_list(redirect_uris, "redirect_uris")?;
    let http = HttpConfig::client_or_default(http);
    let inner = wait(
        py,
        core::register_client(&http, registration_url, client_name, &redirect_uris, scope),
    )?;
    Ok(RegisteredClient { inner })
}

/// `await aregister_client(...)`.
#[pyfunction]
#[pyo3(signature = (registration_url, client_name, redirect_uris, scope, *, http = None))]
pub fn aregister_client<'py>(
    py: Python<'py>,
    registration_url: String,
    client_name: String,
    redirect_uris: &Bound<'_, PyAny>,
    scope: String,
    http: Option<&Bound<'_, HttpConfig>>,
) -> PyResult<Bound<'py, PyAny>> {
    let redirect_uris = str_list(redirect_uris, "redirect_uris")?;
    let http = HttpConfig::client_or_default(http);
    awaitable(py, async move {
        let inner = core::register_client(
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

/// Registers a public client (`token_endpoint_auth_method: none`; PKCE protects the code).
#[pyfunction]
#[pyo3(signature = (registration_url, client_name, redirect_uris, scope, *, http = None))]
pub fn register_public_client(
    py: Python<'_>,
    registration_url: &str,
    client_name: &str,
    redirect_uris: &Bound<'_, PyAny>,
    scope: &str,
    http: Option<&Bound<'_, HttpConfig>>,
) -> PyResult<RegisteredClient> {
    let redirect_uris = str_list(redirect_uris, "redirect_uris")?;
    let http = HttpConfig::client_or_default(http);
    let inner = wait(
        py,
        core::register_public_client(&http, registration_url, client_name, &redirect_uris, scope),
    )?;
    Ok(RegisteredClient { inner })
}

/// `await aregister_public_client(...)`.
#[pyfunction]
#[pyo3(signature = (registration_url, client_name, redirect_uris, scope, *, http = None))]
pub fn aregister_public_client<'py>(
    py: Python<'py>,
    registration_url: String,
    client_name: String,
    redirect_uris: &Bound<'_, PyAny>,
    scope: String,
    http: Option<&Bound<'_, HttpConfig>>,
) -> PyResult<Bound<'py, PyAny>> {
    let redirect_uris = str_list(redirect_uris, "redirect_uris")?;
    let http = HttpConfig::client_or_default(http);
    awaitable(py, async move {
        let inner = core::register_public_client(
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

/// A key pair from `generate_key`: `private_pem` (keep it secret), `key_id` (RFC 7638
/// thumbprint), `algorithm`, and `jwks`, the public JWK Set to register with a server.
#[pyclass(module = "cibmtr_fhir", frozen)]
pub struct GeneratedKey {
    inner: core::GeneratedKey,
}

#[pymethods]
impl GeneratedKey {
    /// The private key, PKCS#8 PEM: keep it secret.
    #[getter]
    fn private_pem(&self) -> &str {
        self.inner.private_pem.expose()
    }
    /// The key id (RFC 7638 thumbprint).
    #[getter]
    fn key_id(&self) -> &str {
        &self.inner.key_id
    }
    /// `"RS384"`, `"ES384"` or `"RS256"`.
    #[getter]
    fn algorithm(&self) -> &'static str {
        self.inner.algorithm.as_str()
    }
    /// The public JWK Set to register with the server.
    #[getter]
    fn jwks(&self) -> Json {
        Json(self.inner.jwks.clone())
    }
    fn __repr__(&self) -> String {
        format!(
            "GeneratedKey(algorithm={:?}, key_id={:?})",
            self.inner.algorithm.as_str(),
            self.inner.key_id
        )
    }
}

/// A new key pair for SMART Backend Services: `"RS384"` (default), `"ES384"` or `"RS256"`.
#[pyfunction]
#[pyo3(signature = (algorithm = "RS384"))]
pub fn generate_key(py: Python<'_>, algorithm: &str) -> PyResult<GeneratedKey> {
    let alg: KeyAlgorithm = algorithm.parse().or_raise()?;
    let inner = py.detach(|| core::generate_key(alg)).or_raise()?;
    Ok(GeneratedKey { inner })
}

/// The public JWK Set (dict) of a private key (PEM or JWK).
#[pyfunction]
#[pyo3(signature = (private_key, algorithm = "RS384"))]
pub fn public_jwks(private_key: &Bound<'_, PyAny>, algorithm: &str) -> PyResult<Json> {
    let alg: KeyAlgorithm = algorithm.parse().or_raise()?;
    let key = key_text(private_key)?;
    core::public_jwks(&key, alg).map(Json).or_raise()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TokenProvider>()?;
    m.add_class::<PasswordGrant>()?;
    m.add_class::<ClientCredentials>()?;
    m.add_class::<BackendServices>()?;
    m.add_class::<AuthorizationCode>()?;
    m.add_class::<RegisteredClient>()?;
    m.add_class::<GeneratedKey>()?;
    m.add_function(wrap_pyfunction!(register_client, m)?)?;
    m.add_function(wrap_pyfunction!(aregister_client, m)?)?;
    m.add_function(wrap_pyfunction!(register_public_client, m)?)?;
    m.add_function(wrap_pyfunction!(aregister_public_client, m)?)?;
    m.add_function(wrap_pyfunction!(generate_key, m)?)?;
    m.add_function(wrap_pyfunction!(public_jwks, m)?)?;
    Ok(())
}
