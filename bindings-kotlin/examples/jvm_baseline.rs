//! The Rust side of the JVM benchmark (`bindings-kotlin/bench/run.sh`): the operations of
//! `bench/Bench.kt`, through the core directly, on one multi-thread tokio runtime that also
//! serves the sandbox (as the binding's runtime does for the JVM). Prints one JSON object per
//! measurement: wall time and the process's CPU time, per operation.
//!
//! Besides the core's cached `token()`, it measures the binding's `token_blocking()` called from a
//! thread outside any runtime, as the JVM calls it: the binding's own cost without the JVM.
//!
//! `cargo run --release -p cibmtr-fhir-kotlin --example jvm_baseline` (`CIBMTR_BENCH_QUICK=1`
//! for a small run; `CIBMTR_BENCH_TOKEN_CALLS`, `CIBMTR_BENCH_LABS`, `CIBMTR_BENCH_TASK_LABS`
//! override the counts).
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use cibmtr_fhir::auth::PasswordGrant;
use cibmtr_fhir::cibmtr::{CibmtrClient, Demographics, LabResult, SubmitOptions};
use cibmtr_fhir_sandbox::{Sandbox, SandboxConfig};

const EFFECTIVE: &str = "2024-05-01T08:30:00-05:00";

fn labs(n: usize, salt: usize) -> Vec<LabResult> {
    (0..n)
        .map(|i| {
            LabResult::new(
                "718-7",
                5.0 + (salt * n + i) as f64 / 1e5,
                "g/dL",
                EFFECTIVE,
            )
        })
        .collect()
}

/// CPU time of this process in nanoseconds (user + system, from `/proc/self/stat`, 100 Hz).
fn cpu_ns() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks * 1e7
}

/// Runs `rounds` rounds of `calls` calls (`round(calls)` makes them) and prints the median wall time per call over the
/// rounds, the fastest and slowest round, and the process's CPU time per call (as Bench.kt does).
fn rounds(name: &str, rounds: usize, calls: usize, mut round: impl FnMut(usize)) {
    let mut wall = Vec::with_capacity(rounds);
    let cpu0 = cpu_ns();
    for _ in 0..rounds {
        let start = Instant::now();
        round(calls);
        wall.push(start.elapsed().as_nanos() as f64 / calls as f64);
    }
    let cpu = (cpu_ns() - cpu0) / (rounds * calls) as f64;
    wall.sort_by(f64::total_cmp);
    println!(
        "{{\"side\":\"rust\",\"op\":\"{name}\",\"ops\":{},\"unit\":\"ns\",\"wall\":{:.0},\"wall_min\":{:.0},\"wall_max\":{:.0},\"cpu\":{cpu:.0}}}",
        rounds * calls,
        wall[rounds / 2],
        wall[0],
        wall[rounds - 1],
    );
}

async fn measure<F: Future<Output = ()>>(name: &str, ops: usize, unit: &str, f: F) {
    let scale = match unit {
        "ns" => 1.0,
        "us" => 1e3,
        _ => 1e9,
    };
    let per = if unit == "s" { 1.0 } else { ops as f64 };
    let (cpu0, wall0) = (cpu_ns(), Instant::now());
    f.await;
    let wall = wall0.elapsed().as_nanos() as f64 / scale / per;
    let cpu = (cpu_ns() - cpu0) / scale / per;
    println!(
        "{{\"side\":\"rust\",\"op\":\"{name}\",\"ops\":{ops},\"unit\":\"{unit}\",\"wall\":{wall:.2},\"cpu\":{cpu:.2}}}"
    );
}

/// A fresh sandbox and a client of its CIBMTR API, so no run sees a store grown by another.
async fn fresh() -> (Sandbox, PasswordGrant, CibmtrClient) {
    let sb = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    let o = &sb.credentials.okta;
    let auth = PasswordGrant::builder(
        &o.token_url,
        &o.client_id,
        o.client_secret.as_str(),
        &o.username,
        o.password.as_str(),
    )
    .scope(&o.scope)
    .build()
    .expect("auth");
    let client = CibmtrClient::builder("12345", &auth)
        .base_url(&sb.urls.cibmtr_base)
        .build()
        .expect("client");
    (sb, auth, client)
}

/// The sandbox's Okta user through the binding (what the JVM gets).
fn binding_grant(sb: &Sandbox) -> Arc<cibmtr_fhir_uniffi::PasswordGrant> {
    let o = &sb.credentials.okta;
    cibmtr_fhir_uniffi::PasswordGrant::new(
        o.token_url.clone(),
        o.client_id.clone(),
        o.client_secret.as_str().to_owned(),
        o.username.clone(),
        o.password.as_str().to_owned(),
        Some(o.scope.clone()),
        None,
        None,
    )
    .expect("binding")
}

fn main() {
    let quick = std::env::var_os("CIBMTR_BENCH_QUICK").is_some();
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let token_calls = env(
        "CIBMTR_BENCH_TOKEN_CALLS",
        if quick { 10_000 } else { 1_050_000 },
    );
    let token_rounds = if quick { 5 } else { 21 };
    let single_labs = if quick { 100 } else { 2_000 };
    let bulk = env("CIBMTR_BENCH_LABS", if quick { 500 } else { 10_000 });
    let bulk_runs = env("CIBMTR_BENCH_RUNS", if quick { 1 } else { 5 }).max(1);
    let per_lab = env("CIBMTR_BENCH_TASK_LABS", if quick { 500 } else { 2_000 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (sb, auth, client) = rt.block_on(fresh());
    let per_round = token_calls / token_rounds;
    // The core: each round inside the runtime (one block_on per round, not per call).
    let core_token = |calls| {
        rt.block_on(async {
            for _ in 0..calls {
                std::hint::black_box(auth.token().await.expect("token"));
            }
        })
    };
    rounds("warmup_token", 1, per_round, core_token);
    rounds("token", token_rounds, per_round, core_token);
    let binding = binding_grant(&sb);
    let binding_token = |calls| {
        for _ in 0..calls {
            std::hint::black_box(binding.token_blocking().expect("token"));
        }
    };
    rounds("warmup_token_binding_blocking", 1, per_round, binding_token);
    rounds(
        "token_binding_blocking",
        token_rounds,
        per_round,
        binding_token,
    );

    drop((sb, auth, client));

    // One lab at a time, on a fresh sandbox holding 300 warm-up labs (as Bench.kt): the core,
    // then the binding's submit_lab_result_blocking from this thread, as the JVM calls it.
    rt.block_on(async {
        let (_sb, _auth, client) = fresh().await;
        let jane = Demographics::new("Jane", "Doe", "1970-01-31", "F");
        let crid = client.register_crid(&jane).await.expect("crid");
        client.ensure_patient(crid).await.expect("patient");
        for lab in labs(300, 9) {
            client.submit_lab(crid, &lab).await.expect("lab");
        }
        let one = labs(single_labs, 0);
        measure("submit_lab", single_labs, "us", async {
            for lab in &one {
                client.submit_lab(crid, lab).await.expect("lab");
            }
        })
        .await;
    });
    {
        let (sb, _auth, _client) = rt.block_on(fresh());
        let auth: Arc<dyn cibmtr_fhir_uniffi::Auth> = binding_grant(&sb);
        let client = cibmtr_fhir_uniffi::CibmtrClient::new(
            "12345".into(),
            auth,
            "test".into(),
            Some(sb.urls.cibmtr_base.clone()),
            None,
            "cibmtr".into(),
            "STU3".into(),
            false,
            false,
            None,
        )
        .expect("binding client");
        let crid = client
            .register_crid_blocking(
                "Jane".into(),
                "Doe".into(),
                "1970-01-31".into(),
                "F".into(),
                None,
                vec![],
                None,
                None,
                None,
                None,
                None,
                None,
                None,
            )
            .expect("crid");
        client.ensure_patient_blocking(crid).expect("patient");
        let lab = |l: LabResult| cibmtr_fhir_uniffi::LabResult {
            loinc: l.loinc,
            value: l.value,
            unit: l.unit,
            effective: l.effective,
            comparator: None,
            reference_low: None,
            reference_high: None,
            status: None,
            display: None,
        };
        for l in labs(300, 9) {
            client
                .submit_lab_result_blocking(crid, lab(l))
                .expect("lab");
        }
        let one: Vec<_> = labs(single_labs, 0).into_iter().map(lab).collect();
        let (cpu0, wall0) = (cpu_ns(), Instant::now());
        for l in one {
            client.submit_lab_result_blocking(crid, l).expect("lab");
        }
        let per = single_labs as f64 * 1e3;
        println!(
            "{{\"side\":\"rust\",\"op\":\"submit_lab_binding_blocking\",\"ops\":{single_labs},\"unit\":\"us\",\"wall\":{:.2},\"cpu\":{:.2}}}",
            wall0.elapsed().as_nanos() as f64 / per,
            (cpu_ns() - cpu0) / per,
        );
    }

    rt.block_on(async {
        // The bulk path once first, as Bench.kt warms its JIT on it.
        {
            let (_sb, _auth, client) = fresh().await;
            let warm = Demographics::new("Warm", "Up", "1970-01-31", "F");
            let crid = client.register_crid(&warm).await.expect("crid");
            let options = SubmitOptions::default();
            for salt in 10..13 {
                let report = client
                    .submit_labs(crid, labs(bulk / 5, salt), &options)
                    .await
                    .expect("report");
                assert_eq!(report.created, bulk / 5);
            }
        }
        for concurrency in [8usize, 32] {
            let options = SubmitOptions {
                concurrency,
                ..SubmitOptions::default()
            };
            // Each run on a fresh sandbox; the median run is the figure.
            let (mut wall, mut cpu) = (Vec::new(), Vec::new());
            for _ in 0..bulk_runs {
                let (_sb, _auth, client) = fresh().await;
                let batch = Demographics::new("Batch", "Rust", "1970-01-31", "F");
                let crid = client.register_crid(&batch).await.expect("crid");
                let labs_batch = labs(bulk, 1);
                let (cpu0, wall0) = (cpu_ns(), Instant::now());
                let report = client
                    .submit_labs(crid, labs_batch, &options)
                    .await
                    .expect("report");
                wall.push(wall0.elapsed().as_secs_f64());
                cpu.push((cpu_ns() - cpu0) / 1e9);
                let failure = report.items.iter().find_map(|i| i.error.as_ref());
                assert_eq!(report.created, bulk, "first failure: {failure:?}");
            }
            wall.sort_by(f64::total_cmp);
            cpu.sort_by(f64::total_cmp);
            println!(
                "{{\"side\":\"rust\",\"op\":\"submit_labs_c{concurrency}\",\"ops\":{bulk},\"unit\":\"s\",\"wall\":{:.3},\"wall_min\":{:.3},\"wall_max\":{:.3},\"cpu\":{:.3}}}",
                wall[bulk_runs / 2],
                wall[0],
                wall[bulk_runs - 1],
                cpu[bulk_runs / 2],
            );

            let (sb, _auth, client) = fresh().await;
            let tasks = Demographics::new("Tasks", "Rust", "1970-01-31", "F");
            let crid = client.register_crid(&tasks).await.expect("crid");
            client.ensure_patient(crid).await.expect("patient");
            let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
            let each = labs(per_lab, 2);
            measure(
                &format!("submit_lab_tasks_c{concurrency}"),
                per_lab,
                "s",
                async {
                    let mut set = tokio::task::JoinSet::new();
                    for lab in each {
                        let (client, permits) = (client.clone(), permits.clone());
                        set.spawn(async move {
                            let _permit = permits.acquire().await.expect("permit");
                            client.submit_lab(crid, &lab).await.expect("lab")
                        });
                    }
                    while let Some(r) = set.join_next().await {
                        r.expect("task");
                    }
                },
            )
            .await;
            assert_eq!(sb.token_requests(&sb.credentials.okta.client_id), 1);
        }
    });
}
