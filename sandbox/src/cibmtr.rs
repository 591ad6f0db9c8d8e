//! The CIBMTR Direct FHIR Service API (STU3), written from the published guide: CRID
//! registration, the de-identified Patient, lab Observations, their searches, and the
//! transaction Bundles of later guide versions. Served at `{base}/cibmtr/v1` and again at
//! `{base}/cibmtr/v1/r3`; only Okta tokens are accepted.
use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::{Value, json};

use crate::fhir::{
    FhirStore, Interaction, Issue, Store, capability_statement, fhir_response, object_mut, outcome,
    query_pairs, read_response, relative_location, same_system, search_bundle, written,
};
use crate::{Inner, Route, apply_fault, bearer_client, json_response};

/// Path of the API below the sandbox's base URL.
pub(crate) const PATH: &str = "/cibmtr/v1";
/// First CRID handed out: 2^53 + 1, the first integer an `f64` cannot hold.
const FIRST_CRID: u64 = 9_007_199_254_740_993;
const MAX_TRANSACTION_ENTRIES: usize = 50;

const TRANSPLANT_CENTER_SYSTEMS: [&str; 2] = [
    "http://cibmtr.org/codesystem/transplant-center",
    "http://terminology.cibmtr.org/codesystem/transplant-center",
];
const CRID_SYSTEMS: [&str; 2] = [
    "http://cibmtr.org/identifier/CRID",
    "http://terminology.cibmtr.org/identifier/CRID",
];
const UCUM: &str = "http://unitsofmeasure.org";
const RACE_CODES: [&str; 7] = [
    "1002-5", "2028-9", "2054-5", "2076-8", "2106-3", "ASKU", "UNK",
];
const ETHNICITY_CODES: [&str; 3] = ["2135-2", "2186-5", "UNK"];
const OBSERVATION_STATUSES: [&str; 8] = [
    "registered",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "cancelled",
    "entered-in-error",
    "unknown",
];
/// The guide's FAQ answer, for a sandbox configured without Bundle support.
const BUNDLES_REFUSED: &str = "Currently, the Direct FHIR Service API cannot accept resources \
                               formatted as a bundle, they must be submitted individually";

/// Shape of the CRID registration response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CridResponseShape {
    /// `{"perfectMatch":[{"matchedCriteria":[…],"matchType":"Perfect1","crid":N}]}`.
    #[default]
    PerfectMatch,
    /// The older `{"crid": N}`.
    TopLevel,
}

/// CRIDs by the demographics that identify a patient.
pub(crate) struct CridRegistry {
    by_key: HashMap<String, u64>,
    next: u64,
}

impl Default for CridRegistry {
    fn default() -> Self {
        CridRegistry {
            by_key: HashMap::new(),
            next: FIRST_CRID,
        }
    }
}

impl CridRegistry {
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// The CRID already given to these demographics, or the next one.
    fn crid_for(&mut self, key: String) -> u64 {
        if let Some(&crid) = self.by_key.get(&key) {
            return crid;
        }
        let crid = self.next;
        self.next += 1;
        self.by_key.insert(key, crid);
        crid
    }
}

/// Any request below [`PATH`].
pub(crate) async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (root, rest) = split_root(&inner.base, uri.path());
    if rest.trim_end_matches('/') == "/CRID" {
        if method != Method::PUT {
            return error_message(StatusCode::METHOD_NOT_ALLOWED, "CRID: use PUT");
        }
        if let Some(resp) = apply_fault(&inner, Route::Crid).await {
            return resp;
        }
        return unauthorized(&inner, &headers).unwrap_or_else(|| register_crid(&inner, &body));
    }
    let op = Interaction::parse(&method, rest);
    if let Some(route) = route_of(&op)
        && let Some(resp) = apply_fault(&inner, route).await
    {
        return resp;
    }
    if op == Interaction::Capabilities {
        return capability_statement("3.0.2", &["Patient", "Observation"]);
    }
    if let Some(resp) = unauthorized(&inner, &headers) {
        return resp;
    }
    match op {
        Interaction::Create(t) if t == "Patient" => create_patient(&inner, &root, &headers, &body),
        Interaction::Create(t) if t == "Observation" => {
            create_observation(&inner, &root, &headers, &body)
        }
        Interaction::Transaction => transaction(&inner, &headers, &body),
        Interaction::Search(t) if is_supported(&t) => {
            let store = inner.stores.get(Store::Cibmtr).lock().unwrap();
            match search_bundle(&store, &root, &t, &query_pairs(uri.query())) {
                Ok(bundle) => fhir_response(StatusCode::OK, &bundle),
                Err(e) => outcome(StatusCode::BAD_REQUEST, "invalid", e),
            }
        }
        Interaction::Read(t, id) if is_supported(&t) => {
            let store = inner.stores.get(Store::Cibmtr).lock().unwrap();
            read_response(store.read(&t, &id), &t, &id)
        }
        Interaction::Create(t) | Interaction::Search(t) | Interaction::Read(t, _)
            if !is_supported(&t) =>
        {
            outcome(
                StatusCode::NOT_FOUND,
                "not-supported",
                format!("{t}: the Direct FHIR Service API supports Patient and Observation"),
            )
        }
        _ => outcome(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            format!("{method} {} is not supported", uri.path()),
        ),
    }
}

fn is_supported(rtype: &str) -> bool {
    rtype == "Patient" || rtype == "Observation"
}

/// The FHIR root the request used (`{base}/cibmtr/v1` or `{base}/cibmtr/v1/r3`) and the rest
/// of its path.
fn split_root<'a>(base: &str, path: &'a str) -> (String, &'a str) {
    let rest = path.strip_prefix(PATH).unwrap_or("");
    match rest.strip_prefix("/r3") {
        Some(r) if r.is_empty() || r.starts_with('/') => (format!("{base}{PATH}/r3"), r),
        _ => (format!("{base}{PATH}"), rest),
    }
}

fn route_of(op: &Interaction) -> Option<Route> {
    match op {
        Interaction::Create(t) if t == "Patient" => Some(Route::PatientCreate),
        Interaction::Create(t) if t == "Observation" => Some(Route::ObservationCreate),
        Interaction::Transaction => Some(Route::ObservationCreate),
        Interaction::Search(t) | Interaction::Read(t, _) if t == "Patient" => {
            Some(Route::PatientSearch)
        }
        Interaction::Search(t) | Interaction::Read(t, _) if t == "Observation" => {
            Some(Route::ObservationSearch)
        }
        _ => None,
    }
}

/// `{"errorMessage": …}`, the shape of the API's backend errors.
fn error_message(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, json!({"errorMessage": message.into()}))
}

/// The 401 to send unless the request carries a valid Okta token.
fn unauthorized(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    if bearer_client(inner, headers).as_deref() == Some(inner.creds.okta.client_id.as_str()) {
        return None;
    }
    let mut resp = error_message(
        StatusCode::UNAUTHORIZED,
        "Unauthorized: a valid bearer token from the CIBMTR Okta authorization server is required",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    Some(resp)
}

/// FHIR writes must say they are JSON; the 415 to send if they do not.
fn not_fhir_json(headers: &HeaderMap) -> Option<Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/fhir+json")
        || mime.eq_ignore_ascii_case("application/json")
    {
        return None;
    }
    Some(error_message(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("Content-Type must be application/fhir+json, got {ct:?}"),
    ))
}

fn if_none_exist(headers: &HeaderMap) -> Option<&str> {
    headers.get("if-none-exist").and_then(|v| v.to_str().ok())
}

/// The request body as JSON, or the problem in words for the caller's error shape.
fn json_body(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("body: not valid JSON ({e})"))
}

// ---------- CRID ----------

fn register_crid(inner: &Inner, body: &[u8]) -> Response {
    let request = match json_body(body) {
        Ok(v) => v,
        Err(e) => return error_message(StatusCode::BAD_REQUEST, e),
    };
    let key = match crid_key(&request) {
        Ok(k) => k,
        Err(e) => return error_message(StatusCode::BAD_REQUEST, e),
    };
    let crid = inner.crids.lock().unwrap().crid_for(key);
    let body = match inner.config.crid_response {
        CridResponseShape::PerfectMatch => json!({"perfectMatch": [{
            "matchedCriteria": ["firstName", "lastName", "birthDate", "gender"],
            "matchType": "Perfect1",
            "crid": crid,
        }]}),
        CridResponseShape::TopLevel => json!({"crid": crid}),
    };
    json_response(StatusCode::OK, body)
}

fn is_ccn(s: &str) -> bool {
    s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Validates a registration and returns the key that identifies the patient: CCN,
/// case-insensitive names, birth date and gender.
fn crid_key(request: &Value) -> Result<String, String> {
    let ccn = match request.get("ccn") {
        Some(Value::String(s)) if is_ccn(s) => s,
        Some(Value::String(s)) => return Err(format!("ccn must be exactly 5 digits, got {s:?}")),
        Some(_) => return Err("ccn must be a string of exactly 5 digits".into()),
        None => return Err("ccn is required".into()),
    };
    let patient = request
        .get("patient")
        .filter(|p| p.is_object())
        .ok_or("patient is required and must be an object")?;
    let text = |field: &str| -> Result<Option<&str>, String> {
        match patient.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("patient.{field} must be a string")),
        }
    };
    let number = |field: &str| -> Result<(), String> {
        match patient.get(field) {
            None | Some(Value::Null) | Some(Value::Number(_)) => Ok(()),
            Some(_) => Err(format!("patient.{field} must be a number")),
        }
    };
    let name = |field: &str| -> Result<String, String> {
        text(field)?
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase)
            .ok_or_else(|| format!("patient.{field} is required and must not be empty"))
    };
    let first = name("firstName")?;
    let last = name("lastName")?;
    let birth = text("birthDate")?.ok_or("patient.birthDate is required (YYYY-MM-DD)")?;
    check_birth_date(birth)?;
    let gender = match text("gender")? {
        Some(g @ ("M" | "F")) => g,
        Some(g) => return Err(format!("patient.gender must be \"M\" or \"F\", got {g:?}")),
        None => return Err("patient.gender is required (\"M\" or \"F\")".into()),
    };
    if let Some(ssn) = text("ssn")? {
        check_ssn(ssn)?;
    }
    match patient.get("race") {
        None | Some(Value::Null) => {}
        Some(Value::Array(codes)) => {
            for code in codes {
                match code.as_str() {
                    Some(c) if RACE_CODES.contains(&c) => {}
                    _ => {
                        return Err(format!(
                            "patient.race: {code} is not one of {}",
                            RACE_CODES.join(", ")
                        ));
                    }
                }
            }
        }
        Some(_) => return Err("patient.race must be an array of race codes".into()),
    }
    if let Some(e) = text("ethnicity")?
        && !ETHNICITY_CODES.contains(&e)
    {
        return Err(format!(
            "patient.ethnicity: {e:?} is not one of {}",
            ETHNICITY_CODES.join(", ")
        ));
    }
    number("nmdpRid")?;
    number("cibmtrTeam")?;
    for field in ["mothersMaidenName", "ebmtCic", "ebmtId", "cibmtrIubmid"] {
        text(field)?;
    }
    Ok(format!("{ccn}|{first}|{last}|{birth}|{gender}"))
}

fn check_birth_date(s: &str) -> Result<(), String> {
    let shape_ok = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|_| shape_ok)
        .ok_or_else(|| {
            format!("patient.birthDate must be a real date in YYYY-MM-DD form, got {s:?}")
        })?;
    // "Today" anywhere on Earth, so a birth today east of UTC is not in the future.
    let latest_today = (chrono::Utc::now() + chrono::Duration::hours(14)).date_naive();
    if date > latest_today {
        return Err(format!(
            "patient.birthDate must not be in the future, got {s}"
        ));
    }
    Ok(())
}

fn check_ssn(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 11
        && b.iter().enumerate().all(|(i, c)| {
            if i == 3 || i == 6 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !shape_ok {
        return Err("patient.ssn must look like ###-##-####".into());
    }
    let area = &s[..3];
    if area == "000" || area == "666" || area.starts_with('9') {
        return Err(format!("patient.ssn: area number {area} is never issued"));
    }
    Ok(())
}

// ---------- Patient ----------

fn create_patient(inner: &Inner, root: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Some(resp) = not_fhir_json(headers) {
        return resp;
    }
    let patient = match json_body(body) {
        Ok(v) => v,
        Err(e) => return error_message(StatusCode::BAD_REQUEST, e),
    };
    if let Err(e) = check_patient(&patient) {
        return error_message(StatusCode::BAD_REQUEST, e);
    }
    let mut store = inner.stores.get(Store::Cibmtr).lock().unwrap();
    if let Some(criteria) = if_none_exist(headers) {
        match store.find_existing("Patient", criteria) {
            Ok(Some(existing)) => return written(StatusCode::OK, root, &existing, true),
            Ok(None) => {}
            Err(issue) => return issue.into_response(),
        }
    }
    let stored = store.create(redact(patient));
    written(
        StatusCode::CREATED,
        root,
        &stored,
        !inner.config.patient_id_only_in_location,
    )
}

fn check_patient(p: &Value) -> Result<(), String> {
    match p.get("resourceType").and_then(Value::as_str) {
        Some("Patient") => {}
        Some("Bundle") => return Err(BUNDLES_REFUSED.into()),
        other => return Err(format!("resourceType must be Patient, got {other:?}")),
    }
    if ccn_label(p).is_none() {
        return Err(format!(
            "meta.security must contain the transplant center label rc_<CCN> (5 digits) \
             with system {}",
            TRANSPLANT_CENTER_SYSTEMS[0]
        ));
    }
    let has_crid = p
        .get("identifier")
        .and_then(Value::as_array)
        .is_some_and(|ids| ids.iter().any(is_crid_identifier));
    if !has_crid {
        return Err(format!(
            "identifier must contain the CRID (system {}) with a value",
            CRID_SYSTEMS[0]
        ));
    }
    Ok(())
}

fn is_crid_identifier(id: &Value) -> bool {
    let system_ok = id
        .get("system")
        .and_then(Value::as_str)
        .is_some_and(|s| CRID_SYSTEMS.contains(&s));
    let value_ok = id
        .get("value")
        .and_then(Value::as_str)
        .is_some_and(|v| !v.trim().is_empty());
    system_ok && value_ok
}

/// The `rc_<CCN>` security label, in either URI family.
fn ccn_label(resource: &Value) -> Option<&str> {
    resource
        .pointer("/meta/security")?
        .as_array()?
        .iter()
        .filter(|c| {
            c.get("system")
                .and_then(Value::as_str)
                .is_some_and(|s| same_system(s, TRANSPLANT_CENTER_SYSTEMS[0]))
        })
        .filter_map(|c| c.get("code").and_then(Value::as_str))
        .find(|code| code.strip_prefix("rc_").is_some_and(is_ccn))
}

/// Removes PII the way the API does before storing a Patient.
fn redact(mut patient: Value) -> Value {
    let p = object_mut(&mut patient);
    for field in [
        "name",
        "telecom",
        "address",
        "birthDate",
        "photo",
        "contact",
    ] {
        p.remove(field);
    }
    p.insert(
        "text".into(),
        json!({"status": "empty", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Redacted</div>"}),
    );
    if let Some(Value::Array(ids)) = p.get_mut("identifier") {
        ids.retain(is_crid_identifier);
    }
    let redacted = json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"});
    let meta = object_mut(p.entry("meta").or_insert_with(|| json!({})));
    let security = meta.entry("security").or_insert_with(|| json!([]));
    if let Value::Array(labels) = security
        && !labels.contains(&redacted)
    {
        labels.push(redacted);
    }
    patient
}

// ---------- Observation ----------

fn create_observation(inner: &Inner, root: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Some(resp) = not_fhir_json(headers) {
        return resp;
    }
    let observation = match json_body(body) {
        Ok(v) => v,
        Err(e) => return outcome(StatusCode::BAD_REQUEST, "structure", e),
    };
    if observation["resourceType"] == "Bundle" {
        return error_message(
            StatusCode::BAD_REQUEST,
            "Bundles are not supported; submit resources individually",
        );
    }
    let mut store = inner.stores.get(Store::Cibmtr).lock().unwrap();
    if let Err(e) = check_observation(&observation, &store) {
        return outcome(StatusCode::BAD_REQUEST, "invalid", e);
    }
    if let Some(criteria) = if_none_exist(headers) {
        match store.find_existing("Observation", criteria) {
            Ok(Some(existing)) => return written(StatusCode::OK, root, &existing, true),
            Ok(None) => {}
            Err(issue) => return issue.into_response(),
        }
    }
    let stored = store.create(observation);
    written(StatusCode::CREATED, root, &stored, true)
}

/// The guide's rules for a form 2402 lab; the error reads `field: problem`.
fn check_observation(o: &Value, store: &FhirStore) -> Result<(), String> {
    let text = |ptr: &str| {
        o.pointer(ptr)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match o.get("resourceType").and_then(Value::as_str) {
        Some("Observation") => {}
        other => return Err(format!("resourceType: must be Observation, got {other:?}")),
    }
    match text("/status") {
        Some(s) if OBSERVATION_STATUSES.contains(&s) => {}
        Some(s) => return Err(format!("status: {s:?} is not an Observation status")),
        None => return Err("status: required".into()),
    }
    if ccn_label(o).is_none() {
        return Err("meta.security: the transplant center label rc_<CCN> is required".into());
    }
    if text("/code/coding/0/system").is_none() || text("/code/coding/0/code").is_none() {
        return Err("code.coding[0]: system and code are required".into());
    }
    let reference = text("/subject/reference").ok_or("subject.reference: required")?;
    let patient_id = reference
        .strip_prefix("Patient/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .ok_or_else(|| format!("subject.reference: must be Patient/<id>, got {reference:?}"))?;
    if store.read("Patient", patient_id).is_none() {
        return Err(format!("subject.reference: {reference} does not exist"));
    }
    let effective = text("/effectiveDateTime").ok_or("effectiveDateTime: required")?;
    check_timezone_aware(effective).map_err(|e| format!("effectiveDateTime: {e}"))?;
    check_quantity(o.get("valueQuantity"), "valueQuantity", true)?;
    if let Some(ranges) = o.get("referenceRange") {
        let ranges = ranges
            .as_array()
            .ok_or("referenceRange: must be an array")?;
        for (i, range) in ranges.iter().enumerate() {
            for bound in ["low", "high"] {
                if let Some(q) = range.get(bound) {
                    check_quantity(Some(q), &format!("referenceRange[{i}].{bound}"), false)?;
                }
            }
        }
    }
    Ok(())
}

fn check_timezone_aware(s: &str) -> Result<(), String> {
    if s.len() > 10 && s.as_bytes()[10] == b'T' && DateTime::parse_from_rfc3339(s).is_ok() {
        return Ok(());
    }
    if NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok() {
        return Err(format!("{s:?} has no timezone offset (add Z or ±hh:mm)"));
    }
    Err(format!(
        "{s:?} is not a date-time with a timezone (e.g. 2024-05-01T08:30:00-05:00)"
    ))
}

/// A UCUM Quantity with a numeric value; `required` says whether it must be present.
fn check_quantity(q: Option<&Value>, field: &str, required: bool) -> Result<(), String> {
    let Some(q) = q else {
        return if required {
            Err(format!("{field}: required"))
        } else {
            Ok(())
        };
    };
    if !q.get("value").is_some_and(Value::is_number) {
        return Err(format!("{field}.value: must be a number"));
    }
    if q.get("system").and_then(Value::as_str) != Some(UCUM) {
        return Err(format!("{field}.system: must be {UCUM} (UCUM)"));
    }
    if q.get("code")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(format!("{field}.code: a UCUM unit code is required"));
    }
    Ok(())
}

// ---------- transaction ----------

/// `POST {root}` with a transaction Bundle of Observation creates; all or nothing.
fn transaction(inner: &Inner, headers: &HeaderMap, body: &[u8]) -> Response {
    if !inner.config.accept_bundles {
        return error_message(StatusCode::BAD_REQUEST, BUNDLES_REFUSED);
    }
    if let Some(resp) = not_fhir_json(headers) {
        return resp;
    }
    let bundle = match json_body(body) {
        Ok(v) => v,
        Err(e) => return outcome(StatusCode::BAD_REQUEST, "structure", e),
    };
    if bundle["resourceType"] != "Bundle" || bundle["type"] != "transaction" {
        return outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "resourceType/type: the FHIR root accepts only a Bundle of type transaction",
        );
    }
    let empty = Vec::new();
    let entries = bundle["entry"].as_array().unwrap_or(&empty);
    if entries.len() > MAX_TRANSACTION_ENTRIES {
        return outcome(
            StatusCode::BAD_REQUEST,
            "too-costly",
            format!(
                "entry: a transaction holds at most {MAX_TRANSACTION_ENTRIES} entries, this one has {}",
                entries.len()
            ),
        );
    }
    let mut store = inner.stores.get(Store::Cibmtr).lock().unwrap();
    // Work on a copy and keep it only if every entry succeeds.
    let mut draft = store.clone();
    let mut responses = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        match transaction_entry(&mut draft, entry) {
            Ok(response) => responses.push(json!({"response": response})),
            Err(issue) => {
                let diagnostics = format!("entry[{i}]: {}", issue.diagnostics);
                return Issue {
                    diagnostics,
                    ..issue
                }
                .into_response();
            }
        }
    }
    *store = draft;
    fhir_response(
        StatusCode::OK,
        &json!({"resourceType": "Bundle", "type": "transaction-response", "entry": responses}),
    )
}

/// Applies one entry to `draft`; returns its `response` element.
fn transaction_entry(draft: &mut FhirStore, entry: &Value) -> Result<Value, Issue> {
    let request = &entry["request"];
    let url = request["url"].as_str().map(|u| u.trim_matches('/'));
    if request["method"] != "POST" || url != Some("Observation") {
        return Err(Issue::invalid(
            "request: only POST Observation is supported",
        ));
    }
    let resource = &entry["resource"];
    check_observation(resource, draft).map_err(Issue::invalid)?;
    if let Some(criteria) = request["ifNoneExist"].as_str()
        && let Some(existing) = draft.find_existing("Observation", criteria)?
    {
        return Ok(entry_response("200 OK", &existing));
    }
    let stored = draft.create(resource.clone());
    Ok(entry_response("201 Created", &stored))
}

fn entry_response(status: &str, resource: &Value) -> Value {
    json!({
        "status": status,
        "location": relative_location(resource),
        "etag": format!("W/\"{}\"", resource.pointer("/meta/versionId").and_then(Value::as_str).unwrap_or("1")),
        "lastModified": resource.pointer("/meta/lastUpdated"),
    })
}
