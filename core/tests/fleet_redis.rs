//! The shared token store on a real `redis-server` (loopback, free port, no persistence), with
//! real processes: this test binary re-runs itself as the fleet's members (`fleet_child`). Every
//! count is the sandbox's own count of token requests.
//!
//! Not part of plain `cargo test` (it needs `redis-server`): `scripts/test-fleet.sh` installs the
//! Debian package if missing and runs `cargo test -p cibmtr-fhir --test fleet_redis`.
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cibmtr_fhir::auth::{PasswordGrant, RedisStore, StoreKey, TokenStore};
use cibmtr_fhir::cibmtr::{CibmtrClient, LabResult};
use cibmtr_fhir_sandbox::{Fault, Route, Sandbox, SandboxConfig};
use serde_json::{Value, json};

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

const CHILD_ENV: &str = "CIBMTR_FLEET_CHILD";

async fn sandbox(ttl: Duration) -> Sandbox {
    Sandbox::start(SandboxConfig {
        okta_token_ttl: ttl,
        okta_rate_per_second: 1000,
        okta_rate_per_minute: 100_000,
        ..Default::default()
    })
    .await
    .expect("sandbox starts")
}

fn grant(sb: &Sandbox, store: TokenStore) -> PasswordGrant {
    let c = &sb.credentials.okta;
    PasswordGrant::builder(
        &c.token_url,
        &c.client_id,
        c.client_secret.as_str(),
        &c.username,
        c.password.as_str(),
    )
    .scope(&c.scope)
    .token_store(store)
    .build()
    .expect("valid config")
}

fn fingerprint(token: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(token.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Every key and value in the server.
fn dump(server: &RedisServer) -> Vec<(String, Vec<u8>)> {
    let mut c = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    keys.into_iter()
        .map(|k| {
            let v: Vec<u8> = redis::cmd("GET").arg(&k).query(&mut c).unwrap_or_default();
            (k, v)
        })
        .collect()
}

fn redis_get(server: &RedisServer, key: &str) -> Option<String> {
    let mut c = redis::Client::open(server.url())
        .ok()?
        .get_connection()
        .ok()?;
    redis::cmd("GET").arg(key).query(&mut c).ok()?
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// The fleet's members.

/// A member of the fleet, run by the tests below as a child process of this binary.
#[test]
fn fleet_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    // What a deployment sees in its logs (CIBMTR_FHIR_LOG, when the test sets it).
    cibmtr_fhir::logging::init_from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(async {
        match mode.as_str() {
            "swarm" => swarm().await,
            "once" => once().await,
            other => panic!("unknown child mode {other}"),
        }
    });
    println!("\nFLEET-RESULT {out}");
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set for the child"))
}

fn child_grant() -> PasswordGrant {
    PasswordGrant::builder(
        env("FLEET_TOKEN_URL"),
        env("FLEET_CLIENT_ID"),
        env("FLEET_CLIENT_SECRET").as_str(),
        env("FLEET_USERNAME"),
        env("FLEET_PASSWORD").as_str(),
    )
    .scope(env("FLEET_SCOPE"))
    // The location string every binding and the CLI pass through.
    .token_store(TokenStore::parse(env("FLEET_STORE")).expect("store location"))
    .build()
    .expect("valid config")
}

/// `FLEET_TASKS` tasks ask for a token every 20–80 ms for `FLEET_RUN_MS`; every token seen for the
/// first time is checked at the sandbox's protected endpoint. With `FLEET_SUBMIT`, five tasks also
/// submit a lab every 300 ms.
async fn swarm() -> Value {
    let auth = child_grant();
    let tasks: usize = env("FLEET_TASKS").parse().unwrap();
    let run = Duration::from_millis(env("FLEET_RUN_MS").parse().unwrap());
    let protected = env("FLEET_PROTECTED");
    let submit = std::env::var("FLEET_SUBMIT").ok();
    let seen: Arc<Mutex<BTreeMap<String, (u64, u64)>>> = Arc::default();
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let submitted = Arc::new(Mutex::new(Vec::<String>::new()));
    let http = reqwest::Client::new();
    let client = submit.as_ref().map(|base| {
        CibmtrClient::builder("12345", &auth)
            .base_url(base)
            .build()
            .unwrap()
    });
    let crid: i64 = std::env::var("FLEET_CRID")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let deadline = Instant::now() + run;
    let pid = std::process::id();
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let (auth, seen, errors, submitted) = (
                auth.clone(),
                seen.clone(),
                errors.clone(),
                submitted.clone(),
            );
            let (http, protected, client) = (http.clone(), protected.clone(), client.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    match auth.token().await {
                        Ok(t) => {
                            let fp = fingerprint(t.secret());
                            let new = seen
                                .lock()
                                .unwrap()
                                .insert(fp.clone(), (ms(t.token().issued_at), ms(t.expires_at())))
                                .is_none();
                            if new {
                                let status = http
                                    .get(&protected)
                                    .bearer_auth(t.secret())
                                    .send()
                                    .await
                                    .map(|r| r.status().as_u16())
                                    .unwrap_or(0);
                                if status != 200 {
                                    errors
                                        .lock()
                                        .unwrap()
                                        .push(format!("token {fp}: protected answered {status}"));
                                }
                            }
                        }
                        Err(e) => errors.lock().unwrap().push(format!("token(): {e}")),
                    }
                    if let Some(c) = client.as_ref().filter(|_| i < 5) {
                        let value = (pid as f64) + (i as f64) / 10.0 + (n as f64) / 1e6;
                        let lab = LabResult::new("718-7", value, "g/dL", "2024-05-01T08:30:00Z");
                        match c.submit_lab(crid, &lab).await {
                            Ok(s) => submitted.lock().unwrap().push(s.id),
                            Err(e) => errors.lock().unwrap().push(format!("submit_lab: {e}")),
                        }
                        n += 1;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    } else {
                        let pause = 20 + rand_u64() % 60;
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let stats = auth.stats();
    let tokens: Vec<Value> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(fp, (i, e))| json!({"fp": fp, "issued_ms": i, "expires_ms": e}))
        .collect();
    json!({
        "pid": pid,
        "tokens": tokens,
        "errors": *errors.lock().unwrap(),
        "submitted": *submitted.lock().unwrap(),
        "token_requests": stats.token_requests,
    })
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// One `token()` call: how long it took and which token it got.
async fn once() -> Value {
    let auth = child_grant();
    let started = Instant::now();
    let t = auth.token().await.expect("a token");
    json!({
        "pid": std::process::id(),
        "elapsed_ms": started.elapsed().as_millis() as u64,
        "fp": fingerprint(t.secret()),
        "token_requests": auth.stats().token_requests,
    })
}

/// Starts `mode` children sharing `store`.
fn spawn_children(
    sb: &Sandbox,
    key: &StoreKey,
    store: &str,
    n: usize,
    mode: &str,
    extra: &[(&str, String)],
) -> Vec<Child> {
    let c = &sb.credentials.okta;
    let exe = std::env::current_exe().unwrap();
    (0..n)
        .map(|_| {
            let mut cmd = Command::new(&exe);
            cmd.args([
                "--exact",
                "fleet_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, mode)
            .env("CIBMTR_FHIR_STORE_KEY", key.to_base64().expose())
            .env("FLEET_STORE", store)
            .env("FLEET_TOKEN_URL", &c.token_url)
            .env("FLEET_CLIENT_ID", &c.client_id)
            .env("FLEET_CLIENT_SECRET", &c.client_secret)
            .env("FLEET_USERNAME", &c.username)
            .env("FLEET_PASSWORD", &c.password)
            .env("FLEET_SCOPE", &c.scope)
            .env("FLEET_PROTECTED", &sb.urls.protected)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            for (k, v) in extra {
                cmd.env(k, v);
            }
            cmd.spawn().expect("child starts")
        })
        .collect()
}

async fn results(children: Vec<Child>) -> Vec<Value> {
    tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let log = String::from_utf8_lossy(&out.stderr).into_owned();
                assert!(out.status.success(), "child failed: {text}{log}");
                let line = text
                    .lines()
                    .find_map(|l| l.strip_prefix("FLEET-RESULT "))
                    .unwrap_or_else(|| panic!("child printed no result: {text}"));
                let mut v: Value = serde_json::from_str(line).unwrap();
                v["log"] = Value::String(log);
                v
            })
            .collect()
    })
    .await
    .unwrap()
}

/// The distinct tokens the fleet used, by issue time.
fn distinct_tokens(results: &[Value]) -> Vec<(u64, String)> {
    let mut all: BTreeMap<String, u64> = BTreeMap::new();
    for r in results {
        for t in r["tokens"].as_array().unwrap() {
            all.insert(
                t["fp"].as_str().unwrap().to_owned(),
                t["issued_ms"].as_u64().unwrap(),
            );
        }
    }
    let mut v: Vec<(u64, String)> = all.into_iter().map(|(fp, i)| (i, fp)).collect();
    v.sort();
    v
}

fn no_errors(results: &[Value]) {
    for r in results {
        let errors = r["errors"].as_array().unwrap();
        assert!(
            errors.is_empty(),
            "child {} had errors: {errors:?}",
            r["pid"]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// 8 processes × 50 tasks over several token lifetimes: one token request per lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_make_one_token_request_per_lifetime() {
    let redis = RedisServer::start();
    let lifetime = Duration::from_secs(4);
    let sb = sandbox(lifetime).await;
    let key = StoreKey::generate();
    let run = Duration::from_millis(14_000);
    let children = spawn_children(
        &sb,
        &key,
        &redis.url(),
        8,
        "swarm",
        &[
            ("FLEET_TASKS", "50".into()),
            ("FLEET_RUN_MS", run.as_millis().to_string()),
        ],
    );
    let results = results(children).await;
    no_errors(&results);
    let tokens = distinct_tokens(&results);
    let requests = sb.token_requests(&sb.credentials.okta.client_id);
    let by_processes: u64 = results
        .iter()
        .map(|r| r["token_requests"].as_u64().unwrap())
        .sum();
    assert_eq!(
        requests, by_processes,
        "the processes' own counts add up to the server's"
    );
    assert_eq!(
        requests,
        tokens.len() as u64,
        "every token the server issued was used by the fleet, none was fetched twice"
    );
    // One per lifetime: a new token only once the previous one reached its refresh window
    // (lifetime × 5/6 after issue), never two in one lifetime.
    for pair in tokens.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= 3_000,
            "two tokens {gap} ms apart within one 4 s lifetime: {tokens:?}"
        );
    }
    let lifetimes = run.as_secs_f64() / (lifetime.as_secs_f64() * 5.0 / 6.0);
    assert!(
        (tokens.len() as f64) <= lifetimes.ceil() + 1.0 && tokens.len() >= 3,
        "{} tokens over {lifetimes:.1} refresh periods",
        tokens.len()
    );
    // Every process used every token of the run (they share, not merely take turns).
    for r in &results {
        assert!(r["tokens"].as_array().unwrap().len() >= tokens.len() - 1);
    }
}

/// Redis killed mid-run: every call still gets a valid token and submissions go on; once Redis
/// is back the fleet shares again (one token request per lifetime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_calls_continue_and_the_fleet_rejoins() {
    let mut redis = RedisServer::start();
    let lifetime = Duration::from_secs(4);
    let sb = sandbox(lifetime).await;
    let key = StoreKey::generate();
    // A recipient for the submissions.
    let here = grant(&sb, TokenStore::Memory);
    let client = CibmtrClient::builder("12345", &here)
        .base_url(&sb.urls.cibmtr_base)
        .build()
        .unwrap();
    let crid = client
        .register_crid(&cibmtr_fhir::cibmtr::Demographics::new(
            "Ada",
            "Fleet",
            "1970-01-31",
            "F",
        ))
        .await
        .unwrap();
    client.ensure_patient(crid).await.unwrap();
    let client_id = sb.credentials.okta.client_id.clone();
    let before = sb.token_requests(&client_id);

    let run = Duration::from_millis(26_000);
    let children = spawn_children(
        &sb,
        &key,
        &format!("{}?timeout_ms=500", redis.url()),
        8,
        "swarm",
        &[
            ("FLEET_TASKS", "50".into()),
            ("FLEET_RUN_MS", run.as_millis().to_string()),
            ("FLEET_SUBMIT", sb.urls.cibmtr_base.clone()),
            ("FLEET_CRID", crid.to_string()),
            ("CIBMTR_FHIR_LOG", "info".into()),
        ],
    );
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    redis.kill();
    let at_kill = sb.token_requests(&client_id);
    tokio::time::sleep(Duration::from_millis(6_000)).await;
    let during_outage = sb.token_requests(&client_id) - at_kill;
    redis.restart();
    // Give every process one renewal to find the store again, then count a clean window.
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    let window_start = sb.token_requests(&client_id);
    let window = Duration::from_millis(5_500);
    tokio::time::sleep(window).await;
    let in_window = sb.token_requests(&client_id) - window_start;
    assert!(started.elapsed() < run, "the children were still running");
    let results = results(children).await;
    no_errors(&results);

    // Submissions went on throughout: each one created exactly one Observation.
    let submitted: usize = results
        .iter()
        .map(|r| r["submitted"].as_array().unwrap().len())
        .sum();
    assert!(submitted > 8 * 5 * 40, "only {submitted} submissions");
    assert_eq!(sb.observations().len(), submitted);
    // While Redis was down every process fetched for itself (a few each), never an error.
    assert!(
        during_outage >= 8,
        "{during_outage} token requests during the outage: the processes did not fall back"
    );
    // Back together: at most two refreshes in a 5.5 s window of 4 s tokens (3.33 s apart).
    assert!(
        (1..=2).contains(&in_window),
        "{in_window} token requests in one shared window after Redis came back"
    );
    assert!(sb.token_requests(&client_id) > before);
    // Each process said once that the store was gone (however many times it tried while it was),
    // and once that it was back.
    for r in &results {
        let log = r["log"].as_str().unwrap();
        let gone = log.matches("shared token store unreachable").count();
        let back = log.matches("shared token store reachable again").count();
        assert_eq!((gone, back), (1, 1), "child {}: {log}", r["pid"]);
        assert!(!log.contains(&sb.credentials.okta.password), "{log}");
    }
    assert!(
        dump(&redis)
            .iter()
            .any(|(k, _)| k.starts_with("cibmtr-fhir:token:v1:")),
        "the fleet writes the store again"
    );
}

/// The process holding the refresh lock is killed mid-refresh: another process takes over once
/// the lock times out, not before, and not much later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lock_holder_is_replaced_after_the_lock_timeout() {
    let redis = RedisServer::start();
    let sb = sandbox(Duration::from_secs(1800)).await;
    let key = StoreKey::generate();
    let store = format!("{}?lock_timeout_ms=1500", redis.url());
    // The holder's token request hangs.
    sb.set_fault(
        Route::OktaToken,
        Fault {
            status: 0,
            delay: Duration::from_secs(30),
            times: 1,
            ..Default::default()
        },
    );
    let mut holder = spawn_children(&sb, &key, &store, 1, "once", &[]).remove(0);
    // Wait until it holds the lock (and is waiting for the token endpoint).
    let deadline = Instant::now() + Duration::from_secs(20);
    let lock_key = loop {
        let found = dump(&redis)
            .into_iter()
            .find(|(k, _)| k.starts_with("cibmtr-fhir:lock:v1:"));
        if let Some((k, v)) = found {
            let v = String::from_utf8(v).unwrap();
            assert!(
                v.starts_with(&format!("{}-", holder.id())),
                "the lock names its holder's pid: {v}"
            );
            break k;
        }
        assert!(Instant::now() < deadline, "the holder never took the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The holder takes the lock, then sends its token request: on a loaded machine the request
    // can reach the sandbox a moment after the lock appears.
    while sb.token_requests(&sb.credentials.okta.client_id) == 0 {
        assert!(
            Instant::now() < deadline,
            "the holder never asked the token endpoint"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sb.token_requests(&sb.credentials.okta.client_id), 1);
    // Alive, the holder keeps its lock past the timeout (the watchdog extends it).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(
        redis_get(&redis, &lock_key).is_some(),
        "a live holder's lock is extended"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    let killed_at = Instant::now();
    let successor = spawn_children(&sb, &key, &store, 1, "once", &[]);
    let r = results(successor).await.remove(0);
    let waited = killed_at.elapsed();
    assert_eq!(
        r["token_requests"], 1,
        "the successor refreshed itself: {r}"
    );
    assert_eq!(sb.token_requests(&sb.credentials.okta.client_id), 2);
    let elapsed = Duration::from_millis(r["elapsed_ms"].as_u64().unwrap());
    assert!(
        elapsed >= Duration::from_millis(500),
        "the successor did not wait for the dead holder's lock: {elapsed:?}"
    );
    assert!(
        waited < Duration::from_millis(1_500 + 3_000),
        "the successor waited far beyond the lock timeout: {waited:?}"
    );
    assert!(
        redis_get(&redis, &lock_key).is_none(),
        "the lock is released"
    );
}

/// What Redis holds: names that are keyed hashes and values sealed with the deployment's key;
/// no token, secret or identifier in clear, not in a `GET` and not in an RDB dump; entries expire
/// with the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_no_token_or_secret_in_clear_and_entries_expire_with_the_token() {
    let redis = RedisServer::start_with(&["--rdbcompression", "no"]);
    let sb = sandbox(Duration::from_secs(1800)).await;
    let key = StoreKey::generate();
    let store = RedisStore::new(&redis.url(), key.clone()).unwrap();
    let auth = grant(&sb, TokenStore::Redis(store.clone()));
    let token = auth.token().await.unwrap();
    let entries = dump(&redis);
    assert_eq!(entries.len(), 1, "one entry, no lock left: {entries:?}");
    let c = &sb.credentials.okta;
    let rdb = std::env::temp_dir().join(format!("fleet-{}.rdb", std::process::id()));
    let status = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--rdb"])
        .arg(&rdb)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "redis-cli --rdb");
    let dumped = std::fs::read(&rdb).unwrap();
    let _ = std::fs::remove_file(&rdb);
    let (name, value) = &entries[0];
    assert!(
        contains(&dumped, name),
        "the dump is readable (the entry name is in it)"
    );
    for secret in [
        token.secret(),
        &token.secret()[..12],
        c.password.as_str(),
        c.client_secret.as_str(),
        c.client_id.as_str(),
        c.username.as_str(),
        "127.0.0.1",
        key.to_base64().expose(),
    ] {
        assert!(!name.contains(secret), "entry name shows {secret:?}");
        assert!(!contains(value, secret), "entry value shows {secret:?}");
        assert!(!contains(&dumped, secret), "RDB dump shows {secret:?}");
    }
    // Expires with the token.
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL").arg(name).query(&mut con).unwrap();
    let left = token
        .expires_at()
        .duration_since(SystemTime::now())
        .unwrap()
        .as_millis() as i64;
    assert!(
        pttl > 0 && pttl <= left + 50 && pttl > left - 5_000,
        "PTTL {pttl} ms vs {left} ms left on the token"
    );
    // Another process with the same key reads the same entry; one with another key does not.
    let other_key_store = RedisStore::new(&redis.url(), StoreKey::generate()).unwrap();
    let stranger = grant(&sb, TokenStore::Redis(other_key_store));
    assert_ne!(stranger.token().await.unwrap().secret(), token.secret());
    assert_eq!(sb.token_requests(&c.client_id), 2);
    assert_eq!(dump(&redis).len(), 2, "two keys, two entries");
    // A tampered entry is ignored (and replaced), never trusted.
    let _: () = redis::cmd("SET")
        .arg(name)
        .arg(b"CF1 garbage that does not open".as_slice())
        .query(&mut con)
        .unwrap();
    auth.invalidate();
    let fresh = auth.token().await.unwrap();
    assert_ne!(fresh.secret(), token.secret());
    assert_eq!(sb.token_requests(&c.client_id), 3);
}

/// No Redis at all (nothing listens on the port): every call still gets a token, from this
/// process's own cache, and the store joins in once a server appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_redis_falls_back_to_the_in_process_cache_and_joins_when_it_appears() {
    let mut redis = RedisServer::start();
    redis.kill();
    let sb = sandbox(Duration::from_secs(3)).await;
    let key = StoreKey::generate();
    let store = RedisStore::new(&format!("{}?timeout_ms=300", redis.url()), key).unwrap();
    let auth = grant(&sb, TokenStore::Redis(store.clone()));
    let started = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let a = auth.clone();
            tokio::spawn(async move { a.token().await.map(|t| t.secret().to_owned()) })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap().expect("a token without Redis"));
    }
    assert!(tokens.windows(2).all(|w| w[0] == w[1]));
    assert!(started.elapsed() < Duration::from_secs(2), "no long stall");
    assert_eq!(sb.token_requests(&sb.credentials.okta.client_id), 1);
    // Redis comes up; the next refresh goes through it.
    redis.restart();
    tokio::time::sleep(Duration::from_millis(2_700)).await;
    let next = auth.token().await.unwrap();
    assert_ne!(next.secret(), tokens[0]);
    assert_eq!(dump(&redis).len(), 1, "the refreshed token is shared again");
    // A second object (a new process would do the same) reads it instead of asking.
    let second = grant(
        &sb,
        TokenStore::Redis(store.lock_timeout(Duration::from_secs(1))),
    );
    assert_eq!(second.token().await.unwrap().secret(), next.secret());
    assert_eq!(sb.token_requests(&sb.credentials.okta.client_id), 2);
}

/// A location string with a password: never in `Debug`, errors or the log line.
#[test]
fn redis_location_never_shows_its_password() {
    let key = StoreKey::generate();
    let store = RedisStore::new("redis://app:pw-9f8e7d@127.0.0.1:1/0", key).unwrap();
    let shown = format!("{:?}", TokenStore::Redis(store));
    assert!(!shown.contains("pw-9f8e7d"), "{shown}");
    assert!(shown.contains("127.0.0.1:1/0"), "{shown}");
    let e = RedisStore::new("redis://app:pw-9f8e7d@[bad", StoreKey::generate()).unwrap_err();
    assert!(!e.to_string().contains("pw-9f8e7d"), "{e}");
}

/// A TLS store (`rediss://`) signed by a private CA named with `ca_file`: tokens are shared over
/// TLS. Without the CA the server's certificate is not trusted, so nothing is shared (each flow
/// asks for its own token, never an error); `ca_file` with a plain `redis://` URL or a file that
/// is no certificate is refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_shares_tokens_and_an_untrusted_server_is_not_used() {
    let (redis, tls_port) = RedisServer::start_tls();
    let sb = sandbox(Duration::from_secs(600)).await;
    let key = StoreKey::generate();
    let ca = RedisServer::test_ca_file();
    let store = |url: &str| TokenStore::Redis(RedisStore::new(url, key.clone()).unwrap());
    let trusted = format!("rediss://127.0.0.1:{tls_port}/?ca_file={ca}&timeout_ms=2000");
    let a = grant(&sb, store(&trusted)).token().await.unwrap();
    let b = grant(&sb, store(&trusted)).token().await.unwrap();
    assert_eq!(
        a.secret(),
        b.secret(),
        "the second flow read the first one's token over TLS"
    );
    let client_id = sb.credentials.okta.client_id.clone();
    assert_eq!(sb.token_requests(&client_id), 1);
    assert!(
        dump(&redis)
            .iter()
            .any(|(k, _)| k.starts_with("cibmtr-fhir:token:v1:")),
        "the entry was written through the TLS port"
    );

    // The system's trust store does not know the test CA: the store is unreachable, each flow
    // keeps its own token.
    let untrusted = format!("rediss://127.0.0.1:{tls_port}/?timeout_ms=500&prefix=untrusted");
    grant(&sb, store(&untrusted)).token().await.unwrap();
    grant(&sb, store(&untrusted)).token().await.unwrap();
    assert_eq!(sb.token_requests(&client_id), 3);
    assert!(
        !dump(&redis)
            .iter()
            .any(|(k, _)| k.starts_with("untrusted:"))
    );

    for (url, rule) in [
        (
            format!("redis://127.0.0.1:{tls_port}/?ca_file={ca}"),
            "rediss://",
        ),
        (
            format!(
                "rediss://127.0.0.1:{tls_port}/?ca_file={}",
                ca.replace("ca.pem", "server.key")
            ),
            "no PEM certificate",
        ),
        (
            format!("rediss://127.0.0.1:{tls_port}/?ca_file=/nonexistent/ca.pem"),
            "cannot read",
        ),
    ] {
        match RedisStore::new(&url, key.clone()) {
            Err(cibmtr_fhir::Error::Validation { field, rule: r }) => {
                assert_eq!(field, "ca_file");
                assert!(r.contains(rule), "{r}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}
