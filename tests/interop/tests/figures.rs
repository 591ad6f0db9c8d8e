//! The examples of the CIBMTR Direct FHIR API guide (shared/reference/cibmtr-direct-fhir-api.txt)
//! through our parsers and builders, and replayed as a server's answers to `CibmtrClient`.
//!
//! The guide's figures are screenshots; the text describes them, and so do DESIGN.md's domain
//! notes. Each figure below is written from that description (quoted above it), with
//! placeholder values where the screenshot's values are not in the text (the CCN 12345; the CRID
//! 3989144 of DESIGN.md's CRID answer). Every reconstructed FHIR resource is itself checked by
//! both independent validators, so the reconstruction cannot drift from FHIR STU3.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use cibmtr_fhir::auth::PasswordGrant;
use cibmtr_fhir::cibmtr::{
    Ccn, CibmtrClient, Demographics, ItemStatus, LabResult, REDACTED_CODE,
    REDACTED_SECURITY_SYSTEM, UriFamily, observation_resource, observation_search_by_crid,
    observation_submission_id, parse_crid_response, patient_matches, patient_resource,
    patient_search_params, submission_id,
};
use cibmtr_fhir::fhir::{FhirVersion, id_from_location};
use cibmtr_fhir_interop::validators::{Item, Validator, validate};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CCN: &str = "12345";
/// DESIGN.md: `{"perfectMatch":[{"matchedCriteria":[...],"matchType":"Perfect1","crid":3989144}]}`.
const CRID: i64 = 3_989_144;
/// Figure 6: 'The response JSON object has an "id" that is used to reference the Patient
/// resource (circled in red in Figure 6).' Its value is not in the text; this is a placeholder.
const PATIENT_ID: &str = "a1b2c3d4-e5f6-4a5b-8c7d-9e0f1a2b3c4d";

fn ccn() -> Ccn {
    Ccn::parse(CCN).unwrap()
}

/// Figure 4 (the answer): "The response payload of the CRID Service API is a JSON object that
/// contains the CRID number (lower pane in Figure 4)", in the shape DESIGN.md gives:
/// `{"perfectMatch":[{"matchedCriteria":[...],"matchType":"Perfect1","crid":3989144}]}`.
fn figure4_answer() -> Value {
    json!({"perfectMatch": [{
        "matchedCriteria": ["firstName", "lastName", "birthDate", "gender"],
        "matchType": "Perfect1",
        "crid": 3989144
    }]})
}

/// The guide's "Complete list of payload options for CRID registration", with its `"string"`
/// and `0` placeholders filled in:
///
/// ```text
/// { "ccn": "string",
///   "patient": { "birthDate": "string", "cibmtrIubmid": "string", "cibmtrTeam": 0,
///       "ebmtCic": "string", "ebmtId": "string", "firstName": "string", "gender": "string",
///       "lastName": "string", "mothersMaidenName": "string", "nmdpRid": 0, "ssn": "string",
///       "race": ["string"], "ethnicity": "string" } }
/// ```
fn figure4_request() -> Value {
    json!({
        "ccn": CCN,
        "patient": {
            "birthDate": "1970-01-31",
            "cibmtrIubmid": "IU-1",
            "cibmtrTeam": 0,
            "ebmtCic": "123",
            "ebmtId": "E-77",
            "firstName": "Jane",
            "gender": "F",
            "lastName": "Doe",
            "mothersMaidenName": "Smith",
            "nmdpRid": 0,
            "ssn": "123-45-6789",
            "race": ["2106-3"],
            "ethnicity": "2186-5"
        }
    })
}

/// Figure 5: "A security label within the "meta" section of the Patient resource must contain
/// the CIBMTR Center Number (CCN) prepended with "rc_" and associated with the codesystem as
/// shown in Figure 5. A CRID identifier reference within the "identifier" section of the Patient
/// resource as shown in Figure 5." The code system is the one of the guide's Patient search,
/// `_security=http://terminology.cibmtr.org/codesystem/transplant-center%7Crc_<CCN>`.
fn figure5() -> Value {
    json!({
        "resourceType": "Patient",
        "meta": {"security": [{
            "system": "http://terminology.cibmtr.org/codesystem/transplant-center",
            "code": "rc_12345"
        }]},
        "identifier": [{
            "system": "http://terminology.cibmtr.org/identifier/CRID",
            "value": "3989144"
        }]
    })
}

/// Figure 6: "The response after submitting a Patient resource request, indicates how the
/// Patient resource is represented on the CIBMTR FHIR server (see Figure 6). The response JSON
/// object has an "id" that is used to reference the Patient resource [...]. There is a new
/// security label that indicates that the resource has been through a redaction process", which
/// DESIGN.md gives as `{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
/// "code":"REDACTED"}`.
fn figure6() -> Value {
    json!({
        "resourceType": "Patient",
        "id": PATIENT_ID,
        "meta": {
            "versionId": "1",
            "lastUpdated": "2020-06-15T14:31:07.155+00:00",
            "security": [
                {"system": "http://terminology.cibmtr.org/codesystem/transplant-center", "code": "rc_12345"},
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"}
            ]
        },
        "identifier": [{
            "system": "http://terminology.cibmtr.org/identifier/CRID",
            "value": "3989144"
        }]
    })
}

/// Figure 8, from the guide's list of "important areas to note":
/// - "meta" Section – "includes the same security label as defined in the Patient resource";
/// - "category" Section – "the HL7 Observation category code [...] Currently, only data from
///   the "laboratory" category is supported";
/// - "code" Section – "For laboratory data, the primary clinical vocabulary is LOINC";
/// - "subject" Section – "the Patient resource "id" using the "Patient/id" format";
/// - "effectiveDateTime" – "a timezone aware datetime format of the date of collection";
/// - "valueQuantity" – "represented here as a floating-point number. The unit system and code
///   are also specified [...] The units system and code should be UCUM";
/// - "referenceRange" – "If the high and low range for this lab are known, they can be defined
///   in this section using the same data format as the valueQuantity section".
///
/// The lab (Hemoglobin, 718-7, 13.2 g/dL, range 12–17.5) is a placeholder for the screenshot's.
fn figure8() -> Value {
    let quantity = |v: f64| json!({"value": v, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"});
    json!({
        "resourceType": "Observation",
        "meta": {"security": [{
            "system": "http://terminology.cibmtr.org/codesystem/transplant-center",
            "code": "rc_12345"
        }]},
        "status": "final",
        "category": [{"coding": [{
            "system": "http://hl7.org/fhir/observation-category",
            "code": "laboratory",
            "display": "Laboratory"
        }]}],
        "code": {"coding": [{
            "system": "http://loinc.org",
            "code": "718-7",
            "display": "Hemoglobin [Mass/volume] in Blood"
        }]},
        "subject": {"reference": format!("Patient/{PATIENT_ID}")},
        "effectiveDateTime": "2020-06-15T09:30:00-05:00",
        "valueQuantity": quantity(13.2),
        "referenceRange": [{"low": quantity(12.0), "high": quantity(17.5)}]
    })
}

/// The lab of Figure 8 as a caller hands it to the SDK (a Python dict, a JS object).
fn figure8_lab() -> Value {
    json!({
        "loinc": "718-7",
        "value": 13.2,
        "unit": "g/dL",
        "effective": "2020-06-15T09:30:00-05:00",
        "referenceRange": [12.0, 17.5]
    })
}

/// The sections Figure 8 names, as JSON pointers, for comparing our Observation with it.
const FIGURE8_SECTIONS: &[&str] = &[
    "/resourceType",
    "/meta/security/0",
    "/status",
    "/category/0/coding/0/system",
    "/category/0/coding/0/code",
    "/code/coding/0/system",
    "/code/coding/0/code",
    "/code/coding/0/display",
    "/subject/reference",
    "/effectiveDateTime",
    "/valueQuantity",
    "/referenceRange",
];

fn assert_sections(ours: &Value, figure: &Value, sections: &[&str], what: &str) {
    for ptr in sections {
        assert_eq!(
            ours.pointer(ptr),
            figure.pointer(ptr),
            "{what}: {ptr} differs from the guide's figure\nours: {ours:#}"
        );
    }
}

#[test]
fn figure4_crid_answers() {
    assert_eq!(parse_crid_response(&figure4_answer()).unwrap(), CRID);
    // The older shape, a CRID as a string, and a 16-digit CRID above 2^53 kept exact.
    assert_eq!(
        parse_crid_response(&json!({"crid": 3989144})).unwrap(),
        CRID
    );
    assert_eq!(
        parse_crid_response(&json!({"perfectMatch": [{"crid": "3989144"}]})).unwrap(),
        CRID
    );
    let big: Value =
        serde_json::from_str(r#"{"perfectMatch":[{"crid":9007199254740993}]}"#).unwrap();
    assert_eq!(parse_crid_response(&big).unwrap(), 9_007_199_254_740_993);
    // "Backend errors carry an errorMessage field": the error says what the server said.
    let e =
        parse_crid_response(&json!({"errorMessage": "CCN 12345 is not authorised"})).unwrap_err();
    assert!(e.to_string().contains("CCN 12345 is not authorised"), "{e}");
    assert!(parse_crid_response(&json!({"perfectMatch": []})).is_err());
}

#[test]
fn figure4_payload_round_trips_through_demographics() {
    let request = figure4_request();
    let d = Demographics::from_json(&request["patient"]).unwrap();
    let today = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
    assert_eq!(d.crid_request(&ccn(), today).unwrap(), request);
    // And the guide's payload model (validate.py) agrees it is the guide's shape.
    let report = validate(
        Validator::FhirResources,
        &[Item::crid_request("Figure 4 request", request)],
    )
    .unwrap();
    report.assert_all_valid();
}

#[test]
fn figures_5_and_6_are_recognised_as_the_patient_of_the_crid() {
    let (fig5, fig6) = (figure5(), figure6());
    for (name, fig) in [("Figure 5", &fig5), ("Figure 6", &fig6)] {
        assert!(patient_matches(fig, CRID, &ccn()), "{name}");
        assert!(
            !patient_matches(fig, CRID + 1, &ccn()),
            "{name}: other CRID"
        );
        assert!(
            !patient_matches(fig, CRID, &Ccn::parse("54321").unwrap()),
            "{name}: other centre"
        );
    }
    // Figure 6's redaction label, in the constants the SDK reads it with.
    let labels = fig6["meta"]["security"].as_array().unwrap();
    assert!(
        labels
            .iter()
            .any(|l| l["system"] == REDACTED_SECURITY_SYSTEM && l["code"] == REDACTED_CODE)
    );
    // "the new Patient id may come back only in the Location header" (DESIGN.md).
    let location = format!(
        "https://dev-api.nmdp.org/cibmtrehrclientbackendexttest/v1/Patient/{PATIENT_ID}/_history/1"
    );
    assert_eq!(
        id_from_location(&location, "Patient").as_deref(),
        Some(PATIENT_ID)
    );
    // What we build carries exactly Figure 5's two required sections, in either URI family.
    let ours = patient_resource(CRID, &ccn(), UriFamily::Terminology);
    assert_sections(
        &ours,
        &fig5,
        &[
            "/resourceType",
            "/meta/security",
            "/identifier/0/system",
            "/identifier/0/value",
        ],
        "Patient",
    );
    assert!(patient_matches(
        &patient_resource(CRID, &ccn(), UriFamily::Cibmtr),
        CRID,
        &ccn()
    ));
    // The guide's Patient search: "_security=http://terminology.cibmtr.org/codesystem/
    // transplant-center%7Crc_<CCN>& identifier=<CRID>". We send the same label and qualify the
    // CRID with its system.
    let params: HashMap<String, String> =
        patient_search_params(CRID, &ccn(), UriFamily::Terminology)
            .into_iter()
            .collect();
    assert_eq!(
        params["_security"],
        "http://terminology.cibmtr.org/codesystem/transplant-center|rc_12345"
    );
    assert_eq!(
        params["identifier"],
        "http://terminology.cibmtr.org/identifier/CRID|3989144"
    );
}

#[test]
fn figure8_is_what_we_build_from_the_same_lab() {
    let fig8 = figure8();
    let lab = LabResult::from_json(&figure8_lab()).unwrap();
    let checked = lab.check(&Default::default()).unwrap();
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
    let ours = observation_resource(
        &checked.lab,
        CRID,
        PATIENT_ID,
        &ccn(),
        UriFamily::Terminology,
        FhirVersion::Stu3,
    );
    assert_sections(&ours, &fig8, FIGURE8_SECTIONS, "Observation");
    // Ours adds only the content-derived identifier, which the figure does not have.
    assert_eq!(observation_submission_id(&fig8), None);
    assert_eq!(
        observation_submission_id(&ours),
        Some(submission_id(&checked.lab, CRID, &ccn()).as_str())
    );
    let mut without_identifier = ours.clone();
    without_identifier
        .as_object_mut()
        .unwrap()
        .remove("identifier");
    assert_eq!(without_identifier, fig8);
    // The guide's Observation search: "Observation?subject:Patient.identifier=<CRID>".
    assert_eq!(
        observation_search_by_crid(CRID),
        vec![(
            "subject:Patient.identifier".to_owned(),
            "3989144".to_owned()
        )]
    );
}

#[test]
fn the_reconstructed_figures_are_valid_stu3() {
    let items = [
        Item::fhir("Figure 5 Patient", FhirVersion::Stu3, figure5()),
        Item::fhir("Figure 6 Patient (redacted)", FhirVersion::Stu3, figure6()),
        Item::fhir("Figure 8 Observation", FhirVersion::Stu3, figure8()),
    ];
    for validator in Validator::ALL {
        validate(validator, &items).unwrap().assert_all_valid();
    }
}

// ---------------------------------------------------------------------------------------------
// The figures as a server's answers to CibmtrClient
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    target: String,
    headers: HashMap<String, String>,
    body: Value,
}

/// A one-request-per-connection HTTP/1.1 server on 127.0.0.1 that answers with the figures and
/// records what it was sent. Not the sandbox: nothing here shares code with the SDK or with it.
struct FigureServer {
    base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FigureServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bundle(resources: Vec<Value>) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": resources.len(),
        "entry": resources.into_iter().map(|r| json!({"resource": r})).collect::<Vec<_>>()
    })
}

/// The answer to one request: status, extra headers, body (`Value::Null` for none).
fn answer(
    base: &str,
    req: &Recorded,
    earlier: &[Recorded],
    patient_in_body: bool,
) -> (u16, Vec<(String, String)>, Value) {
    let path = req.target.split('?').next().unwrap();
    let query = req.target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let posted_observations: Vec<Value> = earlier
        .iter()
        .filter(|r| r.method == "POST" && r.target == "/v1/Observation")
        .enumerate()
        .map(|(i, r)| {
            let mut o = r.body.clone();
            o["id"] = json!(format!("obs-{}", i + 1));
            o
        })
        .collect();
    match (req.method.as_str(), path) {
        ("POST", "/token") => (
            200,
            vec![],
            json!({"token_type": "Bearer", "expires_in": 1800, "access_token": "figure-token", "scope": "cibmtr_fhir"}),
        ),
        ("PUT", "/v1/CRID") => (200, vec![], figure4_answer()),
        ("GET", "/v1/Patient") => (200, vec![], bundle(vec![])),
        ("POST", "/v1/Patient") => (
            201,
            vec![(
                "Location".into(),
                format!("{base}/v1/Patient/{PATIENT_ID}/_history/1"),
            )],
            if patient_in_body {
                figure6()
            } else {
                Value::Null
            },
        ),
        ("GET", "/v1/Observation") if query.starts_with("identifier=") => {
            (200, vec![], bundle(vec![]))
        }
        ("GET", "/v1/Observation") => {
            let mut fig8 = figure8();
            fig8["id"] = json!("fig8");
            let found = std::iter::once(fig8).chain(posted_observations).collect();
            (200, vec![], bundle(found))
        }
        ("POST", "/v1/Observation") => {
            let n = posted_observations.len() + 1;
            let mut o = req.body.clone();
            o["id"] = json!(format!("obs-{n}"));
            (
                201,
                vec![(
                    "Location".into(),
                    format!("{base}/v1/Observation/obs-{n}/_history/1"),
                )],
                o,
            )
        }
        _ => (404, vec![], json!({"errorMessage": "not in the figures"})),
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Some(Recorded {
        method,
        target,
        headers,
        body,
    })
}

async fn figure_server(patient_in_body: bool) -> FigureServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let (b, r) = (base.clone(), requests.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (base, requests) = (b.clone(), r.clone());
            tokio::spawn(async move {
                let Some(req) = read_request(&mut stream).await else {
                    return;
                };
                // Answer and record under one lock, so concurrent POSTs get distinct ids.
                let (status, headers, body) = {
                    let mut log = requests.lock().unwrap();
                    let a = answer(&base, &req, &log, patient_in_body);
                    log.push(req);
                    a
                };
                let body = if body.is_null() {
                    String::new()
                } else {
                    body.to_string()
                };
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/fhir+json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&body);
                let _ = stream.write_all(out.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    FigureServer {
        base,
        requests,
        task,
    }
}

#[tokio::test]
async fn the_client_reads_the_figures_as_server_answers() {
    for patient_in_body in [true, false] {
        let server = figure_server(patient_in_body).await;
        let auth = PasswordGrant::builder(
            format!("{}/token", server.base),
            "0oa-figure",
            "secret",
            "svc@example.org",
            "password",
        )
        .scope("cibmtr_fhir")
        .build()
        .unwrap();
        let client = CibmtrClient::builder(CCN, &auth)
            .base_url(format!("{}/v1", server.base))
            .uri_family(UriFamily::Terminology)
            .build()
            .unwrap();
        let what = if patient_in_body {
            "Figure 6 in the body"
        } else {
            "id only in Location"
        };

        // Figure 4: the CRID from the answer.
        let crid = client
            .register_crid(&Demographics::new("Jane", "Doe", "1970-01-31", "F"))
            .await
            .unwrap();
        assert_eq!(crid, CRID, "{what}");
        // Figure 6 (or its Location header): the Patient id.
        assert_eq!(
            client.ensure_patient(crid).await.unwrap(),
            PATIENT_ID,
            "{what}"
        );
        // Figure 8's lab: created, with the id the server gave.
        let lab = LabResult::from_json(&figure8_lab()).unwrap();
        let submitted = client.submit_lab(crid, &lab).await.unwrap();
        assert_eq!(
            (submitted.status, submitted.id.as_str()),
            (ItemStatus::Created, "obs-1"),
            "{what}"
        );
        // The search answers with Figure 8 (no SDK identifier) and ours.
        let found = client.observations(crid).await.unwrap();
        let ids: Vec<Option<&str>> = found.iter().map(observation_submission_id).collect();
        assert_eq!(
            ids,
            vec![None, Some(submitted.submission_id.as_str())],
            "{what}"
        );

        let log = server.requests.lock().unwrap().clone();
        let sent = |method: &str, path: &str| -> Vec<&Recorded> {
            log.iter()
                .filter(|r| r.method == method && r.target.split('?').next() == Some(path))
                .collect()
        };
        assert_eq!(sent("POST", "/token").len(), 1, "{what}: one token");
        // What went over the wire has Figure 5's and Figure 8's sections.
        let patients = sent("POST", "/v1/Patient");
        assert_eq!(patients.len(), 1, "{what}: the Patient is created once");
        assert_sections(
            &patients[0].body,
            &figure5(),
            &[
                "/resourceType",
                "/meta/security",
                "/identifier/0/system",
                "/identifier/0/value",
            ],
            "POST /Patient",
        );
        let observations = sent("POST", "/v1/Observation");
        assert_eq!(observations.len(), 1, "{what}: one Observation POST");
        assert_sections(
            &observations[0].body,
            &figure8(),
            FIGURE8_SECTIONS,
            "POST /Observation",
        );
        // "include the token in the header [...] along with the word "Bearer "" and "FHIR JSON
        // submissions should also include a "content-type" key in the header with value:
        // "application/fhir+json"".
        for r in log.iter().filter(|r| r.target.starts_with("/v1/")) {
            assert_eq!(
                r.headers.get("authorization").map(String::as_str),
                Some("Bearer figure-token"),
                "{} {}",
                r.method,
                r.target
            );
        }
        for r in patients.iter().chain(&observations) {
            let ct = r.headers.get("content-type").cloned().unwrap_or_default();
            assert!(
                ct.starts_with("application/fhir+json"),
                "{} {}: content-type {ct:?}",
                r.method,
                r.target
            );
        }
        let crid_put = sent("PUT", "/v1/CRID");
        assert_eq!(crid_put.len(), 1);
        assert_eq!(crid_put[0].body["ccn"], CCN);
    }
}
