//! The Rust side of the Node benchmark (bench/bench.mjs runs it): the same operations through the
//! core directly, against a sandbox in the same process, printed as one JSON line.
//!
//! `cargo run --release -p cibmtr-fhir-node --example rust_baseline -- [--quick]`
use std::time::Instant;

use cibmtr_fhir::auth::PasswordGrant;
use cibmtr_fhir::cibmtr::{CibmtrClient, Demographics, LabResult, SubmitOptions};
use cibmtr_fhir_sandbox::{Sandbox, SandboxConfig};
use futures_util::StreamExt;

struct Sizes {
    token_calls: u32,
    sequential_labs: u32,
    batch_labs: u32,
    concurrency: usize,
}

fn lab(i: u32, day: u32) -> LabResult {
    LabResult::new(
        "718-7",
        10.0 + f64::from(i) / 1000.0,
        "g/dL",
        format!("2024-05-{day:02}T08:30:00-05:00"),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes = if quick {
        Sizes {
            token_calls: 2_000,
            sequential_labs: 20,
            batch_labs: 200,
            concurrency: 8,
        }
    } else {
        Sizes {
            token_calls: 1_000_000,
            sequential_labs: 500,
            batch_labs: 10_000,
            concurrency: 8,
        }
    };
    // Okta's per-user rate limit is not what is measured here.
    let sandbox = Sandbox::start(SandboxConfig {
        okta_rate_per_second: 1_000_000,
        okta_rate_per_minute: 1_000_000,
        ..SandboxConfig::default()
    })
    .await?;
    let o = &sandbox.credentials.okta;
    let auth = PasswordGrant::builder(
        &o.token_url,
        &o.client_id,
        o.client_secret.as_str(),
        &o.username,
        o.password.as_str(),
    )
    .scope(&o.scope)
    .build()?;
    let client = CibmtrClient::builder("12345", &auth)
        .base_url(&sandbox.urls.cibmtr_base)
        .build()?;

    // A cached token(), awaited one after another.
    auth.token().await?;
    let started = Instant::now();
    for _ in 0..sizes.token_calls {
        std::hint::black_box(auth.token().await?);
    }
    let token_ns = started.elapsed().as_nanos() as f64 / f64::from(sizes.token_calls);

    // submit_lab one after another (each: a search for the submission id, then a POST).
    let crid = client
        .register_crid(&Demographics::new("Bench", "Rust", "1970-01-31", "F"))
        .await?;
    client.ensure_patient(crid).await?;
    let started = Instant::now();
    for i in 0..sizes.sequential_labs {
        client.submit_lab(crid, &lab(i, 1)).await?;
    }
    let submit_lab_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(sizes.sequential_labs);

    // submit_lab from `concurrency` tasks at once.
    let started = Instant::now();
    let results: Vec<_> = futures_util::stream::iter(0..sizes.sequential_labs)
        .map(|i| {
            let client = client.clone();
            async move { client.submit_lab(crid, &lab(i, 2)).await }
        })
        .buffer_unordered(sizes.concurrency)
        .collect()
        .await;
    for r in results {
        r?;
    }
    let submit_lab_concurrent_us =
        started.elapsed().as_secs_f64() * 1e6 / f64::from(sizes.sequential_labs);

    // submit_labs of a whole batch for a fresh recipient.
    let crid = client
        .register_crid(&Demographics::new("Batch", "Rust", "1971-02-28", "M"))
        .await?;
    client.ensure_patient(crid).await?;
    let labs: Vec<_> = (0..sizes.batch_labs).map(|i| lab(i, 3)).collect();
    let options = SubmitOptions {
        concurrency: sizes.concurrency,
        ..SubmitOptions::default()
    };
    let started = Instant::now();
    let report = client.submit_labs(crid, labs, &options).await?;
    let batch_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(report.created, sizes.batch_labs as usize);

    println!(
        "{}",
        serde_json::json!({
            "token_calls": sizes.token_calls,
            "token_ns": token_ns,
            "sequential_labs": sizes.sequential_labs,
            "submit_lab_us": submit_lab_us,
            "submit_lab_concurrent_us": submit_lab_concurrent_us,
            "batch_labs": sizes.batch_labs,
            "concurrency": sizes.concurrency,
            "batch_ms": batch_ms,
        })
    );
    Ok(())
}
