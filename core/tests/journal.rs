//! The submission journal with `submit_labs`, in process, against the sandbox: what it records
//! before and after each request, and how a resumed batch finishes without sending anything
//! twice. (The CLI's tests kill a real `labs submit` process at random points.)
use std::collections::HashMap;
use std::time::Duration;

use cibmtr_fhir::Error;
use cibmtr_fhir::auth::PasswordGrant;
use cibmtr_fhir::cibmtr::{
    CibmtrClient, Demographics, ItemStatus, LabResult, SUBMISSION_ID_SYSTEM, SubmitOptions,
};
use cibmtr_fhir::journal::{BatchInfo, Journal, JournalState};
use cibmtr_fhir_sandbox::{DropMode, Fault, Route, Sandbox, SandboxConfig};
use serde_json::Value;

async fn setup(config: SandboxConfig) -> (Sandbox, CibmtrClient, i64) {
    let sb = Sandbox::start(SandboxConfig {
        okta_rate_per_second: 1000,
        ..config
    })
    .await
    .unwrap();
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
        .item_attempts(2)
        .build()
        .unwrap();
    let crid = client
        .register_crid(&Demographics::new("Jo", "Journal", "1970-01-31", "F"))
        .await
        .unwrap();
    client.ensure_patient(crid).await.unwrap();
    (sb, client, crid)
}

fn labs(n: usize) -> Vec<LabResult> {
    (0..n)
        .map(|i| {
            LabResult::new(
                "718-7",
                10.0 + i as f64 / 100.0,
                "g/dL",
                "2024-05-01T08:30:00-05:00",
            )
        })
        .collect()
}

fn with(batch: &cibmtr_fhir::journal::JournalBatch) -> SubmitOptions {
    SubmitOptions {
        journal: Some(batch.clone().into()),
        ..Default::default()
    }
}

/// Submits `n` labs in `batch` while the server answers half of the creates with a 503.
async fn half_failing(
    sb: &Sandbox,
    client: &CibmtrClient,
    crid: i64,
    batch: &cibmtr_fhir::journal::JournalBatch,
    n: usize,
) -> (Vec<LabResult>, cibmtr_fhir::cibmtr::SubmissionReport) {
    sb.set_fault(
        Route::ObservationCreate,
        Fault {
            status: 503,
            share: 0.5,
            ..Default::default()
        },
    );
    let input = labs(n);
    let report = client
        .submit_labs(crid, input.clone(), &with(batch))
        .await
        .unwrap();
    sb.clear_faults();
    (input, report)
}

fn on_server(sb: &Sandbox) -> HashMap<String, String> {
    sb.observations()
        .iter()
        .map(|o| {
            let sid = o["identifier"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["system"] == SUBMISSION_ID_SYSTEM)
                .and_then(|i| i["value"].as_str())
                .unwrap()
                .to_owned();
            (sid, o["id"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_is_recorded_with_state_server_id_and_times() {
    let (sb, client, crid) = setup(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path().join("j.sqlite3")).unwrap();
    let batch = journal
        .start_batch(&BatchInfo {
            source: Some("unit test".into()),
            label: Some("first".into()),
            ..Default::default()
        })
        .unwrap();
    let mut input: Vec<Result<LabResult, Error>> = labs(30).into_iter().map(Ok).collect();
    input.push(Ok(LabResult::new(
        "718-7",
        1.0,
        "furlongs",
        "2024-05-01T08:30:00Z",
    )));
    input.push(Ok(labs(1).remove(0))); // the same content as item 0
    let report = client
        .submit_lab_inputs(crid, input, &with(&batch))
        .await
        .unwrap();
    assert_eq!(report.batch_id.as_deref(), Some(batch.id()));
    assert_eq!(report.to_json()["batch_id"], batch.id());
    assert_eq!(
        (report.created, report.already_present, report.failed),
        (30, 1, 1)
    );
    let items = journal.items(batch.id()).unwrap();
    assert_eq!(items.len(), 32);
    for (it, r) in items.iter().zip(&report.items) {
        assert_eq!(it.item, r.index as u64);
        assert_eq!(it.state, JournalState::from(r.status));
        assert_eq!(it.server_id, r.id);
        assert_eq!(it.submission_id, r.submission_id);
        assert_eq!(it.crid, Some(crid));
        assert!(it.done_at.is_some(), "item {} has no outcome time", it.item);
    }
    assert_eq!(items[30].state, JournalState::Failed);
    assert_eq!(items[30].error_kind.as_deref(), Some("VALIDATION"));
    assert_eq!(items[31].state, JournalState::AlreadyPresent);
    assert_eq!(items[31].server_id, items[0].server_id);
    assert_eq!(items[0].attempts, 1);
    assert!(items[0].sent_at.as_ref().unwrap() <= items[0].done_at.as_ref().unwrap());
    assert_eq!(items[0].lab.as_ref().unwrap()["unit"], "g/dL");
    let summary = journal.batch(batch.id()).unwrap();
    assert_eq!(summary.status(), "failures");
    assert_eq!(summary.label.as_deref(), Some("first"));
    assert_eq!(
        (summary.total, summary.created, summary.failed),
        (32, 30, 1)
    );

    // A second submission in the same batch takes the next item numbers.
    let more = client
        .submit_labs(crid, labs(35), &with(&batch))
        .await
        .unwrap();
    assert_eq!((more.created, more.already_present), (5, 30));
    let items = journal.items(batch.id()).unwrap();
    assert_eq!(items.len(), 67);
    assert_eq!(items.last().unwrap().item, 66);
    assert_eq!(sb.observations().len(), 35);

    // Exports.
    let json = journal.export_json(batch.id()).unwrap();
    assert_eq!(json["items"].as_array().unwrap().len(), 67);
    let mut csv = Vec::new();
    journal.export_csv(batch.id(), &mut csv).unwrap();
    let text = String::from_utf8(csv).unwrap();
    assert_eq!(text.lines().count(), 68);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with("batch_id,item,crid,submission_id,state")
    );
}

/// A submission dropped mid-way (the process's view of a crash): the journal shows what was
/// created, what was in flight and what was never sent; resuming sends only the rest, and every
/// lab ends on the server once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_batch_resumes_without_sending_anything_twice() {
    let (sb, client, crid) = setup(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path().join("j.sqlite3")).unwrap();
    let batch = journal.start_batch(&BatchInfo::default()).unwrap();
    let input = labs(300);
    // Slow creates, so the submission is cut off with requests in flight.
    sb.set_fault(
        Route::ObservationCreate,
        Fault {
            delay: Duration::from_millis(40),
            ..Default::default()
        },
    );
    let cut = tokio::time::timeout(
        Duration::from_millis(700),
        client.submit_labs(crid, input.clone(), &with(&batch)),
    )
    .await;
    assert!(cut.is_err(), "the submission was cut off");
    // The requests in flight reach the server and finish there.
    tokio::time::sleep(Duration::from_millis(200)).await;
    sb.clear_faults();
    let picture = journal.batch(batch.id()).unwrap();
    assert_eq!(picture.status(), "incomplete");
    assert!(picture.created > 0, "{picture:?}");
    assert!(picture.pending > 0, "{picture:?}");
    assert_eq!(picture.total, 300);
    let created_before = sb.observations().len() as u64;
    assert!(
        created_before >= picture.created,
        "the server has at least what the journal saw created"
    );
    assert!(
        created_before <= picture.created + picture.sending,
        "nothing reached the server that the journal did not mark as sending first"
    );

    // Resume: a new handle, as a new process would have.
    let journal = Journal::open(journal.path()).unwrap();
    let resumed = journal.resume_batch(batch.id()).unwrap();
    let posts_before = sb.requests(Route::ObservationCreate);
    let report = client
        .submit_labs(crid, input.clone(), &with(&resumed))
        .await
        .unwrap();
    assert_eq!(report.failed, 0);
    assert_eq!(report.created, 300, "every lab was created by this batch");
    let posts = sb.requests(Route::ObservationCreate) - posts_before;
    assert_eq!(
        posts,
        300 - created_before,
        "only the labs the server did not have were sent"
    );
    let server = on_server(&sb);
    assert_eq!(server.len(), 300);
    assert_eq!(sb.observations().len(), 300);
    let items = journal.items(batch.id()).unwrap();
    for it in &items {
        assert_eq!(it.state, JournalState::Created);
        assert_eq!(
            it.server_id.as_ref(),
            server.get(it.submission_id.as_ref().unwrap())
        );
    }
    let noted = report
        .items
        .iter()
        .filter(|i| i.warnings.iter().any(|w| w.contains("earlier")))
        .count() as u64;
    assert_eq!(
        noted, created_before,
        "the report says which an earlier run did"
    );

    // Resuming a complete batch sends nothing.
    let again = client
        .submit_labs(
            crid,
            input,
            &with(&journal.resume_batch(batch.id()).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(again.created, 300);
    assert_eq!(sb.requests(Route::ObservationCreate) - posts_before, posts);
}

/// Failures are recorded with their error; resuming tries them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_items_are_recorded_and_retried_on_resume() {
    let (sb, client, crid) = setup(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path().join("j.sqlite3")).unwrap();
    let batch = journal.start_batch(&BatchInfo::default()).unwrap();
    let (input, first) = half_failing(&sb, &client, crid, &batch, 100).await;
    assert!(first.failed > 0, "some items failed");
    let items = journal.items(batch.id()).unwrap();
    let failed: Vec<_> = items
        .iter()
        .filter(|i| i.state == JournalState::Failed)
        .collect();
    assert_eq!(failed.len(), first.failed);
    for f in &failed {
        assert_eq!(f.error_kind.as_deref(), Some("HTTP"));
        assert!(f.error.as_deref().unwrap().contains("503"));
        assert_eq!(f.attempts, 1);
    }
    let report = client
        .submit_labs(
            crid,
            input,
            &with(&journal.resume_batch(batch.id()).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!((report.created, report.failed), (100, 0));
    assert_eq!(sb.observations().len(), 100);
    let items = journal.items(batch.id()).unwrap();
    assert!(items.iter().all(|i| i.state == JournalState::Created));
    assert!(items.iter().all(|i| i.error.is_none()));
    assert_eq!(
        items.iter().filter(|i| i.attempts == 2).count(),
        first.failed,
        "the failed ones were sent a second time"
    );
    assert_eq!(journal.batch(batch.id()).unwrap().status(), "complete");
}

/// An answer lost on the way back (the server created the Observation): recorded as created
/// once the item is looked up, never sent twice; Bundles record per entry too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_and_bundles_are_recorded_per_item() {
    let (sb, client, crid) = setup(SandboxConfig {
        accept_bundles: true,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path().join("j.sqlite3")).unwrap();
    let batch = journal.start_batch(&BatchInfo::default()).unwrap();
    sb.set_fault(
        Route::ObservationCreate,
        Fault {
            drop_connection: Some(DropMode::AfterProcessing),
            share: 0.2,
            ..Default::default()
        },
    );
    let report = client
        .submit_labs(crid, labs(60), &with(&batch))
        .await
        .unwrap();
    sb.clear_faults();
    let server = on_server(&sb);
    assert_eq!(server.len(), report.created, "no duplicate");
    for it in journal.items(batch.id()).unwrap() {
        if it.state == JournalState::Created {
            assert_eq!(
                it.server_id.as_ref(),
                server.get(it.submission_id.as_ref().unwrap())
            );
        }
    }
    // Bundles.
    let bundled = journal.start_batch(&BatchInfo::default()).unwrap();
    let options = SubmitOptions {
        use_bundles: true,
        bundle_size: 7,
        ..with(&bundled)
    };
    let report = client.submit_labs(crid, labs(90), &options).await.unwrap();
    assert_eq!(report.failed, 0);
    let items = journal.items(bundled.id()).unwrap();
    assert_eq!(items.len(), 90);
    let server = on_server(&sb);
    for (it, r) in items.iter().zip(&report.items) {
        assert_eq!(it.state, JournalState::from(r.status));
        assert!(it.state.is_done());
        assert_eq!(
            it.server_id.as_ref(),
            server.get(it.submission_id.as_ref().unwrap())
        );
    }
    assert_eq!(
        items
            .iter()
            .filter(|i| i.state == JournalState::Created)
            .count(),
        30
    );
}

/// A resumed batch must be given the same items; otherwise nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_with_other_input_is_refused_before_anything_is_sent() {
    let (sb, client, crid) = setup(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path().join("j.sqlite3")).unwrap();
    let batch = journal.start_batch(&BatchInfo::default()).unwrap();
    client
        .submit_labs(crid, labs(10), &with(&batch))
        .await
        .unwrap();
    let mut changed = labs(10);
    changed[4].value = 99.0;
    let posts = sb.requests(Route::ObservationCreate);
    let e = client
        .submit_labs(
            crid,
            changed,
            &with(&journal.resume_batch(batch.id()).unwrap()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), cibmtr_fhir::ErrorKind::Validation);
    assert!(e.to_string().contains("item 4"), "{e}");
    assert_eq!(sb.requests(Route::ObservationCreate), posts);
    // Unknown batch; a numbered part with the wrong count; numbers used twice.
    assert!(journal.resume_batch("nope").is_err());
    let b = journal.start_batch(&BatchInfo::default()).unwrap();
    let wrong = SubmitOptions {
        journal: Some(b.numbered(vec![1, 2])),
        ..Default::default()
    };
    assert_eq!(
        client
            .submit_labs(crid, labs(3), &wrong)
            .await
            .unwrap_err()
            .kind(),
        cibmtr_fhir::ErrorKind::Validation
    );
    let twice = SubmitOptions {
        journal: Some(b.numbered(vec![7, 7])),
        ..Default::default()
    };
    let e = client.submit_labs(crid, labs(2), &twice).await.unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
    let _: Value = journal.export_json(batch.id()).unwrap();
    assert!(matches!(
        client
            .submit_labs(crid, labs(1), &SubmitOptions::default())
            .await
            .unwrap()
            .items[0]
            .status,
        ItemStatus::AlreadyPresent
    ));
}

/// Two handles (two processes) on one file, and a file from a newer SDK refused.
#[test]
fn journals_share_a_file_and_refuse_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite3");
    let a = Journal::open(&path).unwrap();
    let b = Journal::open(&path).unwrap();
    let x = a.start_batch(&BatchInfo::default()).unwrap();
    let y = b.start_batch(&BatchInfo::default()).unwrap();
    assert_ne!(x.id(), y.id());
    assert_eq!(a.batches().unwrap().len(), 2);
    // A batch with no item yet is empty; one that expects more items than it has is incomplete;
    // both are found again by their input's hash.
    assert_eq!(a.batch(x.id()).unwrap().status(), "empty");
    let z = a
        .start_batch(&BatchInfo {
            source_sha256: Some("abc".into()),
            expected_items: Some(5),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(a.batch(z.id()).unwrap().status(), "incomplete");
    assert_eq!(a.resumable_batch("abc").unwrap().as_deref(), Some(z.id()));
    assert_eq!(a.resumable_batch("def").unwrap(), None);
    drop((a, b, x, y, z));
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(c);
    let e = Journal::open(&path).unwrap_err();
    assert!(e.to_string().contains("newer"), "{e}");
}

/// Reading a journal (`journal list`, the packages' readers) never creates or changes a file: a
/// missing path and a database that is not a journal are refused, the latter left as it was.
#[test]
fn open_existing_reads_journals_and_changes_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none").join("j.sqlite3");
    let e = Journal::open_existing(&missing).unwrap_err();
    assert!(e.to_string().contains("no such file"), "{e}");
    assert!(!missing.parent().unwrap().exists());

    let other = dir.path().join("other.sqlite3");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE notes (text TEXT)")
        .unwrap();
    let e = Journal::open_existing(&other).unwrap_err();
    assert!(e.to_string().contains("not a submission journal"), "{e}");
    let tables: Vec<String> = rusqlite::Connection::open(&other)
        .unwrap()
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, ["notes"]);

    let path = dir.path().join("j.sqlite3");
    let id = Journal::open(&path)
        .unwrap()
        .start_batch(&BatchInfo::default())
        .unwrap()
        .id()
        .to_owned();
    let read = Journal::open_existing(&path).unwrap();
    assert_eq!(read.batches().unwrap()[0].id, id);
}

/// A new batch records its first inputs as being sent in one transaction and the rest (pending)
/// in a second one, while the first requests go: if the second cannot be written (an item number
/// another part of the batch already holds), nothing after the first inputs is sent, and the
/// report says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lab_leaves_without_its_row_when_the_second_insert_fails() {
    let (sb, client, crid) = setup(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path().join("j.sqlite3")).unwrap();
    let batch = journal.start_batch(&BatchInfo::default()).unwrap();
    let all = labs(310);
    let first = SubmitOptions {
        journal: Some(batch.numbered((1000..1010).collect())),
        ..Default::default()
    };
    let report = client
        .submit_labs(crid, all[..10].to_vec(), &first)
        .await
        .unwrap();
    assert_eq!(report.created, 10);
    // 300 inputs: the first 75 (a quarter, at least 64) are the first insert; number 1005,
    // already the batch's, is at input 200.
    let mut numbers: Vec<u64> = (0..300).collect();
    numbers[200] = 1005;
    let second = SubmitOptions {
        journal: Some(batch.numbered(numbers)),
        ..Default::default()
    };
    let before = sb.observations().len();
    let report = client
        .submit_labs(crid, all[10..].to_vec(), &second)
        .await
        .unwrap();
    assert_eq!(report.created, 75, "the first insert's items went");
    assert_eq!(report.failed, 225, "none of the others");
    assert_eq!(sb.observations().len(), before + 75);
    let e = report.items[299].error.as_ref().unwrap();
    assert!(e.to_string().contains("used twice"), "{e}");
    // The journal holds the 10 + 75 created, nothing else of the second part.
    let b = journal.batch(batch.id()).unwrap();
    assert_eq!((b.total, b.created), (85, 85), "{b:?}");
}

/// A journal written by an SDK with schema version 1 (each item's state updated in its row of an
/// `items` table) is migrated when it is opened: it reads the same, and its batch resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_journal_is_migrated_and_resumes() {
    let (sb, client, crid) = setup(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite3");
    let journal = Journal::open(&path).unwrap();
    let batch = journal.start_batch(&BatchInfo::default()).unwrap();
    let (input, first) = half_failing(&sb, &client, crid, &batch, 300).await;
    assert!(first.failed > 0 && first.created > 0, "{first:?}");
    let before = journal.items(batch.id()).unwrap();
    let summary = journal.batch(batch.id()).unwrap();
    let id = batch.id().to_owned();
    drop((journal, batch));

    // The same file as version 1 wrote it: items, marks and outcomes in the item rows, which are
    // the `items` table; no other table.
    let c = rusqlite::Connection::open(&path).unwrap();
    let marks: i64 = c
        .query_row("SELECT count(*) FROM marks", [], |r| r.get(0))
        .unwrap();
    assert!(marks > 0, "items past the first insert were marked");
    c.execute_batch(
        "BEGIN IMMEDIATE;
         INSERT INTO item_rows (batch_id, item, crid, submission_id, state, server_id, error_kind,
             error, attempts, lab, created_at, sent_at, done_at)
             SELECT batch_id, item, crid, submission_id, state, server_id, error_kind, error,
                 attempts, lab, created_at, sent_at, done_at FROM part_items;
         UPDATE item_rows SET state = 'sending', sent_at = m.sent_at, attempts = attempts + 1,
             error_kind = NULL, error = NULL
             FROM marks m WHERE m.batch_id = item_rows.batch_id
             AND item_rows.item BETWEEN m.first AND m.last;
         UPDATE item_rows SET state = o.state, server_id = o.server_id,
             error_kind = o.error_kind, error = o.error, done_at = o.done_at
             FROM outcomes o WHERE o.batch_id = item_rows.batch_id AND o.item = item_rows.item;
         DROP VIEW items; DROP VIEW part_items;
         DROP TABLE marks; DROP TABLE outcomes; DROP TABLE parts; DROP TABLE numbers;
         ALTER TABLE item_rows RENAME TO items;
         CREATE INDEX items_by_submission_id ON items(submission_id);
         PRAGMA user_version = 1;
         COMMIT;",
    )
    .unwrap();
    let v1: Vec<(u64, String, u32)> = c
        .prepare("SELECT item, state, attempts FROM items ORDER BY item")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<(u64, String, u32)> = before
        .iter()
        .map(|i| (i.item, i.state.as_str().to_owned(), i.attempts))
        .collect();
    assert_eq!(v1, expected, "the folded rows are what the view showed");
    drop(c);

    let journal = Journal::open(&path).unwrap();
    assert_eq!(journal.items(&id).unwrap(), before, "it reads the same");
    assert_eq!(journal.batch(&id).unwrap(), summary);
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);

    let report = client
        .submit_labs(crid, input, &with(&journal.resume_batch(&id).unwrap()))
        .await
        .unwrap();
    assert_eq!((report.created, report.failed), (300, 0));
    assert_eq!(sb.observations().len(), 300, "nothing sent twice");
    let items = journal.items(&id).unwrap();
    let server = on_server(&sb);
    for (now, was) in items.iter().zip(&before) {
        assert_eq!(now.state, JournalState::Created);
        assert_eq!(
            server.get(now.submission_id.as_deref().unwrap()),
            now.server_id.as_ref()
        );
        let sent_again = was.state == JournalState::Failed;
        assert_eq!(now.attempts, was.attempts + u32::from(sent_again));
        if !sent_again {
            assert_eq!(now.server_id, was.server_id);
            assert_eq!(now.done_at, was.done_at);
        }
    }
    assert_eq!(journal.batch(&id).unwrap().status(), "complete");
}
