//! Every Patient and Observation the SDK builds, validated by two FHIR validators nobody here
//! wrote: `fhir.resources` 8.3.0 (STU3 models for STU3, R4 models for R4) and npm `fhir` 4.12.0
//! (R4, and the STU3 definitions of `fhir@3.3.1`). The CRID registration body, which is not FHIR,
//! is checked against a model of the guide's payload table.
//!
//! The matrix: every LOINC code of every lab in the form 2402 catalog × reference range (none,
//! both bounds, low only, high only) × comparator (none, `<`, `<=`, `>=`, `>`) × URI family ×
//! FHIR version, plus statuses, displays, collection times and values at the edges of what
//! `LabResult::check` accepts, and the Patient in both families. Then what actually goes over
//! the wire: labs submitted to the sandbox and read back as it stored them.
//!
//! Deliberately broken resources must fail the validator that is supposed to catch them, so
//! these tests can fail.
use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use cibmtr_fhir::auth::PasswordGrant;
use cibmtr_fhir::cibmtr::{
    Ccn, CibmtrClient, Demographics, LabOptions, LabResult, SubmitOptions, UriFamily,
    lab_catalog_json, observation_resource, patient_resource,
};
use cibmtr_fhir::fhir::FhirVersion;
use cibmtr_fhir_interop::validators::{Item, Report, Validator, validate, version_tag};
use cibmtr_fhir_sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};

/// 2^53 + 1: a 16-digit CRID a double cannot hold, as the sandbox hands out.
const CRID: i64 = 9_007_199_254_740_993;
const PATIENT_ID: &str = "8f0c1b2e-3d4a-4c5b-9e6f-7a8b9c0d1e2f";
const FAMILIES: [UriFamily; 2] = [UriFamily::Cibmtr, UriFamily::Terminology];
const VERSIONS: [FhirVersion; 2] = [FhirVersion::Stu3, FhirVersion::R4];
const COMPARATORS: [Option<&str>; 5] = [None, Some("<"), Some("<="), Some(">="), Some(">")];
const RANGES: [(&str, Option<f64>, Option<f64>); 4] = [
    ("none", None, None),
    ("low-high", Some(1.5), Some(16.0)),
    ("low", Some(0.0), None),
    ("high", None, Some(250.0)),
];

fn ccn() -> Ccn {
    Ccn::parse("12345").unwrap()
}

fn v(version: FhirVersion) -> &'static str {
    version_tag(version)
}

fn run(validator: Validator, items: &[Item]) -> Report {
    validate(validator, items).unwrap_or_else(|e| panic!("{e}"))
}

/// A unit a code's values come in: the catalog's preferred unit, or a moles/volume unit for the
/// codes the catalog marks as molar.
fn unit_for(lab: &Value, code: &str) -> String {
    let molar = lab["molar_codes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == code);
    if molar {
        "umol/L".to_owned()
    } else {
        lab["unit"].as_str().unwrap().to_owned()
    }
}

/// Checks the lab the way `CibmtrClient::submit_lab` does and builds its Observation; `None`
/// when the SDK refuses the input (it then builds nothing).
fn build(lab: &LabResult, family: UriFamily, version: FhirVersion) -> Option<Value> {
    let checked = lab.check(&LabOptions::default()).ok()?;
    Some(observation_resource(
        &checked.lab,
        CRID,
        PATIENT_ID,
        &ccn(),
        family,
        version,
    ))
}

/// The catalog matrix: (label, lab) for every code × range × comparator.
fn catalog_labs() -> Vec<(String, LabResult)> {
    let catalog = lab_catalog_json();
    let mut labs = Vec::new();
    for def in catalog.as_array().unwrap() {
        let name = def["name"].as_str().unwrap();
        for code in def["loinc_codes"].as_array().unwrap() {
            let code = code.as_str().unwrap();
            let unit = unit_for(def, code);
            for (range, low, high) in RANGES {
                for comparator in COMPARATORS {
                    let mut lab = LabResult::new(code, 12.5, &unit, "2024-05-01T08:30:00-05:00")
                        .with_reference_range(low, high);
                    if let Some(c) = comparator {
                        lab = lab.with_comparator(c);
                    }
                    let label = format!(
                        "{code} ({name}, {unit}) range={range} comparator={}",
                        comparator.unwrap_or("none")
                    );
                    labs.push((label, lab));
                }
            }
        }
    }
    labs
}

/// Inputs at the edges of what `LabResult::check` accepts: statuses, displays, collection
/// times, values. Those it refuses are never built and so not validated.
fn edge_labs() -> Vec<(String, LabResult)> {
    let base = || LabResult::new("718-7", 12.5, "g/dL", "2024-05-01T08:30:00-05:00");
    let mut labs = Vec::new();
    for status in ["registered", "preliminary", "final", "amended", " final "] {
        labs.push((format!("status={status:?}"), base().with_status(status)));
    }
    for display in [
        "Hemoglobin [Mass/volume] in Blood",
        "Hämoglobin <Blut> & \"Co\"",
    ] {
        labs.push((format!("display={display:?}"), base().with_display(display)));
    }
    for effective in [
        "2024-05-01T13:30:00Z",
        "2024-05-01t13:30:00z",
        "2024-05-01 08:30:00-05:00",
        "2024-05-01T08:30:00.123456789+05:30",
        "2024-05-01T08:30:00-00:00",
        "2024-02-29T23:59:59+14:00",
        "2024-05-01T08:30:00-12:00",
        "1999-12-31T23:59:59+23:59",
        "2024-05-01T08:30:00-14:30",
        "2016-12-31T23:59:60Z",
        "0001-01-01T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "  2024-05-01T08:30:00Z  ",
    ] {
        let mut lab = base();
        lab.effective = effective.to_owned();
        labs.push((format!("effective={effective:?}"), lab));
    }
    for value in [
        0.0,
        -0.0,
        -2.5,
        0.1 + 0.2,
        1e-7,
        123_456_789.123_456_79,
        1e21,
        1e300,
        5e-324,
        f64::MAX,
    ] {
        let mut lab = base().with_reference_range(value, None);
        lab.value = value;
        labs.push((format!("value={value:e}"), lab));
    }
    labs.push((
        "LOINC outside the catalog (2345-7, glucose)".to_owned(),
        LabResult::new("2345-7", 95.0, "mg/dL", "2024-05-01T08:30:00Z"),
    ));
    labs.push((
        "every optional field".to_owned(),
        base()
            .with_comparator(">=")
            .with_reference_range(12.0, 16.0)
            .with_status("amended")
            .with_display("Hemoglobin"),
    ));
    labs
}

/// The Patients: both families, CRIDs of 1 to 16 digits.
fn patients() -> Vec<Item> {
    let mut items = Vec::new();
    for family in FAMILIES {
        for crid in [1, 3_989_144, CRID, 9_999_999_999_999_999] {
            for version in VERSIONS {
                items.push(Item::fhir(
                    format!("Patient crid={crid} {family} {}", v(version)),
                    version,
                    patient_resource(crid, &ccn(), family),
                ));
            }
        }
    }
    items
}

struct Built {
    items: Vec<Item>,
    /// Edge inputs the SDK refused, so built nothing from.
    refused: Vec<String>,
}

fn built_resources() -> Built {
    let mut items = patients();
    let mut refused = Vec::new();
    let labs: Vec<(String, LabResult)> = catalog_labs().into_iter().chain(edge_labs()).collect();
    for family in FAMILIES {
        for version in VERSIONS {
            for (label, lab) in &labs {
                let label = format!("Observation {label} {family} {}", v(version));
                match build(lab, family, version) {
                    Some(obs) => items.push(Item::fhir(label, version, obs)),
                    None => refused.push(label),
                }
            }
        }
    }
    Built { items, refused }
}

fn assert_matrix_size(built: &Built) {
    let codes: usize = lab_catalog_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["loinc_codes"].as_array().unwrap().len())
        .sum();
    let catalog = codes * RANGES.len() * COMPARATORS.len() * FAMILIES.len() * VERSIONS.len();
    let observations = built
        .items
        .iter()
        .filter(|i| i.resource["resourceType"] == "Observation")
        .count();
    assert!(
        observations >= catalog,
        "{observations} Observations built, the catalog matrix alone is {catalog}"
    );
    // RFC 3339 allows what FHIR's dateTime does not (year 0000, offsets beyond ±14:00; both
    // validators reject the first, fhir.resources the second): LabResult::check refuses them, so
    // the SDK never builds such an Observation. Every other edge input is built and validated.
    for expect in ["0000-01-01", "+23:59", "-14:30"] {
        let n = built.refused.iter().filter(|l| l.contains(expect)).count();
        assert_eq!(
            n,
            FAMILIES.len() * VERSIONS.len(),
            "effective with {expect} must be refused by LabResult::check for every family and \
             version; refused: {:?}",
            built.refused
        );
    }
    assert_eq!(
        built.refused.len(),
        3 * FAMILIES.len() * VERSIONS.len(),
        "refused: {:?}",
        built.refused
    );
}

#[test]
fn every_built_resource_passes_fhir_resources() {
    let built = built_resources();
    assert_matrix_size(&built);
    let report = run(Validator::FhirResources, &built.items);
    report.assert_all_valid();
    eprintln!(
        "{}: {} resources valid ({} refused inputs not built)",
        report.validator,
        report.verdicts.len(),
        built.refused.len()
    );
}

#[test]
fn every_built_resource_passes_npm_fhir() {
    let built = built_resources();
    assert_matrix_size(&built);
    let report = run(Validator::NpmFhir, &built.items);
    report.assert_all_valid();
    eprintln!(
        "{}: {} resources valid",
        report.validator,
        report.verdicts.len()
    );
}

/// One good Observation of each version and family, and mutations of it each validator is known
/// to catch (and, where interop-facts.md says so, known to miss: that is why both run).
#[test]
fn broken_resources_fail_the_validator_that_catches_them() {
    let mut items = Vec::new();
    // (label, validators that must reject it, validators known to accept it, error fragment)
    let mut expect: Vec<(String, Vec<Validator>, Vec<Validator>, &str)> = Vec::new();
    for family in FAMILIES {
        for version in VERSIONS {
            let lab = LabResult::new("718-7", 12.5, "g/dL", "2024-05-01T08:30:00-05:00")
                .with_reference_range(12.0, 16.0)
                .with_comparator("<");
            let good = build(&lab, family, version).unwrap();
            let tag = format!("{family} {}", v(version));
            let mut push = |what: &str,
                            resource: Value,
                            reject: &[Validator],
                            accept: &[Validator],
                            fragment: &'static str| {
                let label = format!("broken Observation {what} {tag}");
                items.push(Item::fhir(&label, version, resource));
                expect.push((label, reject.to_vec(), accept.to_vec(), fragment));
            };
            use Validator::{FhirResources as Py, NpmFhir as Npm};
            push("good (control)", good.clone(), &[], &[Py, Npm], "");
            let mut m = good.clone();
            m["status"] = json!("done");
            push("status=done", m, &[Npm], &[Py], "status");
            let mut m = good.clone();
            m["valueQuantity"]["value"] = json!("72");
            push("value=\"72\"", m, &[Npm], &[Py], "valueQuantity.value");
            let mut m = good.clone();
            m["valueQuantity"]["comparator"] = json!("==");
            push("comparator===", m, &[Npm], &[Py], "comparator");
            let mut m = good.clone();
            m["effectiveDateTime"] = json!("2024-02-30T08:30:00-05:00");
            push("effective=Feb 30", m, &[Py], &[Npm], "effectiveDateTime");
            let mut m = good.clone();
            m["valueString"] = json!("12.5 g/dL");
            push("valueQuantity+valueString", m, &[Py], &[Npm], "value");
            let mut m = good.clone();
            m["valueQuantity"]["value"] = json!("twelve");
            push("value=\"twelve\"", m, &[Py, Npm], &[], "value");
            let mut m = good.clone();
            m["effectiveDateTime"] = json!("2024-05-01T08:30:00");
            push(
                "effective without timezone",
                m,
                &[Py],
                &[],
                "effectiveDateTime",
            );
            let mut m = good.clone();
            let subject = m.as_object_mut().unwrap().remove("subject").unwrap();
            m["subjekt"] = subject;
            push("misspelt subject", m, &[Py, Npm], &[], "subjekt");
            let mut p = patient_resource(CRID, &ccn(), family);
            p["identifier"][0]["use"] = json!("primary");
            let label = format!("broken Patient identifier.use=primary {tag}");
            items.push(Item::fhir(&label, version, p));
            expect.push((label, vec![Npm], vec![Py], "use"));
            let mut p = patient_resource(CRID, &ccn(), family);
            p["birthDate"] = json!("1970-02-30");
            let label = format!("broken Patient birthDate=Feb 30 {tag}");
            items.push(Item::fhir(&label, version, p));
            expect.push((label, vec![Py], vec![Npm], "birthDate"));
        }
    }
    for validator in Validator::ALL {
        let report = run(validator, &items);
        assert_ne!(
            report.exit_code, 0,
            "{validator}: exit status 0 despite broken input"
        );
        for (label, reject, accept, fragment) in &expect {
            let verdict = report.verdict(label);
            if reject.contains(&validator) {
                assert!(!verdict.valid, "{validator} accepted {label}");
                assert!(
                    verdict.errors.iter().any(|e| e.contains(fragment)),
                    "{validator} rejected {label} but not for {fragment}: {:?}",
                    verdict.errors
                );
            }
            if accept.contains(&validator) {
                assert!(
                    verdict.valid,
                    "{validator} is documented to accept {label} (interop-facts.md); it now \
                     says {:?}",
                    verdict.errors
                );
            }
        }
        // A batch with only the good controls passes, so the exit status follows the content.
        let controls: Vec<Item> = items
            .iter()
            .filter(|i| i.label.contains("good (control)"))
            .cloned()
            .collect();
        assert_eq!(controls.len(), 4);
        run(validator, &controls).assert_all_valid();
    }
}

fn demographics() -> Vec<(&'static str, Demographics)> {
    let full = Demographics {
        ssn: Some("123456789".into()),
        mothers_maiden_name: Some("Smith".into()),
        race: vec!["2106-3".into(), "2028-9".into(), "2106-3".into()],
        ethnicity: Some("2186-5".into()),
        nmdp_rid: Some(1_234_567),
        ebmt_cic: Some("123".into()),
        ebmt_id: Some("E-77".into()),
        cibmtr_team: Some(42),
        cibmtr_iubmid: Some("IU-1".into()),
        ..Demographics::new("Jane", "Doe", "1970-01-31", "female")
    };
    vec![
        (
            "required fields only",
            Demographics::new("Jane", "Doe", "1970-01-31", "F"),
        ),
        ("every optional field", full),
        (
            "male, lower case, leap day",
            Demographics::new(" José ", "O'Brien-Łukasz", "2000-02-29", "m"),
        ),
        (
            "race ASKU, ethnicity UNK",
            Demographics {
                race: vec!["ASKU".into()],
                ethnicity: Some("UNK".into()),
                ..Demographics::new("A", "B", "1950-12-01", "M")
            },
        ),
    ]
}

#[test]
fn crid_requests_match_the_guides_payload() {
    let today = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
    let mut items = Vec::new();
    for (label, d) in demographics() {
        let body = d.crid_request(&ccn(), today).unwrap();
        items.push(Item::crid_request(format!("CRID request {label}"), body));
    }
    let good = items[1].resource.clone();
    let broken = [
        ("nmdpRid as a string", "/patient/nmdpRid", json!("1234567")),
        ("gender X", "/patient/gender", json!("X")),
        (
            "birthDate Feb 30",
            "/patient/birthDate",
            json!("1970-02-30"),
        ),
        ("race not in the table", "/patient/race", json!(["white"])),
        ("ccn of 4 digits", "/ccn", json!("1234")),
    ];
    for (what, ptr, value) in &broken {
        let mut b = good.clone();
        *b.pointer_mut(ptr).unwrap() = value.clone();
        items.push(Item::crid_request(format!("broken CRID request {what}"), b));
    }
    let mut b = good.clone();
    b["patient"]["name"] = json!("Jane Doe");
    items.push(Item::crid_request(
        "broken CRID request unknown key name",
        b,
    ));
    let report = run(Validator::FhirResources, &items);
    for verdict in &report.verdicts {
        let broken = verdict.id.starts_with("broken");
        assert_eq!(
            verdict.valid, !broken,
            "{}: {} {:?}",
            report.validator, verdict.id, verdict.errors
        );
    }
}

// ---------------------------------------------------------------------------------------------
// What goes over the wire
// ---------------------------------------------------------------------------------------------

fn okta(sb: &Sandbox) -> PasswordGrant {
    let o = &sb.credentials.okta;
    PasswordGrant::builder(
        &o.token_url,
        &o.client_id,
        o.client_secret.as_str(),
        &o.username,
        o.password.as_str(),
    )
    .scope(&o.scope)
    .build()
    .unwrap()
}

/// One lab per catalog code, cycling through the range and comparator variants.
fn one_lab_per_code() -> Vec<LabResult> {
    let mut labs = Vec::new();
    let mut n = 0;
    for def in lab_catalog_json().as_array().unwrap() {
        for code in def["loinc_codes"].as_array().unwrap() {
            let code = code.as_str().unwrap();
            let (_, low, high) = RANGES[n % RANGES.len()];
            let mut lab = LabResult::new(
                code,
                1.0 + n as f64 / 8.0,
                unit_for(def, code),
                format!("2024-05-{:02}T08:30:00-05:00", 1 + n % 28),
            )
            .with_reference_range(low, high);
            if let Some(c) = COMPARATORS[n % COMPARATORS.len()] {
                lab = lab.with_comparator(c);
            }
            labs.push(lab);
            n += 1;
        }
    }
    labs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_sandbox_stored_is_valid() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let auth = okta(&sb);
    let labs = one_lab_per_code();
    let mut items = Vec::new();
    // Patient id → (family, version) of the client that created it.
    let mut made_by: HashMap<String, (UriFamily, FhirVersion)> = HashMap::new();
    let mut searched = 0;
    for (i, family) in FAMILIES.into_iter().enumerate() {
        for (j, version) in VERSIONS.into_iter().enumerate() {
            let c = CibmtrClient::builder("12345", &auth)
                .base_url(&sb.urls.cibmtr_base)
                .uri_family(family)
                .fhir_version(version)
                .build()
                .unwrap();
            let who = Demographics::new("Jane", "Doe", format!("1970-0{}-1{}", i + 1, j), "F");
            let crid = c.register_crid(&who).await.unwrap();
            let patient_id = c.ensure_patient(crid).await.unwrap();
            made_by.insert(patient_id, (family, version));
            let opts = SubmitOptions {
                concurrency: 4,
                use_bundles: family == UriFamily::Terminology && version == FhirVersion::R4,
                ..Default::default()
            };
            let report = c.submit_labs(crid, labs.clone(), &opts).await.unwrap();
            assert_eq!(
                (report.created, report.failed),
                (labs.len(), 0),
                "{family} {}: {:?}",
                v(version),
                report.to_json()
            );
            // What a search hands back, over HTTP, as the client reads it.
            for (k, obs) in c.observations(crid).await.unwrap().into_iter().enumerate() {
                let code = obs["code"]["coding"][0]["code"].as_str().unwrap_or("?");
                items.push(Item::fhir(
                    format!("searched Observation #{k} {code} {family} {}", v(version)),
                    version,
                    obs,
                ));
                searched += 1;
            }
        }
    }
    assert_eq!(searched, 4 * labs.len());
    // What the server stored: redacted Patients (with the REDACTED label) and Observations.
    let patients = sb.patients();
    assert_eq!(patients.len(), 4);
    for p in patients {
        let id = p["id"].as_str().unwrap().to_owned();
        let (family, version) = made_by[&id];
        items.push(Item::fhir(
            format!("stored Patient {id} {family} {}", v(version)),
            version,
            p,
        ));
    }
    let stored = sb.observations();
    assert_eq!(stored.len(), 4 * labs.len(), "no duplicates, nothing lost");
    let mut per_client: BTreeMap<String, usize> = BTreeMap::new();
    for obs in stored {
        let subject = obs["subject"]["reference"].as_str().unwrap();
        let (family, version) = made_by[subject.strip_prefix("Patient/").unwrap()];
        let code = obs["code"]["coding"][0]["code"].as_str().unwrap();
        let id = obs["id"].as_str().unwrap();
        *per_client
            .entry(format!("{family} {}", v(version)))
            .or_default() += 1;
        items.push(Item::fhir(
            format!("stored Observation {id} {code} {family} {}", v(version)),
            version,
            obs,
        ));
    }
    assert!(
        per_client.values().all(|n| *n == labs.len()),
        "{per_client:?}"
    );
    // The two validators run one after the other on these threads (blocking subprocesses).
    let items = std::sync::Arc::new(items);
    for validator in Validator::ALL {
        let items = items.clone();
        let report = tokio::task::spawn_blocking(move || run(validator, &items))
            .await
            .unwrap();
        report.assert_all_valid();
        eprintln!(
            "{validator}: {} resources from the sandbox valid",
            report.verdicts.len()
        );
    }
}
