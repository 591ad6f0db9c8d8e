//! Token-cache benchmarks.
//!
//! 1. Criterion group `token_cache`:
//!    * `warm_token` — `PasswordGrant::token()` when the cached token is fresh (no network);
//!    * `baseline_arc_clone_under_mutex` — what a naive cache does: lock a
//!      `std::sync::Mutex<Option<Arc<String>>>` and clone the `Arc`.
//! 2. A load run: 100,000 `token()` calls from 64 concurrent tasks over ~8 s against a sandbox
//!    issuing 2-second Okta tokens, counting the token requests the *sandbox* received. Printed
//!    as a markdown table and written to `target/bench-token-requests.json`.
//!
//! `CIBMTR_BENCH_QUICK=1` (or criterion's `--test`) shrinks the load run to 25,000 calls over ~2 s;
//! `--list` skips it.
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cibmtr_fhir::auth::PasswordGrant;
use cibmtr_fhir_sandbox::{Sandbox, SandboxConfig};
use criterion::Criterion;
use tokio::runtime::{Builder, Runtime};

const TASKS: u64 = 64;
const TOKEN_TTL: Duration = Duration::from_secs(2);

fn okta(sb: &Sandbox) -> PasswordGrant {
    let c = &sb.credentials.okta;
    PasswordGrant::builder(
        &c.token_url,
        &c.client_id,
        c.client_secret.as_str(),
        &c.username,
        c.password.as_str(),
    )
    .scope(&c.scope)
    .build()
    .expect("valid config")
}

fn multi_thread(workers: usize) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn start_sandbox(rt: &Runtime, ttl: Duration) -> Sandbox {
    rt.block_on(Sandbox::start(SandboxConfig {
        okta_token_ttl: ttl,
        okta_rate_per_second: 1000,
        ..Default::default()
    }))
    .expect("sandbox starts")
}

fn bench_token_cache(c: &mut Criterion, server_rt: &Runtime) {
    // The sandbox (and the HTTP connection that fetched the first token) live on `server_rt`,
    // which keeps running for the whole bench; the measured warm path never touches the network.
    let sb = start_sandbox(server_rt, Duration::from_secs(1800));
    let auth = okta(&sb);
    server_rt.block_on(auth.token()).expect("first token");

    let bench_rt = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("token_cache");
    group.bench_function("warm_token", |b| {
        b.to_async(&bench_rt)
            .iter(|| async { black_box(auth.token().await.expect("warm token")) })
    });
    let naive: Mutex<Option<Arc<String>>> = Mutex::new(Some(Arc::new("x".repeat(900))));
    group.bench_function("baseline_arc_clone_under_mutex", |b| {
        b.iter(|| black_box(black_box(&naive).lock().unwrap().clone()))
    });
    group.finish();

    let requests = sb.token_requests(&sb.credentials.okta.client_id);
    assert_eq!(
        requests, 1,
        "the warm benchmark must not have asked the server again"
    );
}

struct LoadResult {
    calls: u64,
    elapsed: Duration,
    token_requests: u64,
}

fn load_run(server_rt: &Runtime, calls: u64, span: Duration) -> LoadResult {
    let sb = start_sandbox(server_rt, TOKEN_TTL);
    let auth = okta(&sb);
    let rt = multi_thread(2);
    let done = Arc::new(AtomicU64::new(0));
    let elapsed = rt.block_on(async {
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let n = calls / TASKS + u64::from(i < calls % TASKS);
                let (auth, done) = (auth.clone(), done.clone());
                // Calls are paced on a per-task schedule so the whole run spans `span`.
                let step = span.div_f64(n.max(1) as f64);
                tokio::spawn(async move {
                    for k in 0..n {
                        tokio::time::sleep_until(start + step.mul_f64(k as f64)).await;
                        let t = auth.token().await.expect("token");
                        black_box(t.secret());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        start.elapsed()
    });
    let token_requests = sb.token_requests(&sb.credentials.okta.client_id);
    drop(rt);
    LoadResult {
        calls: done.load(Ordering::Relaxed),
        elapsed,
        token_requests,
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let core = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            core.parent()
                .map_or_else(|| core.join("target"), |ws| ws.join("target"))
        })
}

/// Criterion's median estimate (ns) for `token_cache/<name>`, if it saved one this run.
fn criterion_median_ns(name: &str) -> Option<f64> {
    let path = target_dir()
        .join("criterion")
        .join("token_cache")
        .join(name)
        .join("new")
        .join("estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn report(r: &LoadResult, quick: bool, medians: (Option<f64>, Option<f64>)) {
    let secs = r.elapsed.as_secs_f64();
    let lifetimes = secs / TOKEN_TTL.as_secs_f64();
    let per_lifetime = r.token_requests as f64 / lifetimes;
    let naive_requests = r.calls;
    let reduction = naive_requests as f64 / r.token_requests.max(1) as f64;

    println!();
    println!(
        "token_requests/load{}",
        if quick { " (quick mode)" } else { "" }
    );
    println!("  calls:                    {}", r.calls);
    println!("  concurrent tasks:         {TASKS}");
    println!("  elapsed:                  {secs:.3} s");
    println!("  token lifetime:           {} s", TOKEN_TTL.as_secs());
    println!("  token lifetimes elapsed:  {lifetimes:.2}");
    println!("  token requests (sandbox): {}", r.token_requests);
    println!("  requests per lifetime:    {per_lifetime:.2}");
    println!("  baseline (1 per call):    {naive_requests}");
    println!("  reduction vs baseline:    {reduction:.0}x");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| `token()` calls (64 tasks, 2 workers) | {} |", r.calls);
    println!("| elapsed | {secs:.2} s |");
    println!(
        "| token lifetimes elapsed ({} s tokens) | {lifetimes:.2} |",
        TOKEN_TTL.as_secs()
    );
    println!("| token requests (sandbox count) | {} |", r.token_requests);
    println!("| token requests per lifetime | {per_lifetime:.2} |");
    println!("| baseline: a token request per call | {naive_requests} |");
    println!("| reduction vs baseline | {reduction:.0}x |");
    let (warm, base) = medians;
    if let (Some(w), Some(b)) = (warm, base) {
        println!("| warm `token()` median | {w:.1} ns |");
        println!("| baseline Arc clone under Mutex median | {b:.1} ns |");
        println!("| warm / baseline | {:.2}x |", w / b);
    }

    let json = serde_json::json!({
        "quick": quick,
        "calls": r.calls,
        "tasks": TASKS,
        "worker_threads": 2,
        "elapsed_seconds": secs,
        "token_ttl_seconds": TOKEN_TTL.as_secs(),
        "token_lifetimes_elapsed": lifetimes,
        "token_requests": r.token_requests,
        "token_requests_per_lifetime": per_lifetime,
        "baseline_token_requests_one_per_call": naive_requests,
        "reduction_vs_baseline": reduction,
        "warm_token_median_ns": warm,
        "baseline_arc_clone_under_mutex_median_ns": base,
        "warm_over_baseline": warm.zip(base).map(|(w, b)| w / b),
    });
    let path = target_dir().join("bench-token-requests.json");
    let written = std::fs::create_dir_all(target_dir()).and_then(|_| {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&json).expect("json") + "\n",
        )
    });
    match written {
        Ok(()) => println!("\nwritten to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let quick = std::env::var("CIBMTR_BENCH_QUICK").is_ok_and(|v| v == "1") || has("--test");

    // Kept alive for the whole process: sandboxes and the shared HTTP client's connections run on it.
    let server_rt = multi_thread(2);

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .configure_from_args();
    bench_token_cache(&mut c, &server_rt);
    c.final_summary();

    if has("--list") {
        return;
    }
    let (calls, span) = if quick {
        (25_000, Duration::from_secs(2))
    } else {
        (100_000, Duration::from_secs(8))
    };
    let result = load_run(&server_rt, calls, span);
    let medians = if quick {
        (None, None)
    } else {
        (
            criterion_median_ns("warm_token"),
            criterion_median_ns("baseline_arc_clone_under_mutex"),
        )
    };
    report(&result, quick, medians);
}
