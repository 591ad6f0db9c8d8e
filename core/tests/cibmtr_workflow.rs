//! The CIBMTR Direct FHIR workflow end to end against the sandbox on loopback: CRID, the
//! de-identified Patient, labs one by one and in bulk, with faults. Counts are the server's.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cibmtr_fhir::auth::PasswordGrant;
use cibmtr_fhir::cibmtr::{
    CibmtrClient, Demographics, ItemStatus, LabOptions, LabResult, SUBMISSION_ID_SYSTEM,
    SubmitOptions, UriFamily,
};
use cibmtr_fhir::{Error, ErrorKind};
use cibmtr_fhir_sandbox::{CridResponseShape, DropMode, Fault, Route, Sandbox, SandboxConfig};
use serde_json::Value;

async fn sandbox_with(config: SandboxConfig) -> Sandbox {
    Sandbox::start(config).await.expect("sandbox starts")
}

async fn sandbox() -> Sandbox {
    sandbox_with(SandboxConfig::default()).await
}

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

fn client(sb: &Sandbox, auth: &PasswordGrant) -> CibmtrClient {
    CibmtrClient::builder("12345", auth)
        .base_url(&sb.urls.cibmtr_base)
        .build()
        .unwrap()
}

fn jane() -> Demographics {
    Demographics::new("Jane", "Doe", "1970-01-31", "F")
}

fn labs(n: usize) -> Vec<LabResult> {
    (0..n)
        .map(|i| {
            LabResult::new(
                "718-7",
                10.0 + (i % 50) as f64 / 10.0,
                "g/dL",
                format!(
                    "2024-{:02}-{:02}T08:{:02}:00-05:00",
                    1 + i % 12,
                    1 + i % 28,
                    i % 60
                ),
            )
            .with_reference_range(Some(12.0), Some(16.0))
        })
        .collect()
}

/// Submission identifiers on the server → how many Observations carry each.
fn submission_counts(sb: &Sandbox) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for obs in sb.observations() {
        for ident in obs["identifier"].as_array().into_iter().flatten() {
            if ident["system"] == SUBMISSION_ID_SYSTEM {
                *counts
                    .entry(ident["value"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
        }
    }
    counts
}

#[tokio::test]
async fn the_whole_workflow() {
    let sb = sandbox().await;
    let auth = okta(&sb);
    let c = client(&sb, &auth);
    let crid = c.register_crid(&jane()).await.unwrap();
    assert!(
        crid > 9_007_199_254_740_992,
        "16-digit CRID kept exact: {crid}"
    );
    assert_eq!(
        c.register_crid(&jane()).await.unwrap(),
        crid,
        "PUT: same CRID again"
    );

    let patient_id = c.ensure_patient(crid).await.unwrap();
    let patients = sb.patients();
    assert_eq!(patients.len(), 1);
    let p = &patients[0];
    assert_eq!(p["id"], patient_id.as_str());
    assert!(p.get("name").is_none() && p.get("birthDate").is_none());

    let lab = LabResult::new("718-7", 12.5, "g/dL", "2024-05-01T08:30:00-05:00");
    let r = c.submit_lab(crid, &lab).await.unwrap();
    assert_eq!(r.status, ItemStatus::Created);
    let again = c.submit_lab(crid, &lab).await.unwrap();
    assert_eq!(again.status, ItemStatus::AlreadyPresent);
    assert_eq!(again.id, r.id);

    let listed = c.observations(crid).await.unwrap();
    assert_eq!(listed.len(), 1);
    let obs = &listed[0];
    assert_eq!(obs["subject"]["reference"], format!("Patient/{patient_id}"));
    assert_eq!(obs["valueQuantity"]["system"], "http://unitsofmeasure.org");
    assert_eq!(obs["code"]["coding"][0]["code"], "718-7");
    assert_eq!(sb.observations().len(), 1);
    // One Okta token for the whole session.
    assert_eq!(sb.token_requests(&sb.credentials.okta.client_id), 1);
}

#[tokio::test]
async fn every_demographics_rule_is_checked_before_sending() {
    let sb = sandbox().await;
    let auth = okta(&sb);
    let c = client(&sb, &auth);
    let cases: Vec<(&str, Demographics)> = vec![
        (
            "first_name",
            Demographics::new(" ", "Doe", "1970-01-31", "F"),
        ),
        (
            "last_name",
            Demographics::new("Jane", "", "1970-01-31", "F"),
        ),
        (
            "birth_date",
            Demographics::new("Jane", "Doe", "1970-02-30", "F"),
        ),
        (
            "birth_date",
            Demographics::new("Jane", "Doe", "31/01/1970", "F"),
        ),
        (
            "birth_date",
            Demographics::new("Jane", "Doe", "2999-01-01", "F"),
        ),
        (
            "gender",
            Demographics::new("Jane", "Doe", "1970-01-31", "X"),
        ),
        (
            "ssn",
            Demographics {
                ssn: Some("666-12-3456".into()),
                ..jane()
            },
        ),
        (
            "ssn",
            Demographics {
                ssn: Some("12-345-6789".into()),
                ..jane()
            },
        ),
        (
            "race",
            Demographics {
                race: vec!["2106-3".into(), "9999-9".into()],
                ..jane()
            },
        ),
        (
            "ethnicity",
            Demographics {
                ethnicity: Some("2106-3".into()),
                ..jane()
            },
        ),
    ];
    for (field, d) in cases {
        let e = c.register_crid(&d).await.unwrap_err();
        assert!(
            matches!(&e, Error::Validation { field: f, .. } if f == field),
            "{field}: {e:?}"
        );
    }
    // A bad CCN is refused when the client is built.
    let e = CibmtrClient::builder("1234", &auth)
        .base_url(&sb.urls.cibmtr_base)
        .build()
        .unwrap_err();
    assert!(matches!(&e, Error::Validation { field, .. } if field == "ccn"));
    assert_eq!(sb.requests(Route::Crid), 0, "no request was sent");
    assert_eq!(sb.token_requests_total(), 0, "not even for a token");

    // Accepted spellings are normalised, and the server agrees.
    let ok = Demographics {
        ssn: Some("123-45-6789".into()),
        race: vec!["2106-3".into()],
        ethnicity: Some("2186-5".into()),
        ..Demographics::new("Jane", "Doe", "1970-01-31", "female")
    };
    c.register_crid(&ok).await.unwrap();
}

#[tokio::test]
async fn lab_rules_are_checked_before_sending() {
    let sb = sandbox().await;
    let auth = okta(&sb);
    let c = client(&sb, &auth);
    let crid = c.register_crid(&jane()).await.unwrap();
    let cases = [
        (
            "effective",
            LabResult::new("718-7", 12.0, "g/dL", "2024-05-01T08:30:00"),
        ),
        (
            "effective",
            LabResult::new("718-7", 12.0, "g/dL", "2024-05-01"),
        ),
        (
            "unit",
            LabResult::new("718-7", 12.0, "grams", "2024-05-01T08:30:00Z"),
        ),
        (
            "value",
            LabResult::new("718-7", f64::NAN, "g/dL", "2024-05-01T08:30:00Z"),
        ),
        (
            "loinc",
            LabResult::new("hemoglobin", 12.0, "g/dL", "2024-05-01T08:30:00Z"),
        ),
    ];
    for (field, lab) in cases {
        let e = c.submit_lab(crid, &lab).await.unwrap_err();
        assert!(
            matches!(&e, Error::Validation { field: f, .. } if f == field),
            "{field}: {e:?}"
        );
    }
    let e = LabResult::parse("718-7", "twelve", "g/dL", "2024-05-01T08:30:00Z").unwrap_err();
    assert!(matches!(&e, Error::Validation { field, .. } if field == "value"));
    assert_eq!(sb.requests(Route::ObservationCreate), 0);
    assert_eq!(sb.requests(Route::PatientCreate), 0, "not even the Patient");

    // Outside the form 2402 catalog: a warning by default, an error in strict mode.
    let other = LabResult::new("2345-7", 90.0, "mg/dL", "2024-05-01T08:30:00Z");
    let r = c.submit_lab(crid, &other).await.unwrap();
    assert!(
        r.warnings.iter().any(|w| w.contains("2402")),
        "{:?}",
        r.warnings
    );
    let strict = CibmtrClient::builder("12345", &auth)
        .base_url(&sb.urls.cibmtr_base)
        .lab_options(LabOptions {
            strict: true,
            ..Default::default()
        })
        .build()
        .unwrap();
    let e = strict.submit_lab(crid, &other).await.unwrap_err();
    assert!(matches!(&e, Error::Validation { field, .. } if field == "loinc"));
}

#[tokio::test]
async fn both_crid_response_shapes_are_read() {
    for shape in [CridResponseShape::PerfectMatch, CridResponseShape::TopLevel] {
        let sb = sandbox_with(SandboxConfig {
            crid_response: shape,
            ..Default::default()
        })
        .await;
        let auth = okta(&sb);
        let crid = client(&sb, &auth).register_crid(&jane()).await.unwrap();
        assert_eq!(crid, 9_007_199_254_740_993, "{shape:?}");
    }
}

#[tokio::test]
async fn both_uri_families_find_the_same_patient() {
    let sb = sandbox().await;
    let auth = okta(&sb);
    let terminology = CibmtrClient::builder("12345", &auth)
        .base_url(&sb.urls.cibmtr_base)
        .uri_family(UriFamily::Terminology)
        .build()
        .unwrap();
    let crid = terminology.register_crid(&jane()).await.unwrap();
    let id = terminology.ensure_patient(crid).await.unwrap();
    let stored = sb.patients();
    assert_eq!(
        stored[0]["identifier"][0]["system"],
        "http://terminology.cibmtr.org/identifier/CRID"
    );
    // A client speaking the other family finds it rather than making a second Patient.
    let classic = client(&sb, &auth);
    assert_eq!(classic.ensure_patient(crid).await.unwrap(), id);
    assert_eq!(sb.patients().len(), 1);
    let lab = LabResult::new("777-3", 150.0, "10*9/L", "2024-05-01T08:30:00Z");
    let r = terminology.submit_lab(crid, &lab).await.unwrap();
    let obs = &sb.observations()[0];
    assert_eq!(
        obs["meta"]["security"][0]["system"],
        "http://terminology.cibmtr.org/codesystem/transplant-center"
    );
    assert_eq!(r.status, ItemStatus::Created);
}

#[tokio::test]
async fn ensure_patient_never_makes_a_second_patient() {
    let sb = sandbox_with(SandboxConfig {
        patient_id_only_in_location: true,
        ..Default::default()
    })
    .await;
    let auth = okta(&sb);
    let c = client(&sb, &auth);
    let crid = c.register_crid(&jane()).await.unwrap();
    // The first POST is processed but its answer is lost.
    sb.set_fault(
        Route::PatientCreate,
        Fault {
            drop_connection: Some(DropMode::AfterProcessing),
            times: 1,
            ..Default::default()
        },
    );
    let ids = futures_util::future::join_all((0..100).map(|_| c.ensure_patient(crid))).await;
    let first = ids[0].as_ref().unwrap().clone();
    assert!(ids.iter().all(|r| r.as_ref().ok() == Some(&first)));
    // A second client (another process, in effect) finds it too.
    let other = client(&sb, &auth);
    assert_eq!(other.ensure_patient(crid).await.unwrap(), first);
    assert_eq!(sb.patients().len(), 1);
    assert_eq!(sb.requests(Route::PatientCreate), 1);
}

#[tokio::test]
async fn a_thousand_labs_with_ten_percent_faults_are_all_accounted_for_once() {
    let sb = sandbox().await;
    let auth = okta(&sb);
    let c = client(&sb, &auth);
    let crid = c.register_crid(&jane()).await.unwrap();
    c.ensure_patient(crid).await.unwrap();
    let faults = [
        Fault {
            status: 503,
            share: 0.04,
            ..Default::default()
        },
        Fault {
            status: 429,
            headers: vec![("Retry-After".into(), "0".into())],
            share: 0.02,
            ..Default::default()
        },
        Fault {
            drop_connection: Some(DropMode::BeforeProcessing),
            share: 0.02,
            ..Default::default()
        },
        Fault {
            drop_connection: Some(DropMode::AfterProcessing),
            share: 0.02,
            ..Default::default()
        },
    ];
    // One switch per route holds one fault at a time: rotate them while the batch runs.
    let done = std::sync::atomic::AtomicBool::new(false);
    let items = labs(1000);
    let progress_calls = Arc::new(AtomicUsize::new(0));
    let pc = progress_calls.clone();
    let options = SubmitOptions {
        concurrency: 16,
        progress: Some(Arc::new(move |_p| {
            pc.fetch_add(1, Ordering::SeqCst);
        })),
        ..Default::default()
    };
    let batch = async {
        let r = c.submit_labs(crid, items.clone(), &options).await;
        done.store(true, Ordering::SeqCst);
        r
    };
    let rotate = async {
        let mut i = 0;
        while !done.load(Ordering::SeqCst) {
            sb.set_fault(Route::ObservationCreate, faults[i % faults.len()].clone());
            sb.set_fault(
                Route::ObservationSearch,
                faults[(i + 1) % faults.len()].clone(),
            );
            i += 1;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let (report, ()) = tokio::join!(batch, rotate);
    let report = report.unwrap();
    sb.clear_faults();
    assert_eq!(report.total(), 1000);
    assert_eq!(
        report.created + report.already_present + report.failed,
        1000
    );
    assert_eq!(progress_calls.load(Ordering::SeqCst), 1000);
    let counts = submission_counts(&sb);
    assert!(
        counts.values().all(|&n| n == 1),
        "no duplicate on the server"
    );
    // Items that failed are reported with their error; everything else is on the server once.
    for item in &report.items {
        match item.status {
            ItemStatus::Failed => assert!(item.error.is_some()),
            _ => assert_eq!(counts[item.submission_id.as_ref().unwrap()], 1),
        }
    }
    assert_eq!(counts.len(), report.created + report.already_present);
    assert!(
        report.failed <= 5,
        "retries carried nearly all items: {}",
        report.failed
    );
    // Nothing was there before: even an item whose answer was lost is reported as created.
    assert_eq!(report.already_present, 0);
    // The faults did hit: more requests than items.
    assert!(sb.requests(Route::ObservationCreate) > 1000);

    // Re-running the same batch creates nothing and posts nothing.
    let posts = sb.requests(Route::ObservationCreate);
    let before = sb.observations().len();
    let rerun = c
        .submit_labs(crid, items, &SubmitOptions::default())
        .await
        .unwrap();
    assert_eq!(
        rerun.created, report.failed,
        "only what failed before is sent"
    );
    assert_eq!(rerun.already_present, 1000 - report.failed);
    assert_eq!(
        sb.requests(Route::ObservationCreate) - posts,
        report.failed as u64
    );
    assert_eq!(sb.observations().len(), before + report.failed);
}

#[tokio::test]
async fn repeated_items_in_one_batch_are_sent_once() {
    let sb = sandbox().await;
    let auth = okta(&sb);
    let c = client(&sb, &auth);
    let crid = c.register_crid(&jane()).await.unwrap();
    let a = LabResult::new("718-7", 12.0, "g/dL", "2024-05-01T08:30:00-05:00");
    // The same instant in another offset and 12 written as 12.0: the same content.
    let b = LabResult::new("718-7", 12.0, "g/dL", "2024-05-01T13:30:00Z");
    let bad: Result<LabResult, Error> =
        LabResult::parse("718-7", "n/a", "g/dL", "2024-05-01T13:30:00Z");
    let report = c
        .submit_lab_inputs(crid, vec![Ok(a), Ok(b), bad], &SubmitOptions::default())
        .await
        .unwrap();
    assert_eq!(report.items[0].status, ItemStatus::Created);
    assert_eq!(report.items[1].status, ItemStatus::AlreadyPresent);
    assert_eq!(report.items[1].id, report.items[0].id);
    assert_eq!(report.items[2].status, ItemStatus::Failed);
    assert_eq!(
        report.items[2].error.as_ref().unwrap().kind(),
        ErrorKind::Validation
    );
    assert_eq!(sb.observations().len(), 1);
}

#[tokio::test]
async fn transaction_bundles_of_fifty_with_the_same_guarantees() {
    let sb = sandbox().await;
    let auth = okta(&sb);
    let c = CibmtrClient::builder("12345", &auth)
        .base_url(&sb.urls.cibmtr_base)
        .fhir_path("r3")
        .build()
        .unwrap();
    let crid = c.register_crid(&jane()).await.unwrap();
    let options = SubmitOptions {
        use_bundles: true,
        ..Default::default()
    };
    // The first Bundle is processed but its answer is lost: the retry must not duplicate.
    sb.set_fault(
        Route::ObservationCreate,
        Fault {
            drop_connection: Some(DropMode::AfterProcessing),
            times: 1,
            ..Default::default()
        },
    );
    let report = c.submit_labs(crid, labs(120), &options).await.unwrap();
    assert_eq!(
        report.failed,
        0,
        "{:?}",
        report.items.iter().find(|i| i.error.is_some())
    );
    assert_eq!(report.created + report.already_present, 120);
    assert_eq!(sb.observations().len(), 120);
    assert!(submission_counts(&sb).values().all(|&n| n == 1));
    let rerun = c.submit_labs(crid, labs(120), &options).await.unwrap();
    assert_eq!(rerun.already_present, 120);
    assert_eq!(sb.observations().len(), 120);

    let e = c
        .submit_labs(
            crid,
            labs(1),
            &SubmitOptions {
                use_bundles: true,
                bundle_size: 51,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Validation { field, .. } if field == "bundle_size"));
}

#[tokio::test]
async fn observations_page_through_everything() {
    let sb = sandbox().await;
    let auth = okta(&sb);
    let c = client(&sb, &auth);
    let crid = c.register_crid(&jane()).await.unwrap();
    let report = c
        .submit_labs(crid, labs(130), &SubmitOptions::default())
        .await
        .unwrap();
    assert_eq!(report.created, 130);
    let all: Vec<Value> = c.observations(crid).await.unwrap();
    assert_eq!(all.len(), 130, "default page size is 50: three pages");
}

/// Whichever way an item goes (sent one by one or in Bundles, already on the server, repeated in
/// the batch, failing its checks), its report carries the submission identifier of its own
/// content, and what reached the server is the Observation `observation_resource` builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_report_item_carries_its_own_submission_id() {
    use cibmtr_fhir::cibmtr::{Ccn, observation_resource, submission_id};
    use cibmtr_fhir::fhir::FhirVersion;
    let sb = sandbox().await;
    let auth = okta(&sb);
    let c = client(&sb, &auth);
    let ccn = Ccn::parse("12345").unwrap();
    for (use_bundles, first) in [(false, "Jane"), (true, "Joan")] {
        let crid = c
            .register_crid(&Demographics::new(first, "Doe", "1970-01-31", "F"))
            .await
            .unwrap();
        let patient_id = c.ensure_patient(crid).await.unwrap();
        let mut input = labs(6);
        c.submit_lab(crid, &input[0]).await.unwrap();
        input.push(input[2].clone());
        input.push(LabResult::new(
            "718-7",
            f64::NAN,
            "g/dL",
            "2024-05-01T08:30:00Z",
        ));
        let options = SubmitOptions {
            use_bundles,
            bundle_size: 2,
            ..Default::default()
        };
        let report = c.submit_labs(crid, input.clone(), &options).await.unwrap();
        let statuses: Vec<ItemStatus> = report.items.iter().map(|i| i.status).collect();
        use ItemStatus::*;
        assert_eq!(
            statuses,
            [
                AlreadyPresent,
                Created,
                Created,
                Created,
                Created,
                Created,
                AlreadyPresent,
                Failed
            ],
            "bundles: {use_bundles}"
        );
        let on_server: HashMap<String, Value> = sb
            .observations()
            .into_iter()
            .map(|o| (o["id"].as_str().unwrap().to_owned(), o))
            .collect();
        for (item, lab) in report.items.iter().zip(&input) {
            if item.status == Failed {
                assert_eq!(item.submission_id, None);
                continue;
            }
            let sid = submission_id(lab, crid, &ccn);
            assert_eq!(
                item.submission_id.as_deref(),
                Some(sid.as_str()),
                "{item:?}"
            );
            let stored = &on_server[item.id.as_deref().unwrap()];
            let built = observation_resource(
                lab,
                crid,
                &patient_id,
                &ccn,
                UriFamily::default(),
                FhirVersion::default(),
            );
            for field in [
                "identifier",
                "code",
                "subject",
                "valueQuantity",
                "referenceRange",
            ] {
                assert_eq!(
                    stored[field], built[field],
                    "{field} of item {}",
                    item.index
                );
            }
        }
    }
}

/// A create answered without the resource in the body: the id comes from the `Location` header;
/// answered with a body that names it, from the body.
#[tokio::test]
async fn a_created_labs_id_comes_from_the_body_or_the_location() {
    let sb = sandbox().await;
    let auth = okta(&sb);
    let c = client(&sb, &auth);
    let crid = c.register_crid(&jane()).await.unwrap();
    c.ensure_patient(crid).await.unwrap();
    let answers = [
        (
            "",
            vec![(
                "Location".to_owned(),
                "Observation/from-location-1/_history/1".to_owned(),
            )],
            "from-location-1",
        ),
        (
            r#"{"resourceType":"Observation","id":"from-body-7","status":"final"}"#,
            vec![],
            "from-body-7",
        ),
        (
            r#"{"resourceType":"Observation","id":"  "}"#,
            vec![("Location".to_owned(), "Observation/blank-id-9".to_owned())],
            "blank-id-9",
        ),
    ];
    for (i, (body, headers, want)) in answers.into_iter().enumerate() {
        sb.set_fault(
            Route::ObservationCreate,
            Fault {
                status: 201,
                headers,
                body: body.to_owned(),
                times: 1,
                ..Default::default()
            },
        );
        let report = c
            .submit_labs(crid, vec![labs(3).remove(i)], &SubmitOptions::default())
            .await
            .unwrap();
        assert_eq!(report.items[0].status, ItemStatus::Created, "{body}");
        assert_eq!(report.items[0].id.as_deref(), Some(want), "{body}");
    }
    // Neither: the lab is reported failed, with the reason.
    sb.set_fault(
        Route::ObservationCreate,
        Fault {
            status: 201,
            body: r#"{"resourceType":"Observation"}"#.into(),
            times: 1,
            ..Default::default()
        },
    );
    let report = c
        .submit_labs(crid, vec![labs(4).remove(3)], &SubmitOptions::default())
        .await
        .unwrap();
    assert_eq!(report.items[0].status, ItemStatus::Failed);
    let e = report.items[0].error.as_ref().unwrap().to_string();
    assert!(e.contains("neither its id nor a Location"), "{e}");
}
