//! The FHIR side of the sandbox: the CIBMTR Direct FHIR API, the MSK-like and Aidbox-like
//! stores, and the per-route faults, driven with plain HTTP.
use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cibmtr_fhir_sandbox::{
    CridResponseShape, DropMode, Fault, Route, Sandbox, SandboxConfig, Store,
};
use serde_json::{Value, json};

const TC_OLD: &str = "http://cibmtr.org/codesystem/transplant-center";
const TC_NEW: &str = "http://terminology.cibmtr.org/codesystem/transplant-center";
const CRID_OLD: &str = "http://cibmtr.org/identifier/CRID";
const CRID_NEW: &str = "http://terminology.cibmtr.org/identifier/CRID";
const FHIR_JSON: &str = "application/fhir+json";

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    let raw = format!("{}:{}", enc(id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn okta_token(sb: &Sandbox) -> String {
    let c = &sb.credentials.okta;
    let v: Value = http()
        .post(&c.token_url)
        .header("Authorization", basic(&c.client_id, &c.client_secret))
        .form(&[
            ("grant_type", "password"),
            ("username", c.username.as_str()),
            ("password", c.password.as_str()),
            ("scope", c.scope.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().expect("okta token").to_string()
}

async fn msk_token(sb: &Sandbox) -> String {
    let c = &sb.credentials.msk;
    let v: Value = http()
        .post(&c.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", c.client_id.as_str()),
            ("client_secret", c.client_secret.as_str()),
            ("scope", "full"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().expect("msk token").to_string()
}

async fn backend_token(sb: &Sandbox) -> String {
    let c = &sb.credentials.backend;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
    header.kid = Some(c.key_id.clone());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(c.private_key_pem.as_bytes()).unwrap();
    let claims = json!({"iss": c.client_id, "sub": c.client_id, "aud": c.token_url,
                        "jti": format!("jti-{now}-{}", rand_suffix()), "iat": now, "exp": now + 240});
    let assertion = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let v: Value = http()
        .post(&c.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
            ("scope", "system/*.read"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"]
        .as_str()
        .expect("backend token")
        .to_string()
}

fn rand_suffix() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn demographics(ccn: &str, first: &str, last: &str, birth: &str, gender: &str) -> Value {
    json!({"ccn": ccn, "patient": {"firstName": first, "lastName": last, "birthDate": birth, "gender": gender}})
}

fn patient(ccn: &str, crid: u64, tc_system: &str, crid_system: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "meta": {"security": [{"system": tc_system, "code": format!("rc_{ccn}")}]},
        "identifier": [{"system": crid_system, "value": crid.to_string()}],
    })
}

fn observation(ccn: &str, patient_id: &str, loinc: &str, value: f64) -> Value {
    json!({
        "resourceType": "Observation",
        "meta": {"security": [{"system": TC_NEW, "code": format!("rc_{ccn}")}]},
        "status": "final",
        "category": [{"coding": [{"system": "http://hl7.org/fhir/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": format!("Patient/{patient_id}")},
        "effectiveDateTime": "2024-05-01T08:30:00-05:00",
        "valueQuantity": {"value": value, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"},
        "referenceRange": [{"low": {"value": 12.0, "system": "http://unitsofmeasure.org", "code": "g/dL"}}],
    })
}

/// A sandbox and an Okta token for its CIBMTR API.
struct Cibmtr {
    sb: Sandbox,
    http: reqwest::Client,
    token: String,
}

impl Cibmtr {
    async fn start(config: SandboxConfig) -> Cibmtr {
        let sb = Sandbox::start(config).await.unwrap();
        let token = okta_token(&sb).await;
        Cibmtr {
            sb,
            http: http(),
            token,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sb.urls.cibmtr_base)
    }

    async fn crid(&self, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .put(self.url("/CRID"))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, url: &str, body: &Value) -> reqwest::Response {
        self.post_with(url, body, None).await.unwrap()
    }

    async fn post_with(
        &self,
        url: &str,
        body: &Value,
        if_none_exist: Option<&str>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut req = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header("Content-Type", FHIR_JSON)
            .body(body.to_string());
        if let Some(criteria) = if_none_exist {
            req = req.header("If-None-Exist", criteria);
        }
        req.send().await
    }

    async fn get(&self, url: &str) -> (u16, Value) {
        let r = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Registers a patient and posts its Patient resource: (CRID, Patient id).
    async fn enroll(&self, ccn: &str, first: &str) -> (u64, String) {
        let (status, v) = self
            .crid(&demographics(ccn, first, "Doe", "1970-01-31", "F"))
            .await;
        assert_eq!(status, 200, "{v}");
        let crid = v["perfectMatch"][0]["crid"].as_u64().unwrap();
        let r = self
            .post(&self.url("/Patient"), &patient(ccn, crid, TC_NEW, CRID_NEW))
            .await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        (crid, v["id"].as_str().unwrap().to_string())
    }
}

fn diagnostics(v: &Value) -> String {
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    assert_eq!(v["issue"][0]["severity"], "error");
    v["issue"][0]["diagnostics"].as_str().unwrap().to_string()
}

fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .map(|l| l["url"].as_str().unwrap().to_string())
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ---------- CRID ----------

#[tokio::test]
async fn crid_validation_errors_name_the_field() {
    let api = Cibmtr::start(SandboxConfig::default()).await;
    let ok = demographics("12345", "Ann", "Doe", "1970-01-31", "F");
    let with = |path: &str, value: Value| {
        let mut v = ok.clone();
        *v.pointer_mut(path).unwrap_or_else(|| panic!("{path}")) = value;
        v
    };
    let add = |field: &str, value: Value| {
        let mut v = ok.clone();
        v["patient"][field] = value;
        v
    };
    let cases = [
        (with("/ccn", json!("1234")), "ccn"),
        (with("/ccn", json!("12a45")), "ccn"),
        (with("/ccn", json!(12345)), "ccn"),
        (with("/patient/firstName", json!("  ")), "patient.firstName"),
        (with("/patient/lastName", json!("")), "patient.lastName"),
        (
            with("/patient/birthDate", json!("1970-02-30")),
            "patient.birthDate",
        ),
        (
            with("/patient/birthDate", json!("1970-1-31")),
            "patient.birthDate",
        ),
        (
            with("/patient/birthDate", json!("2999-01-01")),
            "patient.birthDate",
        ),
        (with("/patient/gender", json!("X")), "patient.gender"),
        (add("ssn", json!("666-12-3456")), "patient.ssn"),
        (add("ssn", json!("912-12-3456")), "patient.ssn"),
        (add("ssn", json!("123456789")), "patient.ssn"),
        (add("race", json!(["2106-3", "9999-9"])), "patient.race"),
        (add("ethnicity", json!("2106-3")), "patient.ethnicity"),
        (add("nmdpRid", json!("12")), "patient.nmdpRid"),
        (add("cibmtrTeam", json!("7")), "patient.cibmtrTeam"),
    ];
    for (body, field) in cases {
        let (status, v) = api.crid(&body).await;
        assert_eq!(status, 400, "{body} -> {v}");
        let message = v["errorMessage"].as_str().unwrap_or_else(|| panic!("{v}"));
        assert!(message.contains(field), "{message:?} should name {field}");
    }
    assert_eq!(api.sb.crids_registered(), 0);

    // Every optional field at once, valid.
    let mut full = ok.clone();
    full["patient"].as_object_mut().unwrap().extend(
        json!({"ssn": "123-45-6789", "mothersMaidenName": "Roe", "race": ["2106-3", "UNK"],
               "ethnicity": "2186-5", "nmdpRid": 1234567, "ebmtCic": "123", "ebmtId": "9",
               "cibmtrTeam": 42, "cibmtrIubmid": "X1"})
        .as_object()
        .unwrap()
        .clone(),
    );
    let (status, v) = api.crid(&full).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(api.sb.crids_registered(), 1);
    assert_eq!(api.sb.requests(Route::Crid), 17);
}

#[tokio::test]
async fn same_demographics_same_crid_and_crids_exceed_f64() {
    let api = Cibmtr::start(SandboxConfig::default()).await;
    let first = api
        .http
        .put(api.url("/CRID"))
        .bearer_auth(&api.token)
        .json(&demographics("12345", "Ann", "Doe", "1970-01-31", "F"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let raw = first.text().await.unwrap();
    // A JSON integer, exact, above 2^53: an f64 reader would lose the last digit.
    assert!(raw.contains("\"crid\":9007199254740993"), "{raw}");
    let v: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        v,
        json!({"perfectMatch": [{"matchedCriteria": ["firstName", "lastName", "birthDate", "gender"],
                                 "matchType": "Perfect1", "crid": 9007199254740993u64}]})
    );
    let crid = v["perfectMatch"][0]["crid"].as_u64().unwrap();
    assert_eq!(crid.to_string().len(), 16);
    assert_ne!((crid as f64) as u64, crid);

    let again = |first: &str, last: &str, birth: &str, gender: &str, ccn: &str| {
        let body = demographics(ccn, first, last, birth, gender);
        let api = &api;
        async move {
            let (status, v) = api.crid(&body).await;
            assert_eq!(status, 200, "{v}");
            v["perfectMatch"][0]["crid"].as_u64().unwrap()
        }
    };
    assert_eq!(
        again("ANN", " doe ", "1970-01-31", "F", "12345").await,
        crid
    );
    let other = again("Ann", "Doe", "1970-02-01", "F", "12345").await;
    assert_eq!(other, crid + 1);
    assert_ne!(again("Ann", "Doe", "1970-01-31", "F", "54321").await, crid);
    assert_ne!(again("Ann", "Doe", "1970-01-31", "M", "12345").await, crid);
    assert_eq!(again("ann", "doe", "1970-02-01", "F", "12345").await, other);
    assert_eq!(api.sb.crids_registered(), 4);
}

#[tokio::test]
async fn crid_top_level_shape() {
    let api = Cibmtr::start(SandboxConfig {
        crid_response: CridResponseShape::TopLevel,
        ..Default::default()
    })
    .await;
    let (status, v) = api
        .crid(&demographics("12345", "Ann", "Doe", "1970-01-31", "F"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(v, json!({"crid": 9007199254740993u64}));
}

#[tokio::test]
async fn cibmtr_needs_a_valid_okta_token() {
    let api = Cibmtr::start(SandboxConfig::default()).await;
    let body = demographics("12345", "Ann", "Doe", "1970-01-31", "F");
    let put = |token: Option<String>| {
        let mut req = api.http.put(api.url("/CRID")).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap() }
    };
    let r = put(None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    assert!(r.json::<Value>().await.unwrap()["errorMessage"].is_string());
    // A token of another authorization server is no good here.
    let msk = msk_token(&api.sb).await;
    assert_eq!(put(Some(msk)).await.status(), 401);
    assert_eq!(put(Some(api.token.clone())).await.status(), 200);

    api.sb.revoke_all_tokens();
    assert_eq!(put(Some(api.token.clone())).await.status(), 401);
    let (status, _) = api.get(&api.url("/Patient?identifier=1")).await;
    assert_eq!(status, 401);
    let fresh = okta_token(&api.sb).await;
    assert_eq!(put(Some(fresh)).await.status(), 200);
    assert_eq!(api.sb.crids_registered(), 1);
    assert_eq!(api.sb.requests(Route::Crid), 5);

    // The capability statement needs no token.
    let v: Value = http()
        .get(api.url("/metadata"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["resourceType"], "CapabilityStatement");
    assert_eq!(v["fhirVersion"], "3.0.2");
}

// ---------- Patient ----------

#[tokio::test]
async fn patient_create_strips_pii_and_adds_the_redacted_label() {
    let api = Cibmtr::start(SandboxConfig::default()).await;
    let mut p = patient("12345", 9007199254740993, TC_NEW, CRID_NEW);
    let extra = json!({
        "id": "client-chosen",
        "name": [{"family": "Doe", "given": ["Ann"]}],
        "telecom": [{"system": "phone", "value": "555-0100"}],
        "address": [{"line": ["1 Main St"]}],
        "birthDate": "1970-01-31",
        "gender": "female",
        "photo": [{"url": "http://example.org/a.png"}],
        "contact": [{"name": {"family": "Roe"}}],
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Ann Doe, 1970-01-31</div>"},
    });
    p.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    p["identifier"]
        .as_array_mut()
        .unwrap()
        .push(json!({"system": "http://hospital.example/mrn", "value": "MRN-1"}));

    let r = api.post(&api.url("/Patient"), &p).await;
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let stored: Value = r.json().await.unwrap();
    let id = stored["id"].as_str().unwrap();
    assert_ne!(id, "client-chosen");
    assert_eq!(
        location,
        format!("{}/Patient/{id}/_history/1", api.sb.urls.cibmtr_base)
    );
    for pii in [
        "name",
        "telecom",
        "address",
        "birthDate",
        "photo",
        "contact",
    ] {
        assert!(stored.get(pii).is_none(), "{pii} survived: {stored}");
    }
    assert_eq!(stored["gender"], "female");
    assert_eq!(stored["text"]["status"], "empty");
    assert!(!stored.to_string().contains("Ann"));
    assert_eq!(
        stored["identifier"],
        json!([{"system": CRID_NEW, "value": "9007199254740993"}])
    );
    let security = stored["meta"]["security"].as_array().unwrap();
    assert!(security.contains(&json!({"system": TC_NEW, "code": "rc_12345"})));
    assert!(security.contains(&json!({
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"
    })));
    assert_eq!(stored["meta"]["versionId"], "1");
    assert!(stored["meta"]["lastUpdated"].is_string());
    assert_eq!(api.sb.patients(), vec![stored.clone()]);

    // Read it back, under both roots.
    let (status, read) = api.get(&location.replace("/_history/1", "")).await;
    assert_eq!((status, &read), (200, &stored));
    let (status, read) = api
        .get(&format!("{}/Patient/{id}", api.sb.urls.cibmtr_fhir_r3))
        .await;
    assert_eq!((status, &read), (200, &stored));

    // No dedupe: a second POST makes a second Patient.
    assert_eq!(api.post(&api.url("/Patient"), &p).await.status(), 201);
    assert_eq!(api.sb.patients().len(), 2);
    assert_eq!(api.sb.requests(Route::PatientCreate), 2);
    assert_eq!(api.sb.requests(Route::PatientSearch), 2);
}

#[tokio::test]
async fn patient_create_rejects_missing_label_crid_or_content_type() {
    let api = Cibmtr::start(SandboxConfig::default()).await;
    let good = patient("12345", 9007199254740993, TC_OLD, CRID_OLD);
    let mut no_label = good.clone();
    no_label["meta"]["security"] = json!([{"system": TC_OLD, "code": "rc_123"}]);
    let mut no_crid = good.clone();
    no_crid["identifier"] = json!([{"system": "http://hospital.example/mrn", "value": "1"}]);
    let mut wrong_type = good.clone();
    wrong_type["resourceType"] = json!("Person");
    for (body, word) in [
        (no_label, "meta.security"),
        (no_crid, "identifier"),
        (wrong_type, "resourceType"),
    ] {
        let r = api.post(&api.url("/Patient"), &body).await;
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert!(v["errorMessage"].as_str().unwrap().contains(word), "{v}");
    }
    let r = api
        .http
        .post(api.url("/Patient"))
        .bearer_auth(&api.token)
        .header("Content-Type", "text/plain")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(api.sb.patients().is_empty());
}

#[tokio::test]
async fn patient_id_only_in_location() {
    let api = Cibmtr::start(SandboxConfig {
        patient_id_only_in_location: true,
        ..Default::default()
    })
    .await;
    let r = api
        .post(
            &api.url("/Patient"),
            &patient("12345", 9007199254740993, TC_NEW, CRID_NEW),
        )
        .await;
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(r.bytes().await.unwrap().len(), 0);
    let id = location
        .strip_prefix(&format!("{}/Patient/", api.sb.urls.cibmtr_base))
        .and_then(|rest| rest.strip_suffix("/_history/1"))
        .unwrap();
    assert_eq!(api.sb.patients()[0]["id"], id);
}

#[tokio::test]
async fn patient_search_by_security_and_crid_in_both_uri_families() {
    let api = Cibmtr::start(SandboxConfig::default()).await;
    let crid = 9007199254740993u64;
    let r = api
        .post(
            &api.url("/Patient"),
            &patient("12345", crid, TC_NEW, CRID_NEW),
        )
        .await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.post(
        &api.url("/Patient"),
        &patient("12345", crid + 1, TC_OLD, CRID_OLD),
    )
    .await;
    api.post(
        &api.url("/Patient"),
        &patient("54321", crid, TC_OLD, CRID_OLD),
    )
    .await;

    for root in [&api.sb.urls.cibmtr_base, &api.sb.urls.cibmtr_fhir_r3] {
        for tc in [TC_OLD, TC_NEW] {
            for identifier in [
                crid.to_string(),
                format!("{CRID_OLD}|{crid}"),
                format!("{CRID_NEW}|{crid}"),
            ] {
                let url = format!(
                    "{root}/Patient?_security={}&identifier={}",
                    enc(&format!("{tc}|rc_12345")),
                    enc(&identifier)
                );
                let (status, bundle) = api.get(&url).await;
                assert_eq!(status, 200, "{bundle}");
                assert_eq!(bundle["resourceType"], "Bundle");
                assert_eq!(bundle["type"], "searchset");
                assert_eq!(bundle["total"], 1, "{url}");
                assert_eq!(bundle["entry"][0]["resource"]["id"], id.as_str());
                assert_eq!(
                    bundle["entry"][0]["fullUrl"],
                    format!("{root}/Patient/{id}").as_str()
                );
                assert!(link(&bundle, "self").is_some());
                assert!(link(&bundle, "next").is_none());
            }
        }
    }
    let (_, bundle) = api
        .get(&api.url(&format!("/Patient?identifier={crid}")))
        .await;
    assert_eq!(bundle["total"], 2);
    let (_, bundle) = api.get(&api.url("/Patient?identifier=1")).await;
    assert_eq!(bundle["total"], 0);
    assert_eq!(bundle["entry"], json!([]));
    let (status, v) = api.get(&api.url("/Patient?nmae=Doe")).await;
    assert_eq!(status, 400);
    assert!(diagnostics(&v).contains("nmae"));
}

// ---------- Observation ----------

#[tokio::test]
async fn observation_validation() {
    let api = Cibmtr::start(SandboxConfig::default()).await;
    let (_, pid) = api.enroll("12345", "Ann").await;
    let url = api.url("/Observation");
    let good = observation("12345", &pid, "718-7", 13.2);
    let edit = |ptr: &str, value: Option<Value>| {
        let mut v = good.clone();
        match value {
            Some(x) => *v.pointer_mut(ptr).unwrap() = x,
            None => {
                let (parent, key) = ptr.rsplit_once('/').unwrap();
                let parent = if parent.is_empty() {
                    &mut v
                } else {
                    v.pointer_mut(parent).unwrap()
                };
                parent.as_object_mut().unwrap().remove(key);
            }
        }
        v
    };
    let cases = [
        (
            edit("/effectiveDateTime", Some(json!("2024-05-01T08:30:00"))),
            "effectiveDateTime",
        ),
        (
            edit("/effectiveDateTime", Some(json!("2024-05-01"))),
            "effectiveDateTime",
        ),
        (edit("/effectiveDateTime", None), "effectiveDateTime"),
        (
            edit(
                "/valueQuantity/system",
                Some(json!("http://snomed.info/sct")),
            ),
            "valueQuantity.system",
        ),
        (
            edit("/valueQuantity/value", Some(json!("13.2"))),
            "valueQuantity.value",
        ),
        (edit("/valueQuantity/code", None), "valueQuantity.code"),
        (edit("/valueQuantity", None), "valueQuantity"),
        (edit("/status", None), "status"),
        (edit("/meta", None), "meta.security"),
        (edit("/code/coding/0/system", None), "code.coding[0]"),
        (
            edit("/subject/reference", Some(json!("Patient/nope"))),
            "subject.reference",
        ),
        (
            edit("/subject/reference", Some(json!("Group/1"))),
            "subject.reference",
        ),
        (
            edit("/referenceRange/0/low/system", Some(json!("mg"))),
            "referenceRange[0].low.system",
        ),
    ];
    for (body, field) in cases {
        let r = api.post(&url, &body).await;
        assert_eq!(r.status(), 400, "{field}");
        let v: Value = r.json().await.unwrap();
        assert!(
            diagnostics(&v).starts_with(field),
            "{v} should start with {field}"
        );
    }
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": []});
    let r = api.post(&url, &bundle).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"errorMessage": "Bundles are not supported; submit resources individually"})
    );
    assert!(api.sb.observations().is_empty());

    let mut utc = good.clone();
    utc["effectiveDateTime"] = json!("2024-05-01T13:30:00.250Z");
    for body in [&good, &utc] {
        let r = api.post(&url, body).await;
        assert_eq!(r.status(), 201);
        let location = r.headers()["location"].to_str().unwrap().to_string();
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            location,
            format!("{url}/{}/_history/1", v["id"].as_str().unwrap())
        );
        assert_eq!(v["meta"]["versionId"], "1");
        assert_eq!(v["valueQuantity"]["value"], 13.2);
    }
    // No dedupe on plain create.
    assert_eq!(api.post(&url, &good).await.status(), 201);
    assert_eq!(api.sb.observations().len(), 3);
    assert_eq!(api.sb.requests(Route::ObservationCreate), 17);
}

#[tokio::test]
async fn search_paging_collects_every_observation_once() {
    let api = Cibmtr::start(SandboxConfig::default()).await;
    let (crid, pid) = api.enroll("12345", "Ann").await;
    let (_, other) = api.enroll("12345", "Bob").await;
    let url = api.url("/Observation");
    for i in 0..23 {
        let code = if i % 2 == 0 { "718-7" } else { "777-3" };
        assert_eq!(
            api.post(&url, &observation("12345", &pid, code, i as f64))
                .await
                .status(),
            201
        );
    }
    for i in 0..4 {
        api.post(&url, &observation("12345", &other, "718-7", i as f64))
            .await;
    }
    let expected: HashSet<String> = api
        .sb
        .observations()
        .iter()
        .filter(|o| o["subject"]["reference"] == format!("Patient/{pid}"))
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(expected.len(), 23);

    let collect = |first: String| {
        let api = &api;
        async move {
            let mut next = Some(first);
            let mut ids = Vec::new();
            let mut pages = 0;
            while let Some(url) = next {
                let (status, bundle) = api.get(&url).await;
                assert_eq!(status, 200, "{bundle}");
                pages += 1;
                for e in bundle["entry"].as_array().unwrap() {
                    ids.push(e["resource"]["id"].as_str().unwrap().to_string());
                }
                next = link(&bundle, "next");
            }
            (ids, pages, api.sb.requests(Route::ObservationSearch))
        }
    };
    for query in [
        format!("subject:Patient.identifier={crid}&_count=5"),
        format!(
            "subject:Patient.identifier={}&_count=5",
            enc(&format!("{CRID_OLD}|{crid}"))
        ),
        format!("subject=Patient/{pid}&_count=7"),
        format!("subject={pid}&_count=10"),
    ] {
        let before = api.sb.requests(Route::ObservationSearch);
        let (ids, pages, after) = collect(format!("{url}?{query}")).await;
        assert_eq!(ids.len(), 23, "{query}");
        assert_eq!(
            ids.iter().cloned().collect::<HashSet<_>>(),
            expected,
            "{query}"
        );
        assert!(pages >= 3, "{query}: {pages} pages");
        assert_eq!(after - before, pages);
    }

    // code (with or without system) combines with the subject; the default page size is 50.
    let (_, bundle) = api
        .get(&format!(
            "{url}?subject=Patient/{pid}&code={}",
            enc("http://loinc.org|718-7")
        ))
        .await;
    assert_eq!(bundle["total"], 12);
    assert_eq!(bundle["entry"].as_array().unwrap().len(), 12);
    let (_, bundle) = api.get(&format!("{url}?code=777-3")).await;
    assert_eq!(bundle["total"], 11);
    let (_, bundle) = api.get(&format!("{url}?code=718-7&_count=3")).await;
    assert_eq!(bundle["total"], 16);
    let next = link(&bundle, "next").unwrap();
    assert!(
        next.contains("code=718-7") && next.contains("_getpagesoffset=3"),
        "{next}"
    );
    let (status, _) = api.get(&format!("{url}?_count=abc")).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn conditional_create_returns_the_existing_resource() {
    let api = Cibmtr::start(SandboxConfig::default()).await;
    let (_, pid) = api.enroll("12345", "Ann").await;
    let url = api.url("/Observation");
    let mut obs = observation("12345", &pid, "718-7", 13.2);
    obs["identifier"] = json!([{"system": "urn:lab", "value": "acc-1"}]);
    let criteria = "identifier=urn:lab|acc-1";
    let r = api.post_with(&url, &obs, Some(criteria)).await.unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let r = api.post_with(&url, &obs, Some(criteria)).await.unwrap();
    assert_eq!(r.status(), 200);
    let existing: Value = r.json().await.unwrap();
    assert_eq!(existing["id"], created["id"]);
    assert_eq!(api.sb.observations().len(), 1);

    // The Patient too.
    let p = patient("12345", 42, TC_NEW, CRID_NEW);
    let criteria = format!("identifier={CRID_OLD}|42");
    let first = api
        .post_with(&api.url("/Patient"), &p, Some(&criteria))
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let second = api
        .post_with(&api.url("/Patient"), &p, Some(&criteria))
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(api.sb.patients().len(), 2); // Ann's, and this one once
}

#[tokio::test]
async fn transaction_bundles_are_atomic() {
    let api = Cibmtr::start(SandboxConfig::default()).await;
    let (_, pid) = api.enroll("12345", "Ann").await;
    let entry = |value: f64, id: &str| {
        let mut obs = observation("12345", &pid, "718-7", value);
        obs["identifier"] = json!([{"system": "urn:lab", "value": id}]);
        json!({"resource": obs, "request": {"method": "POST", "url": "Observation",
                                              "ifNoneExist": format!("identifier=urn:lab|{id}")}})
    };
    let bundle = |entries: Vec<Value>| json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});

    let r = api
        .post(
            &api.sb.urls.cibmtr_fhir_r3,
            &bundle(vec![entry(1.0, "a"), entry(2.0, "b"), entry(1.0, "a")]),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "transaction-response");
    let statuses: Vec<&str> = v["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["201 Created", "201 Created", "200 OK"]);
    let stored = api.sb.observations();
    assert_eq!(stored.len(), 2);
    assert_eq!(
        v["entry"][0]["response"]["location"],
        format!(
            "Observation/{}/_history/1",
            stored[0]["id"].as_str().unwrap()
        )
        .as_str()
    );
    assert_eq!(
        v["entry"][2]["response"]["location"],
        v["entry"][0]["response"]["location"]
    );

    // More than 50 entries.
    let many: Vec<Value> = (0..51).map(|i| entry(i as f64, &format!("m{i}"))).collect();
    let r = api.post(&api.sb.urls.cibmtr_base, &bundle(many)).await;
    assert_eq!(r.status(), 400);
    assert!(diagnostics(&r.json().await.unwrap()).contains("50"));

    // One bad entry spoils the whole bundle.
    let mut bad = entry(3.0, "c");
    bad["resource"]["effectiveDateTime"] = json!("2024-05-01T08:30:00");
    let r = api
        .post(
            &api.sb.urls.cibmtr_base,
            &bundle(vec![entry(4.0, "d"), bad]),
        )
        .await;
    assert_eq!(r.status(), 400);
    let d = diagnostics(&r.json().await.unwrap());
    assert!(d.starts_with("entry[1]: effectiveDateTime"), "{d}");
    assert_eq!(api.sb.observations().len(), 2);

    // Exactly 50 is fine.
    let fifty: Vec<Value> = (0..50).map(|i| entry(i as f64, &format!("f{i}"))).collect();
    assert_eq!(
        api.post(&api.sb.urls.cibmtr_base, &bundle(fifty))
            .await
            .status(),
        200
    );
    assert_eq!(api.sb.observations().len(), 52);
    assert_eq!(api.sb.requests(Route::ObservationCreate), 4);
}

#[tokio::test]
async fn bundles_refused_when_configured() {
    let api = Cibmtr::start(SandboxConfig {
        accept_bundles: false,
        ..Default::default()
    })
    .await;
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": []});
    let r = api.post(&api.sb.urls.cibmtr_base, &bundle).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["errorMessage"]
            .as_str()
            .unwrap()
            .contains("cannot accept resources formatted as a bundle")
    );
}

// ---------- MSK and Aidbox ----------

#[tokio::test]
async fn msk_requires_researchstudy_and_its_next_links_omit_it() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let token = msk_token(&sb).await;
    let c = http();
    let base = &sb.urls.msk_fhir;
    let obs = json!({"resourceType": "Observation", "status": "final",
                     "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                     "subject": {"reference": "Patient/p1"}});

    let r = c
        .post(format!("{base}/Observation"))
        .bearer_auth(&token)
        .json(&obs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(diagnostics(&r.json().await.unwrap()).contains("researchstudy"));
    let r = c
        .post(format!("{base}/Observation?researchstudy=RS1"))
        .json(&obs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let okta = okta_token(&sb).await;
    let r = c
        .get(format!("{base}/Observation?researchstudy=RS1"))
        .bearer_auth(&okta)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(sb.fhir_resources(Store::Msk).is_empty());

    let mut ids = HashSet::new();
    for _ in 0..5 {
        let r = c
            .post(format!("{base}/Observation?researchstudy=RS1"))
            .bearer_auth(&token)
            .json(&obs)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert!(
            r.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with(&format!("{base}/Observation/"))
        );
        let v: Value = r.json().await.unwrap();
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 5);

    let r = c
        .get(format!(
            "{base}/Observation?researchstudy=RS1&subject=Patient/p1&_count=2"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bundle: Value = r.json().await.unwrap();
    assert_eq!(bundle["total"], 5);
    let next = link(&bundle, "next").unwrap();
    assert!(!next.contains("researchstudy"), "{next}");
    assert!(next.contains("subject=Patient%2Fp1"), "{next}");
    let r = c.get(&next).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let mut seen = HashSet::new();
    let mut url = Some(format!("{base}/Observation?researchstudy=RS1&_count=2"));
    while let Some(u) = url {
        let u = if u.contains("researchstudy") {
            u
        } else {
            format!("{u}&researchstudy=RS1")
        };
        let bundle: Value = c
            .get(&u)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in bundle["entry"].as_array().unwrap() {
            assert!(seen.insert(e["resource"]["id"].as_str().unwrap().to_string()));
        }
        url = link(&bundle, "next");
    }
    assert_eq!(seen, ids);

    // Update: versions increase; a PUT to a new id creates it.
    let id = ids.iter().next().unwrap().clone();
    let mut changed = obs.clone();
    changed["id"] = json!(id);
    changed["status"] = json!("amended");
    let r = c
        .put(format!("{base}/Observation/{id}?researchstudy=RS1"))
        .bearer_auth(&token)
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["meta"]["versionId"], "2");
    assert_eq!(v["status"], "amended");
    let r = c
        .put(format!("{base}/Patient/p1?researchstudy=RS1"))
        .bearer_auth(&token)
        .json(&json!({"resourceType": "Patient", "id": "p1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .get(format!("{base}/Patient/p1?researchstudy=RS1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sb.fhir_resources(Store::Msk).len(), 6);

    // Conditional create.
    let mut tagged = obs.clone();
    tagged["identifier"] = json!([{"system": "urn:lab", "value": "x"}]);
    for expected in [201, 200] {
        let r = c
            .post(format!("{base}/Observation?researchstudy=RS1"))
            .bearer_auth(&token)
            .header("If-None-Exist", "identifier=urn:lab|x")
            .json(&tagged)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected);
    }
    assert_eq!(sb.fhir_resources(Store::Msk).len(), 7);

    let v: Value = c
        .get(format!("{base}/metadata?researchstudy=RS1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["fhirVersion"], "4.0.1");
    assert!(sb.fhir_resources(Store::Cibmtr).is_empty());
    assert!(sb.fhir_resources(Store::Aidbox).is_empty());
    assert_eq!(sb.requests(Route::MskFhir), 19);
}

#[tokio::test]
async fn aidbox_needs_a_backend_services_token() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let c = http();
    let base = &sb.urls.aidbox_fhir;
    let patient =
        json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "1"}]});
    for token in [okta_token(&sb).await, msk_token(&sb).await] {
        let r = c
            .post(format!("{base}/Patient"))
            .bearer_auth(token)
            .json(&patient)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
    }
    let token = backend_token(&sb).await;
    for _ in 0..3 {
        let r = c
            .post(format!("{base}/Patient"))
            .bearer_auth(&token)
            .json(&patient)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let bundle: Value = c
        .get(format!("{base}/Patient?identifier=urn:mrn|1&_count=2"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bundle["total"], 3);
    let id = bundle["entry"][0]["resource"]["id"].as_str().unwrap();
    assert_eq!(id.len(), 36, "Aidbox-style UUID id: {id}");
    let next = link(&bundle, "next").unwrap();
    assert!(next.contains("identifier=urn%3Amrn%7C1"), "{next}");
    let page: Value = c
        .get(&next)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["entry"].as_array().unwrap().len(), 1);
    assert_eq!(sb.fhir_resources(Store::Aidbox).len(), 3);
    assert_eq!(sb.requests(Route::AidboxFhir), 7);
}

// ---------- faults ----------

async fn assert_connection_error(result: reqwest::Result<reqwest::Response>) {
    match result {
        Ok(r) => panic!("expected a dropped connection, got {}", r.status()),
        Err(e) => assert!(!e.is_timeout() && e.status().is_none(), "{e:?}"),
    }
}

#[tokio::test]
async fn status_fault_with_retry_after_then_normal() {
    let api = Cibmtr::start(SandboxConfig::default()).await;
    let (_, pid) = api.enroll("12345", "Ann").await;
    api.sb.set_fault(
        Route::ObservationCreate,
        Fault {
            status: 503,
            headers: vec![("Retry-After".into(), "2".into())],
            body: "maintenance".into(),
            times: 1,
            ..Default::default()
        },
    );
    let obs = observation("12345", &pid, "718-7", 1.0);
    let r = api.post(&api.url("/Observation"), &obs).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(r.text().await.unwrap(), "maintenance");
    assert!(api.sb.observations().is_empty());
    assert_eq!(api.post(&api.url("/Observation"), &obs).await.status(), 201);
    assert_eq!(api.sb.requests(Route::ObservationCreate), 2);
}

#[tokio::test]
async fn delay_fault_answers_normally_but_late() {
    let api = Cibmtr::start(SandboxConfig::default()).await;
    api.sb.set_fault(
        Route::PatientSearch,
        Fault {
            delay: Duration::from_millis(300),
            times: 1,
            ..Default::default()
        },
    );
    let t0 = Instant::now();
    let (status, v) = api.get(&api.url("/Patient?identifier=1")).await;
    assert_eq!(status, 200);
    assert_eq!(v["total"], 0);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let t0 = Instant::now();
    api.get(&api.url("/Patient?identifier=1")).await;
    assert!(t0.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn drop_before_processing_stores_nothing() {
    let api = Cibmtr::start(SandboxConfig::default()).await;
    let (_, pid) = api.enroll("12345", "Ann").await;
    api.sb.set_fault(
        Route::ObservationCreate,
        Fault {
            drop_connection: Some(DropMode::BeforeProcessing),
            times: 1,
            ..Default::default()
        },
    );
    let obs = observation("12345", &pid, "718-7", 1.0);
    assert_connection_error(api.post_with(&api.url("/Observation"), &obs, None).await).await;
    assert!(api.sb.observations().is_empty());
    assert_eq!(api.sb.requests(Route::ObservationCreate), 1);
    // The fault is spent; the same client carries on.
    assert_eq!(api.post(&api.url("/Observation"), &obs).await.status(), 201);
    assert_eq!(api.sb.observations().len(), 1);
}

#[tokio::test]
async fn drop_after_processing_stores_but_never_answers() {
    let api = Cibmtr::start(SandboxConfig::default()).await;
    let (_, pid) = api.enroll("12345", "Ann").await;
    api.sb.set_fault(
        Route::ObservationCreate,
        Fault {
            drop_connection: Some(DropMode::AfterProcessing),
            times: 1,
            ..Default::default()
        },
    );
    let obs = observation("12345", &pid, "718-7", 1.0);
    assert_connection_error(api.post_with(&api.url("/Observation"), &obs, None).await).await;
    assert_eq!(api.sb.observations().len(), 1);
    // A CRID registration that was processed but never answered is found again by PUT.
    api.sb.set_fault(
        Route::Crid,
        Fault {
            drop_connection: Some(DropMode::AfterProcessing),
            times: 1,
            ..Default::default()
        },
    );
    let body = demographics("12345", "Zed", "Roe", "1980-01-01", "M");
    let r = api
        .http
        .put(api.url("/CRID"))
        .bearer_auth(&api.token)
        .json(&body)
        .send()
        .await;
    assert_connection_error(r).await;
    assert_eq!(api.sb.crids_registered(), 2);
    let (status, _) = api.crid(&body).await;
    assert_eq!(status, 200);
    assert_eq!(api.sb.crids_registered(), 2);
}

#[tokio::test]
async fn drop_faults_on_token_routes() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let c = sb.credentials.okta.clone();
    let request = || {
        http()
            .post(&c.token_url)
            .header("Authorization", basic(&c.client_id, &c.client_secret))
            .form(&[
                ("grant_type", "password"),
                ("username", c.username.as_str()),
                ("password", c.password.as_str()),
                ("scope", c.scope.as_str()),
            ])
            .send()
    };
    let drop_once = |mode| Fault {
        drop_connection: Some(mode),
        times: 1,
        ..Default::default()
    };
    sb.set_fault(Route::OktaToken, drop_once(DropMode::BeforeProcessing));
    assert_connection_error(request().await).await;
    assert_eq!(sb.tokens_issued(), 0);
    sb.set_fault(Route::OktaToken, drop_once(DropMode::AfterProcessing));
    assert_connection_error(request().await).await;
    assert_eq!(sb.tokens_issued(), 1);
    assert_eq!(request().await.unwrap().status(), 200);
    assert_eq!(sb.requests(Route::OktaToken), 3);

    let m = &sb.credentials.msk;
    sb.set_fault(Route::MskToken, drop_once(DropMode::BeforeProcessing));
    let msk = http()
        .post(&m.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", m.client_id.as_str()),
            ("client_secret", m.client_secret.as_str()),
            ("scope", "full"),
        ])
        .send()
        .await;
    assert_connection_error(msk).await;
    assert_eq!(sb.tokens_issued(), 2);
    assert_eq!(sb.requests(Route::MskToken), 1);

    sb.set_fault(Route::Protected, drop_once(DropMode::BeforeProcessing));
    assert_connection_error(http().get(&sb.urls.protected).send().await).await;
    assert_eq!(
        http()
            .get(&sb.urls.protected)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn share_hits_about_that_fraction_and_times_counts_only_hits() {
    let api = Cibmtr::start(SandboxConfig::default()).await;
    api.sb.set_fault(
        Route::PatientSearch,
        Fault {
            status: 503,
            share: 0.1,
            ..Default::default()
        },
    );
    let url = api.url("/Patient?identifier=1");
    let n = 500;
    let mut faulted = 0;
    for _ in 0..n {
        let (status, _) = api.get(&url).await;
        match status {
            503 => faulted += 1,
            200 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        (n / 20..=n / 5).contains(&faulted),
        "{faulted} of {n} faulted"
    );
    assert_eq!(api.sb.requests(Route::PatientSearch), n as u64);

    api.sb.set_fault(
        Route::PatientSearch,
        Fault {
            status: 429,
            share: 0.5,
            times: 3,
            ..Default::default()
        },
    );
    let mut limited = 0;
    for _ in 0..100 {
        if api.get(&url).await.0 == 429 {
            limited += 1;
        }
    }
    assert_eq!(limited, 3);
}

#[tokio::test]
async fn msk_fhir_fault_and_admin_api() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let token = msk_token(&sb).await;
    let c = http();
    let admin = |body: Value| {
        c.post(format!("{}/faults", sb.urls.admin))
            .json(&body)
            .send()
    };
    let r = admin(
        json!({"route": "msk_fhir", "status": 429, "headers": {"Retry-After": "1"}, "times": 1}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    let search = format!("{}/Observation?researchstudy=RS1", sb.urls.msk_fhir);
    let r = c.get(&search).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(
        c.get(&search)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Drop after processing through the admin API: the resource is stored, no answer comes.
    let r =
        admin(json!({"route": "msk_fhir", "drop_connection": "after", "share": 1.0, "times": 1}))
            .await
            .unwrap();
    assert_eq!(r.status(), 204);
    let post = c
        .post(format!("{}/Patient?researchstudy=RS1", sb.urls.msk_fhir))
        .bearer_auth(&token)
        .json(&json!({"resourceType": "Patient"}))
        .send()
        .await;
    assert_connection_error(post).await;
    assert_eq!(sb.fhir_resources(Store::Msk).len(), 1);

    for bad in [
        json!({"route": "observation_craete", "status": 500}),
        json!({"route": "crid", "drop_connection": "sometimes"}),
    ] {
        assert_eq!(admin(bad).await.unwrap().status(), 400);
    }
    for name in [
        "crid",
        "patient_create",
        "patient_search",
        "observation_create",
        "observation_search",
        "aidbox_fhir",
    ] {
        let r = admin(json!({"route": name, "status": 500, "times": 1}))
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{name}");
    }
    let stats: Value = c
        .get(format!("{}/stats", sb.urls.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["routes"]["msk_fhir"], 3);
    assert_eq!(stats["routes"]["msk_token"], 1);
    assert_eq!(stats["routes"]["crid"], 0);
    assert_eq!(stats["routes"].as_object().unwrap().len(), Route::ALL.len());
    // The bearer never reached another server's routes.
    assert_eq!(sb.requests(Route::AidboxFhir), 0);
    assert_eq!(sb.requests(Route::ObservationCreate), 0);
}
