//! `labs submit --journal / --resume` and `cibmtr-fhir journal`, run as a user would, against the
//! sandbox: a batch killed (SIGKILL) at random points and resumed ends with every lab on the
//! server exactly once, and the journal agrees item by item.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cibmtr_fhir::cibmtr::SUBMISSION_ID_SYSTEM;
use cibmtr_fhir::journal::{Journal, JournalState};
use cibmtr_fhir_sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cibmtr-fhir"))
}

fn cibmtr_env(cmd: &mut Command, sb: &Sandbox) {
    let o = &sb.credentials.okta;
    cmd.env("CIBMTR_TOKEN_URL", &o.token_url)
        .env("CIBMTR_BASE_URL", &sb.urls.cibmtr_base)
        .env("CIBMTR_CLIENT_ID", &o.client_id)
        .env("CIBMTR_USERNAME", &o.username)
        .env("CIBMTR_SCOPE", &o.scope)
        .env("CIBMTR_CCN", "12345")
        .env("CIBMTR_CLIENT_SECRET", &o.client_secret)
        .env("CIBMTR_PASSWORD", &o.password)
        .env("CIBMTR_FHIR_CONFIG", "/nonexistent/cibmtr-fhir.toml")
        .env_remove("CIBMTR_PROFILE")
        .env_remove("CIBMTR_JOURNAL")
        .env_remove("CIBMTR_TOKEN_STORE");
}

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig {
        okta_rate_per_second: 1000,
        okta_rate_per_minute: 100_000,
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn new_crid(sb: &Sandbox) -> String {
    let mut cmd = bin();
    cibmtr_env(&mut cmd, sb);
    cmd.args([
        "crid",
        "register",
        "--first-name",
        "Journal",
        "--last-name",
        "Test",
        "--birth-date",
        "1970-01-31",
        "--gender",
        "F",
    ]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `n` distinct hemoglobin values, one a row; returns the file.
fn csv(dir: &Path, n: usize) -> PathBuf {
    let mut text = String::from("loinc,value,unit,effective\n");
    for i in 0..n {
        text.push_str(&format!(
            "718-7,{}.{},g/dL,2024-0{}-{:02}T{:02}:{:02}:00Z\n",
            8 + i % 9,
            i % 10,
            1 + i % 9,
            1 + i % 28,
            i % 24,
            i % 60
        ));
    }
    let path = dir.join(format!("labs-{n}.csv"));
    std::fs::write(&path, text).unwrap();
    path
}

fn submission_id(obs: &Value) -> Option<String> {
    obs["identifier"]
        .as_array()?
        .iter()
        .find(|i| i["system"] == SUBMISSION_ID_SYSTEM)
        .and_then(|i| i["value"].as_str())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labs_submit_records_the_batch_and_journal_lists_and_exports_it() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("j").join("journal.sqlite3");
    let crid = new_crid(&sb).await;
    // 40 labs, one bad row (an impossible unit), one row repeated.
    let file = csv(dir.path(), 40);
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("718-7,12,furlongs,2024-01-01T00:00:00Z\n");
    let repeat = format!("{}\n", text.lines().nth(1).unwrap());
    text.push_str(&repeat);
    std::fs::write(&file, &text).unwrap();

    let mut cmd = bin();
    cibmtr_env(&mut cmd, &sb);
    cmd.args(["labs", "submit", "--json", "--crid", &crid, "--csv"])
        .arg(&file)
        .arg("--journal")
        .arg(&journal);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(3), "one row fails");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let batch = report["batch_id"].as_str().unwrap().to_owned();
    assert!(String::from_utf8_lossy(&out.stderr).contains(&batch));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&journal).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the journal holds lab values");
    }

    // The journal agrees with the report, line by line.
    let j = Journal::open(&journal).unwrap();
    let items = j.items(&batch).unwrap();
    assert_eq!(items.len(), 42);
    let by_line: HashMap<u64, &Value> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["line"].as_u64().unwrap(), i))
        .collect();
    for it in &items {
        let r = by_line[&it.item];
        assert_eq!(
            it.state.as_str(),
            r["status"].as_str().unwrap(),
            "line {}",
            it.item
        );
        assert_eq!(
            it.server_id.as_deref(),
            r["id"].as_str(),
            "line {}",
            it.item
        );
        assert_eq!(it.submission_id.as_deref(), r["submission_id"].as_str());
        assert!(it.done_at.is_some());
        if it.state == JournalState::Failed {
            assert_eq!(it.error_kind.as_deref(), Some("VALIDATION"));
            assert!(it.error.as_deref().unwrap().contains("unit"));
            assert_eq!(it.attempts, 0, "never sent");
        } else if it.item == 43 {
            assert_eq!(
                it.state,
                JournalState::AlreadyPresent,
                "the repeat of line 2"
            );
        } else {
            assert_eq!(it.state, JournalState::Created);
            assert_eq!(it.attempts, 1);
            assert!(it.sent_at.is_some());
            assert_eq!(
                it.crid.map(|c| c.to_string()).as_deref(),
                Some(crid.as_str())
            );
            assert_eq!(it.lab.as_ref().unwrap()["loinc"], "718-7");
        }
    }

    // `journal list` and `journal export`.
    let list = bin()
        .args(["journal", "list", "--json", "--journal"])
        .arg(&journal)
        .output()
        .unwrap();
    let batches: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(batches[0]["id"], batch.as_str());
    assert_eq!(batches[0]["status"], "failures");
    assert_eq!(batches[0]["created"], 40);
    assert_eq!(batches[0]["already_present"], 1);
    assert_eq!(batches[0]["failed"], 1);
    let table = bin()
        .args(["journal", "list", "--journal"])
        .arg(&journal)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&batch) && table.contains("failures"),
        "{table}"
    );

    let csv_out = dir.path().join("audit.csv");
    let exported = bin()
        .args(["journal", "export", &batch, "--format", "csv", "--output"])
        .arg(&csv_out)
        .arg("--journal")
        .arg(&journal)
        .output()
        .unwrap();
    assert!(exported.status.success());
    let mut rows = csv::Reader::from_path(&csv_out).unwrap();
    let header = rows.headers().unwrap().clone();
    assert_eq!(&header[4], "state");
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 42);
    let created_rows = rows.iter().filter(|r| &r[4] == "created").count();
    assert_eq!(created_rows, 40);
    let json_out = bin()
        .args(["journal", "export", &batch, "--format", "json", "--journal"])
        .arg(&journal)
        .output()
        .unwrap();
    let exported: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(exported["batch"]["total"], 42);
    assert_eq!(exported["items"].as_array().unwrap().len(), 42);

    // An unknown batch is a usage error naming it.
    let missing = bin()
        .args(["journal", "export", "no-such-batch", "--journal"])
        .arg(&journal)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no-such-batch"));

    // --resume with another file's batch is refused before anything is sent.
    let other = csv(dir.path(), 3);
    let mut cmd = bin();
    cibmtr_env(&mut cmd, &sb);
    let posts = sb.observations().len();
    let refused = cmd
        .args(["labs", "submit", "--crid", &crid, "--csv"])
        .arg(&other)
        .args(["--resume", &batch, "--journal"])
        .arg(&journal)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("another file"));
    assert_eq!(sb.observations().len(), posts);
}

/// The acceptance test: a 2,000-lab batch killed at random points several times and
/// resumed each time ends with exactly 2,000 Observations, and the journal agrees item by item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_killed_at_random_points_and_resumed_submits_every_lab_exactly_once() {
    const N: usize = 2_000;
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.sqlite3");
    let crid = new_crid(&sb).await;
    let file = csv(dir.path(), N);
    // Output goes to files, not pipes: a run that finishes while nobody reads its report must
    // not block writing it (and so never exit).
    let outputs = dir.path().to_owned();
    let start = |sb: &Sandbox, run: usize| {
        let (out, err) = (
            outputs.join(format!("run-{run}.out")),
            outputs.join(format!("run-{run}.err")),
        );
        let mut cmd = bin();
        cibmtr_env(&mut cmd, sb);
        cmd.args(["labs", "submit", "--json", "--crid", &crid, "--csv"])
            .arg(&file)
            .args(["--concurrency", "8", "--resume", "--journal"])
            .arg(&journal)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        (cmd.spawn().unwrap(), out, err)
    };
    // A seed from the clock, printed, so a failure can be understood.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    eprintln!("kill-point seed {seed}");
    let mut rng = seed;
    let mut next = move |below: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % below
    };

    // The test's own view of the journal, read while the runs write it.
    let watch = Journal::open(&journal).unwrap();
    let mut batch_ids = Vec::new();
    let mut kills = 0;
    let mut created_before = 0u64;
    // Four kills: the first at a random instant (possibly before anything is sent), then each
    // once the journal shows a random number of further labs created.
    for round in 0..4 {
        let (mut child, _, err) = start(&sb, round);
        let killed = tokio::task::spawn_blocking({
            let watch = watch.clone();
            // Short of the end, so that the run is killed before it finishes.
            let target = (created_before + 50 + next(400)).min(N as u64 - 150);
            let instant = Duration::from_millis(next(600));
            move || {
                let started = Instant::now();
                loop {
                    if let Ok(Some(_)) = child.try_wait() {
                        return (child, false);
                    }
                    let reached = if round == 0 {
                        started.elapsed() >= instant
                    } else {
                        created(&watch) >= target
                    };
                    if reached {
                        child.kill().unwrap(); // SIGKILL
                        return (child, true);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
        .await
        .unwrap();
        let (mut child, was_killed) = killed;
        child.wait().unwrap();
        let stderr = std::fs::read_to_string(&err).unwrap();
        if let Some(id) = stderr.lines().find_map(|l| {
            l.strip_prefix("journal: batch ")
                .or_else(|| l.strip_prefix("journal: resuming batch "))
                .and_then(|r| r.split_whitespace().next())
        }) {
            batch_ids.push(id.to_owned());
        }
        if was_killed {
            kills += 1;
        }
        created_before = created(&watch);
        eprintln!(
            "round {round}: killed {was_killed}, {created_before} created so far, {} Observations",
            sb.observations().len()
        );
    }
    assert!(kills >= 3, "only {kills} runs were killed mid-batch");

    // The last run finishes.
    let (mut child, out, err) = start(&sb, 4);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(report["failed"], 0);
    assert_eq!(
        report["created"].as_u64().unwrap() + report["already_present"].as_u64().unwrap(),
        N as u64
    );
    let batch = report["batch_id"].as_str().unwrap().to_owned();
    batch_ids.push(batch.clone());
    batch_ids.dedup();
    assert_eq!(
        batch_ids,
        vec![batch.clone()],
        "every run continued one batch"
    );

    // The server: exactly N Observations, one per lab.
    let observations = sb.observations();
    assert_eq!(
        observations.len(),
        N,
        "exactly {N} Observations on the server"
    );
    let on_server: HashMap<String, String> = observations
        .iter()
        .map(|o| {
            (
                submission_id(o).expect("every Observation carries its submission id"),
                o["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(on_server.len(), N, "no lab twice");

    // The journal agrees item by item: each line created (by this batch, in one run or another),
    // under the server's id for its content hash.
    let j = Journal::open(&journal).unwrap();
    let summary = j.batch(&batch).unwrap();
    assert_eq!(summary.status(), "complete");
    let items = j.items(&batch).unwrap();
    assert_eq!(items.len(), N);
    for it in &items {
        let sid = it.submission_id.as_ref().unwrap();
        assert_eq!(
            it.state,
            JournalState::Created,
            "line {} is {:?}",
            it.item,
            it.state
        );
        assert_eq!(
            it.server_id.as_ref(),
            on_server.get(sid),
            "line {}: the journal's server id is the server's",
            it.item
        );
        assert!(it.attempts >= 1 && it.sent_at.is_some() && it.done_at.is_some());
    }
    let lines: std::collections::BTreeSet<u64> = items.iter().map(|i| i.item).collect();
    assert_eq!(lines, (2..N as u64 + 2).collect(), "one item per CSV line");
}

/// Labs the journal records as created, read while a run may be writing.
fn created(j: &Journal) -> u64 {
    j.batches()
        .ok()
        .and_then(|b| b.first().map(|b| b.created))
        .unwrap_or(0)
}
