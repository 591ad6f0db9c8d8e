//! `FhirClient`: generic FHIR over HTTP. Resources go in and come out as JSON text; search
//! parameters are a map of name to value.
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::auth::Auth;
use crate::error::{Result, parse_json};
use crate::http::HttpOptions;
use crate::runtime::{block, run};

/// A FHIR server (STU3 or R4 JSON): read, search with paging, create, conditional create,
/// update, transaction. With `auth`, requests carry the flow's cached token and a 401 re-mints it
/// once; `defaultParams` are added to every request and paging link (MSK's `researchstudy`).
#[derive(uniffi::Object)]
#[uniffi::export(Debug)]
pub struct FhirClient(pub(crate) cibmtr_fhir::fhir::FhirClient);

impl std::fmt::Debug for FhirClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The answer to a conditional create.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CreateOutcome {
    /// Whether the server created the resource (false: a match already existed).
    pub created: bool,
    /// The created or matching resource (JSON), with its `id`.
    pub resource: String,
}

fn pairs(params: &HashMap<String, String>) -> Vec<(&str, &str)> {
    let mut v: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    v.sort_unstable();
    v
}

#[uniffi::export]
impl FhirClient {
    /// `fhirVersion`: `R4` or `STU3`; `http`: timeouts, proxy, CAs, the hosts allowed plain http
    /// and retry bounds of its requests.
    #[uniffi::constructor(default(auth = None, fhir_version = "R4", http = None, default_params))]
    pub fn new(
        base_url: String,
        auth: Option<Arc<dyn Auth>>,
        fhir_version: String,
        default_params: HashMap<String, String>,
        http: Option<HttpOptions>,
    ) -> Result<Arc<Self>> {
        let mut b =
            cibmtr_fhir::fhir::FhirClient::builder(base_url).fhir_version(fhir_version.parse()?);
        if let Some(a) = auth {
            b = b.auth(&a.token_provider()?.0);
        }
        if let Some(h) = crate::http::client(http)? {
            b = b.http_client(h);
        }
        let mut params: Vec<_> = default_params.into_iter().collect();
        params.sort_unstable();
        for (k, v) in params {
            b = b.default_param(k, v);
        }
        Ok(Arc::new(FhirClient(b.build()?)))
    }

    /// The base URL (ending in `/`).
    pub fn base_url(&self) -> String {
        self.0.base_url().to_owned()
    }

    /// `GET {base}/{type}/{id}`.
    pub async fn read(&self, resource_type: String, id: String) -> Result<String> {
        let c = self.0.clone();
        run(async move { Ok(c.read(&resource_type, &id).await?.to_string()) }).await
    }
    /// `read()`, blocking the calling thread (for Java).
    pub fn read_blocking(&self, resource_type: String, id: String) -> Result<String> {
        block(self.read(resource_type, id))
    }

    /// Every matching resource (JSON each), following `next` links (same origin only).
    #[uniffi::method(default(params))]
    pub async fn search(
        &self,
        resource_type: String,
        params: HashMap<String, String>,
    ) -> Result<Vec<String>> {
        let c = self.0.clone();
        run(async move {
            let found = c.search_all(&resource_type, &pairs(&params)).await?;
            Ok(found.iter().map(Value::to_string).collect())
        })
        .await
    }
    /// `search()`, blocking the calling thread (for Java).
    pub fn search_blocking(
        &self,
        resource_type: String,
        params: HashMap<String, String>,
    ) -> Result<Vec<String>> {
        block(self.search(resource_type, params))
    }

    /// One page of a search: the `searchset` Bundle (JSON) as the server sent it.
    #[uniffi::method(default(params))]
    pub async fn search_page(
        &self,
        resource_type: String,
        params: HashMap<String, String>,
    ) -> Result<String> {
        let c = self.0.clone();
        run(async move {
            Ok(c.search_page(&resource_type, &pairs(&params))
                .await?
                .to_string())
        })
        .await
    }
    /// `searchPage()`, blocking the calling thread (for Java).
    pub fn search_page_blocking(
        &self,
        resource_type: String,
        params: HashMap<String, String>,
    ) -> Result<String> {
        block(self.search_page(resource_type, params))
    }

    /// The page after `bundle` (JSON), or `null` on the last page.
    pub async fn next_page(&self, bundle: String) -> Result<Option<String>> {
        let c = self.0.clone();
        let bundle = parse_json("bundle", &bundle)?;
        run(async move { Ok(c.next_page(&bundle).await?.map(|b| b.to_string())) }).await
    }
    /// `nextPage()`, blocking the calling thread (for Java).
    pub fn next_page_blocking(&self, bundle: String) -> Result<Option<String>> {
        block(self.next_page(bundle))
    }

    /// `POST {base}/{type}`: the created resource (JSON) with its `id`.
    pub async fn create(&self, resource: String) -> Result<String> {
        let c = self.0.clone();
        let resource = parse_json("resource", &resource)?;
        run(async move { Ok(c.create(&resource).await?.to_string()) }).await
    }
    /// `create()`, blocking the calling thread (for Java).
    pub fn create_blocking(&self, resource: String) -> Result<String> {
        block(self.create(resource))
    }

    /// Conditional create (`If-None-Exist: {query}`, e.g. `identifier=urn:x|42`): safe to retry.
    pub async fn create_if_none_exist(
        &self,
        resource: String,
        query: String,
    ) -> Result<CreateOutcome> {
        let c = self.0.clone();
        let resource = parse_json("resource", &resource)?;
        run(async move {
            let outcome = c.create_if_none_exist(&resource, &query).await?;
            Ok(CreateOutcome {
                created: matches!(outcome, cibmtr_fhir::fhir::CreateOutcome::Created(_)),
                resource: outcome.resource().to_string(),
            })
        })
        .await
    }
    /// `createIfNoneExist()`, blocking the calling thread (for Java).
    pub fn create_if_none_exist_blocking(
        &self,
        resource: String,
        query: String,
    ) -> Result<CreateOutcome> {
        block(self.create_if_none_exist(resource, query))
    }

    /// `PUT {base}/{type}/{id}` with the resource's own `id`.
    pub async fn update(&self, resource: String) -> Result<String> {
        let c = self.0.clone();
        let resource = parse_json("resource", &resource)?;
        run(async move { Ok(c.update(&resource).await?.to_string()) }).await
    }
    /// `update()`, blocking the calling thread (for Java).
    pub fn update_blocking(&self, resource: String) -> Result<String> {
        block(self.update(resource))
    }

    /// `POST {base}` of a `batch` or `transaction` Bundle: the response Bundle (JSON).
    pub async fn transaction(&self, bundle: String) -> Result<String> {
        let c = self.0.clone();
        let bundle = parse_json("bundle", &bundle)?;
        run(async move { Ok(c.transaction(&bundle).await?.to_string()) }).await
    }
    /// `transaction()`, blocking the calling thread (for Java).
    pub fn transaction_blocking(&self, bundle: String) -> Result<String> {
        block(self.transaction(bundle))
    }

    /// `GET {base}/metadata`: the CapabilityStatement (JSON).
    pub async fn capabilities(&self) -> Result<String> {
        let c = self.0.clone();
        run(async move { Ok(c.capabilities().await?.to_string()) }).await
    }
    /// `capabilities()`, blocking the calling thread (for Java).
    pub fn capabilities_blocking(&self) -> Result<String> {
        block(self.capabilities())
    }
}
