//! `cibmtr-fhir demo`: the whole workflow against the sandbox started in-process — token, CRID,
//! Patient, the labs of the bundled example CSV, a re-run, a batch under injected faults, and a
//! search — printing what happened and a summary.
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use cibmtr_fhir::Error;
use cibmtr_fhir::auth::PasswordGrant;
use cibmtr_fhir::cibmtr::{
    CibmtrClient, Demographics, LabResult, SUBMISSION_ID_SYSTEM, SubmitOptions, lab_for_code,
    read_labs_csv,
};
use cibmtr_fhir_sandbox::{DropMode, Fault, Route, Sandbox, SandboxConfig};

use crate::labs;

/// The example file the README and the demo use.
pub const EXAMPLE_CSV: &str = include_str!("../../examples/data/form2402-labs.csv");

fn started(e: std::io::Error) -> Error {
    Error::Config {
        message: format!("cannot start the sandbox: {e}"),
    }
}

pub async fn run() -> Result<(), Error> {
    let sb = Sandbox::start(SandboxConfig::default())
        .await
        .map_err(started)?;
    outln!("cibmtr-fhir demo — sandbox on {}", sb.urls.base);
    let c = &sb.credentials.okta;
    let okta = PasswordGrant::builder(
        &c.token_url,
        &c.client_id,
        c.client_secret.as_str(),
        &c.username,
        c.password.as_str(),
    )
    .scope(&c.scope)
    .build()?;

    outln!("\n1. Token (Okta password grant, as CIBMTR uses it)");
    let t0 = Instant::now();
    for _ in 0..10_001 {
        okta.token().await?;
    }
    outln!(
        "   10,001 calls in {:.1} ms -> {} token request(s) at the server",
        t0.elapsed().as_secs_f64() * 1e3,
        sb.token_requests(&c.client_id)
    );
    okta.invalidate();
    let before = sb.token_requests(&c.client_id);
    for r in futures_util::future::join_all((0..500).map(|_| okta.token())).await {
        r?;
    }
    outln!(
        "   500 callers after invalidate() -> {} token request(s)",
        sb.token_requests(&c.client_id) - before
    );
    let wrong = PasswordGrant::builder(
        &c.token_url,
        &c.client_id,
        c.client_secret.as_str(),
        &c.username,
        "wrong",
    )
    .scope(&c.scope)
    .build()?;
    let before = sb.token_requests(&c.client_id);
    let mut shown = false;
    for _ in 0..3 {
        if let Err(e) = wrong.token().await
            && !shown
        {
            outln!("   wrong password: {e}");
            shown = true;
        }
    }
    outln!(
        "   3 attempts with a wrong password -> {} token request(s)",
        sb.token_requests(&c.client_id) - before
    );

    let client = CibmtrClient::builder("12345", &okta)
        .base_url(&sb.urls.cibmtr_base)
        .build()?;

    outln!("\n2. CRID registration (PUT /CRID)");
    let jane = Demographics {
        race: vec!["2106-3".into()],
        ethnicity: Some("2186-5".into()),
        ..Demographics::new("Jane", "Example", "1968-04-12", "F")
    };
    let crid = client.register_crid(&jane).await?;
    let again = client.register_crid(&jane).await?;
    outln!("   CRID {crid}; the same demographics again -> {again}");
    let bad = Demographics::new("Jane", "Example", "1968-02-30", "F");
    if let Err(e) = client.register_crid(&bad).await {
        outln!("   an impossible birth date is refused before sending: {e}");
    }

    outln!("\n3. The de-identified Patient (found before created)");
    let patient_id = client.ensure_patient(crid).await?;
    let again = client.ensure_patient(crid).await?;
    let stored = sb.patients();
    outln!(
        "   Patient/{patient_id}; asked again -> Patient/{again}; Patients on the server: {}",
        stored.len()
    );
    if let Some(labels) = stored
        .first()
        .and_then(|p| p["meta"]["security"].as_array())
    {
        let codes: Vec<&str> = labels.iter().filter_map(|l| l["code"].as_str()).collect();
        outln!("   security labels after the server's redaction: {codes:?}");
    }

    outln!("\n4. Labs from examples/data/form2402-labs.csv, 8 at a time");
    let rows = read_labs_csv(EXAMPLE_CSV.as_bytes())?;
    let report = labs::submit_rows(
        &client,
        rows.clone(),
        Some(crid),
        &mut SubmitOptions::default(),
        false,
        None,
    )
    .await?;
    labs::print_summary(&report);

    outln!("\n5. The same file again: nothing is sent twice");
    let posts = sb.requests(Route::ObservationCreate);
    let rerun = labs::submit_rows(
        &client,
        rows,
        Some(crid),
        &mut SubmitOptions::default(),
        false,
        None,
    )
    .await?;
    outln!(
        "   created {}, already present {}, failed {} -> {} new POST(s)",
        rerun.created,
        rerun.already_present,
        rerun.failed,
        sb.requests(Route::ObservationCreate) - posts
    );

    outln!(
        "\n6. 500 more labs; 5% of POSTs are processed but their answer is lost, 5% of searches get 503"
    );
    let faults = [
        Fault {
            status: 503,
            share: 0.05,
            ..Default::default()
        },
        Fault {
            drop_connection: Some(DropMode::AfterProcessing),
            share: 0.05,
            ..Default::default()
        },
    ];
    sb.set_fault(Route::ObservationCreate, faults[1].clone());
    sb.set_fault(Route::ObservationSearch, faults[0].clone());
    let many: Vec<LabResult> = (0..500)
        .map(|i| {
            LabResult::new(
                "777-3",
                100.0 + i as f64,
                "10*9/L",
                format!("2023-{:02}-{:02}T09:00:00Z", 1 + i % 12, 1 + i % 28),
            )
        })
        .collect();
    let posts = sb.requests(Route::ObservationCreate);
    let checks = sb.requests(Route::ObservationSearch);
    let t0 = Instant::now();
    let bulk = client
        .submit_labs(crid, many, &SubmitOptions::default())
        .await?;
    sb.clear_faults();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for obs in sb.observations() {
        for i in obs["identifier"].as_array().into_iter().flatten() {
            if i["system"] == SUBMISSION_ID_SYSTEM {
                *per_id
                    .entry(i["value"].as_str().unwrap_or("").to_owned())
                    .or_default() += 1;
            }
        }
    }
    let duplicates = per_id.values().filter(|&&n| n > 1).count();
    outln!(
        "   {} created, {} already present, {} failed in {:.2} s; duplicates on the server: {duplicates}",
        bulk.created,
        bulk.already_present,
        bulk.failed,
        t0.elapsed().as_secs_f64()
    );
    outln!(
        "   requests: {} POSTs and {} searches for 500 labs (the extra ones re-checked and retried the failures)",
        sb.requests(Route::ObservationCreate) - posts,
        sb.requests(Route::ObservationSearch) - checks
    );

    outln!("\n7. Search: Observation?subject:Patient.identifier={crid} (paged)");
    let all = client.observations(crid).await?;
    let mut by_lab: BTreeMap<String, usize> = BTreeMap::new();
    for obs in &all {
        let code = obs["code"]["coding"][0]["code"].as_str().unwrap_or("");
        let name = lab_for_code(code)
            .map(|d| d.name.clone())
            .unwrap_or_else(|| code.to_owned());
        *by_lab.entry(name).or_default() += 1;
    }
    for (name, n) in &by_lab {
        outln!("   {n:>4}  {name}");
    }

    let s = okta.stats();
    outln!("\nSummary");
    outln!(
        "   {:<32} {:>6}",
        "token requests (server count)",
        sb.token_requests(&c.client_id)
    );
    outln!("   {:<32} {:>6}", "token() cache hits", s.cache_hits);
    outln!(
        "   {:<32} {:>6}",
        "Patients on the server",
        sb.patients().len()
    );
    outln!(
        "   {:<32} {:>6}",
        "Observations on the server",
        sb.observations().len()
    );
    outln!("   {:<32} {:>6}", "Observations found by search", all.len());
    outln!("   {:<32} {:>6}", "duplicate Observations", duplicates);
    Ok(())
}
