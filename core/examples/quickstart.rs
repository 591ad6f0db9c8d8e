//! The README's Rust quick start, run against the local sandbox:
//! `cargo run -p cibmtr-fhir --example quickstart`.
//!
//! Against CIBMTR's test environment, build the `PasswordGrant` from your credentials with
//! `Environment::Test.token_url()` and leave out `base_url` (the test API is the default).
use cibmtr_fhir::auth::PasswordGrant;
use cibmtr_fhir::cibmtr::{CibmtrClient, Demographics, LabResult, SubmitOptions};
use cibmtr_fhir_sandbox::{Sandbox, SandboxConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sandbox = Sandbox::start(SandboxConfig::default()).await?;
    let okta = &sandbox.credentials.okta;

    // 1. One token, cached and refreshed ahead of expiry, for every call below.
    let auth = PasswordGrant::builder(
        &okta.token_url,
        &okta.client_id,
        okta.client_secret.as_str(),
        &okta.username,
        okta.password.as_str(),
    )
    .scope(&okta.scope)
    .build()?;

    // 2. A client for one transplant centre (CCN).
    let client = CibmtrClient::builder("12345", &auth)
        .base_url(&sandbox.urls.cibmtr_base)
        .build()?;

    // 3. CRID, then the de-identified Patient (found before created: never twice).
    let crid = client
        .register_crid(&Demographics::new("Jane", "Example", "1968-04-12", "F"))
        .await?;
    let patient_id = client.ensure_patient(crid).await?;
    println!("CRID {crid}, Patient/{patient_id}");

    // 4. Labs for form 2402: validated before sending; re-running sends nothing twice.
    let labs = vec![
        LabResult::new("718-7", 10.9, "g/dL", "2024-03-01T07:45:00-06:00")
            .with_reference_range(12.0, 16.0),
        LabResult::new("777-3", 142.0, "10*9/L", "2024-03-01T07:45:00-06:00"),
    ];
    for run in ["first", "second"] {
        let report = client
            .submit_labs(crid, labs.clone(), &SubmitOptions::default())
            .await?;
        println!(
            "{run} run: {} created, {} already present, {} failed",
            report.created, report.already_present, report.failed
        );
    }

    // 5. What CIBMTR holds for the recipient.
    let observations = client.observations(crid).await?;
    println!("{} Observations on the server", observations.len());
    assert_eq!(observations.len(), 2);
    Ok(())
}
