//! The rows of the fault matrix that move the process's wall clock (through the SDK's
//! `cibmtr_fhir::clock` seam), in a test binary of their own so no other test sees the jumps,
//! and one at a time:
//!
//! * the clock jumping forward by two hours during the submission and the paged search: every
//!   cached token is then past its expiry as the SDK sees it (the server still accepts it);
//! * every fault of the matrix at once, 10% of requests in all, with tokens revoked server-side
//!   and the clock jumping;
//! * the soak (`#[ignore]`d; `scripts/test-reliability.sh --soak MINUTES`): batch after batch
//!   under the same mix for a bounded number of minutes, across many token lifetimes.
//!
//! Why the clock seam rather than expiring tokens server-side: the sandbox can already revoke
//! every token (the 401 row), which exercises the re-mint after a 401. A clock jump is different:
//! the SDK itself decides its token is expired, before any request fails, and must fetch exactly
//! one new token however many requests are in flight, without repeating or failing any request.
//! Only moving the clock the SDK reads tests that decision.
mod support;

use std::time::{Duration, Instant};

use cibmtr_fhir::cibmtr::{ItemStatus, SubmitOptions};
use cibmtr_fhir_sandbox::{Route, SandboxConfig};
use support::*;

/// The tests of this binary take turns: the clock is the process's.
static CLOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TWO_HOURS: Duration = Duration::from_secs(2 * 3600);

#[tokio::test]
async fn the_clock_jumping_forward() {
    let _turn = CLOCK.lock().await;
    cibmtr_fhir::clock::reset();
    let out = run(Scenario {
        name: "clock jumps forward 2 h (tokens expired)",
        clock_jumps: Some((Duration::from_millis(300), TWO_HOURS)),
        ..Default::default()
    })
    .await;
    cibmtr_fhir::clock::reset();
    assert!(out.clock_jumps >= 3, "{out}");
    // Each jump expires the cached token: the SDK fetches a new one before sending anything
    // with the old (a jump during that fetch may expire the fresh token too)...
    assert!(
        out.token_requests > 1 && out.token_requests <= 1 + 2 * u64::from(out.clock_jumps),
        "{out}"
    );
    // ... and no request fails or is repeated because of it.
    assert_eq!(out.posts, LABS as u64, "{out}");
    assert_eq!(
        out.submit_searches, 1,
        "only the listing of what is there: {out}"
    );
    assert_eq!(out.search_requests, (LABS / PAGE) as u64, "{out}");
}

/// Every FHIR fault of the matrix on every CIBMTR route (7 faults at 1/70 each: 10% of
/// requests), every token-endpoint fault at 2.5% each (10%), every token revoked server-side
/// every 250 POSTs and every 5 search pages, and the clock jumping forward every 700 ms.
fn mix() -> Scenario {
    let share = 0.1 / 7.0;
    let mut faults = Vec::new();
    for route in [
        Route::Crid,
        Route::PatientCreate,
        Route::PatientSearch,
        Route::ObservationCreate,
        Route::ObservationSearch,
    ] {
        faults.extend(every_fhir_fault(route, share));
    }
    faults.extend(every_token_fault(0.025));
    let mut search_faults = every_fhir_fault(Route::ObservationSearch, share);
    search_faults.extend(every_token_fault(0.025));
    Scenario {
        name: "mix of every fault at 10%",
        submit_faults: faults,
        search_faults,
        submit_revoke_every: Some((Route::ObservationCreate, 250)),
        search_revoke_every: Some((Route::ObservationSearch, 5)),
        clock_jumps: Some((Duration::from_millis(700), TWO_HOURS)),
        faulted_setup: true,
        // Failed only after 5 faulted attempts: rare, reported, and sent by the re-run.
        max_failed: 3,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_mix_of_every_fault_at_ten_percent() {
    let _turn = CLOCK.lock().await;
    cibmtr_fhir::clock::reset();
    let out = run(mix()).await;
    cibmtr_fhir::clock::reset();
    assert!(out.faults_hit > 100, "{out}");
    assert!(out.revocations >= 8, "{out}");
}

/// Submits batches under the mix of every fault for `SOAK_MINUTES` minutes (default 2), with
/// 20-second Okta tokens so the run crosses many token lifetimes, then accounts for every item
/// of every batch and prints token requests, retries and lost items (which must be zero).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long-running; scripts/test-reliability.sh --soak MINUTES"]
async fn soak() {
    let _turn = CLOCK.lock().await;
    cibmtr_fhir::clock::reset();
    let minutes: f64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(2.0);
    let rig = Rig::start_with(SandboxConfig {
        okta_rate_per_second: 100_000,
        okta_rate_per_minute: 100_000,
        okta_token_ttl: Duration::from_secs(20),
        ..Default::default()
    })
    .await;
    let (sb, c) = (&rig.sb, &rig.client);
    let scn = mix();
    let crid = c.register_crid(&jane()).await.expect("CRID");
    c.ensure_patient(crid).await.expect("Patient");
    for (route, fault) in &scn.submit_faults {
        sb.add_fault(*route, fault.clone());
    }
    let batch = 500;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(minutes * 60.0);
    let (mut items, mut failed, mut batches, mut jumps) = (0usize, 0usize, 0u32, 0u32);
    let mut last_jump = Instant::now();
    let mut last_revoke = Instant::now();
    let mut reports = Vec::new();
    while Instant::now() < deadline {
        // Distinct labs for every batch: one a minute, from where the previous batch ended.
        let labs: Vec<_> = support::labs(items + batch).split_off(items);
        let report = c
            .submit_labs(
                crid,
                labs.clone(),
                &SubmitOptions {
                    concurrency: 16,
                    ..Default::default()
                },
            )
            .await
            .expect("a report");
        assert_eq!(report.total(), batch);
        failed += report.failed;
        items += batch;
        batches += 1;
        reports.push((labs, report));
        if last_jump.elapsed() > Duration::from_secs(15) {
            cibmtr_fhir::clock::jump_forward(TWO_HOURS);
            jumps += 1;
            last_jump = Instant::now();
        }
        if last_revoke.elapsed() > Duration::from_secs(7) {
            sb.revoke_all_tokens();
            last_revoke = Instant::now();
        }
    }
    let elapsed = started.elapsed();
    sb.clear_faults();
    cibmtr_fhir::clock::reset();

    // Account for every item of every batch against the server.
    let server = server_ids_by_submission(sb);
    let duplicates = server.values().filter(|ids| ids.len() > 1).count();
    let mut lost = 0;
    let mut reported = 0;
    for (_, report) in &reports {
        for item in &report.items {
            let held = server.get(item.submission_id.as_deref().unwrap());
            let ok = match item.status {
                ItemStatus::Failed => item.error.is_some() && held.is_none(),
                _ => held.is_some_and(|ids| ids.iter().any(|id| Some(id) == item.id.as_ref())),
            };
            if !ok {
                lost += 1;
            }
            reported += usize::from(item.status != ItemStatus::Failed);
        }
    }
    lost += server.len().saturating_sub(reported);
    // What failed under faults goes through on a clean re-run.
    let mut rerun_created = 0;
    for (labs, report) in &reports {
        if report.failed > 0 {
            let again = c
                .submit_labs(crid, labs.clone(), &SubmitOptions::default())
                .await
                .unwrap();
            assert_eq!(again.failed, 0);
            rerun_created += again.created;
        }
    }
    let stats = rig.auth.stats();
    let posts = sb.requests(Route::ObservationCreate);
    println!(
        "SOAK | {:.1} min | {batches} batches, {items} labs: failed {failed} (re-run created {rerun_created}), duplicates {duplicates}, lost {lost} | POSTs {posts} ({} retries) | searches {} | faults hit {} | token requests {} (server) / {} (client), refreshes {}, failures {} | tokens revoked {} times, clock jumped {jumps} times, token lifetime 20 s",
        elapsed.as_secs_f64() / 60.0,
        posts.saturating_sub((items + rerun_created) as u64),
        sb.requests(Route::ObservationSearch),
        Route::ALL.iter().map(|r| sb.faults_hit(*r)).sum::<u64>(),
        rig.token_requests(),
        stats.token_requests,
        stats.refreshes,
        stats.failures,
        sb.revocations(),
    );
    assert_eq!(duplicates, 0);
    assert_eq!(lost, 0);
    assert_eq!(rerun_created, failed);
}
