//! Fleet scale: the shared Redis token store and the submission journal, each against a baseline
//! measured in the same run.
//!
//! 1. **Token requests per token lifetime** with 1, 4 and 8 processes (50 tasks each asking for a
//!    token every 10–30 ms): every process with its own cache (the baseline: the token endpoint
//!    sees one request per process per lifetime) vs all sharing one Redis store (one per
//!    lifetime, whatever the number of processes). Counted by the sandbox.
//! 2. **Submission throughput with the journal on vs off**, concurrency 8, a fresh sandbox per
//!    run, in pairs of runs alternating their order; the cost is the median of the pairs'
//!    ratios (neighbours share the machine's load, which on a shared machine moves more than the
//!    journal costs). Two servers: the sandbox on loopback answering at once (2,000 labs; the
//!    client, the journal and the server share two cores: the CPU-bound worst case) and the
//!    sandbox taking 20 ms per POST (800 labs; a remote API). Target: under 10%.
//!
//! Needs `redis-server` (Debian package; `scripts/test-fleet.sh` installs it). Results: a markdown
//! table on stdout and `target/bench-fleet.json`; `-- tokens` or `-- journal` runs one part only.
//! `CIBMTR_BENCH_QUICK=1` or `--test`: 1 and 2
//! processes over one lifetime, 300 and 100 labs, one pair of each — every path, every check.
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cibmtr_fhir::auth::{PasswordGrant, StoreKey, TokenStore};
use cibmtr_fhir::cibmtr::{CibmtrClient, Demographics, LabResult, SubmitOptions};
use cibmtr_fhir::journal::{BatchInfo, Journal};
use cibmtr_fhir_sandbox::{Fault, Route, Sandbox, SandboxConfig};
use serde_json::{Value, json};

#[path = "../tests/support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

const CHILD_ENV: &str = "CIBMTR_BENCH_FLEET_CHILD";
const TARGET_OVERHEAD: f64 = 0.10;

struct Settings {
    quick: bool,
    processes: Vec<usize>,
    lifetime: Duration,
    lifetimes: f64,
    labs: usize,
    /// Labs per run against the sandbox with a per-POST delay.
    labs_remote: usize,
    runs: usize,
}

fn main() {
    if std::env::var(CHILD_ENV).is_ok() {
        child();
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; a filter or other flags are ignored.
    let quick = std::env::var("CIBMTR_BENCH_QUICK").is_ok_and(|v| v == "1")
        || args.iter().any(|a| a == "--test");
    let s = if quick {
        Settings {
            quick,
            processes: vec![1, 2],
            lifetime: Duration::from_secs(2),
            lifetimes: 1.5,
            labs: 300,
            labs_remote: 100,
            runs: 1,
        }
    } else {
        Settings {
            quick,
            processes: vec![1, 4, 8],
            lifetime: Duration::from_secs(3),
            lifetimes: 3.0,
            labs: 2_000,
            labs_remote: 800,
            runs: 5,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `cargo bench --bench fleet -- journal` (or `-- tokens`) runs one part only.
    let only = args.iter().skip(1).find(|a| !a.starts_with('-'));
    let part = |name: &str| only.is_none_or(|o| name.starts_with(o.as_str()));
    let tokens = if part("tokens") {
        rt.block_on(token_requests(&s))
    } else {
        Value::Null
    };
    let journal = if part("journal") {
        rt.block_on(journal_overhead(&s))
    } else {
        Value::Null
    };
    let out = json!({"quick": s.quick, "token_requests": tokens, "journal": journal});
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("bench-fleet.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&out).unwrap()).unwrap();
    println!("\n(JSON in {})", path.display());
}

// ---------------------------------------------------------------------------------------------
// 1. Token requests per lifetime.

async fn token_requests(s: &Settings) -> Value {
    let redis = RedisServer::start();
    let key = StoreKey::generate();
    let mut rows = Vec::new();
    println!(
        "## Token requests per token lifetime ({} s tokens, 50 tasks per process, {:.1} lifetimes)\n",
        s.lifetime.as_secs(),
        s.lifetimes
    );
    println!("| processes | own cache (baseline) | shared Redis store | ratio (Redis / own) |");
    println!("|---:|---:|---:|---:|");
    for &n in &s.processes {
        let own = fleet_run(s, n, "memory", &key).await;
        let shared = fleet_run(s, n, &redis.url(), &key).await;
        let ratio = shared / own;
        println!("| {n} | {own:.2} | {shared:.2} | {ratio:.2} |");
        // The point of the store: one per lifetime however many processes.
        assert!(
            shared <= 1.0 + 1e-9,
            "{n} processes sharing Redis made {shared:.2} token requests per lifetime"
        );
        assert!(
            own >= n as f64 * 0.99,
            "the baseline made fewer requests than processes"
        );
        rows.push(json!({"processes": n, "own_cache_per_lifetime": own,
                         "redis_per_lifetime": shared, "ratio": ratio}));
    }
    Value::Array(rows)
}

/// Token requests per lifetime for `n` processes using `store` ("memory" or a Redis URL).
async fn fleet_run(s: &Settings, n: usize, store: &str, key: &StoreKey) -> f64 {
    let sb = Sandbox::start(SandboxConfig {
        okta_token_ttl: s.lifetime,
        okta_rate_per_second: 1_000_000,
        okta_rate_per_minute: 1_000_000,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = &sb.credentials.okta;
    let run = s.lifetime.mul_f64(s.lifetimes);
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(&exe)
                .env(CHILD_ENV, "1")
                .env("CIBMTR_FHIR_STORE_KEY", key.to_base64().expose())
                .env("FLEET_STORE", store)
                .env("FLEET_RUN_MS", run.as_millis().to_string())
                .env("FLEET_TOKEN_URL", &c.token_url)
                .env("FLEET_CLIENT_ID", &c.client_id)
                .env("FLEET_CLIENT_SECRET", &c.client_secret)
                .env("FLEET_USERNAME", &c.username)
                .env("FLEET_PASSWORD", &c.password)
                .env("FLEET_SCOPE", &c.scope)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        for mut c in children {
            assert!(c.wait().unwrap().success(), "a bench process failed");
        }
    })
    .await
    .unwrap();
    // A token is refreshed 5/6 into its lifetime: requests per lifetime are counted per refresh
    // period, the first token included.
    let periods = (run.as_secs_f64() / (s.lifetime.as_secs_f64() * 5.0 / 6.0)).floor() + 1.0;
    sb.token_requests(&c.client_id) as f64 / periods
}

fn child() {
    let env = |k: &str| std::env::var(k).unwrap();
    let store = match env("FLEET_STORE").as_str() {
        "memory" => TokenStore::Memory,
        location => TokenStore::parse(location).unwrap(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let auth = PasswordGrant::builder(
            env("FLEET_TOKEN_URL"),
            env("FLEET_CLIENT_ID"),
            env("FLEET_CLIENT_SECRET").as_str(),
            env("FLEET_USERNAME"),
            env("FLEET_PASSWORD").as_str(),
        )
        .scope(env("FLEET_SCOPE"))
        .token_store(store)
        .build()
        .unwrap();
        let deadline = Instant::now() + Duration::from_millis(env("FLEET_RUN_MS").parse().unwrap());
        let tasks: Vec<_> = (0..50u64)
            .map(|i| {
                let auth = auth.clone();
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        auth.token().await.expect("a token");
                        tokio::time::sleep(Duration::from_millis(10 + (i * 7) % 20)).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

// ---------------------------------------------------------------------------------------------
// 2. The journal's cost.

async fn journal_overhead(s: &Settings) -> Value {
    println!(
        "\n## Submission throughput, journal on vs off (concurrency 8, {} pairs of runs)\n",
        s.runs
    );
    println!(
        "| server | labs | off (baseline) labs/s | on labs/s | ratio on/off (median of pairs) | journal cost |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let scenarios = [
        (
            "sandbox on loopback, no delay (CPU-bound worst case)",
            s.labs,
            Duration::ZERO,
        ),
        (
            "sandbox + 20 ms per POST (a remote API)",
            s.labs_remote,
            Duration::from_millis(20),
        ),
    ];
    let mut out = Vec::new();
    for (name, labs, delay) in scenarios {
        out.push(journal_scenario(s, name, labs, delay).await);
    }
    Value::Array(out)
}

async fn journal_scenario(s: &Settings, name: &str, labs: usize, delay: Duration) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path().join("bench.sqlite3")).unwrap();
    let mut off = Vec::new();
    let mut on = Vec::new();
    // A warm-up pair, not counted; then pairs in alternating order (off-on, on-off, ...), so that
    // neither arm always runs second.
    for pair in 0..=s.runs {
        let arms = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_journal in arms {
            let rate = submission_rate(labs, delay, with_journal.then_some(&journal)).await;
            if pair > 0 {
                if with_journal {
                    on.push(rate)
                } else {
                    off.push(rate)
                }
            }
        }
    }
    let mut ratios: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b).collect();
    let ratio = median(&mut ratios);
    let (m_off, m_on) = (median(&mut off.clone()), median(&mut on.clone()));
    let overhead = 1.0 - ratio;
    let verdict = if overhead < TARGET_OVERHEAD {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "| {name} | {labs} | {m_off:.0} | {m_on:.0} | {ratio:.2} | {:.1}% (target < {:.0}%: {verdict}) |",
        overhead * 100.0,
        TARGET_OVERHEAD * 100.0
    );
    json!({"scenario": name, "labs": labs, "post_delay_ms": delay.as_millis() as u64,
           "runs": s.runs, "off_labs_per_s": off, "on_labs_per_s": on,
           "median_off": m_off, "median_on": m_on, "paired_ratios": ratios,
           "median_paired_ratio": ratio, "overhead": overhead,
           "target_overhead": TARGET_OVERHEAD, "target_met": overhead < TARGET_OVERHEAD})
}

/// Labs per second of one `submit_labs` of `labs` labs at concurrency 8, to a fresh sandbox (so
/// no run sees another's data), recorded in `journal` when given.
async fn submission_rate(labs: usize, delay: Duration, journal: Option<&Journal>) -> f64 {
    let sb = Sandbox::start(SandboxConfig {
        okta_rate_per_second: 1_000_000,
        ..Default::default()
    })
    .await
    .unwrap();
    if !delay.is_zero() {
        sb.set_fault(
            Route::ObservationCreate,
            Fault {
                delay,
                ..Default::default()
            },
        );
    }
    let c = &sb.credentials.okta;
    let auth = PasswordGrant::builder(
        &c.token_url,
        &c.client_id,
        c.client_secret.as_str(),
        &c.username,
        c.password.as_str(),
    )
    .scope(&c.scope)
    .build()
    .unwrap();
    let client = CibmtrClient::builder("12345", &auth)
        .base_url(&sb.urls.cibmtr_base)
        .build()
        .unwrap();
    let crid = client
        .register_crid(&Demographics::new("Bench", "Journal", "1970-01-31", "F"))
        .await
        .unwrap();
    client.ensure_patient(crid).await.unwrap();
    let items: Vec<LabResult> = (0..labs)
        .map(|i| {
            LabResult::new(
                "718-7",
                8.0 + i as f64 / 1000.0,
                "g/dL",
                "2024-05-01T08:30:00Z",
            )
        })
        .collect();
    let options = SubmitOptions {
        concurrency: 8,
        journal: journal.map(|j| j.start_batch(&BatchInfo::default()).unwrap().into()),
        ..Default::default()
    };
    let started = Instant::now();
    let report = client.submit_labs(crid, items, &options).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.created, labs, "every lab created once");
    if let Some(j) = journal {
        let b = j.batch(report.batch_id.as_deref().unwrap()).unwrap();
        assert_eq!(b.created as usize, labs, "the journal recorded every lab");
    }
    assert_eq!(sb.observations().len(), labs);
    labs as f64 / secs
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
