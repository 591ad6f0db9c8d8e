//! Generic FHIR over HTTP (core `fhir`): resources travel as plain objects, a search is an async
//! iterator that follows paging links one page at a time.
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use cibmtr_fhir::auth::TokenProvider;
use cibmtr_fhir::fhir::{self, CreateOutcome, FhirVersion, ResourceStream};
use futures_util::StreamExt;
use napi::Env;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::Value;

use crate::args::{self, Kind, text};
use crate::auth::{AuthorizationCode, BackendServices, ClientCredentials, PasswordGrant};
use crate::error::{CoreResult, OrThrow, invalid, js_error, settle};
use crate::http::{self, HTTP_CONFIG, HttpConfig};

/// What an `auth` argument or option must be (napi then checks which flow it is).
pub(crate) const AUTH_FLOW: Kind = Kind::Flow;

/// Any of the four flows, where a client takes one (`AuthFlow` in TypeScript).
/// Class instances rather than references: napi lends references only to the arguments of the
/// generated glue, and the flows are read from checked `Unknown` arguments ([`crate::args`]).
pub type AuthFlow<'a> = Either4<
    ClassInstance<'a, PasswordGrant>,
    ClassInstance<'a, ClientCredentials>,
    ClassInstance<'a, BackendServices>,
    ClassInstance<'a, AuthorizationCode>,
>;

pub(crate) fn provider_of(flow: &AuthFlow<'_>) -> TokenProvider {
    match flow {
        Either4::A(f) => f.provider(),
        Either4::B(f) => f.provider(),
        Either4::C(f) => f.provider(),
        Either4::D(f) => f.provider(),
    }
}

/// A FHIR resource as a plain object (`Resource` in TypeScript), or the error that took its
/// place in a search: converted on the JavaScript thread, where the error becomes the package's
/// `Error` and rejects the iterator step.
pub struct Resource(pub(crate) CoreResult<Value>);

impl From<Value> for Resource {
    fn from(v: Value) -> Self {
        Resource(Ok(v))
    }
}

impl ToNapiValue for Resource {
    unsafe fn to_napi_value(env: napi::sys::napi_env, val: Self) -> Result<napi::sys::napi_value> {
        match val.0 {
            Ok(v) => unsafe { Value::to_napi_value(env, v) },
            Err(e) => Err(js_error(&Env::from_raw(env), &e)),
        }
    }
}

pub(crate) fn resources(values: Vec<Value>) -> Vec<Resource> {
    values.into_iter().map(Resource::from).collect()
}

/// Search parameters from `{ name: value | value[] }` or `[[name, value], ...]` (for repeated
/// names); values may be strings, numbers or booleans.
fn search_params(params: Option<Value>) -> CoreResult<Vec<(String, String)>> {
    fn text(v: &Value) -> CoreResult<String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(invalid(
                "params",
                "values must be strings, numbers or booleans",
            )),
        }
    }
    let mut out = Vec::new();
    match params {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                match v {
                    Value::Array(items) => {
                        for i in &items {
                            out.push((k.clone(), text(i)?));
                        }
                    }
                    v => out.push((k, text(&v)?)),
                }
            }
        }
        Some(Value::Array(pairs)) => {
            for p in pairs {
                match p.as_array().map(Vec::as_slice) {
                    Some([Value::String(k), v]) => out.push((k.clone(), text(v)?)),
                    _ => return Err(invalid("params", "pairs must be [name, value]")),
                }
            }
        }
        Some(_) => {
            return Err(invalid(
                "params",
                "must be an object of name: value or a list of [name, value] pairs",
            ));
        }
    }
    Ok(out)
}

fn borrowed(params: &[(String, String)]) -> Vec<(&str, &str)> {
    params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Options of `FhirClient`.
#[napi(object, object_to_js = false)]
pub struct FhirClientOptions<'a> {
    /// Authenticate with this flow's cached tokens.
    #[napi(ts_type = "AuthFlow")]
    pub auth: Option<AuthFlow<'a>>,
    /// The server's FHIR release (default `R4`).
    #[napi(ts_type = "FhirVersion")]
    pub fhir_version: Option<String>,
    /// Query parameters added to every request, paging links included (MSK: `researchstudy`).
    pub default_params: Option<HashMap<String, String>>,
    /// Timeouts, a proxy, extra CA certificates and retry bounds for this client's requests.
    pub http: Option<HttpConfig>,
}

/// What `createIfNoneExist` did.
#[napi(object, object_from_js = false)]
pub struct CreateResult {
    /// True if the server created the resource, false if a match was already there.
    pub created: bool,
    /// The resource, created or found.
    #[napi(ts_type = "Resource")]
    pub resource: Value,
}

/// A client for one FHIR server (STU3 or R4 JSON).
#[napi]
pub struct FhirClient {
    inner: fhir::FhirClient,
}

impl FhirClient {
    pub(crate) fn wrap(inner: fhir::FhirClient) -> Self {
        FhirClient { inner }
    }

    /// Runs one core call on a clone of the client.
    fn call<T, F, Fut>(&self, env: &Env, f: F) -> Result<AsyncBlock<T>>
    where
        T: ToNapiValue + Send + 'static,
        F: FnOnce(fhir::FhirClient) -> Fut,
        Fut: Future<Output = CoreResult<T>> + Send + 'static,
    {
        settle(env, f(self.inner.clone()))
    }
}

#[napi]
impl FhirClient {
    #[napi(constructor)]
    pub fn new(
        env: Env,
        #[napi(ts_arg_type = "string")] base_url: Unknown<'_>,
        #[napi(ts_arg_type = "FhirClientOptions | undefined | null")] options: Option<Unknown<'_>>,
    ) -> Result<Self> {
        const OPTIONS: Kind = Kind::Options(
            "FhirClientOptions",
            &[
                ("auth", AUTH_FLOW),
                ("fhirVersion", Kind::Text),
                ("defaultParams", Kind::TextMap),
                ("http", HTTP_CONFIG),
            ],
        );
        let mut b = fhir::FhirClient::builder(text(&env, "baseUrl", base_url)?);
        let options: Option<FhirClientOptions> = args::opt(&env, "options", &OPTIONS, options)?;
        if let Some(o) = options {
            if let Some(flow) = &o.auth {
                b = b.auth(&provider_of(flow));
            }
            if let Some(h) = http::client(o.http).or_throw(&env)? {
                b = b.http_client(h);
            }
            if let Some(v) = o.fhir_version {
                b = b.fhir_version(v.parse::<FhirVersion>().or_throw(&env)?);
            }
            let mut params: Vec<_> = o.default_params.unwrap_or_default().into_iter().collect();
            params.sort();
            for (k, v) in params {
                b = b.default_param(k, v);
            }
        }
        Ok(FhirClient {
            inner: b.build().or_throw(&env)?,
        })
    }

    /// The base URL (ending in `/`).
    #[napi(getter)]
    pub fn base_url(&self) -> String {
        self.inner.base_url().to_owned()
    }

    /// `GET {base}/{type}/{id}`.
    #[napi(ts_return_type = "Promise<Resource>")]
    pub fn read(
        &self,
        env: Env,
        #[napi(ts_arg_type = "string")] resource_type: Unknown<'_>,
        #[napi(ts_arg_type = "string")] id: Unknown<'_>,
    ) -> Result<AsyncBlock<Resource>> {
        let resource_type = text(&env, "resourceType", resource_type)?;
        let id = text(&env, "id", id)?;
        self.call(&env, |c| async move {
            Ok(c.read(&resource_type, &id).await?.into())
        })
    }

    /// `GET {base}/metadata`: the CapabilityStatement.
    #[napi(ts_return_type = "Promise<Resource>")]
    pub fn capabilities(&self, env: Env) -> Result<AsyncBlock<Resource>> {
        self.call(&env, |c| async move { Ok(c.capabilities().await?.into()) })
    }

    /// The matching resources, as an async iterator that fetches the next page only when the
    /// current one is used up: `for await (const r of fhir.search('Observation', { code }))`.
    #[napi(ts_args_type = "resourceType: string, params?: SearchParams")]
    pub fn search(&self, resource_type: String, params: Option<Value>) -> Result<SearchIterator> {
        let stream: ResourceStream = match search_params(params) {
            Ok(params) => self.inner.search(&resource_type, &borrowed(&params)),
            // Like the core's own refusals: the first step rejects.
            Err(e) => Box::pin(futures_util::stream::once(async move { Err(e) })),
        };
        Ok(SearchIterator {
            stream: Arc::new(tokio::sync::Mutex::new(stream)),
        })
    }

    /// Every matching resource, all pages, in one array.
    #[napi(
        ts_args_type = "resourceType: string, params?: SearchParams",
        ts_return_type = "Promise<Resource[]>"
    )]
    pub fn search_all(
        &self,
        env: Env,
        resource_type: String,
        params: Option<Value>,
    ) -> Result<AsyncBlock<Vec<Resource>>> {
        self.call(&env, |c| async move {
            let params = search_params(params)?;
            Ok(resources(
                c.search_all(&resource_type, &borrowed(&params)).await?,
            ))
        })
    }

    /// One page of a search: the `searchset` Bundle as the server sent it.
    #[napi(
        ts_args_type = "resourceType: string, params?: SearchParams",
        ts_return_type = "Promise<Resource>"
    )]
    pub fn search_page(
        &self,
        env: Env,
        resource_type: String,
        params: Option<Value>,
    ) -> Result<AsyncBlock<Resource>> {
        self.call(&env, |c| async move {
            let params = search_params(params)?;
            Ok(c.search_page(&resource_type, &borrowed(&params))
                .await?
                .into())
        })
    }

    /// The next page of a Bundle, or `null` on the last page.
    #[napi(
        ts_args_type = "bundle: Resource",
        ts_return_type = "Promise<Resource | null>"
    )]
    pub fn next_page(&self, env: Env, bundle: Value) -> Result<AsyncBlock<Option<Resource>>> {
        self.call(&env, |c| async move {
            Ok(c.next_page(&bundle).await?.map(Resource::from))
        })
    }

    /// `POST {base}/{type}`: the created resource with its `id`.
    #[napi(
        ts_args_type = "resource: Resource",
        ts_return_type = "Promise<Resource>"
    )]
    pub fn create(&self, env: Env, resource: Unknown<'_>) -> Result<AsyncBlock<Resource>> {
        let resource: Value = args::arg(&env, "resource", &Kind::Object("Resource"), resource)?;
        self.call(
            &env,
            |c| async move { Ok(c.create(&resource).await?.into()) },
        )
    }

    /// Conditional create (`If-None-Exist: query`, e.g. `identifier=urn:x|42`): safe to retry.
    #[napi(ts_args_type = "resource: Resource, query: string")]
    pub fn create_if_none_exist(
        &self,
        env: Env,
        resource: Value,
        query: String,
    ) -> Result<AsyncBlock<CreateResult>> {
        self.call(&env, |c| async move {
            Ok(match c.create_if_none_exist(&resource, &query).await? {
                CreateOutcome::Created(resource) => CreateResult {
                    created: true,
                    resource,
                },
                CreateOutcome::Existing(resource) => CreateResult {
                    created: false,
                    resource,
                },
            })
        })
    }

    /// `PUT {base}/{type}/{id}` with the resource's own `id`.
    #[napi(
        ts_args_type = "resource: Resource",
        ts_return_type = "Promise<Resource>"
    )]
    pub fn update(&self, env: Env, resource: Value) -> Result<AsyncBlock<Resource>> {
        self.call(
            &env,
            |c| async move { Ok(c.update(&resource).await?.into()) },
        )
    }

    /// `POST {base}` of a `batch` or `transaction` Bundle: the response Bundle.
    #[napi(
        ts_args_type = "bundle: Resource",
        ts_return_type = "Promise<Resource>"
    )]
    pub fn transaction(&self, env: Env, bundle: Value) -> Result<AsyncBlock<Resource>> {
        self.call(
            &env,
            |c| async move { Ok(c.transaction(&bundle).await?.into()) },
        )
    }

    #[napi(js_name = "toString")]
    pub fn describe(&self) -> String {
        format!("{:?}", self.inner)
    }

    #[napi(js_name = "toJSON")]
    pub fn to_json(&self) -> String {
        format!("{:?}", self.inner)
    }
}

/// The resources of a search, page after page (`for await ... of`). A failed page rejects the
/// step with the package's error and ends the iteration.
#[napi(async_iterator)]
pub struct SearchIterator {
    stream: Arc<tokio::sync::Mutex<ResourceStream>>,
}

#[napi]
impl AsyncGenerator for SearchIterator {
    type Yield = Resource;
    type Next = ();
    type Return = ();

    fn next(
        &mut self,
        _value: Option<()>,
    ) -> impl Future<Output = Result<Option<Resource>>> + Send + 'static {
        let stream = self.stream.clone();
        async move { Ok(stream.lock().await.next().await.map(Resource)) }
    }
}
