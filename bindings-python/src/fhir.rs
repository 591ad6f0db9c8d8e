//! The generic FHIR client (`cibmtr_fhir::fhir`): resources in and out as dicts.
use std::sync::Arc;

use cibmtr_fhir::fhir::{self as core, CreateOutcome, FhirVersion, ResourceStream};
use futures_util::StreamExt;
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;

use crate::auth::TokenProvider;
use crate::convert::{Json, JsonList, borrowed, dict_arg, query_pairs};
use crate::error::OrRaise;
use crate::http::HttpConfig;
use crate::runtime::{Born, awaitable, awaitable_py, wait};

/// A client of one FHIR server (STU3 or R4 JSON). With `auth` (any flow), requests carry its
/// cached bearer token and a 401 re-mints it once. `default_params` (dict) are added to every
/// request and paging link, e.g. MSK's `{"researchstudy": "..."}`. Search parameters are a dict
/// (a list value repeats the parameter) or a list of (name, value) pairs.
#[pyclass(module = "cibmtr_fhir", frozen)]
pub struct FhirClient {
    inner: core::FhirClient,
}

impl FhirClient {
    pub(crate) fn wrap(inner: core::FhirClient) -> Self {
        FhirClient { inner }
    }

    /// The core client (usable after a `fork()` too: the core's HTTP pool is per process).
    fn core(&self) -> PyResult<&core::FhirClient> {
        Ok(&self.inner)
    }
}

#[pymethods]
impl FhirClient {
    #[new]
    #[pyo3(signature = (base_url, auth = None, fhir_version = "R4", default_params = None, *, http = None))]
    fn new(
        base_url: String,
        auth: Option<PyRef<'_, TokenProvider>>,
        fhir_version: &str,
        default_params: Option<&Bound<'_, PyAny>>,
        http: Option<&Bound<'_, HttpConfig>>,
    ) -> PyResult<Self> {
        let mut b = core::FhirClient::builder(base_url)
            .fhir_version(fhir_version.parse::<FhirVersion>().or_raise()?)
            .http_client(HttpConfig::client_or_default(http));
        if let Some(a) = &auth {
            b = b.auth(&a.provider);
        }
        for (k, v) in query_pairs(default_params, "default_params")? {
            b = b.default_param(k, v);
        }
        Ok(FhirClient::wrap(b.build().or_raise()?))
    }

    /// The base URL (ending in `/`).
    #[getter]
    fn base_url(&self) -> &str {
        self.inner.base_url()
    }

    /// `"STU3"` or `"R4"`.
    #[getter]
    fn fhir_version(&self) -> &'static str {
        version_name(self.inner.fhir_version())
    }

    /// `GET {base}/{resource_type}/{id}` as a dict.
    fn read(&self, py: Python<'_>, resource_type: &str, id: &str) -> PyResult<Json> {
        wait(py, self.core()?.read(resource_type, id)).map(Json)
    }

    /// `await fhir.aread(resource_type, id)`.
    fn aread<'py>(
        &self,
        py: Python<'py>,
        resource_type: String,
        id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.core()?.clone();
        awaitable(
            py,
            async move { c.read(&resource_type, &id).await.map(Json) },
        )
    }

    /// The matching resources, one page at a time as you iterate (`for r in fhir.search(...)`);
    /// `next` links are followed on the same origin only.
    #[pyo3(signature = (resource_type, params = None))]
    fn search(
        &self,
        resource_type: &str,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<ResourceIterator> {
        let pairs = query_pairs(params, "params")?;
        Ok(ResourceIterator::new(
            self.core()?.search(resource_type, &borrowed(&pairs)),
        ))
    }

    /// `async for r in fhir.asearch(...)`: the same iterator, for asyncio.
    #[pyo3(signature = (resource_type, params = None))]
    fn asearch(
        &self,
        resource_type: &str,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<ResourceIterator> {
        self.search(resource_type, params)
    }

    /// Every matching resource (all pages) as a list.
    #[pyo3(signature = (resource_type, params = None))]
    fn search_all(
        &self,
        py: Python<'_>,
        resource_type: &str,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<JsonList> {
        let pairs = query_pairs(params, "params")?;
        wait(
            py,
            self.core()?.search_all(resource_type, &borrowed(&pairs)),
        )
        .map(JsonList)
    }

    /// `await fhir.asearch_all(...)`.
    #[pyo3(signature = (resource_type, params = None))]
    fn asearch_all<'py>(
        &self,
        py: Python<'py>,
        resource_type: String,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let pairs = query_pairs(params, "params")?;
        let c = self.core()?.clone();
        awaitable(py, async move {
            c.search_all(&resource_type, &borrowed(&pairs))
                .await
                .map(JsonList)
        })
    }

    /// One page of a search: the `searchset` Bundle as the server sent it.
    #[pyo3(signature = (resource_type, params = None))]
    fn search_page(
        &self,
        py: Python<'_>,
        resource_type: &str,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Json> {
        let pairs = query_pairs(params, "params")?;
        wait(
            py,
            self.core()?.search_page(resource_type, &borrowed(&pairs)),
        )
        .map(Json)
    }

    /// `await fhir.asearch_page(...)`.
    #[pyo3(signature = (resource_type, params = None))]
    fn asearch_page<'py>(
        &self,
        py: Python<'py>,
        resource_type: String,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let pairs = query_pairs(params, "params")?;
        let c = self.core()?.clone();
        awaitable(py, async move {
            c.search_page(&resource_type, &borrowed(&pairs))
                .await
                .map(Json)
        })
    }

    /// The next page of a Bundle, or None on the last page.
    fn next_page(&self, py: Python<'_>, bundle: &Bound<'_, PyAny>) -> PyResult<Option<Json>> {
        let b = dict_arg(bundle, "bundle")?;
        wait(py, self.core()?.next_page(&b)).map(|p| p.map(Json))
    }

    /// `await fhir.anext_page(bundle)`.
    fn anext_page<'py>(
        &self,
        py: Python<'py>,
        bundle: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let b = dict_arg(bundle, "bundle")?;
        let c = self.core()?.clone();
        awaitable(
            py,
            async move { c.next_page(&b).await.map(|p| p.map(Json)) },
        )
    }

    /// `POST {base}/{resourceType}`; returns the created resource with its `id`. Not retried
    /// once it may have reached the server: use `create_if_none_exist` when a repeat must not
    /// create twice.
    fn create(&self, py: Python<'_>, resource: &Bound<'_, PyAny>) -> PyResult<Json> {
        let r = dict_arg(resource, "resource")?;
        wait(py, self.core()?.create(&r)).map(Json)
    }

    /// `await fhir.acreate(resource)`.
    fn acreate<'py>(
        &self,
        py: Python<'py>,
        resource: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let r = dict_arg(resource, "resource")?;
        let c = self.core()?.clone();
        awaitable(py, async move { c.create(&r).await.map(Json) })
    }

    /// Conditional create (`If-None-Exist: query`, e.g. `"identifier=urn:x|42"`): returns
    /// `(resource, created)`; safe to retry.
    fn create_if_none_exist(
        &self,
        py: Python<'_>,
        resource: &Bound<'_, PyAny>,
        query: &str,
    ) -> PyResult<(Json, bool)> {
        let r = dict_arg(resource, "resource")?;
        wait(py, self.core()?.create_if_none_exist(&r, query)).map(created)
    }

    /// `await fhir.acreate_if_none_exist(resource, query)`.
    fn acreate_if_none_exist<'py>(
        &self,
        py: Python<'py>,
        resource: &Bound<'_, PyAny>,
        query: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let r = dict_arg(resource, "resource")?;
        let c = self.core()?.clone();
        awaitable(py, async move {
            c.create_if_none_exist(&r, &query).await.map(created)
        })
    }

    /// `PUT {base}/{resourceType}/{id}` with the resource's own `id`.
    fn update(&self, py: Python<'_>, resource: &Bound<'_, PyAny>) -> PyResult<Json> {
        let r = dict_arg(resource, "resource")?;
        wait(py, self.core()?.update(&r)).map(Json)
    }

    /// `await fhir.aupdate(resource)`.
    fn aupdate<'py>(
        &self,
        py: Python<'py>,
        resource: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let r = dict_arg(resource, "resource")?;
        let c = self.core()?.clone();
        awaitable(py, async move { c.update(&r).await.map(Json) })
    }

    /// `POST {base}` of a batch or transaction Bundle; returns the response Bundle.
    fn transaction(&self, py: Python<'_>, bundle: &Bound<'_, PyAny>) -> PyResult<Json> {
        let b = dict_arg(bundle, "bundle")?;
        wait(py, self.core()?.transaction(&b)).map(Json)
    }

    /// `await fhir.atransaction(bundle)`.
    fn atransaction<'py>(
        &self,
        py: Python<'py>,
        bundle: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let b = dict_arg(bundle, "bundle")?;
        let c = self.core()?.clone();
        awaitable(py, async move { c.transaction(&b).await.map(Json) })
    }

    /// The server's CapabilityStatement (`GET {base}/metadata`).
    fn capabilities(&self, py: Python<'_>) -> PyResult<Json> {
        wait(py, self.core()?.capabilities()).map(Json)
    }

    /// `await fhir.acapabilities()`.
    fn acapabilities<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.core()?.clone();
        awaitable(py, async move { c.capabilities().await.map(Json) })
    }

    fn __repr__(&self) -> String {
        format!("<{:?}>", self.inner)
    }
}

fn created(outcome: CreateOutcome) -> (Json, bool) {
    match outcome {
        CreateOutcome::Created(v) => (Json(v), true),
        CreateOutcome::Existing(v) => (Json(v), false),
    }
}

pub fn version_name(v: FhirVersion) -> &'static str {
    match v {
        FhirVersion::Stu3 => "STU3",
        FhirVersion::R4 => "R4",
    }
}

/// The resources of a search, fetched page by page: `for` and `async for` both work.
#[pyclass(module = "cibmtr_fhir", frozen)]
pub struct ResourceIterator {
    stream: Arc<tokio::sync::Mutex<ResourceStream>>,
    born: Born,
}

impl ResourceIterator {
    fn new(stream: ResourceStream) -> Self {
        ResourceIterator {
            stream: Arc::new(tokio::sync::Mutex::new(stream)),
            born: Born::now(),
        }
    }
}

#[pymethods]
impl ResourceIterator {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Json>> {
        self.born.check()?;
        wait(py, async {
            self.stream.lock().await.next().await.transpose()
        })
        .map(|v| v.map(Json))
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.born.check()?;
        let stream = self.stream.clone();
        awaitable_py(py, async move {
            match stream.lock().await.next().await {
                Some(item) => item.map(Json).or_raise(),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }

    fn __repr__(&self) -> &'static str {
        "<ResourceIterator>"
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FhirClient>()?;
    m.add_class::<ResourceIterator>()?;
    Ok(())
}
