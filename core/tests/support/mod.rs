//! The fault-matrix harness shared by `fault_matrix.rs` (one row per fault) and
//! `fault_matrix_clock.rs` (the rows that move the process's clock: the clock jump, the mix of
//! everything, the soak).
//!
//! A row is a [`Scenario`]: faults on sandbox routes, a share of requests that revoke every token
//! server-side, and a clock that jumps while the work runs. [`run`] applies it twice, to a
//! 2,000-lab `submit_labs` and then to a paged search of the same 2,000 Observations, and checks
//! after each that every item is accounted for: the report's counts add up, each item reported
//! created or present is on the server exactly once under its id, each failed item carries an
//! error and is not on the server, nothing else is there, a clean re-run sends only what failed (when something did),
//! and the search returns each Observation exactly once. The numbers are printed as one
//! `FAULT-MATRIX` line per row (run with `--nocapture` to see them).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cibmtr_fhir::auth::PasswordGrant;
use cibmtr_fhir::cibmtr::{
    CibmtrClient, Demographics, ItemStatus, LabResult, SUBMISSION_ID_SYSTEM, SubmissionReport,
    SubmitOptions,
};
use cibmtr_fhir::http::{HttpClient, HttpConfig};
use cibmtr_fhir_sandbox::{DropMode, Fault, Route, Sandbox, SandboxConfig};
use futures_util::StreamExt;
use serde_json::Value;

/// Labs per submission.
pub const LABS: usize = 2000;
/// The client's whole-request timeout: short, so a "slow response past the timeout" costs
/// little, and still far above a loopback round trip on a busy 2-core machine.
pub const TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a slow fault holds a request before the server processes it: past [`TIMEOUT`], so
/// the client gives up first, and within the time the SDK then leaves the server to finish
/// before it looks for what the request may have created (as long again as the timeout).
pub const SLOW: Duration = Duration::from_millis(1600);
/// Page size of the paged search (2,000 Observations: 20 pages).
pub const PAGE: usize = 100;

/// The HTTP settings of every row: the defaults, with the timeout shortened.
pub fn http() -> HttpClient {
    HttpClient::new(HttpConfig {
        timeout: TIMEOUT,
        connect_timeout: Duration::from_secs(2),
        max_rate_limit_wait: Duration::from_secs(10),
        ..Default::default()
    })
    .unwrap()
}

/// Where a scenario's faults go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Submit,
    Search,
}

/// Makes faults afresh (an Okta reset header is relative to when it is made).
pub type FaultsFn = fn() -> Vec<(Route, Fault)>;

/// One row of the matrix.
#[derive(Clone, Default)]
pub struct Scenario {
    pub name: &'static str,
    /// Faults set during the submission (added in order; several on one route make a mix).
    pub submit_faults: Vec<(Route, Fault)>,
    /// Faults set during the paged search.
    pub search_faults: Vec<(Route, Fault)>,
    /// Shares of requests that revoke every token first, during the submission (the sandbox's
    /// random switch: revocations may come back to back).
    pub submit_revocations: Vec<(Route, f64)>,
    /// The same during the search.
    pub search_revocations: Vec<(Route, f64)>,
    /// Revoke every token server-side each time this many more requests reached the route,
    /// during the submission (spaced revocations: a token revoked in the middle of a batch).
    pub submit_revoke_every: Option<(Route, u64)>,
    /// The same during the search.
    pub search_revoke_every: Option<(Route, u64)>,
    /// Faults added after each of those revocations (made fresh each time, so an Okta reset
    /// header is one second ahead of the revocation): a token endpoint that fails when the
    /// batch needs a new token.
    pub on_revoke: Option<FaultsFn>,
    /// Move the process's clock forward by this much, this often, while the work runs.
    pub clock_jumps: Option<(Duration, Duration)>,
    /// Run the CRID registration and Patient lookup under the submission's faults too.
    pub faulted_setup: bool,
    /// The most items the report may mark failed (0 unless a fault makes failure the right
    /// answer).
    pub max_failed: usize,
}

// ---------------------------------------------------------------------------------------------
// The faults
// ---------------------------------------------------------------------------------------------

pub fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Okta's answer when the rate limit is exceeded: the E0000047 body and the
/// `X-Rate-Limit-*` headers, with the reset one second ahead of when the fault is set.
pub fn okta_429(share: f64) -> Fault {
    Fault {
        status: 429,
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("X-Rate-Limit-Limit".into(), "4".into()),
            ("X-Rate-Limit-Remaining".into(), "0".into()),
            ("X-Rate-Limit-Reset".into(), (epoch_secs() + 1).to_string()),
        ],
        body: r#"{"errorCode":"E0000047","errorSummary":"API call exceeded rate limit due to too many requests.","errorLink":"E0000047","errorId":"oae-fault","errorCauses":[]}"#.into(),
        share,
        ..Default::default()
    }
}

pub fn token_500(share: f64) -> Fault {
    Fault {
        status: 500,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: r#"{"errorCode":"E0000009","errorSummary":"Internal Server Error"}"#.into(),
        share,
        ..Default::default()
    }
}

/// A token endpoint that answers only after the client has given up.
pub fn token_timeout(share: f64) -> Fault {
    slow(share, 0)
}

/// A 200 whose body is cut-off JSON.
pub fn token_malformed(share: f64) -> Fault {
    Fault {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: r#"{"token_type":"Bearer","expires_in":1800,"access_tok"#.into(),
        share,
        ..Default::default()
    }
}

/// 429 with `Retry-After: 1`, at most `times` times (each costs a second).
pub fn fhir_429(share: f64, times: u32) -> Fault {
    Fault {
        status: 429,
        headers: vec![
            ("Retry-After".into(), "1".into()),
            ("Content-Type".into(), "application/fhir+json".into()),
        ],
        body: r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"throttled","diagnostics":"too many requests"}]}"#.into(),
        share,
        times,
        ..Default::default()
    }
}

pub fn fhir_503(share: f64) -> Fault {
    Fault {
        status: 503,
        headers: vec![("Content-Type".into(), "application/fhir+json".into())],
        body: r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient","diagnostics":"service unavailable"}]}"#.into(),
        share,
        ..Default::default()
    }
}

/// What nginx in front of the API sends when the backend is down.
pub fn gateway_502(share: f64) -> Fault {
    Fault {
        status: 502,
        headers: vec![("Content-Type".into(), "text/html".into())],
        body: "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n".into(),
        share,
        ..Default::default()
    }
}

/// An HTML page where FHIR JSON was expected, with a success status: a proxy's or web
/// application firewall's page standing in for the API's answer.
pub fn html_page(share: f64) -> Fault {
    Fault {
        status: 200,
        headers: vec![("Content-Type".into(), "text/html; charset=utf-8".into())],
        body: "<!DOCTYPE html><html><head><title>Request blocked</title></head><body><h1>Request blocked</h1><p>Reference #18.4f2c1702</p></body></html>".into(),
        share,
        ..Default::default()
    }
}

pub fn dropped(mode: DropMode, share: f64) -> Fault {
    Fault {
        drop_connection: Some(mode),
        share,
        ..Default::default()
    }
}

/// Holds the answer for [`SLOW`] (past the client's timeout), at most `times` times (0: always).
pub fn slow(share: f64, times: u32) -> Fault {
    Fault {
        delay: SLOW,
        share,
        times,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The rig
// ---------------------------------------------------------------------------------------------

/// A sandbox, a client of its CIBMTR API with the short timeouts, and what the checks count.
pub struct Rig {
    pub sb: Sandbox,
    pub auth: PasswordGrant,
    pub client: CibmtrClient,
}

impl Rig {
    /// A sandbox with Okta's natural rate limit out of the way (429s are injected where wanted).
    pub async fn start() -> Rig {
        Self::start_with(SandboxConfig {
            okta_rate_per_second: 100_000,
            okta_rate_per_minute: 100_000,
            ..Default::default()
        })
        .await
    }

    pub async fn start_with(config: SandboxConfig) -> Rig {
        let sb = Sandbox::start(config).await.expect("sandbox starts");
        // Like most servers, finish a request whose client gave up waiting: a slow POST past
        // the timeout is stored after all.
        sb.set_finish_after_hang_up(true);
        let o = &sb.credentials.okta;
        let auth = PasswordGrant::builder(
            &o.token_url,
            &o.client_id,
            o.client_secret.as_str(),
            &o.username,
            o.password.as_str(),
        )
        .scope(&o.scope)
        .http(http())
        .build()
        .unwrap();
        let client = CibmtrClient::builder("12345", &auth)
            .base_url(&sb.urls.cibmtr_base)
            .http_client(http())
            .build()
            .unwrap();
        Rig { sb, auth, client }
    }

    pub fn token_requests(&self) -> u64 {
        self.sb.token_requests(&self.sb.credentials.okta.client_id)
    }

    fn apply(&self, faults: &[(Route, Fault)], revocations: &[(Route, f64)]) {
        self.sb.clear_faults();
        for (route, fault) in faults {
            self.sb.add_fault(*route, fault.clone());
        }
        for (route, share) in revocations {
            self.sb.set_token_revocation(*route, *share);
        }
    }

    /// Requests a fault hit so far, on every route.
    fn faults_hit(&self) -> u64 {
        Route::ALL.iter().map(|r| self.sb.faults_hit(*r)).sum()
    }
}

/// `n` distinct hemoglobin results, one a minute from 2024-01-01.
pub fn labs(n: usize) -> Vec<LabResult> {
    let start = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00-05:00").unwrap();
    (0..n)
        .map(|i| {
            let at = start + chrono::Duration::minutes(i as i64);
            LabResult::new(
                "718-7",
                10.0 + (i % 60) as f64 / 10.0,
                "g/dL",
                at.to_rfc3339(),
            )
            .with_reference_range(Some(12.0), Some(16.0))
        })
        .collect()
}

pub fn jane() -> Demographics {
    Demographics::new("Jane", "Doe", "1970-01-31", "F")
}

/// Submission identifier → ids of the Observations on the server that carry it.
pub fn server_ids_by_submission(sb: &Sandbox) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for obs in sb.observations() {
        let id = obs["id"].as_str().unwrap_or_default().to_owned();
        for ident in obs["identifier"].as_array().into_iter().flatten() {
            if ident["system"] == SUBMISSION_ID_SYSTEM {
                out.entry(ident["value"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(id.clone());
            }
        }
    }
    out
}

/// Runs `work` while helpers disturb it: one moves the process's clock forward by `by` every
/// `every` (if asked), one revokes every token each time `n` more requests reached `route` (if
/// asked). Returns what `work` returned and how many clock jumps were made.
async fn disturbed<T>(
    sb: &Sandbox,
    jumps: Option<(Duration, Duration)>,
    revoke_every: Option<(Route, u64)>,
    on_revoke: Option<FaultsFn>,
    work: impl std::future::Future<Output = T>,
) -> (T, u32) {
    let done = AtomicBool::new(false);
    let work = async {
        let out = work.await;
        done.store(true, Ordering::SeqCst);
        out
    };
    let jumper = async {
        let mut n = 0;
        if let Some((every, by)) = jumps {
            loop {
                tokio::time::sleep(every).await;
                if done.load(Ordering::SeqCst) {
                    break;
                }
                cibmtr_fhir::clock::jump_forward(by);
                n += 1;
            }
        }
        n
    };
    let revoker = async {
        if let Some((route, n)) = revoke_every {
            let mut next = sb.requests(route) + n;
            while !done.load(Ordering::SeqCst) {
                if sb.requests(route) >= next {
                    sb.revoke_all_tokens();
                    for (route, fault) in on_revoke.map(|f| f()).unwrap_or_default() {
                        sb.add_fault(route, fault);
                    }
                    next += n;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    let (out, n, ()) = tokio::join!(work, jumper, revoker);
    (out, n)
}

// ---------------------------------------------------------------------------------------------
// The run and its checks
// ---------------------------------------------------------------------------------------------

/// What one row did, for the `FAULT-MATRIX` line and the assertions of the caller.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub name: &'static str,
    pub created: usize,
    pub already_present: usize,
    pub failed: usize,
    /// Observations on the server after the submission.
    pub on_server: usize,
    /// Submission identifiers held by more than one Observation.
    pub duplicates: usize,
    /// Items whose report disagrees with the server (reported sent but missing, reported failed
    /// but present, or on the server under another id).
    pub lost: usize,
    /// `POST /Observation` requests (first tries, retries and re-mint repeats together).
    pub posts: u64,
    /// Observation search requests during the submission (the listing, the checks after a
    /// failure).
    pub submit_searches: u64,
    /// Requests a fault hit, both phases.
    pub faults_hit: u64,
    /// Token requests the Okta endpoint received, both phases.
    pub token_requests: u64,
    /// Times every token was revoked server-side, both phases.
    pub revocations: u64,
    /// Clock jumps, both phases.
    pub clock_jumps: u32,
    /// Resources the paged search returned, and how many distinct.
    pub searched: usize,
    pub searched_distinct: usize,
    /// Observation search requests the paged search made (pages and their retries).
    pub search_requests: u64,
    pub submit_time: Duration,
    pub search_time: Duration,
    /// The first failed item's error, if any.
    pub first_error: Option<String>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FAULT-MATRIX | {} | submit {} labs: created {} already_present {} failed {} | server {} duplicates {} lost {} | POSTs {} searches {} | search: {} returned, {} distinct, {} requests | faults hit {} revocations {} clock jumps {} token requests {} | {:.1} s + {:.1} s",
            self.name,
            self.created + self.already_present + self.failed,
            self.created,
            self.already_present,
            self.failed,
            self.on_server,
            self.duplicates,
            self.lost,
            self.posts,
            self.submit_searches,
            self.searched,
            self.searched_distinct,
            self.search_requests,
            self.faults_hit,
            self.revocations,
            self.clock_jumps,
            self.token_requests,
            self.submit_time.as_secs_f64(),
            self.search_time.as_secs_f64(),
        )?;
        if let Some(e) = &self.first_error {
            write!(f, " | first error: {e}")?;
        }
        Ok(())
    }
}

/// Checks a submission report against the server: returns (duplicates, lost), after asserting
/// that the report accounts for every input item in order.
pub fn account(report: &SubmissionReport, sb: &Sandbox, total: usize) -> (usize, usize) {
    assert_eq!(report.total(), total, "one report item per input");
    assert_eq!(
        report.created + report.already_present + report.failed,
        total,
        "the counts add up"
    );
    for (i, item) in report.items.iter().enumerate() {
        assert_eq!(item.index, i, "items in input order");
        match item.status {
            ItemStatus::Failed => assert!(item.error.is_some(), "a failed item says why: {item:?}"),
            _ => assert!(
                item.id.is_some() && item.error.is_none(),
                "a sent item has its id: {item:?}"
            ),
        }
        assert!(item.submission_id.is_some(), "every valid lab has its id");
    }
    let json = report.to_json();
    assert_eq!(json["total"], total);
    assert_eq!(json["items"].as_array().unwrap().len(), total);

    let server = server_ids_by_submission(sb);
    let duplicates = server.values().filter(|ids| ids.len() > 1).count();
    let mut lost = 0;
    let mut reported: HashSet<&str> = HashSet::new();
    for item in &report.items {
        let sid = item.submission_id.as_deref().unwrap();
        let held = server.get(sid);
        let agrees = match item.status {
            ItemStatus::Failed => held.is_none(),
            _ => {
                reported.insert(sid);
                held.is_some_and(|ids| ids.iter().any(|id| Some(id) == item.id.as_ref()))
            }
        };
        if !agrees {
            lost += 1;
            eprintln!(
                "not accounted for: item {} reported {:?} (id {:?}, error {:?}); server holds {:?}",
                item.index,
                item.status,
                item.id,
                item.error.as_ref().map(ToString::to_string),
                held
            );
        }
    }
    // Nothing on the server that the report does not mention.
    lost += server
        .keys()
        .filter(|sid| !reported.contains(sid.as_str()))
        .count();
    (duplicates, lost)
}

/// Runs one row: the submission under faults, its accounting, a clean re-run, then the paged
/// search under faults. Asserts the invariants; returns the numbers.
pub async fn run(scn: Scenario) -> Outcome {
    let rig = Rig::start().await;
    let sb = &rig.sb;
    let c = &rig.client;
    let mut out = Outcome {
        name: scn.name,
        ..Default::default()
    };

    // ---- submission ----
    if scn.faulted_setup {
        rig.apply(&scn.submit_faults, &scn.submit_revocations);
    }
    let crid = c.register_crid(&jane()).await.expect("CRID");
    c.ensure_patient(crid).await.expect("Patient");
    rig.apply(&scn.submit_faults, &scn.submit_revocations);
    let (posts0, searches0) = (
        sb.requests(Route::ObservationCreate),
        sb.requests(Route::ObservationSearch),
    );
    let started = Instant::now();
    let options = SubmitOptions {
        concurrency: 16,
        ..Default::default()
    };
    let (report, jumps) = disturbed(
        sb,
        scn.clock_jumps,
        scn.submit_revoke_every,
        scn.on_revoke,
        within(90, "submission", c.submit_labs(crid, labs(LABS), &options)),
    )
    .await;
    let report = report.expect("submit_labs returns a report");
    out.submit_time = started.elapsed();
    out.clock_jumps += jumps;
    out.faults_hit = rig.faults_hit();
    sb.clear_faults();
    out.posts = sb.requests(Route::ObservationCreate) - posts0;
    out.submit_searches = sb.requests(Route::ObservationSearch) - searches0;
    out.created = report.created;
    out.already_present = report.already_present;
    out.failed = report.failed;
    out.first_error = report
        .items
        .iter()
        .find_map(|i| i.error.as_ref().map(ToString::to_string));
    let (duplicates, lost) = account(&report, sb, LABS);
    out.duplicates = duplicates;
    out.lost = lost;
    out.on_server = sb.observations().len();

    // A clean re-run sends exactly what failed and finds everything else (the report already
    // matches the server, so this runs only when there is something to send).
    let rerun = if out.failed > 0 {
        let posts_before = sb.requests(Route::ObservationCreate);
        let rerun = within(60, "re-run", c.submit_labs(crid, labs(LABS), &options))
            .await
            .expect("re-run");
        Some((rerun, sb.requests(Route::ObservationCreate) - posts_before))
    } else {
        None
    };

    // ---- paged search ----
    rig.apply(&scn.search_faults, &scn.search_revocations);
    let searches_before = sb.requests(Route::ObservationSearch);
    let started = Instant::now();
    let crid_s = crid.to_string();
    let page = PAGE.to_string();
    let params = [
        ("subject:Patient.identifier", crid_s.as_str()),
        ("_count", page.as_str()),
    ];
    let (found, jumps) = disturbed(
        sb,
        scn.clock_jumps,
        scn.search_revoke_every,
        scn.on_revoke,
        within(60, "paged search", async {
            let mut stream = c.fhir().search("Observation", &params);
            let mut found: Vec<Result<Value, cibmtr_fhir::Error>> = Vec::new();
            while let Some(item) = stream.next().await {
                let failed = item.is_err();
                found.push(item);
                if failed {
                    break;
                }
            }
            found
        }),
    )
    .await;
    out.search_time = started.elapsed();
    out.clock_jumps += jumps;
    out.faults_hit = rig.faults_hit();
    sb.clear_faults();
    out.search_requests = sb.requests(Route::ObservationSearch) - searches_before;
    let errors: Vec<String> = found
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    let ids: Vec<String> = found
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    out.searched = ids.len();
    out.searched_distinct = ids.iter().collect::<HashSet<_>>().len();
    out.token_requests = rig.token_requests();
    out.revocations = sb.revocations();

    println!("{out}");

    // ---- the invariants ----
    assert_eq!(
        out.duplicates, 0,
        "{}: no duplicate on the server",
        scn.name
    );
    assert_eq!(out.lost, 0, "{}: every item accounted for", scn.name);
    assert!(
        out.failed <= scn.max_failed,
        "{}: {} items failed (at most {} expected); first error: {:?}",
        scn.name,
        out.failed,
        scn.max_failed,
        out.first_error
    );
    assert_eq!(
        out.already_present, 0,
        "{}: the server was empty, so even an item whose answer was lost is created",
        scn.name
    );
    assert_eq!(out.on_server, out.created, "{}", scn.name);
    if let Some((rerun, rerun_posts)) = rerun {
        assert_eq!(
            rerun.created, out.failed,
            "{}: the re-run sends what failed",
            scn.name
        );
        assert_eq!(rerun.already_present, LABS - out.failed, "{}", scn.name);
        assert_eq!(rerun.failed, 0, "{}", scn.name);
        assert_eq!(
            rerun_posts, out.failed as u64,
            "{}: and nothing else",
            scn.name
        );
    }
    assert!(
        errors.is_empty(),
        "{}: paged search failed: {errors:?}",
        scn.name
    );
    assert_eq!(
        out.searched, LABS,
        "{}: the search returns every item",
        scn.name
    );
    assert_eq!(out.searched_distinct, LABS, "{}: each once", scn.name);
    let server_ids: HashSet<String> = sb
        .observations()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.into_iter().collect::<HashSet<_>>(),
        server_ids,
        "{}: the ones on the server",
        scn.name
    );
    let faulted = !(scn.submit_faults.is_empty()
        && scn.search_faults.is_empty()
        && scn.submit_revocations.is_empty()
        && scn.search_revocations.is_empty()
        && scn.submit_revoke_every.is_none()
        && scn.search_revoke_every.is_none());
    if faulted {
        assert!(
            out.faults_hit + out.revocations > 0,
            "{}: the faults were exercised",
            scn.name
        );
    }
    out
}

/// Awaits `fut`, failing the test instead of hanging if it takes longer than `secs`.
pub async fn within<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: still running after {secs} s"))
}

/// Every FHIR fault of the matrix at `share` each, on `route`.
pub fn every_fhir_fault(route: Route, share: f64) -> Vec<(Route, Fault)> {
    vec![
        (route, fhir_429(share, 0)),
        (route, fhir_503(share)),
        (route, gateway_502(share)),
        (route, html_page(share)),
        (route, dropped(DropMode::BeforeProcessing, share)),
        (route, dropped(DropMode::AfterProcessing, share)),
        (route, slow(share, 0)),
    ]
}

/// Every token-endpoint fault of the matrix at `share` each.
pub fn every_token_fault(share: f64) -> Vec<(Route, Fault)> {
    vec![
        (Route::OktaToken, okta_429(share)),
        (Route::OktaToken, token_500(share)),
        (Route::OktaToken, token_timeout(share)),
        (Route::OktaToken, token_malformed(share)),
    ]
}
