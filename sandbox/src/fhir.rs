//! A small in-memory FHIR store with the REST interactions the sandbox's FHIR servers share
//! (create, conditional create, read, update, search with paging), and the two generic
//! servers built on it: an MSK-like Blaze (R4, mandatory `researchstudy` parameter) and an
//! Aidbox-like server (R4, SMART Backend Services tokens). The CIBMTR server (`cibmtr.rs`)
//! reuses the store, the search and the responses, and adds its own validation.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::SecondsFormat;
use rand::Rng;
use serde_json::{Map, Value, json};

use crate::{Inner, Route, apply_fault, bearer_client};

/// Default page size of a search.
const DEFAULT_COUNT: usize = 50;
/// Largest page size a search honours; larger `_count` values are lowered to it.
const MAX_COUNT: usize = 1000;
const FHIR_JSON: &str = "application/fhir+json;charset=utf-8";

/// The FHIR stores of a sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Store {
    /// The CIBMTR Direct FHIR API (STU3), at `urls.cibmtr_base`.
    Cibmtr,
    /// The MSK-like Blaze store (R4), at `urls.msk_fhir`.
    Msk,
    /// The Aidbox-like store (R4), at `urls.aidbox_fhir`.
    Aidbox,
}

/// How a store makes resource ids (each server's own look, so clients treat ids as opaque).
#[derive(Clone, Copy)]
enum IdStyle {
    /// `1001`, `1002`, … (HAPI-like, used by CIBMTR).
    Sequential,
    /// 16 upper-case base-32 characters (Blaze).
    Blaze,
    /// A random UUID (Aidbox).
    Uuid,
}

/// The three stores.
pub(crate) struct Stores {
    cibmtr: Mutex<FhirStore>,
    msk: Mutex<FhirStore>,
    aidbox: Mutex<FhirStore>,
}

impl Default for Stores {
    fn default() -> Self {
        Stores {
            cibmtr: Mutex::new(FhirStore::new(IdStyle::Sequential)),
            msk: Mutex::new(FhirStore::new(IdStyle::Blaze)),
            aidbox: Mutex::new(FhirStore::new(IdStyle::Uuid)),
        }
    }
}

impl Stores {
    pub(crate) fn get(&self, store: Store) -> &Mutex<FhirStore> {
        match store {
            Store::Cibmtr => &self.cibmtr,
            Store::Msk => &self.msk,
            Store::Aidbox => &self.aidbox,
        }
    }
}

/// Current versions of every resource, in creation order.
#[derive(Clone)]
pub(crate) struct FhirStore {
    resources: Vec<Value>,
    /// `Type/id` → position in `resources`: a read (every Observation POST reads its Patient)
    /// must not scan the store, or creating gets slower as the store grows.
    positions: HashMap<String, usize>,
    ids: IdStyle,
    next_id: u64,
}

impl FhirStore {
    fn new(ids: IdStyle) -> Self {
        FhirStore {
            resources: Vec::new(),
            positions: HashMap::new(),
            ids,
            next_id: 1001,
        }
    }

    pub(crate) fn all(&self) -> Vec<Value> {
        self.resources.clone()
    }

    pub(crate) fn of_type<'a>(&'a self, rtype: &str) -> impl Iterator<Item = &'a Value> {
        self.resources
            .iter()
            .filter(move |r| r["resourceType"] == rtype)
    }

    pub(crate) fn read(&self, rtype: &str, id: &str) -> Option<&Value> {
        let i = *self.positions.get(&format!("{rtype}/{id}"))?;
        Some(&self.resources[i])
    }

    /// Appends a stamped resource and indexes it.
    fn push(&mut self, resource: Value) {
        let key = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap_or_default(),
            resource["id"].as_str().unwrap_or_default()
        );
        self.positions.insert(key, self.resources.len());
        self.resources.push(resource);
    }

    /// Stores `resource` under a new server-assigned id, version 1.
    pub(crate) fn create(&mut self, mut resource: Value) -> Value {
        let id = self.new_id();
        stamp(&mut resource, &id, 1);
        self.push(resource.clone());
        resource
    }

    /// Replaces (or creates, at the client's id) a resource; `true` when it was created.
    fn update(&mut self, rtype: &str, id: &str, mut resource: Value) -> (Value, bool) {
        let existing = self.positions.get(&format!("{rtype}/{id}")).copied();
        match existing {
            Some(i) => {
                stamp(&mut resource, id, version(&self.resources[i]) + 1);
                self.resources[i] = resource.clone();
                (resource, false)
            }
            None => {
                stamp(&mut resource, id, 1);
                self.push(resource.clone());
                (resource, true)
            }
        }
    }

    /// The resource an `If-None-Exist` criteria (`identifier=system|value`, …) designates;
    /// a bad criteria is a 400 and several matches a 412.
    pub(crate) fn find_existing(
        &self,
        rtype: &str,
        criteria: &str,
    ) -> Result<Option<Value>, Issue> {
        let criteria = criteria.trim_start_matches('?');
        let criteria = criteria
            .strip_prefix(&format!("{rtype}?"))
            .unwrap_or(criteria);
        let params = query_pairs(Some(criteria));
        if params.is_empty() {
            return Err(Issue::invalid("If-None-Exist: the criteria is empty"));
        }
        let found = self
            .search(rtype, &params)
            .map_err(|e| Issue::invalid(format!("If-None-Exist: {e}")))?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some((*one).clone())),
            many => Err(Issue {
                status: StatusCode::PRECONDITION_FAILED,
                code: "duplicate",
                diagnostics: format!("If-None-Exist: {} resources match the criteria", many.len()),
            }),
        }
    }

    /// Resources of `rtype` matching every parameter (`,` in a value means "or"). Parameters
    /// starting with `_` that are not search parameters (`_format`, `_sort`, …) are ignored;
    /// any other unknown parameter is an error, so a misspelt filter never silently matches all.
    fn search(&self, rtype: &str, params: &[(String, String)]) -> Result<Vec<&Value>, String> {
        // A chained parameter names Patients: find them once per search, not once per resource
        // (which made a search over n Observations cost n × the store).
        let chained: Vec<Option<Vec<String>>> = params
            .iter()
            .map(|(name, value)| is_chained(name).then(|| self.patient_references(value)))
            .collect();
        let mut out = Vec::new();
        'resources: for r in self.of_type(rtype) {
            for ((name, value), patients) in params.iter().zip(&chained) {
                let hit = match patients {
                    Some(refs) => refs
                        .iter()
                        .any(|p| same_reference(r.pointer("/subject/reference"), p)),
                    None => self.matches(r, name, value)?,
                };
                if !hit {
                    continue 'resources;
                }
            }
            out.push(r);
        }
        Ok(out)
    }

    /// `Patient/<id>` of every Patient with an identifier matching `value` (`,` = or).
    fn patient_references(&self, value: &str) -> Vec<String> {
        self.of_type("Patient")
            .filter(|p| {
                value
                    .split(',')
                    .any(|v| token_matches(p.get("identifier"), "value", v))
            })
            .filter_map(|p| p["id"].as_str().map(|id| format!("Patient/{id}")))
            .collect()
    }

    fn matches(&self, r: &Value, name: &str, value: &str) -> Result<bool, String> {
        let any = |f: &dyn Fn(&str) -> bool| value.split(',').any(f);
        Ok(match name {
            "_id" => any(&|v| r["id"] == v),
            "_security" => any(&|v| token_matches(r.pointer("/meta/security"), "code", v)),
            "identifier" => any(&|v| token_matches(r.get("identifier"), "value", v)),
            "code" => any(&|v| token_matches(r.pointer("/code/coding"), "code", v)),
            "status" => any(&|v| r["status"] == v),
            "subject" | "patient" => any(&|v| same_reference(r.pointer("/subject/reference"), v)),
            n if is_chained(n) => self
                .patient_references(value)
                .iter()
                .any(|p| same_reference(r.pointer("/subject/reference"), p)),
            n if n.starts_with('_') => true,
            other => return Err(format!("unknown search parameter {other:?}")),
        })
    }

    fn new_id(&mut self) -> String {
        let n = self.next_id;
        self.next_id += 1;
        let mut rng = rand::thread_rng();
        match self.ids {
            IdStyle::Sequential => n.to_string(),
            IdStyle::Blaze => {
                const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
                (0..16)
                    .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                    .collect()
            }
            IdStyle::Uuid => {
                let b: [u8; 16] = rng.r#gen();
                let h = |r: std::ops::Range<usize>| -> String {
                    b[r].iter().map(|x| format!("{x:02x}")).collect()
                };
                format!(
                    "{}-{}-4{}-a{}-{}",
                    h(0..4),
                    h(4..6),
                    &h(6..8)[1..],
                    &h(8..10)[1..],
                    h(10..16)
                )
            }
        }
    }
}

/// The parameters that search Observations by their Patient's identifier.
fn is_chained(name: &str) -> bool {
    matches!(
        name,
        "subject:Patient.identifier" | "subject.identifier" | "patient.identifier"
    )
}

/// Sets `id`, `meta.versionId` and `meta.lastUpdated`.
fn stamp(resource: &mut Value, id: &str, version: u64) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    obj.insert("id".into(), json!(id));
    let meta = obj.entry("meta").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta["versionId"] = json!(version.to_string());
    meta["lastUpdated"] = json!(chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true));
}

fn version(resource: &Value) -> u64 {
    resource
        .pointer("/meta/versionId")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `http://terminology.cibmtr.org/…` and `http://cibmtr.org/…` name the same things (the two
/// URI families of the CIBMTR guides); every other system compares exactly.
pub(crate) fn same_system(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.replacen("://terminology.cibmtr.org/", "://cibmtr.org/", 1);
    a == b || norm(a) == norm(b)
}

/// FHIR token search on a list of Codings (`key` = `code`) or Identifiers (`key` = `value`):
/// `system|code`, `|code` (no system), `system|` (any code) or `code` (any system).
fn token_matches(list: Option<&Value>, key: &str, query: &str) -> bool {
    let items: Vec<&Value> = match list {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => return false,
    };
    let (system, code) = match query.split_once('|') {
        Some((s, c)) => (Some(s), c),
        None => (None, query),
    };
    items.iter().any(|item| {
        let item_system = item.get("system").and_then(Value::as_str);
        let system_ok = match system {
            None => true,
            Some("") => item_system.is_none(),
            Some(s) => item_system.is_some_and(|i| same_system(i, s)),
        };
        let code_ok = code.is_empty() || item.get(key).and_then(Value::as_str) == Some(code);
        system_ok && code_ok
    })
}

/// Whether a reference (`Patient/1`, or an absolute URL ending in it) designates the same
/// resource as `query` (`Patient/1`, or a bare id meaning a Patient).
fn same_reference(reference: Option<&Value>, query: &str) -> bool {
    let Some(reference) = reference.and_then(Value::as_str) else {
        return false;
    };
    let tail = |s: &str| -> String {
        let parts: Vec<&str> = s.trim_end_matches('/').rsplitn(3, '/').collect();
        match parts.as_slice() {
            [id, rtype, ..] => format!("{rtype}/{id}"),
            [id] => format!("Patient/{id}"),
            _ => String::new(),
        }
    };
    tail(reference) == tail(query)
}

/// Decoded query parameters in order.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// A `searchset` Bundle for one page of a search at `{root}/{rtype}`. The paging state
/// (`_count`, `_getpagesoffset`) travels in the `next` link; every other parameter in `params`
/// is repeated in the links.
pub(crate) fn search_bundle(
    store: &FhirStore,
    root: &str,
    rtype: &str,
    params: &[(String, String)],
) -> Result<Value, String> {
    let mut count = DEFAULT_COUNT;
    let mut offset = 0usize;
    let mut criteria = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "_count" => {
                count = value
                    .parse::<usize>()
                    .map_err(|_| format!("_count: {value:?} is not a non-negative integer"))?
                    .min(MAX_COUNT);
            }
            "_getpagesoffset" => {
                offset = value.parse().map_err(|_| {
                    format!("_getpagesoffset: {value:?} is not a non-negative integer")
                })?;
            }
            _ => criteria.push((name.clone(), value.clone())),
        }
    }
    let matches = store.search(rtype, &criteria)?;
    let total = matches.len();
    let link = |offset: usize| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &criteria {
            q.append_pair(k, v);
        }
        q.append_pair("_count", &count.to_string());
        q.append_pair("_getpagesoffset", &offset.to_string());
        format!("{root}/{rtype}?{}", q.finish())
    };
    let mut links = vec![json!({"relation": "self", "url": link(offset)})];
    if count > 0 && offset + count < total {
        links.push(json!({"relation": "next", "url": link(offset + count)}));
    }
    let entries: Vec<Value> = matches
        .into_iter()
        .skip(offset)
        .take(count)
        .map(|r| {
            json!({
                "fullUrl": format!("{root}/{rtype}/{}", r["id"].as_str().unwrap_or_default()),
                "resource": r,
                "search": {"mode": "match"},
            })
        })
        .collect();
    Ok(json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": entries,
    }))
}

/// One FHIR REST interaction, from the method and the path below the server's root.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Interaction {
    /// `GET /metadata`
    Capabilities,
    /// `POST /` (a transaction or batch Bundle)
    Transaction,
    /// `POST /{type}`
    Create(String),
    /// `GET /{type}`
    Search(String),
    /// `GET /{type}/{id}`
    Read(String, String),
    /// `GET /{type}/{id}/_history/{vid}`
    VRead(String, String, String),
    /// `PUT /{type}/{id}`
    Update(String, String),
    /// Anything else.
    Unsupported,
}

impl Interaction {
    pub(crate) fn parse(method: &Method, rest: &str) -> Interaction {
        let rest = rest.trim_matches('/');
        let segs: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let is_type = |t: &str| {
            t.starts_with(|c: char| c.is_ascii_uppercase())
                && t.chars().all(|c| c.is_ascii_alphanumeric())
        };
        let s = |x: &str| x.to_string();
        match (method.as_str(), segs.as_slice()) {
            ("GET", ["metadata"]) => Interaction::Capabilities,
            ("POST", []) => Interaction::Transaction,
            ("POST", [t]) if is_type(t) => Interaction::Create(s(t)),
            ("GET", [t]) if is_type(t) => Interaction::Search(s(t)),
            ("GET", [t, id]) if is_type(t) => Interaction::Read(s(t), s(id)),
            ("GET", [t, id, "_history", v]) if is_type(t) => Interaction::VRead(s(t), s(id), s(v)),
            ("PUT", [t, id]) if is_type(t) => Interaction::Update(s(t), s(id)),
            _ => Interaction::Unsupported,
        }
    }
}

// ---------- responses ----------

/// A FHIR error, answered as an OperationOutcome.
pub(crate) struct Issue {
    pub(crate) status: StatusCode,
    /// The issue type (`invalid`, `duplicate`, …).
    pub(crate) code: &'static str,
    pub(crate) diagnostics: String,
}

impl Issue {
    /// A 400 `invalid` issue.
    pub(crate) fn invalid(diagnostics: impl Into<String>) -> Issue {
        Issue {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            diagnostics: diagnostics.into(),
        }
    }
}

impl IntoResponse for Issue {
    fn into_response(self) -> Response {
        outcome(self.status, self.code, self.diagnostics)
    }
}

/// A FHIR JSON response.
pub(crate) fn fhir_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        body.to_string(),
    )
        .into_response()
}

/// An OperationOutcome with one error issue.
pub(crate) fn outcome(status: StatusCode, code: &str, diagnostics: impl Into<String>) -> Response {
    fhir_response(
        status,
        &json!({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics.into()}],
        }),
    )
}

/// `{root}/{type}/{id}/_history/{versionId}`
pub(crate) fn location(root: &str, resource: &Value) -> String {
    format!("{root}/{}", relative_location(resource))
}

/// `{type}/{id}/_history/{versionId}`
pub(crate) fn relative_location(resource: &Value) -> String {
    format!(
        "{}/{}/_history/{}",
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default(),
        version(resource)
    )
}

/// The answer to a successful write: `status` with `Location`, `ETag` and (unless `with_body`
/// is false) the stored resource.
pub(crate) fn written(
    status: StatusCode,
    root: &str,
    resource: &Value,
    with_body: bool,
) -> Response {
    let mut resp = if with_body {
        fhir_response(status, resource)
    } else {
        status.into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::try_from(location(root, resource)) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::try_from(format!("W/\"{}\"", version(resource))) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// The answer to a read of `resource` (or 404).
pub(crate) fn read_response(resource: Option<&Value>, rtype: &str, id: &str) -> Response {
    match resource {
        Some(r) => {
            let mut resp = fhir_response(StatusCode::OK, r);
            if let Ok(v) = HeaderValue::try_from(format!("W/\"{}\"", version(r))) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            resp
        }
        None => outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{rtype}/{id} is not known"),
        ),
    }
}

/// A minimal CapabilityStatement.
pub(crate) fn capability_statement(fhir_version: &str, types: &[&str]) -> Response {
    let resources: Vec<Value> = types
        .iter()
        .map(|t| {
            json!({"type": t, "interaction": [{"code": "create"}, {"code": "read"}, {"code": "search-type"}]})
        })
        .collect();
    fhir_response(
        StatusCode::OK,
        &json!({
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": chrono::Utc::now().format("%Y-%m-%d").to_string(),
            "kind": "instance",
            "fhirVersion": fhir_version,
            "format": ["application/fhir+json"],
            "rest": [{"mode": "server", "resource": resources}],
        }),
    )
}

/// The JSON object in `body`, which must be a resource of type `rtype`.
pub(crate) fn parse_resource(body: &[u8], rtype: &str) -> Result<Value, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("body: not valid JSON ({e})"))?;
    match v.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == rtype => Ok(v),
        Some(t) => Err(format!("resourceType: expected {rtype}, got {t}")),
        None => Err("resourceType: missing".to_string()),
    }
}

/// 401 for a missing, unknown, expired or foreign bearer token.
fn invalid_token() -> Response {
    let mut resp = outcome(
        StatusCode::UNAUTHORIZED,
        "login",
        "a valid bearer token issued for this server is required",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    resp
}

// ---------- the generic servers ----------

/// What distinguishes the MSK-like and Aidbox-like servers.
struct Server {
    store: Store,
    route: Route,
    /// Path of the FHIR root below the sandbox's base URL.
    path: &'static str,
    /// Query parameter every request must carry (and that `next` links leave out).
    required_param: Option<&'static str>,
    /// Whether a token issued to this client is good here.
    accepts: fn(&Inner, &str) -> bool,
}

const MSK: Server = Server {
    store: Store::Msk,
    route: Route::MskFhir,
    path: "/msk/fhir",
    required_param: Some("researchstudy"),
    accepts: |inner, client| {
        client == inner.creds.msk.client_id || client == inner.creds.msk_basic.client_id
    },
};

const AIDBOX: Server = Server {
    store: Store::Aidbox,
    route: Route::AidboxFhir,
    path: "/aidbox/fhir",
    required_param: None,
    accepts: |inner, client| inner.smart.lock().unwrap().clients.contains_key(client),
};

/// Path of the MSK-like FHIR root.
pub(crate) const MSK_PATH: &str = MSK.path;
/// Path of the Aidbox-like FHIR root.
pub(crate) const AIDBOX_PATH: &str = AIDBOX.path;

/// Any request to the MSK-like server.
pub(crate) async fn msk(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&inner, &MSK, &method, &uri, &headers, &body).await
}

/// Any request to the Aidbox-like server.
pub(crate) async fn aidbox(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&inner, &AIDBOX, &method, &uri, &headers, &body).await
}

async fn serve(
    inner: &Inner,
    server: &Server,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if let Some(resp) = apply_fault(inner, server.route).await {
        return resp;
    }
    let op = Interaction::parse(method, uri.path().strip_prefix(server.path).unwrap_or(""));
    if op != Interaction::Capabilities
        && !bearer_client(inner, headers).is_some_and(|c| (server.accepts)(inner, &c))
    {
        return invalid_token();
    }
    let mut params = query_pairs(uri.query());
    if let Some(required) = server.required_param {
        if !params.iter().any(|(k, v)| k == required && !v.is_empty()) {
            return outcome(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("the {required} query parameter is required on every request"),
            );
        }
        params.retain(|(k, _)| k != required);
    }
    let root = format!("{}{}", inner.base, server.path);
    let mut store = inner.stores.get(server.store).lock().unwrap();
    match op {
        Interaction::Capabilities => capability_statement("4.0.1", &["Patient", "Observation"]),
        Interaction::Create(rtype) => {
            let resource = match parse_resource(body, &rtype) {
                Ok(r) => r,
                Err(e) => return outcome(StatusCode::BAD_REQUEST, "invalid", e),
            };
            if let Some(criteria) = headers.get("if-none-exist").and_then(|v| v.to_str().ok()) {
                match store.find_existing(&rtype, criteria) {
                    Ok(Some(existing)) => return written(StatusCode::OK, &root, &existing, true),
                    Ok(None) => {}
                    Err(issue) => return issue.into_response(),
                }
            }
            let stored = store.create(resource);
            written(StatusCode::CREATED, &root, &stored, true)
        }
        Interaction::Update(rtype, id) => {
            let resource = match parse_resource(body, &rtype) {
                Ok(r) => r,
                Err(e) => return outcome(StatusCode::BAD_REQUEST, "invalid", e),
            };
            if resource.get("id").is_some_and(|v| *v != id) {
                return outcome(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("id: the body's id differs from {id} in the URL"),
                );
            }
            let (stored, created) = store.update(&rtype, &id, resource);
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            written(status, &root, &stored, true)
        }
        Interaction::Read(rtype, id) => read_response(store.read(&rtype, &id), &rtype, &id),
        Interaction::VRead(rtype, id, vid) => {
            let found = store
                .read(&rtype, &id)
                .filter(|r| version(r).to_string() == vid);
            read_response(found, &rtype, &format!("{id}/_history/{vid}"))
        }
        Interaction::Search(rtype) => match search_bundle(&store, &root, &rtype, &params) {
            Ok(bundle) => fhir_response(StatusCode::OK, &bundle),
            Err(e) => outcome(StatusCode::BAD_REQUEST, "invalid", e),
        },
        Interaction::Transaction | Interaction::Unsupported => outcome(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            format!("{method} {} is not supported", uri.path()),
        ),
    }
}

/// `v` as a JSON object (replacing a non-object with `{}`), for edits.
pub(crate) fn object_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("just made an object")
}
