//! [`FhirClient`]: one FHIR server, one token provider, one retry policy.
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::Stream;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use super::FhirVersion;
use crate::auth::TokenProvider;
use crate::error::{Error, Result};
use crate::http::HttpClient;

/// The media type of FHIR JSON, sent as both `Accept` and `Content-Type`.
pub const FHIR_JSON: &str = "application/fhir+json";

const NO_PARAMS: &[(&str, &str)] = &[];

/// An async stream of resources from a search, following `next` links page by page.
pub type ResourceStream = Pin<Box<dyn Stream<Item = Result<Value>> + Send>>;

/// What a conditional create did.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// The server created the resource (201); it carries its `id`.
    Created(Value),
    /// A resource matching `If-None-Exist` was already there (200); nothing was created.
    Existing(Value),
}

impl CreateOutcome {
    /// The resource, created or found.
    pub fn resource(&self) -> &Value {
        match self {
            CreateOutcome::Created(v) | CreateOutcome::Existing(v) => v,
        }
    }
    /// The resource's `id`.
    pub fn id(&self) -> Option<&str> {
        self.resource().get("id").and_then(Value::as_str)
    }
}

/// A client for one FHIR server.
///
/// Every request carries `Accept: application/fhir+json` and the default query parameters (for
/// servers such as MSK's Blaze that demand `researchstudy` on every call, paging links included).
/// With an auth flow, requests carry its cached bearer token; a 401 re-mints the token once and
/// retries once. GET, PUT and conditional creates are retried on 429, 502, 503, 504 and connection
/// errors, honouring `Retry-After`; a plain POST is retried only when it never reached the server.
/// Requests go only to the base URL's origin: a paging link to another origin is refused, so the
/// bearer token never leaves for a server it was not meant for.
///
/// ```no_run
/// # async fn demo(auth: cibmtr_fhir::auth::ClientCredentials) -> cibmtr_fhir::Result<()> {
/// use cibmtr_fhir::fhir::FhirClient;
/// use futures_util::StreamExt;
/// let fhir = FhirClient::builder("https://fhir.example.org/fhir")
///     .auth(&auth)
///     .default_param("researchstudy", "my-study")
///     .build()?;
/// let mut labs = fhir.search("Observation", &[("code", "718-7")]);
/// while let Some(obs) = labs.next().await {
///     println!("{}", obs?["id"]);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FhirClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The base URL, always ending in `/` so that relative joins stay below it.
    base: Url,
    auth: Option<TokenProvider>,
    version: FhirVersion,
    default_params: Vec<(String, String)>,
    http: HttpClient,
    /// `{base}/{type}` of the types created so far (a bulk submission posts thousands of labs to
    /// one URL: parsed once, not per lab). A handful of types at most.
    type_urls: std::sync::Mutex<Vec<(String, Url)>>,
}

impl fmt::Debug for FhirClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FhirClient")
            .field("base", &self.inner.base.as_str())
            .field("version", &self.inner.version)
            .field("auth", &self.inner.auth.is_some())
            .field("default_params", &self.inner.default_params)
            .finish()
    }
}

/// Builds a [`FhirClient`].
pub struct FhirClientBuilder {
    base: String,
    auth: Option<TokenProvider>,
    version: FhirVersion,
    default_params: Vec<(String, String)>,
    http: Option<HttpClient>,
}

impl FhirClientBuilder {
    /// Authenticate with this flow's cached tokens (any flow: they all deref to
    /// [`TokenProvider`]).
    pub fn auth(mut self, provider: &TokenProvider) -> Self {
        self.auth = Some(provider.clone());
        self
    }
    /// The FHIR release of the server (R4 by default).
    pub fn fhir_version(mut self, version: FhirVersion) -> Self {
        self.version = version;
        self
    }
    /// A query parameter added to every request, paging links included.
    pub fn default_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.default_params.push((name.into(), value.into()));
        self
    }
    /// Use this HTTP client (timeouts, proxy, CAs, retry bounds) instead of the shared default.
    pub fn http_client(mut self, http: HttpClient) -> Self {
        self.http = Some(http);
        self
    }
    /// Checks the settings; with auth, refuses plain http to a non-loopback host.
    pub fn build(self) -> Result<FhirClient> {
        let http = self.http.unwrap_or_else(HttpClient::shared);
        let mut base = if self.auth.is_some() {
            http.secure_url("base_url", &self.base)?
        } else {
            Url::parse(&self.base)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| Error::validation("base_url", "must be an absolute http(s) URL"))?
        };
        if base.query().is_some() || base.fragment().is_some() {
            return Err(Error::validation(
                "base_url",
                "must not carry a query or fragment; use default_param for parameters",
            ));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        for (name, _) in &self.default_params {
            if name.is_empty() {
                return Err(Error::validation(
                    "default_params",
                    "names must not be empty",
                ));
            }
        }
        Ok(FhirClient {
            inner: Arc::new(Inner {
                base,
                auth: self.auth,
                version: self.version,
                default_params: self.default_params,
                http,
                type_urls: Default::default(),
            }),
        })
    }
}

/// A successful answer: status, headers and the parsed body (JSON: `Null` when empty).
struct Answer<T = Value> {
    status: StatusCode,
    headers: HeaderMap,
    body: T,
}

/// How a success answer's body is read.
type ParseBody<T> = fn(StatusCode, &HeaderMap, &[u8]) -> Result<T>;

/// A create answer's body as far as the new resource's id goes (see [`parse_created`]).
enum CreatedBody {
    /// The body's non-empty `id`.
    Id(String),
    /// Any other body, parsed whole.
    Other(Value),
}

/// How a request may be retried.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Idempotency {
    /// GET, PUT, conditional create: safe to repeat.
    Safe,
    /// A plain POST: repeated only if it provably never reached the server.
    Once,
}

impl FhirClient {
    /// Starts a client for the server at `base_url` (e.g. `https://host/fhir`).
    pub fn builder(base_url: impl Into<String>) -> FhirClientBuilder {
        FhirClientBuilder {
            base: base_url.into(),
            auth: None,
            version: FhirVersion::default(),
            default_params: Vec::new(),
            http: None,
        }
    }

    /// The base URL (with a trailing `/`).
    pub fn base_url(&self) -> &str {
        self.inner.base.as_str()
    }

    /// The FHIR release this client was configured for.
    pub fn fhir_version(&self) -> FhirVersion {
        self.inner.version
    }

    /// The HTTP client (timeouts, retry bounds) this client sends with.
    pub(crate) fn http(&self) -> &HttpClient {
        &self.inner.http
    }

    /// The token provider, if the client authenticates.
    pub fn auth(&self) -> Option<&TokenProvider> {
        self.inner.auth.as_ref()
    }

    /// `GET {base}/{type}/{id}`.
    pub async fn read(&self, resource_type: &str, id: &str) -> Result<Value> {
        check_segment("resource_type", resource_type)?;
        check_segment("id", id)?;
        let url = self.url(&format!("{resource_type}/{id}"), NO_PARAMS)?;
        Ok(self
            .send(Method::GET, url, None, &[], Idempotency::Safe)
            .await?
            .body)
    }

    /// `GET {base}/metadata`: the server's CapabilityStatement.
    pub async fn capabilities(&self) -> Result<Value> {
        let url = self.url("metadata", NO_PARAMS)?;
        Ok(self
            .send(Method::GET, url, None, &[], Idempotency::Safe)
            .await?
            .body)
    }

    /// One page of a search: the `searchset` Bundle as the server sent it.
    pub async fn search_page(&self, resource_type: &str, params: &[(&str, &str)]) -> Result<Value> {
        check_segment("resource_type", resource_type)?;
        let url = self.url(resource_type, params)?;
        self.get_bundle(url).await
    }

    /// The next page of `bundle` (its `link[relation=next]`), or `None` on the last page. A link
    /// to another origin is refused with a configuration error.
    pub async fn next_page(&self, bundle: &Value) -> Result<Option<Value>> {
        match next_link(bundle) {
            None => Ok(None),
            Some(link) => {
                let url = self.paging_url(link)?;
                self.get_bundle(url).await.map(Some)
            }
        }
    }

    /// Searches and streams the matching resources (`entry[].resource` with
    /// `search.mode` other than `include`), following `next` links one page at a time, so memory
    /// stays flat however many pages there are.
    pub fn search(&self, resource_type: &str, params: &[(&str, &str)]) -> ResourceStream {
        let first = check_segment("resource_type", resource_type)
            .and_then(|_| self.url(resource_type, params));
        let client = self.clone();
        enum Cursor {
            Next(Url),
            /// A page's resources, then what follows them: the next page, a refused link, or
            /// the end.
            Buffered(std::vec::IntoIter<Value>, Option<Result<Url>>),
            Failed(Error),
            Done,
        }
        let start = match first {
            Ok(url) => Cursor::Next(url),
            Err(e) => {
                return Box::pin(futures_util::stream::once(async move { Err(e) }));
            }
        };
        Box::pin(futures_util::stream::unfold(start, move |mut cursor| {
            let client = client.clone();
            async move {
                loop {
                    match cursor {
                        Cursor::Done => return None,
                        Cursor::Failed(e) => return Some((Err(e), Cursor::Done)),
                        Cursor::Buffered(mut items, next) => {
                            if let Some(item) = items.next() {
                                return Some((Ok(item), Cursor::Buffered(items, next)));
                            }
                            cursor = match next {
                                Some(Ok(url)) => Cursor::Next(url),
                                Some(Err(e)) => Cursor::Failed(e),
                                None => Cursor::Done,
                            };
                        }
                        Cursor::Next(url) => {
                            let page = match client.get_bundle(url).await {
                                Ok(p) => p,
                                Err(e) => return Some((Err(e), Cursor::Done)),
                            };
                            let next = next_link(&page).map(|l| client.paging_url(l));
                            cursor = Cursor::Buffered(bundle_resources(page).into_iter(), next);
                        }
                    }
                }
            }
        }))
    }

    /// Collects a whole search into memory. Prefer [`search`](Self::search) for large results.
    pub async fn search_all(
        &self,
        resource_type: &str,
        params: &[(&str, &str)],
    ) -> Result<Vec<Value>> {
        use futures_util::StreamExt;
        let mut out = Vec::new();
        let mut s = self.search(resource_type, params);
        while let Some(item) = s.next().await {
            out.push(item?);
        }
        Ok(out)
    }

    /// `POST {base}/{type}`; returns the created resource with its `id` (taken from the body or,
    /// when the server answers without one, from the `Location` header). Not retried unless the
    /// request never reached the server; use [`create_if_none_exist`](Self::create_if_none_exist)
    /// when a repeat must not create twice.
    pub async fn create(&self, resource: &Value) -> Result<Value> {
        let answer = self.post(resource, parse_body).await?;
        with_id(answer, resource)
    }

    /// Conditional create (`If-None-Exist: {query}`): creates the resource only if no resource
    /// matches `query` (e.g. `identifier=urn:x|42`). Safe to retry.
    pub async fn create_if_none_exist(
        &self,
        resource: &Value,
        query: &str,
    ) -> Result<CreateOutcome> {
        let rt = resource_type_of(resource)?;
        if query.trim().is_empty() {
            return Err(Error::validation("query", "must not be empty"));
        }
        let url = self.url(rt, NO_PARAMS)?;
        let value = HeaderValue::from_str(query)
            .map_err(|_| Error::validation("query", "must be a printable query string"))?;
        let answer = self
            .send(
                Method::POST,
                url,
                Some((resource, FHIR_JSON)),
                &[(header::HeaderName::from_static("if-none-exist"), value)],
                Idempotency::Safe,
            )
            .await?;
        let created = answer.status == StatusCode::CREATED;
        let found = with_id(answer, resource)?;
        Ok(if created {
            CreateOutcome::Created(found)
        } else {
            CreateOutcome::Existing(found)
        })
    }

    /// `PUT {base}/{type}/{id}` with the resource's own `id`.
    pub async fn update(&self, resource: &Value) -> Result<Value> {
        let rt = resource_type_of(resource)?;
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::validation("resource.id", "is required for update"))?;
        check_segment("id", id)?;
        let url = self.url(&format!("{rt}/{id}"), NO_PARAMS)?;
        let answer = self
            .send(
                Method::PUT,
                url,
                Some((resource, FHIR_JSON)),
                &[],
                Idempotency::Safe,
            )
            .await?;
        with_id(answer, resource)
    }

    /// `POST {base}` of a `batch` or `transaction` Bundle; returns the response Bundle. Retried
    /// like a plain POST (only if it never reached the server).
    pub async fn transaction(&self, bundle: &Value) -> Result<Value> {
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(Error::validation("bundle.resourceType", "must be Bundle"));
        }
        let url = self.url("", NO_PARAMS)?;
        Ok(self
            .send(
                Method::POST,
                url,
                Some((bundle, FHIR_JSON)),
                &[],
                Idempotency::Once,
            )
            .await?
            .body)
    }

    /// A transaction whose every entry carries `ifNoneExist`, so repeating it creates nothing
    /// twice: retried like a GET.
    pub(crate) async fn idempotent_transaction(&self, bundle: &Value) -> Result<Value> {
        let url = self.url("", NO_PARAMS)?;
        Ok(self
            .send(
                Method::POST,
                url,
                Some((bundle, FHIR_JSON)),
                &[],
                Idempotency::Safe,
            )
            .await?
            .body)
    }

    /// `PUT {base}/{path}` of a plain JSON (not FHIR) body, such as CIBMTR's CRID service.
    pub(crate) async fn put_json(&self, path: &str, body: &Value) -> Result<Value> {
        let url = self.url(path, NO_PARAMS)?;
        Ok(self
            .send(
                Method::PUT,
                url,
                Some((body, "application/json")),
                &[],
                Idempotency::Safe,
            )
            .await?
            .body)
    }

    // ---------- plumbing ----------

    /// `{base}{path}?{params}&{default params}`.
    fn url<K: AsRef<str>, V: AsRef<str>>(&self, path: &str, params: &[(K, V)]) -> Result<Url> {
        let mut url =
            self.inner.base.join(path).map_err(|_| {
                Error::validation("resource_type", "is not a valid URL path segment")
            })?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k.as_ref(), v.as_ref());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(self.with_default_params(url))
    }

    /// A server-supplied paging link, resolved against the base, kept to the base's origin, with
    /// the default parameters the server may have dropped put back.
    pub(crate) fn paging_url(&self, link: &str) -> Result<Url> {
        let url = self.inner.base.join(link).map_err(|_| Error::Http {
            status: 200,
            message: "the server's next-page link is not a valid URL".into(),
            outcome: None,
        })?;
        if url.origin() != self.inner.base.origin() {
            return Err(Error::config(format!(
                "refusing to follow a paging link to another origin ({}); the bearer token is only sent to {}",
                url.origin().ascii_serialization(),
                self.inner.base.origin().ascii_serialization()
            )));
        }
        Ok(self.with_default_params(url))
    }

    /// `{base}/{type}` with the default parameters, as [`url`](Self::url) makes it, kept for the
    /// next request to the same type.
    fn type_url(&self, resource_type: &str) -> Result<Url> {
        const KEPT: usize = 16;
        check_segment("resourceType", resource_type)?;
        let mut kept = self
            .inner
            .type_urls
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((_, url)) = kept.iter().find(|(t, _)| t == resource_type) {
            return Ok(url.clone());
        }
        let url = self.url(resource_type, NO_PARAMS)?;
        if kept.len() < KEPT {
            kept.push((resource_type.to_owned(), url.clone()));
        }
        Ok(url)
    }

    fn with_default_params(&self, mut url: Url) -> Url {
        let missing: Vec<&(String, String)> = self
            .inner
            .default_params
            .iter()
            .filter(|(k, _)| !url.query_pairs().any(|(qk, _)| qk == k.as_str()))
            .collect();
        if !missing.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in missing {
                q.append_pair(k, v);
            }
        }
        url
    }

    async fn get_bundle(&self, url: Url) -> Result<Value> {
        let body = self
            .send(Method::GET, url, None, &[], Idempotency::Safe)
            .await?
            .body;
        if body.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(Error::Http {
                status: 200,
                message: "expected a Bundle from a search".into(),
                outcome: None,
            });
        }
        Ok(body)
    }

    /// Sends one logical request: bearer token, retries, 401 re-mint, error mapping.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<(&Value, &'static str)>,
        extra_headers: &[(header::HeaderName, HeaderValue)],
        idempotency: Idempotency,
    ) -> Result<Answer> {
        let body = match body {
            Some((v, content_type)) => Some((json_bytes(v)?, content_type)),
            None => None,
        };
        self.send_parsed(method, url, body, extra_headers, idempotency, parse_body)
            .await
    }

    /// Creates a resource of type `resource_type` given as its JSON text, and returns the id the
    /// server gave it, without building the server's copy of the resource when the answer's
    /// body carries the id (the bulk submission's path: one lab per request, the body written
    /// straight from the lab, the id all it keeps). Otherwise the id of the `Location` header,
    /// as [`create`](Self::create) finds it.
    pub(crate) async fn create_id_json(
        &self,
        resource_type: &str,
        body: bytes::Bytes,
    ) -> Result<String> {
        let url = self.type_url(resource_type)?;
        let answer = self
            .send_parsed(
                Method::POST,
                url,
                Some((body, FHIR_JSON)),
                &[],
                Idempotency::Once,
                parse_created,
            )
            .await?;
        match answer.body {
            CreatedBody::Id(id) => Ok(id),
            CreatedBody::Other(body) => created_id(
                &Answer {
                    status: answer.status,
                    headers: answer.headers,
                    body,
                },
                resource_type,
            ),
        }
    }

    /// The plain create: `POST {base}/{type}` of `resource`, not repeated once it may have
    /// reached the server.
    async fn post<T>(&self, resource: &Value, parse: ParseBody<T>) -> Result<Answer<T>> {
        let rt = resource_type_of(resource)?;
        let url = self.type_url(rt)?;
        let body = Some((json_bytes(resource)?, FHIR_JSON));
        self.send_parsed(Method::POST, url, body, &[], Idempotency::Once, parse)
            .await
    }

    /// [`send`](Self::send), reading a success answer's body with `parse`.
    async fn send_parsed<T>(
        &self,
        method: Method,
        url: Url,
        body: Option<(bytes::Bytes, &'static str)>,
        extra_headers: &[(header::HeaderName, HeaderValue)],
        idempotency: Idempotency,
        parse: ParseBody<T>,
    ) -> Result<Answer<T>> {
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut reminted = false;
        // Serialised once; every attempt sends the same bytes (a reference count, no copy).
        let (payload, content_type) = match body {
            Some((bytes, ct)) => (Some(bytes), ct),
            None => (None, FHIR_JSON),
        };
        loop {
            let token = match &self.inner.auth {
                Some(p) => Some(p.token().await?),
                None => None,
            };
            let mut rb = self
                .inner
                .http
                .client(url.as_str())?
                .request(method.clone(), url.clone())
                .header(header::ACCEPT, FHIR_JSON);
            if let Some(t) = &token {
                rb = rb.bearer_auth(t.secret());
            }
            if let Some(p) = &payload {
                rb = rb
                    .header(header::CONTENT_TYPE, content_type)
                    .body(p.clone());
            }
            for (k, v) in extra_headers {
                rb = rb.header(k, v);
            }
            // Why a retry is allowed, and how long to wait first; `None` = give up with `err`.
            let (err, wait): (Error, Option<Duration>) = match rb.send().await {
                Err(e) => {
                    let never_sent = e.is_connect();
                    let err = Error::network(&e);
                    let ok = idempotency == Idempotency::Safe || never_sent;
                    (err, ok.then(|| crate::http::backoff(attempt)))
                }
                Ok(mut resp) => {
                    let status = resp.status();
                    let headers = std::mem::take(resp.headers_mut());
                    let bytes = match resp.bytes().await {
                        Ok(b) => b,
                        Err(e) => {
                            // The server answered but the body was cut off: for a POST the
                            // request was processed, so it must not be repeated blindly.
                            let err = Error::network(&e);
                            let ok = idempotency == Idempotency::Safe;
                            if ok && self.may_retry(attempt, started, Duration::ZERO) {
                                tokio::time::sleep(crate::http::backoff(attempt)).await;
                                attempt += 1;
                                continue;
                            }
                            return Err(err);
                        }
                    };
                    if status.is_success() {
                        match parse(status, &headers, &bytes) {
                            Ok(body) => {
                                return Ok(Answer {
                                    status,
                                    body,
                                    headers,
                                });
                            }
                            // A success status over a body that is not JSON: a proxy's or
                            // firewall's page, a cut-off answer. Whether a POST took effect is
                            // unknown, so only a request that is safe to repeat is repeated.
                            Err(err) => {
                                if idempotency == Idempotency::Safe
                                    && self.may_retry(attempt, started, Duration::ZERO)
                                {
                                    tracing::debug!(attempt, "{err}; retrying");
                                    tokio::time::sleep(crate::http::backoff(attempt)).await;
                                    attempt += 1;
                                    continue;
                                }
                                return Err(err);
                            }
                        }
                    }
                    if status == StatusCode::UNAUTHORIZED
                        && let (Some(p), Some(t)) = (&self.inner.auth, &token)
                        && !reminted
                    {
                        // Only the first 401 for this token re-mints; others reuse the new one.
                        p.invalidate_token(t.secret());
                        reminted = true;
                        tracing::debug!(
                            "401 from the FHIR server; retrying once with a fresh token"
                        );
                        continue;
                    }
                    let err = http_error(status, &bytes);
                    let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504)
                        && idempotency == Idempotency::Safe;
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        let wait = crate::http::retry_after(&headers);
                        if !retryable || !self.may_retry(attempt, started, wait.unwrap_or_default())
                        {
                            return Err(Error::RateLimited { retry_after: wait });
                        }
                        (
                            err,
                            Some(wait.unwrap_or_else(|| crate::http::backoff(attempt))),
                        )
                    } else if retryable {
                        let wait = crate::http::retry_after(&headers)
                            .unwrap_or_else(|| crate::http::backoff(attempt));
                        (err, Some(wait))
                    } else {
                        return Err(err);
                    }
                }
            };
            match wait {
                Some(wait) if self.may_retry(attempt, started, wait) => {
                    tracing::debug!(
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "FHIR request failed ({err}); retrying"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                _ => return Err(err),
            }
        }
    }

    fn may_retry(&self, attempt: u32, started: Instant, wait: Duration) -> bool {
        let cfg = self.inner.http.config();
        attempt < cfg.request_retries && started.elapsed() + wait <= cfg.max_retry_time
    }
}

fn check_segment(field: &str, s: &str) -> Result<()> {
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(Error::validation(
            field,
            "must be a FHIR name or id (letters, digits, '-', '.')",
        ));
    }
    Ok(())
}

fn resource_type_of(resource: &Value) -> Result<&str> {
    let rt = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::validation("resource.resourceType", "is required"))?;
    check_segment("resource.resourceType", rt)?;
    Ok(rt)
}

/// The `next` link of a Bundle.
pub(crate) fn next_link(bundle: &Value) -> Option<&str> {
    bundle
        .get("link")?
        .as_array()?
        .iter()
        .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))?
        .get("url")?
        .as_str()
}

/// The matched resources of a searchset page (included resources are left out).
pub(crate) fn bundle_resources(bundle: Value) -> Vec<Value> {
    let Value::Object(mut map) = bundle else {
        return Vec::new();
    };
    let Some(Value::Array(entries)) = map.remove("entry") else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter(|e| {
            e.pointer("/search/mode").and_then(Value::as_str) != Some("include")
                && e.pointer("/search/mode").and_then(Value::as_str) != Some("outcome")
        })
        .filter_map(|mut e| e.get_mut("resource").map(Value::take))
        .collect()
}

/// The id in a `Location` header such as `{base}/Patient/123/_history/1`.
pub fn id_from_location(location: &str, resource_type: &str) -> Option<String> {
    let path = location.split(['?', '#']).next()?;
    let mut segs = path.trim_end_matches('/').rsplit('/').collect::<Vec<_>>();
    segs.reverse();
    let pos = segs.iter().rposition(|s| *s == resource_type)?;
    segs.get(pos + 1)
        .filter(|s| !s.is_empty() && **s != "_history")
        .map(|s| s.to_string())
}

/// The body with its `id`: from the body, or else the `Location` header applied to what was sent.
fn with_id(answer: Answer, sent: &Value) -> Result<Value> {
    if answer
        .body
        .get("id")
        .and_then(Value::as_str)
        .is_some_and(|id| !id.trim().is_empty())
    {
        return Ok(answer.body);
    }
    let rt = sent
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let id = created_id(&answer, rt)?;
    let mut out = if answer.body.is_object() && answer.body.get("resourceType").is_some() {
        answer.body
    } else {
        sent.clone()
    };
    out["id"] = Value::String(id);
    Ok(out)
}

/// The id of a resource of type `rt` the server created: its body's non-empty `id`, else the
/// one its `Location` (or `Content-Location`) header names.
fn created_id(answer: &Answer, rt: &str) -> Result<String> {
    if let Some(id) = answer
        .body
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.trim().is_empty())
    {
        return Ok(id.to_owned());
    }
    answer
        .headers
        .get(header::LOCATION)
        .or_else(|| answer.headers.get("content-location"))
        .and_then(|v| v.to_str().ok())
        .and_then(|l| id_from_location(l, rt))
        .ok_or_else(|| Error::Http {
            status: answer.status.as_u16(),
            message: format!(
                "the server created the {rt} but sent neither its id nor a Location header"
            ),
            outcome: None,
        })
}

/// A resource as the JSON text of a request body.
fn json_bytes(resource: &Value) -> Result<bytes::Bytes> {
    serde_json::to_vec(resource)
        .map(bytes::Bytes::from)
        .map_err(|_| Error::validation("resource", "cannot be serialised as JSON"))
}

/// A success answer's body. One that is not JSON is a [`Error::Network`] (the exchange gave no
/// usable answer, like a cut-off body), so it counts as transient wherever retries are decided.
pub(crate) fn parse_body(status: StatusCode, headers: &HeaderMap, bytes: &[u8]) -> Result<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|_| {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("no content type");
        Error::Network {
            message: format!(
                "the server answered {} with {ct} where FHIR JSON was expected",
                status.as_u16()
            ),
        }
    })
}

/// A create answer's body: only its `id` is read when it is a JSON object with a non-empty
/// string `id` (the rest is checked to be JSON and skipped, not built); anything else is parsed
/// whole by [`parse_body`], so the result is what [`with_id`] would make of it.
fn parse_created(status: StatusCode, headers: &HeaderMap, bytes: &[u8]) -> Result<CreatedBody> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default)]
        id: Option<Value>,
    }
    // A derived struct would also read an array (`["x"]`) positionally: objects only.
    let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    match serde_json::from_slice::<Head>(bytes)
        .ok()
        .filter(|_| object)
    {
        Some(Head {
            id: Some(Value::String(id)),
        }) if !id.trim().is_empty() => Ok(CreatedBody::Id(id)),
        _ => parse_body(status, headers, bytes).map(CreatedBody::Other),
    }
}

/// An error answer as a typed error: the `OperationOutcome`'s diagnostics, a CIBMTR
/// `errorMessage`, or the start of a plain-text body.
pub(crate) fn http_error(status: StatusCode, bytes: &[u8]) -> Error {
    let json: Option<Value> = serde_json::from_slice(bytes).ok();
    let (message, outcome) = match json {
        Some(v) if v.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome") => {
            (outcome_message(&v), Some(Box::new(v)))
        }
        Some(v) if v.get("errorMessage").is_some() => (
            match &v["errorMessage"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            None,
        ),
        Some(v) if v.get("error").and_then(Value::as_str).is_some() => (
            v.get("error_description")
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            None,
        ),
        _ => (plain_message(bytes), None),
    };
    let message = if message.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        message
    };
    Error::Http {
        status: status.as_u16(),
        message,
        outcome,
    }
}

fn outcome_message(outcome: &Value) -> String {
    let parts: Vec<String> = outcome
        .get("issue")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| {
            i.get("diagnostics")
                .and_then(Value::as_str)
                .or_else(|| i.pointer("/details/text").and_then(Value::as_str))
                .or_else(|| i.get("code").and_then(Value::as_str))
                .map(str::to_owned)
        })
        .collect();
    parts.join("; ")
}

fn plain_message(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let t = text.trim();
    if t.starts_with('<') {
        // An HTML error page from a gateway: its markup helps nobody.
        let title = t
            .split_once("<title>")
            .and_then(|(_, rest)| rest.split_once("</title>"))
            .map(|(title, _)| title.trim().to_owned());
        return match title {
            Some(title) if !title.is_empty() => format!("HTML error page: {title}"),
            _ => "HTML error page".to_owned(),
        };
    }
    t.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_bodies() {
        let read =
            |body: &str| parse_created(StatusCode::CREATED, &HeaderMap::new(), body.as_bytes());
        let id = |body: &str| match read(body) {
            Ok(CreatedBody::Id(id)) => Some(id),
            _ => None,
        };
        assert_eq!(
            id(r#"{"resourceType":"Observation","id":"a-1","valueQuantity":{"value":1}}"#)
                .as_deref(),
            Some("a-1")
        );
        // Anything else is parsed whole, as `create` would: no id, a blank or non-string id, a
        // body that is not an object, an empty body.
        for body in [
            r#"{"resourceType":"Observation"}"#,
            r#"{"id":"  "}"#,
            r#"{"id":7}"#,
            r#"["x"]"#,
            "",
        ] {
            match read(body) {
                Ok(CreatedBody::Other(v)) => assert_eq!(
                    v,
                    parse_body(StatusCode::CREATED, &HeaderMap::new(), body.as_bytes()).unwrap()
                ),
                _ => panic!("{body}: not parsed whole"),
            }
        }
        // Not JSON: the same error as any success answer that is not JSON.
        assert!(matches!(read("<html>"), Err(Error::Network { .. })));
        assert!(matches!(
            read(r#"{"id":"a-1","x":"#),
            Err(Error::Network { .. })
        ));
    }

    #[test]
    fn location_ids() {
        assert_eq!(
            id_from_location("http://h/v1/Patient/123/_history/1", "Patient").as_deref(),
            Some("123")
        );
        assert_eq!(
            id_from_location("Patient/abc", "Patient").as_deref(),
            Some("abc")
        );
        assert_eq!(id_from_location("http://h/v1/Patient", "Patient"), None);
        assert_eq!(
            id_from_location("http://h/v1/Observation/9", "Patient"),
            None
        );
    }

    #[test]
    fn error_bodies() {
        let e = http_error(
            StatusCode::BAD_REQUEST,
            br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"subject: missing"}]}"#,
        );
        assert!(
            matches!(&e, Error::Http { status: 400, message, outcome: Some(_) } if message == "subject: missing"),
            "{e:?}"
        );
        let e = http_error(
            StatusCode::BAD_REQUEST,
            br#"{"errorMessage":"ccn must be 5 digits"}"#,
        );
        assert!(
            matches!(&e, Error::Http { message, outcome: None, .. } if message == "ccn must be 5 digits")
        );
        let e = http_error(
            StatusCode::BAD_GATEWAY,
            b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        );
        assert!(
            matches!(&e, Error::Http { status: 502, message, .. } if message == "HTML error page: 502 Bad Gateway")
        );
        let e = http_error(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert!(matches!(&e, Error::Http { message, .. } if message == "Service Unavailable"));
    }
}
