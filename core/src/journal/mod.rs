//! The submission journal: an embedded SQLite file that records every bulk submission, item by
//! item, before and after each request, so that a crash, a killed process or a laptop that went
//! to sleep leaves an exact picture of what went to CIBMTR, when, and under which server ids; and
//! so that an interrupted batch can be resumed without sending anything twice.
//!
//! ```no_run
//! # async fn demo(client: cibmtr_fhir::cibmtr::CibmtrClient,
//! #               labs: Vec<cibmtr_fhir::cibmtr::LabResult>) -> cibmtr_fhir::Result<()> {
//! use cibmtr_fhir::cibmtr::SubmitOptions;
//! use cibmtr_fhir::journal::{BatchInfo, Journal};
//! let journal = Journal::open("journal.sqlite3")?;
//! let batch = journal.start_batch(&BatchInfo::default())?;
//! let options = SubmitOptions { journal: Some(batch.clone().into()), ..Default::default() };
//! let report = client.submit_labs(3989144, labs.clone(), &options).await?;
//! // Later, after a crash: the same labs, the same batch; nothing is sent twice.
//! let batch = journal.resume_batch(batch.id())?;
//! let options = SubmitOptions { journal: Some(batch.into()), ..Default::default() };
//! let report = client.submit_labs(3989144, labs, &options).await?;
//! # let _ = report; Ok(()) }
//! ```
//!
//! ## What is recorded
//!
//! One row per batch (`batches`) and one per input item (`items`): the item's number in the batch
//! (its index, or its CSV line for `labs submit`), the CRID, the content hash the Observation
//! carries as its submission identifier, the lab as sent (after checks and unit conversion), the
//! state, the server's Observation id, the error (kind and message), the number of times it was
//! sent, and when it was recorded, sent and answered (UTC, milliseconds).
//!
//! `items` is a view (schema version 2): a submission records its items as one row per part
//! (`parts`), each `sending` mark as one row per run of consecutive item numbers (`marks`) and
//! each answer as a row (`outcomes`), so that it appends a few rows instead of writing and then
//! rewriting one per item; the view reads them as one row per item. A resumed batch first folds
//! them into rows of their own (`item_rows`). A version 1 journal (one `items` table updated in
//! place) is migrated when it is opened.
//!
//! States: `pending` (recorded, not sent), `sending` (the request is about to leave or has left
//! and no answer is recorded: after a crash this item is *in doubt* until the next run asks the
//! server), `created`, `already_present` (the server had it, or an earlier item of the batch had
//! the same content), `failed` (the error says why; resuming tries it again).
//!
//! ## Durability
//!
//! WAL mode with `synchronous=NORMAL`: a committed write survives the process being killed at any
//! point; a power cut may lose the last writes, which a resume then finds on the server by content
//! hash. The "sending" mark of an item is committed *before* its request leaves (marks are made a
//! window of items ahead, in the background, so requests rarely wait for them; a new batch's
//! first inputs, a quarter of them up to 512, are recorded as being sent by the insert of their
//! rows, and the other rows are written while those first requests go). Writes go through
//! one writer thread that commits whatever is queued in one transaction (group commit), so the
//! journal costs little even at high concurrency. The file is created with mode 0600: it holds
//! lab values (de-identified: CRIDs, not names).
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::{Value, json};

use crate::cibmtr::{ItemStatus, LabResult};
use crate::error::{Error, Result};

mod export;
mod fork_gate;

pub use export::{CSV_COLUMNS, ExportFormat};

/// Schema version, in `PRAGMA user_version`. Version 1 wrote one row per item into an `items`
/// table and updated it in place at each mark and answer; version 2 (this one) writes a
/// submission's items as one row per part and appends marks and answers, and `items` is a view
/// that reads the same as the table did. A version 1 file is migrated when it is opened for
/// writing.
const SCHEMA_VERSION: i64 = 2;

/// The tables and the views.
///
/// - `numbers`: every item's number in its batch, the key that makes a number used twice fail.
/// - `parts`: a submission's items as recorded before anything was sent, one row per part (a
///   JSON array, an element `[item, submission_id, lab, error_kind, error]` per item), all
///   `pending`, or all `sending` (the first inputs of a new batch: their insert is their mark);
///   an item with a check's error is `failed`. `part_items` reads them one row per item.
/// - `item_rows`: items one row each, as version 1 kept them: rows a resumed batch folded (see
///   [`FOLD`]), rejected inputs, and rows of version 1 files.
/// - `marks`: one row per run of consecutive item numbers marked `sending` together.
/// - `outcomes`: the answer for an item.
///
/// An item has at most one mark and one outcome that are not folded into its row (a resumed
/// batch folds them before it marks anything), and the outcome comes after the mark, so the
/// rule of the `items` view is simple: the outcome if any, else the mark if any, else the row.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS batches (
    id            TEXT PRIMARY KEY,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    ccn           TEXT,
    server        TEXT,
    source        TEXT,
    source_sha256 TEXT,
    label         TEXT,
    expected      INTEGER,
    sdk_version   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_by_source ON batches(source_sha256, created_at);
CREATE TABLE IF NOT EXISTS numbers (
    batch_id      TEXT NOT NULL,
    item          INTEGER NOT NULL,
    PRIMARY KEY (batch_id, item)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parts (
    batch_id      TEXT NOT NULL REFERENCES batches(id),
    crid          INTEGER,
    state         TEXT NOT NULL CHECK (state IN ('pending','sending')),
    created_at    TEXT NOT NULL,
    sent_at       TEXT,
    items         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS parts_by_batch ON parts(batch_id);
CREATE TABLE IF NOT EXISTS item_rows (
    batch_id      TEXT NOT NULL REFERENCES batches(id),
    item          INTEGER NOT NULL,
    crid          INTEGER,
    submission_id TEXT,
    state         TEXT NOT NULL
                  CHECK (state IN ('pending','sending','created','already_present','failed')),
    server_id     TEXT,
    error_kind    TEXT,
    error         TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    lab           TEXT,
    created_at    TEXT NOT NULL,
    sent_at       TEXT,
    done_at       TEXT,
    PRIMARY KEY (batch_id, item)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS marks (
    batch_id      TEXT NOT NULL,
    first         INTEGER NOT NULL,
    last          INTEGER NOT NULL,
    sent_at       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS marks_by_item ON marks(batch_id, first);
CREATE TABLE IF NOT EXISTS outcomes (
    batch_id      TEXT NOT NULL,
    item          INTEGER NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('created','already_present','failed')),
    server_id     TEXT,
    error_kind    TEXT,
    error         TEXT,
    done_at       TEXT NOT NULL,
    PRIMARY KEY (batch_id, item)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS part_items AS
SELECT p.batch_id AS batch_id,
    json_extract(e.value, '$[0]') AS item,
    p.crid AS crid,
    json_extract(e.value, '$[1]') AS submission_id,
    CASE WHEN json_extract(e.value, '$[3]') IS NULL THEN p.state ELSE 'failed' END AS state,
    NULL AS server_id,
    json_extract(e.value, '$[3]') AS error_kind,
    json_extract(e.value, '$[4]') AS error,
    CASE WHEN json_extract(e.value, '$[3]') IS NULL AND p.state = 'sending' THEN 1 ELSE 0 END
        AS attempts,
    json_extract(e.value, '$[2]') AS lab,
    p.created_at AS created_at,
    CASE WHEN json_extract(e.value, '$[3]') IS NULL THEN p.sent_at END AS sent_at,
    CASE WHEN json_extract(e.value, '$[3]') IS NOT NULL THEN p.created_at END AS done_at
FROM parts p, json_each(p.items) e;
CREATE VIEW IF NOT EXISTS items AS
WITH recorded AS (
    SELECT batch_id, item, crid, submission_id, state, server_id, error_kind, error, attempts,
        lab, created_at, sent_at, done_at
    FROM item_rows
    UNION ALL
    SELECT batch_id, item, crid, submission_id, state, server_id, error_kind, error, attempts,
        lab, created_at, sent_at, done_at
    FROM part_items
)
SELECT r.batch_id AS batch_id, r.item AS item, r.crid AS crid,
    r.submission_id AS submission_id,
    CASE WHEN o.state IS NOT NULL THEN o.state
         WHEN m.sent_at IS NOT NULL THEN 'sending' ELSE r.state END AS state,
    CASE WHEN o.state IS NOT NULL THEN o.server_id ELSE r.server_id END AS server_id,
    CASE WHEN o.state IS NOT NULL THEN o.error_kind
         WHEN m.sent_at IS NOT NULL THEN NULL ELSE r.error_kind END AS error_kind,
    CASE WHEN o.state IS NOT NULL THEN o.error
         WHEN m.sent_at IS NOT NULL THEN NULL ELSE r.error END AS error,
    r.attempts + (m.sent_at IS NOT NULL) AS attempts,
    r.lab AS lab, r.created_at AS created_at,
    coalesce(m.sent_at, r.sent_at) AS sent_at,
    CASE WHEN o.state IS NOT NULL THEN o.done_at ELSE r.done_at END AS done_at
FROM recorded r
LEFT JOIN outcomes o ON o.batch_id = r.batch_id AND o.item = r.item
LEFT JOIN marks m ON m.rowid = (
    SELECT k.rowid FROM marks k WHERE k.batch_id = r.batch_id AND k.first <= r.item
    ORDER BY k.first DESC, k.rowid DESC LIMIT 1
) AND m.last >= r.item;
";

/// Folds a batch's parts into item rows, then its marks and its outcomes into those rows, and
/// deletes what it folded: the `items` view reads the same before and after. Run before a
/// resumed batch records anything, so that an item never has two marks or two outcomes outside
/// its row.
const FOLD: &str = "
INSERT INTO item_rows (batch_id, item, crid, submission_id, state, server_id, error_kind, error,
    attempts, lab, created_at, sent_at, done_at)
    SELECT batch_id, item, crid, submission_id, state, server_id, error_kind, error, attempts,
        lab, created_at, sent_at, done_at
    FROM part_items WHERE batch_id = ?1;
DELETE FROM parts WHERE batch_id = ?1;
UPDATE item_rows SET state = 'sending', sent_at = m.sent_at, attempts = attempts + 1,
    error_kind = NULL, error = NULL
    FROM marks m WHERE m.batch_id = ?1 AND item_rows.batch_id = ?1
    AND item_rows.item BETWEEN m.first AND m.last;
UPDATE item_rows SET state = o.state, server_id = o.server_id, error_kind = o.error_kind,
    error = o.error, done_at = o.done_at
    FROM outcomes o WHERE o.batch_id = ?1 AND item_rows.batch_id = ?1 AND item_rows.item = o.item;
DELETE FROM marks WHERE batch_id = ?1;
DELETE FROM outcomes WHERE batch_id = ?1;
";

/// Creates the tables, or migrates a version 1 file (its `items` table becomes `item_rows`, as
/// it is, and gives `numbers` its item numbers), in one transaction: another process opening the file at the same time waits, then
/// finds it done.
fn set_up(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("BEGIN IMMEDIATE")?;
    let r = (|| {
        let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version == 1 {
            c.execute_batch(
                "ALTER TABLE items RENAME TO item_rows;
                 DROP INDEX IF EXISTS items_by_submission_id;",
            )?;
        }
        c.execute_batch(SCHEMA)?;
        if version == 1 {
            c.execute_batch(
                "INSERT INTO numbers (batch_id, item) SELECT batch_id, item FROM item_rows",
            )?;
        }
        c.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
    })();
    match r {
        Ok(()) => c.execute_batch("COMMIT"),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// See [`FOLD`].
fn fold(c: &Connection, batch_id: &str) -> rusqlite::Result<()> {
    for sql in FOLD.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        c.prepare_cached(sql)?.execute([batch_id])?;
    }
    Ok(())
}

/// Where an item stands in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JournalState {
    /// Recorded, not sent yet.
    Pending,
    /// Sent (or about to be) with no answer recorded: in doubt after a crash.
    Sending,
    Created,
    AlreadyPresent,
    Failed,
}

impl JournalState {
    pub fn as_str(self) -> &'static str {
        match self {
            JournalState::Pending => "pending",
            JournalState::Sending => "sending",
            JournalState::Created => "created",
            JournalState::AlreadyPresent => "already_present",
            JournalState::Failed => "failed",
        }
    }
    fn parse(s: &str) -> JournalState {
        match s {
            "sending" => JournalState::Sending,
            "created" => JournalState::Created,
            "already_present" => JournalState::AlreadyPresent,
            "failed" => JournalState::Failed,
            _ => JournalState::Pending,
        }
    }
    /// Whether the server holds the item (nothing left to do for it).
    pub fn is_done(self) -> bool {
        matches!(self, JournalState::Created | JournalState::AlreadyPresent)
    }
}

impl From<ItemStatus> for JournalState {
    fn from(s: ItemStatus) -> Self {
        match s {
            ItemStatus::Created => JournalState::Created,
            ItemStatus::AlreadyPresent => JournalState::AlreadyPresent,
            ItemStatus::Failed => JournalState::Failed,
        }
    }
}

/// What describes a new batch (all optional).
#[derive(Debug, Clone, Default)]
pub struct BatchInfo {
    /// Where the items came from: a file path, an application name.
    pub source: Option<String>,
    /// SHA-256 (hex) of the input file, so the batch of the same input can be found again.
    pub source_sha256: Option<String>,
    /// A free-text label for people.
    pub label: Option<String>,
    /// The centre the batch submits for.
    pub ccn: Option<String>,
    /// The server it submits to (the FHIR base URL).
    pub server: Option<String>,
    /// How many items the batch will have, if known (the rows of a CSV file): until that many
    /// are recorded, the batch counts as incomplete even if every recorded item is done.
    pub expected_items: Option<u64>,
}

/// One batch with its counts by state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSummary {
    pub id: String,
    pub created_at: String,
    pub updated_at: String,
    pub ccn: Option<String>,
    pub server: Option<String>,
    pub source: Option<String>,
    pub source_sha256: Option<String>,
    pub label: Option<String>,
    /// How many items the batch will have, if its creator said.
    pub expected: Option<u64>,
    /// Items recorded so far.
    pub total: u64,
    pub pending: u64,
    pub sending: u64,
    pub created: u64,
    pub already_present: u64,
    pub failed: u64,
}

impl BatchSummary {
    /// `complete` (every item is on the server), `incomplete` (items not recorded yet, never
    /// sent, or in doubt: the run was interrupted, or is still going), `failures` (finished with
    /// failed items) or `empty` (no item recorded).
    pub fn status(&self) -> &'static str {
        if self.pending + self.sending > 0 || self.expected.is_some_and(|e| self.total < e) {
            "incomplete"
        } else if self.total == 0 {
            "empty"
        } else if self.failed > 0 {
            "failures"
        } else {
            "complete"
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "status": self.status(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "ccn": self.ccn,
            "server": self.server,
            "source": self.source,
            "source_sha256": self.source_sha256,
            "label": self.label,
            "expected": self.expected,
            "total": self.total,
            "pending": self.pending,
            "sending": self.sending,
            "created": self.created,
            "already_present": self.already_present,
            "failed": self.failed,
        })
    }
}

/// One recorded item.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalItem {
    /// The item's number in the batch: its index, or its CSV line for `labs submit`.
    pub item: u64,
    pub crid: Option<i64>,
    /// The content hash the Observation carries (none for an item that failed its checks).
    pub submission_id: Option<String>,
    pub state: JournalState,
    /// The server's Observation id.
    pub server_id: Option<String>,
    /// The error's stable kind (`VALIDATION`, `HTTP`, ...).
    pub error_kind: Option<String>,
    pub error: Option<String>,
    /// How many runs sent it.
    pub attempts: u32,
    /// The lab as sent (after checks and unit conversion).
    pub lab: Option<Value>,
    pub created_at: String,
    pub sent_at: Option<String>,
    pub done_at: Option<String>,
}

impl JournalItem {
    pub fn to_json(&self) -> Value {
        json!({
            "item": self.item,
            "crid": self.crid.map(|c| c.to_string()),
            "submission_id": self.submission_id,
            "state": self.state.as_str(),
            "server_id": self.server_id,
            "error_kind": self.error_kind,
            "error": self.error,
            "attempts": self.attempts,
            "lab": self.lab,
            "created_at": self.created_at,
            "sent_at": self.sent_at,
            "done_at": self.done_at,
        })
    }
}

type Work = Box<dyn FnOnce(&Connection) -> rusqlite::Result<()> + Send>;
type Ack = Box<dyn FnOnce(Result<()>) + Send>;

struct Inner {
    path: PathBuf,
    tx: Mutex<mpsc::Sender<(Work, Option<Ack>)>>,
    /// Pieces nobody waits for (item outcomes), gathered without waking the writer for each.
    later: Later,
    reader: Mutex<Option<Connection>>,
    /// The process that opened it: a `fork()`ed child has neither its writer thread nor the
    /// right to use its connections, and must open the file again.
    pid: u32,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the reader is a SQLite call like any other (see `fork_gate`).
        let reader = self
            .reader
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if reader.is_some() {
            let _sqlite = fork_gate::enter();
            drop(reader);
        }
    }
}

/// See [`Inner::later`].
type Later = Arc<Mutex<Vec<Work>>>;

/// A journal file. Cheap to clone; clones share one writer thread. Several processes may use the
/// same file at once (SQLite's locking, WAL).
#[derive(Clone)]
pub struct Journal(Arc<Inner>);

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Journal").field(&self.0.path).finish()
    }
}

fn db_err(path: &Path, what: &str, e: impl fmt::Display) -> Error {
    Error::config(format!("journal {}: cannot {what}: {e}", path.display()))
}

/// Now, UTC, to the millisecond: `2024-05-01T13:30:00.123Z`.
pub(crate) fn now() -> String {
    // The same text as `format("%Y-%m-%dT%H:%M:%S%.3fZ")` without parsing a format string for
    // every row.
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn connect(path: &Path) -> Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| db_err(path, "open it", e))?;
    c.busy_timeout(Duration::from_secs(30))
        .map_err(|e| db_err(path, "configure it", e))?;
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
        .map_err(|e| db_err(path, "configure it", e))?;
    Ok(c)
}

impl Journal {
    /// Opens (creating it, mode 0600, and its folder) the journal at `path`. Handles to the same
    /// file in one process share one writer. Other processes may use the file at the same time;
    /// another SQLite library in *this* process (Python's `sqlite3` beside the Python package)
    /// must not open it while the SDK has it open: two copies of SQLite in one process do not
    /// see each other's locks.
    pub fn open(path: impl AsRef<Path>) -> Result<Journal> {
        let path = path.as_ref().to_owned();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| db_err(&path, "create its folder", e))?;
        }
        create_private(&path).map_err(|e| db_err(&path, "create it", e))?;
        let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        // `OPEN` is held across SQLite calls: inside the fork gate, so that a child never
        // inherits it locked either.
        let _sqlite = fork_gate::enter();
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = open
            .get(&canonical)
            .and_then(std::sync::Weak::upgrade)
            .filter(|i| i.pid == std::process::id())
        {
            return Ok(Journal(inner));
        }
        open.retain(|_, w| w.strong_count() > 0);
        let journal = Self::open_new(path)?;
        open.insert(canonical, Arc::downgrade(&journal.0));
        Ok(journal)
    }

    /// Opens an existing journal, to read it: unlike [`open`](Self::open), a missing file or a
    /// database that is not a journal is an error, and nothing is created or changed.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Journal> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(Error::config(format!(
                "journal {}: no such file (a submission with a journal makes one)",
                path.display()
            )));
        }
        let sqlite = fork_gate::enter();
        let c = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| db_err(path, "open it", e))?;
        let shape = c
            .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
            .and_then(|v| {
                c.query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type IN ('table', 'view') \
                     AND name IN ('batches', 'items')",
                    [],
                    |r| Ok((v, r.get::<_, i64>(0)?)),
                )
            })
            .map_err(|e| db_err(path, "read it", e))?;
        drop(c);
        drop(sqlite);
        if shape.0 < 1 || shape.1 != 2 {
            return Err(Error::config(format!(
                "journal {}: not a submission journal (it has no batches and items tables)",
                path.display()
            )));
        }
        Self::open(path)
    }

    /// A handle opened before `fork()` cannot be used in the child.
    fn this_process(&self) -> Result<()> {
        if self.0.pid == std::process::id() {
            return Ok(());
        }
        Err(Error::config(format!(
            "journal {}: opened in the parent of this fork()ed process; open it again here",
            self.0.path.display()
        )))
    }

    /// Called inside the fork gate (by `open`).
    fn open_new(path: PathBuf) -> Result<Journal> {
        let conn = connect(&path)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| db_err(&path, "read it", e))?;
        if version > SCHEMA_VERSION {
            return Err(Error::config(format!(
                "journal {}: written by a newer version of the SDK (schema {version})",
                path.display()
            )));
        }
        set_up(&conn).map_err(|e| db_err(&path, "set up its tables", e))?;
        let (tx, rx) = mpsc::channel();
        let later = Later::default();
        let (p, l) = (path.clone(), later.clone());
        std::thread::Builder::new()
            .name("cibmtr-journal".into())
            .spawn(move || writer(conn, rx, l, p))
            .map_err(|e| db_err(&path, "start its writer", e))?;
        Ok(Journal(Arc::new(Inner {
            path,
            tx: Mutex::new(tx),
            later,
            reader: Mutex::new(None),
            pid: std::process::id(),
        })))
    }

    /// The default journal: `$XDG_DATA_HOME/cibmtr-fhir/journal.sqlite3`, else
    /// `~/.local/share/cibmtr-fhir/journal.sqlite3`.
    pub fn default_path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("share"))
            })?;
        Some(base.join("cibmtr-fhir").join("journal.sqlite3"))
    }

    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// Queues `work`; `ack` is called once it is committed (or failed).
    fn send(&self, work: Work, ack: Option<Ack>) {
        if let Err(e) = self.this_process() {
            if let Some(ack) = ack {
                ack(Err(e));
            }
            return;
        }
        let tx = self.0.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(mpsc::SendError((_, Some(ack)))) = tx.send((work, ack)) {
            ack(Err(Error::config("the journal's writer has stopped")));
        }
    }

    /// Runs `work` in the writer and waits for its commit.
    async fn write(&self, work: Work) -> Result<()> {
        self.write_soon(work).await
    }

    /// Queues `work` now; the returned future resolves once it is committed.
    fn write_soon(&self, work: Work) -> impl Future<Output = Result<()>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(
            work,
            Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        );
        async move {
            rx.await
                .unwrap_or_else(|_| Err(Error::config("the journal's writer has stopped")))
        }
    }

    /// Runs `work` in the writer and blocks this thread until its commit.
    fn write_blocking(&self, work: Work) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        self.send(
            work,
            Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        );
        rx.recv()
            .unwrap_or_else(|_| Err(Error::config("the journal's writer has stopped")))
    }

    /// Queues `work` without waiting. It is committed with the writer's next transaction, before
    /// the pieces that transaction takes from the queue, so it must not depend on a piece that
    /// is still queued: an item's outcome is only recorded after its `sending` mark committed.
    /// Only the first piece gathered wakes the writer; the others ride along.
    fn write_later(&self, work: Work) {
        let first = {
            let mut later = self.0.later.lock().unwrap_or_else(|p| p.into_inner());
            later.push(work);
            later.len() == 1
        };
        if first {
            self.send(Box::new(|_| Ok(())), None);
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        self.this_process()?;
        let mut slot = self.0.reader.lock().unwrap_or_else(|p| p.into_inner());
        let _sqlite = fork_gate::enter();
        if slot.is_none() {
            *slot = Some(connect(&self.0.path)?);
        }
        f(slot.as_ref().expect("opened above")).map_err(|e| db_err(&self.0.path, "read it", e))
    }

    /// Records a new batch and returns it.
    pub fn start_batch(&self, info: &BatchInfo) -> Result<JournalBatch> {
        let id = format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            crate::auth::cache::hex(&rand::random::<[u8; 3]>())
        );
        let (i, info) = (id.clone(), info.clone());
        self.write_blocking(Box::new(move |c| {
            let t = now();
            c.execute(
                "INSERT INTO batches (id, created_at, updated_at, ccn, server, source, \
                 source_sha256, label, expected, sdk_version) \
                 VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    i,
                    t,
                    info.ccn,
                    info.server,
                    info.source,
                    info.source_sha256,
                    info.label,
                    info.expected_items.map(|e| e as i64),
                    env!("CARGO_PKG_VERSION")
                ],
            )
            .map(|_| ())
        }))?;
        Ok(JournalBatch::new(self.clone(), id, false))
    }

    /// An existing batch, to continue: items it records as on the server are not sent again, the
    /// others are (after asking the server about those in doubt).
    pub fn resume_batch(&self, id: &str) -> Result<JournalBatch> {
        let found: Option<String> = self.read(|c| {
            c.query_row("SELECT id FROM batches WHERE id = ?1", [id], |r| r.get(0))
                .optional()
        })?;
        let id = found
            .ok_or_else(|| Error::validation("batch", format!("no batch {id:?} in the journal")))?;
        Ok(JournalBatch::new(self.clone(), id, true))
    }

    /// The newest batch recorded for an input with this SHA-256 that has items left to do
    /// (incomplete or empty; a batch that finished with failures is not resumed this way: name
    /// it to retry its failed items), if any.
    pub fn resumable_batch(&self, source_sha256: &str) -> Result<Option<String>> {
        let ids: Vec<String> = self.read(|c| {
            let mut s = c.prepare(
                "SELECT id FROM batches WHERE source_sha256 = ?1 ORDER BY created_at DESC, id DESC",
            )?;
            s.query_map([source_sha256], |r| r.get(0))?.collect()
        })?;
        for id in ids {
            if matches!(self.batch(&id)?.status(), "incomplete" | "empty") {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Every batch, newest first.
    pub fn batches(&self) -> Result<Vec<BatchSummary>> {
        self.read(|c| {
            // One snapshot for the counts and the batches.
            let _snapshot = c.unchecked_transaction()?;
            let mut counts: HashMap<String, Counts> = HashMap::new();
            let mut s =
                c.prepare("SELECT batch_id, state, count(*) FROM items GROUP BY batch_id, state")?;
            let mut rows = s.query([])?;
            while let Some(r) = rows.next()? {
                counts
                    .entry(r.get(0)?)
                    .or_default()
                    .add(&r.get::<_, String>(1)?, r.get(2)?);
            }
            let mut s = c.prepare(&format!("{BATCH_SQL} ORDER BY created_at DESC, id DESC"))?;
            s.query_map([], |r| {
                let id: String = r.get(0)?;
                let n = counts.remove(&id).unwrap_or_default();
                summary_row(r, n)
            })?
            .collect()
        })
    }

    /// One batch.
    pub fn batch(&self, id: &str) -> Result<BatchSummary> {
        self.read(|c| {
            let _snapshot = c.unchecked_transaction()?;
            let mut n = Counts::default();
            let mut s = c.prepare_cached(
                "SELECT state, count(*) FROM items WHERE batch_id = ?1 GROUP BY state",
            )?;
            let mut rows = s.query([id])?;
            while let Some(r) = rows.next()? {
                n.add(&r.get::<_, String>(0)?, r.get(1)?);
            }
            c.query_row(&format!("{BATCH_SQL} WHERE id = ?1"), [id], |r| {
                summary_row(r, n)
            })
            .optional()
        })?
        .ok_or_else(|| Error::validation("batch", format!("no batch {id:?} in the journal")))
    }

    /// A batch's items, by item number.
    pub fn items(&self, id: &str) -> Result<Vec<JournalItem>> {
        self.batch(id)?;
        self.read(|c| {
            let mut s = c.prepare(&format!(
                "SELECT {ITEM_COLUMNS} FROM items WHERE batch_id = ?1 ORDER BY item"
            ))?;
            s.query_map([id], item_row)?.collect()
        })
    }
}

const BATCH_SQL: &str = "SELECT id, created_at, updated_at, ccn, server, source, source_sha256, \
    label, expected FROM batches";

/// A batch's items counted by state.
#[derive(Default)]
struct Counts {
    total: u64,
    pending: u64,
    sending: u64,
    created: u64,
    already_present: u64,
    failed: u64,
}

impl Counts {
    fn add(&mut self, state: &str, n: i64) {
        let n = n as u64;
        self.total += n;
        *match JournalState::parse(state) {
            JournalState::Pending => &mut self.pending,
            JournalState::Sending => &mut self.sending,
            JournalState::Created => &mut self.created,
            JournalState::AlreadyPresent => &mut self.already_present,
            JournalState::Failed => &mut self.failed,
        } += n;
    }
}

fn summary_row(r: &rusqlite::Row<'_>, n: Counts) -> rusqlite::Result<BatchSummary> {
    Ok(BatchSummary {
        id: r.get(0)?,
        created_at: r.get(1)?,
        updated_at: r.get(2)?,
        ccn: r.get(3)?,
        server: r.get(4)?,
        source: r.get(5)?,
        source_sha256: r.get(6)?,
        label: r.get(7)?,
        expected: r.get::<_, Option<i64>>(8)?.map(|e| e as u64),
        total: n.total,
        pending: n.pending,
        sending: n.sending,
        created: n.created,
        already_present: n.already_present,
        failed: n.failed,
    })
}

const ITEM_COLUMNS: &str = "item, crid, submission_id, state, server_id, error_kind, error, \
    attempts, lab, created_at, sent_at, done_at";

fn item_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JournalItem> {
    let lab: Option<String> = r.get(8)?;
    Ok(JournalItem {
        item: r.get::<_, i64>(0)? as u64,
        crid: r.get(1)?,
        submission_id: r.get(2)?,
        state: JournalState::parse(&r.get::<_, String>(3)?),
        server_id: r.get(4)?,
        error_kind: r.get(5)?,
        error: r.get(6)?,
        attempts: r.get(7)?,
        lab: lab.and_then(|l| serde_json::from_str(&l).ok()),
        created_at: r.get(9)?,
        sent_at: r.get(10)?,
        done_at: r.get(11)?,
    })
}

/// Creates `path` with mode 0600 if it does not exist (SQLite gives its `-wal` and `-shm` files
/// the same mode). An existing file is not opened here: closing a descriptor of a database file
/// drops every POSIX lock this process holds on it, including SQLite's own.
fn create_private(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    match o.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The journals open in this process, by canonical path: one writer thread and one pair of
/// connections per file, however many handles.
static OPEN: std::sync::LazyLock<Mutex<HashMap<PathBuf, std::sync::Weak<Inner>>>> =
    std::sync::LazyLock::new(Default::default);

/// How long the writer waits for more work before committing pieces nobody waits for (item
/// outcomes): they are then committed together, or with the next piece someone waits for.
const COMMIT_DELAY: Duration = Duration::from_millis(5);

/// The writer thread: takes whatever is queued, runs each piece under a savepoint (one failing
/// piece does not undo the others) and commits them together, with the pieces gathered by
/// [`Journal::write_later`] first. A piece someone waits for (a "sending" mark) is committed as
/// soon as the queue is empty; otherwise the writer waits up to [`COMMIT_DELAY`] for company, so
/// a busy submission commits a few times per window, not once per item, and its item outcomes
/// cost no wake-up each.
fn writer(conn: Connection, rx: mpsc::Receiver<(Work, Option<Ack>)>, later: Later, path: PathBuf) {
    let mut warned = false;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        let deadline = std::time::Instant::now() + COMMIT_DELAY;
        while group.len() < 4096 {
            match rx.try_recv() {
                Ok(m) => {
                    group.push(m);
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if group.iter().any(|(_, ack)| ack.is_some()) {
                break;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(m) => group.push(m),
                Err(_) => break,
            }
        }
        let _sqlite = fork_gate::enter();
        commit_group(&conn, &path, &later, group, &mut warned);
    }
    // Every handle is gone: what was gathered still goes in.
    let _sqlite = fork_gate::enter();
    commit_group(&conn, &path, &later, Vec::new(), &mut warned);
    drop(conn);
}

/// One transaction: the gathered pieces, then `group`; acknowledges the pieces waited for and
/// logs the first failure of a piece nobody waits for.
fn commit_group(
    conn: &Connection,
    path: &Path,
    later: &Later,
    group: Vec<(Work, Option<Ack>)>,
    warned: &mut bool,
) {
    let gathered = std::mem::take(&mut *later.lock().unwrap_or_else(|p| p.into_inner()));
    if gathered.is_empty() && group.is_empty() {
        return;
    }
    let group = gathered.into_iter().map(|w| (w, None)).chain(group);
    let mut outcomes: Vec<(Option<Ack>, Result<()>)> = Vec::new();
    let begun = statement(conn, "BEGIN IMMEDIATE");
    for (work, ack) in group {
        let r = match &begun {
            Err(e) => Err(db_err(path, "write it", e)),
            // A piece someone waits for runs under a savepoint, so its failure undoes it
            // alone; the others are single statements.
            Ok(()) if ack.is_some() => {
                run_piece(conn, work).map_err(|e| db_err(path, "write it", e))
            }
            Ok(()) => work(conn).map_err(|e| db_err(path, "write it", e)),
        };
        outcomes.push((ack, r));
    }
    if begun.is_ok()
        && let Err(e) = statement(conn, "COMMIT")
    {
        let _ = statement(conn, "ROLLBACK");
        for (_, r) in &mut outcomes {
            if r.is_ok() {
                *r = Err(db_err(path, "commit to it", &e));
            }
        }
    }
    for (ack, r) in outcomes {
        match ack {
            Some(ack) => ack(r),
            None => {
                if let Err(e) = r
                    && !*warned
                {
                    *warned = true;
                    tracing::warn!(error = %e, "journal write failed");
                }
            }
        }
    }
}

/// Runs one statement without parameters from the statement cache.
fn statement(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn run_piece(conn: &Connection, work: Work) -> rusqlite::Result<()> {
    statement(conn, "SAVEPOINT piece")?;
    match work(conn) {
        Ok(()) => statement(conn, "RELEASE piece"),
        Err(e) => {
            let _ = statement(conn, "ROLLBACK TO piece");
            let _ = statement(conn, "RELEASE piece");
            Err(e)
        }
    }
}

struct BatchInner {
    journal: Journal,
    id: String,
    /// Opened with [`Journal::resume_batch`]: items may already be recorded.
    resumed: bool,
    /// The next item number a part without numbers of its own takes.
    next: AtomicU64,
}

/// A batch of a [`Journal`]: pass it (as a [`JournalPart`]) in
/// [`SubmitOptions::journal`](crate::cibmtr::SubmitOptions::journal). Several submissions may
/// share a batch (the CLI makes one per CSV file, whatever the number of recipients); each takes
/// the next item numbers, or numbers of its own given with [`JournalBatch::numbered`].
#[derive(Clone)]
pub struct JournalBatch(Arc<BatchInner>);

impl fmt::Debug for JournalBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalBatch")
            .field("id", &self.0.id)
            .field("resumed", &self.0.resumed)
            .finish()
    }
}

impl JournalBatch {
    fn new(journal: Journal, id: String, resumed: bool) -> JournalBatch {
        JournalBatch(Arc::new(BatchInner {
            journal,
            id,
            resumed,
            next: AtomicU64::new(0),
        }))
    }

    pub fn id(&self) -> &str {
        &self.0.id
    }

    pub fn journal(&self) -> &Journal {
        &self.0.journal
    }

    /// Whether the batch was opened to be resumed.
    pub fn is_resumed(&self) -> bool {
        self.0.resumed
    }

    /// A part whose items carry these numbers (one per input item, unique in the batch), e.g.
    /// the CSV lines they came from.
    pub fn numbered(&self, numbers: Vec<u64>) -> JournalPart {
        JournalPart {
            batch: self.clone(),
            numbers: Some(numbers.into()),
        }
    }

    /// Records items that never reach a submission (a CSV row without a CRID) as failed.
    pub fn record_rejected(&self, rejected: Vec<(u64, Error)>) -> Result<()> {
        let (id, resumed) = (self.0.id.clone(), self.0.resumed);
        self.0.journal.write_blocking(Box::new(move |c| {
            let t = now();
            let sql = if resumed {
                // A row replaced must not keep a mark or an outcome of an earlier run.
                fold(c, &id)?;
                "INSERT OR REPLACE INTO item_rows (batch_id, item, state, error_kind, error, \
                 created_at, done_at) VALUES (?1, ?2, 'failed', ?3, ?4, ?5, ?5)"
            } else {
                "INSERT INTO item_rows (batch_id, item, state, error_kind, error, created_at, \
                 done_at) VALUES (?1, ?2, 'failed', ?3, ?4, ?5, ?5)"
            };
            let mut s = c.prepare_cached(sql)?;
            // A resumed batch may hold the number already (the same input, rejected again).
            let mut number = c.prepare_cached(if resumed {
                "INSERT OR IGNORE INTO numbers (batch_id, item) VALUES (?1, ?2)"
            } else {
                "INSERT INTO numbers (batch_id, item) VALUES (?1, ?2)"
            })?;
            for (item, e) in &rejected {
                s.execute(params![id, *item as i64, e.kind().code(), e.to_string(), t])?;
                number.execute(params![id, *item as i64])?;
            }
            Ok(())
        }))
    }

    /// Waits until everything recorded so far is committed.
    pub async fn flush(&self) -> Result<()> {
        self.0.journal.write(Box::new(|_| Ok(()))).await
    }
}

/// What [`SubmitOptions::journal`](crate::cibmtr::SubmitOptions::journal) takes: a batch, and
/// optionally the item numbers of the submission's inputs.
#[derive(Clone, Debug)]
pub struct JournalPart {
    batch: JournalBatch,
    numbers: Option<Arc<[u64]>>,
}

impl From<JournalBatch> for JournalPart {
    fn from(batch: JournalBatch) -> Self {
        JournalPart {
            batch,
            numbers: None,
        }
    }
}

/// An input item as the submission sees it before anything is sent.
pub(crate) struct NewItem<'a> {
    pub submission_id: Option<&'a str>,
    /// The lab as it will be sent.
    pub lab: Option<&'a LabResult>,
    pub error: Option<&'a Error>,
}

/// A row to insert: item number, submission id, lab JSON, and (kind, message) of a failed check.
type NewRow = (
    u64,
    Option<String>,
    Option<String>,
    Option<(String, String)>,
);

/// What the journal already knew of an item of a resumed batch.
#[derive(Debug, Clone)]
pub(crate) struct Prior {
    pub state: JournalState,
    pub server_id: Option<String>,
}

/// One submission's view of its batch: item numbers resolved.
pub(crate) struct Recorder {
    batch: JournalBatch,
    numbers: Arc<[u64]>,
    /// Inputs below this index were recorded as `sending` by the first insert.
    head: usize,
    /// The insert of the other rows.
    tail: Arc<Tail>,
}

impl JournalPart {
    pub fn batch(&self) -> &JournalBatch {
        &self.batch
    }

    /// Records the submission's items (`pending`, or `failed` with the error of a check), or, in a
    /// resumed batch, checks they are the items recorded and returns what the journal knew.
    ///
    /// The new rows are queued, not awaited: the returned [`Inserted`] resolves once the first
    /// of them are committed, and must be awaited before the submission records an outcome or
    /// sends anything (the submission's own lookups on the server overlap with the insert).
    ///
    /// In a new batch the first `head` inputs are recorded as being sent right away (their
    /// insert is their `sending` mark), and the other rows (`pending`) go in a second
    /// transaction, queued when the first commits: the first requests leave while it is written,
    /// and every later mark, being queued after it, finds its rows. A resumed batch inserts what
    /// it lacks in one transaction, all `pending`.
    pub(crate) fn begin(
        &self,
        crid: i64,
        items: &[NewItem<'_>],
        head: usize,
    ) -> Result<(Recorder, Vec<Option<Prior>>, Inserted)> {
        let numbers: Arc<[u64]> = match &self.numbers {
            Some(n) if n.len() == items.len() => {
                let mut seen = std::collections::HashSet::with_capacity(n.len());
                if let Some(twice) = n.iter().find(|k| !seen.insert(**k)) {
                    return Err(Error::validation(
                        "journal",
                        format!("item number {twice} is used twice in the part"),
                    ));
                }
                n.clone()
            }
            Some(n) => {
                return Err(Error::validation(
                    "journal",
                    format!(
                        "the part has {} item numbers for {} items",
                        n.len(),
                        items.len()
                    ),
                ));
            }
            None => {
                let first = self
                    .batch
                    .0
                    .next
                    .fetch_add(items.len() as u64, Ordering::Relaxed);
                (first..first + items.len() as u64).collect()
            }
        };
        let journal = &self.batch.0.journal;
        let id = self.batch.0.id.clone();
        let mut prior: Vec<Option<Prior>> = vec![None; items.len()];
        if self.batch.0.resumed {
            let recorded: HashMap<u64, (Option<i64>, Option<String>, Prior)> = journal.read(|c| {
                let mut s = c.prepare(
                    "SELECT item, crid, submission_id, state, server_id FROM items WHERE batch_id = ?1",
                )?;
                s.query_map([&id], |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        (
                            r.get(1)?,
                            r.get(2)?,
                            Prior {
                                state: JournalState::parse(&r.get::<_, String>(3)?),
                                server_id: r.get(4)?,
                            },
                        ),
                    ))
                })?
                .collect()
            })?;
            for (k, (n, item)) in numbers.iter().zip(items).enumerate() {
                let Some((rec_crid, rec_sid, p)) = recorded.get(n) else {
                    continue;
                };
                let same = rec_sid.as_deref() == item.submission_id
                    && (rec_crid.is_none() || *rec_crid == Some(crid));
                if !same {
                    return Err(Error::validation(
                        "resume",
                        format!(
                            "item {n} is not the item batch {id} recorded (the input changed): \
                             start a new batch instead"
                        ),
                    ));
                }
                prior[k] = Some(p.clone());
            }
        }
        // New rows for the items the journal does not have yet: (input index, row).
        let head = if self.batch.0.resumed {
            0
        } else {
            head.min(items.len())
        };
        let (head_rows, tail_rows): (Vec<_>, Vec<_>) = numbers
            .iter()
            .zip(items)
            .zip(&prior)
            .enumerate()
            .filter(|(_, (_, p))| p.is_none())
            .map(|(k, ((n, item), _))| {
                let row: NewRow = (
                    *n,
                    item.submission_id.map(str::to_owned),
                    item.lab.map(lab_json),
                    item.error
                        .map(|e| (e.kind().code().to_owned(), e.to_string())),
                );
                (k, row)
            })
            .partition(|(k, _)| *k < head);
        let tail = Arc::new(Tail::default());
        let mut head_work = insert_rows(id.clone(), crid, head_rows, true);
        if self.batch.0.resumed {
            // Earlier runs' marks and outcomes go into the rows before this run adds its own.
            let (insert, batch_id) = (head_work, id.clone());
            head_work = Box::new(move |c: &Connection| {
                fold(c, &batch_id)?;
                insert(c)
            });
        }
        let tail_work = (!tail_rows.is_empty()).then(|| {
            let insert = insert_rows(id.clone(), crid, tail_rows, false);
            let t = tail.clone();
            // Known as soon as it fails, in the writer: the marks and outcomes behind it in the
            // same transaction then leave alone the rows it could not write (another part's).
            Box::new(move |c: &Connection| {
                insert(c).inspect_err(|_| t.failed_now.store(true, Ordering::Release))
            }) as Work
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (writer, t) = (journal.clone(), tail.clone());
        journal.send(
            head_work,
            Some(Box::new(move |r: Result<()>| {
                // Queued from here, after the first rows committed, so that they are not
                // committed together; whatever is queued after this (marks, outcomes) comes
                // after the rest of the rows.
                match (&r, tail_work) {
                    (Ok(()), Some(work)) => {
                        let t2 = t.clone();
                        writer.send(work, Some(Box::new(move |r| t2.settle(r))));
                    }
                    (Ok(()), None) => t.settle(Ok(())),
                    (Err(e), _) => t.settle(Err(e.clone())),
                }
                let _ = tx.send(r);
            })),
        );
        let inserted = Inserted(Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(Error::config("the journal's writer has stopped")))
                .map_err(unique_as_validation)
        }));
        Ok((
            Recorder {
                batch: self.batch.clone(),
                numbers,
                head,
                tail,
            },
            prior,
            inserted,
        ))
    }
}

/// A UNIQUE violation of an insert: an item number used twice.
fn unique_as_validation(e: Error) -> Error {
    match e {
        Error::Config { message } if message.contains("UNIQUE") => {
            Error::validation("journal", "an item number is used twice in the batch")
        }
        other => other,
    }
}

/// Inserts `rows` of a part: their numbers, and the items as one `parts` row (a few thousand
/// items a row), `sending` (marked: about to be sent) when `sending`, else `pending`; those with
/// a check's error are `failed`.
fn insert_rows(batch_id: String, crid: i64, rows: Vec<(usize, NewRow)>, sending: bool) -> Work {
    Box::new(move |c| {
        let t = now();
        let (state, sent) = if sending {
            ("sending", Some(&t))
        } else {
            ("pending", None)
        };
        let mut numbers = c.prepare_cached(
            "INSERT INTO numbers (batch_id, item) SELECT ?1, value FROM json_each(?2)",
        )?;
        let mut part = c.prepare_cached(
            "INSERT INTO parts (batch_id, crid, state, created_at, sent_at, items) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for chunk in rows.chunks(PART_ROWS) {
            let items: Vec<PartItem<'_>> = chunk
                .iter()
                .map(|(_, (n, sid, lab, err))| {
                    (
                        *n as i64,
                        sid.as_deref(),
                        lab.as_deref(),
                        err.as_ref().map(|e| e.0.as_str()),
                        err.as_ref().map(|e| e.1.as_str()),
                    )
                })
                .collect();
            let nums: Vec<i64> = items.iter().map(|i| i.0).collect();
            // Numbers and strings: serialising them cannot fail.
            let nums = serde_json::to_string(&nums).unwrap_or_default();
            let items = serde_json::to_string(&items).unwrap_or_default();
            numbers.execute(params![batch_id, nums])?;
            part.execute(params![batch_id, crid, state, t, sent, items])?;
        }
        c.execute(
            "UPDATE batches SET updated_at = ?2 WHERE id = ?1",
            params![batch_id, t],
        )?;
        Ok(())
    })
}

/// Items per `parts` row.
const PART_ROWS: usize = 4096;

/// A `parts` element: item number, submission id, lab JSON, error kind, error message.
type PartItem<'a> = (
    i64,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

/// The second insert of a part's rows (see [`JournalPart::begin`]): committed, or failed.
#[derive(Default)]
pub(crate) struct Tail {
    committed: std::sync::atomic::AtomicBool,
    /// Set by the insert itself when it fails (before its transaction ends).
    failed_now: std::sync::atomic::AtomicBool,
    failed: Mutex<Option<Error>>,
}

impl Tail {
    fn settle(&self, r: Result<()>) {
        match r {
            Ok(()) => self.committed.store(true, Ordering::Release),
            Err(e) => {
                self.failed_now.store(true, Ordering::Release);
                tracing::warn!(error = %e, "the journal could not record the submission's items");
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(unique_as_validation(e));
            }
        }
    }

    fn failed(&self) -> Option<Error> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The commit of a submission's new rows (see [`JournalPart::begin`]).
#[must_use = "nothing may be sent or recorded before the rows are committed"]
pub(crate) struct Inserted(futures_util::future::BoxFuture<'static, Result<()>>);

impl Inserted {
    pub(crate) async fn committed(self) -> Result<()> {
        self.0.await
    }
}

impl Recorder {
    pub(crate) fn batch_id(&self) -> &str {
        &self.batch.0.id
    }

    /// Marks items (by input index) as being sent, queued at once; the future resolves once
    /// that is committed (an error if the part's rows could not be written: then nothing was
    /// marked). After a crash they are in doubt, never silently "not sent".
    pub(crate) fn sending(
        &self,
        indices: &[usize],
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let numbers: Vec<u64> = indices.iter().map(|&i| self.numbers[i]).collect();
        let id = self.batch.0.id.clone();
        let tail = self.tail.clone();
        let after = tail.clone();
        let committed = self.batch.0.journal.write_soon(Box::new(move |c| {
            if tail.failed_now.load(Ordering::Acquire) {
                // The rows were never written (the numbers may be another part's): mark
                // nothing; whoever waits for this mark sees the failure and sends nothing.
                return Ok(());
            }
            let t = now();
            // One row per run of consecutive item numbers (usually one for the whole window).
            let mut s = c.prepare_cached(
                "INSERT INTO marks (batch_id, first, last, sent_at) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut rest = &numbers[..];
            while let Some(&first) = rest.first() {
                let run = 1 + rest
                    .windows(2)
                    .take_while(|w| w[1] == w[0].wrapping_add(1))
                    .count();
                let last = rest[run - 1];
                s.execute(params![id, first as i64, last as i64, t])?;
                rest = &rest[run..];
            }
            Ok(())
        }));
        async move {
            committed.await?;
            // A mark is queued after the part's rows: if they could not be written, the mark
            // found no row, and the items must not go.
            after.failed().map_or(Ok(()), Err)
        }
    }

    /// Marks for items sent one by one in the order `order` (input indices), a window of
    /// `window` items at a time: one commit covers the next `window` items, and the next window
    /// is marked in the background once half of the current one has gone, so requests do not
    /// wait for the journal. After a crash, marked items that had not left yet are in doubt like
    /// those that had: the next run looks them up on the server.
    ///
    /// The inputs the first insert recorded as `sending` (below `head`) need no mark: `order`
    /// is ascending, so they are its first positions.
    pub(crate) fn marks(&self, order: Vec<usize>, window: usize) -> SendingMarks<'_> {
        let end = order.partition_point(|&index| index < self.head);
        SendingMarks {
            recorder: self,
            order,
            window: window.max(1),
            state: Mutex::new(MarkState { end, ahead: None }),
        }
    }

    /// Records the outcome of the item at input index `index` (queued; ordered after its
    /// `sending` mark).
    pub(crate) fn outcome(
        &self,
        index: usize,
        status: ItemStatus,
        server_id: Option<&str>,
        error: Option<&Error>,
    ) {
        let n = self.numbers[index];
        let id = self.batch.0.id.clone();
        let state = JournalState::from(status).as_str();
        let server_id = server_id.map(str::to_owned);
        let error = error.map(|e| (e.kind().code().to_owned(), e.to_string()));
        let tail = (index >= self.head).then(|| self.tail.clone());
        let work: Work = Box::new(move |c| {
            if tail.is_some_and(|t| t.failed_now.load(Ordering::Acquire)) {
                // Its row was never written; the number may be another part's.
                return Ok(());
            }
            c.prepare_cached(
                "INSERT OR REPLACE INTO outcomes (batch_id, item, state, server_id, error_kind, \
                 error, done_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                id,
                n as i64,
                state,
                server_id,
                error.as_ref().map(|e| &e.0),
                error.as_ref().map(|e| &e.1),
                now()
            ])
            .map(drop)
        });
        let journal = &self.batch.0.journal;
        if index < self.head || self.tail.committed.load(Ordering::Acquire) {
            journal.write_later(work);
        } else {
            // Its row may still be in the queue: after it, in order.
            journal.send(work, None);
        }
    }

    /// Waits for every outcome to be committed and stamps the batch.
    pub(crate) async fn finish(&self) -> Result<()> {
        let id = self.batch.0.id.clone();
        self.batch
            .0
            .journal
            .write(Box::new(move |c| {
                c.execute(
                    "UPDATE batches SET updated_at = ?2 WHERE id = ?1",
                    params![id, now()],
                )
                .map(drop)
            }))
            .await
    }
}

/// See [`Recorder::marks`].
pub(crate) struct SendingMarks<'a> {
    recorder: &'a Recorder,
    order: Vec<usize>,
    window: usize,
    state: Mutex<MarkState>,
}

type Commit = futures_util::future::Shared<futures_util::future::BoxFuture<'static, Result<()>>>;

struct MarkState {
    /// Positions (in `order`) below this are marked, committed.
    end: usize,
    /// The window being marked: where it ends, and its commit.
    ahead: Option<(usize, Commit)>,
}

impl SendingMarks<'_> {
    /// Starts marking the window after `state.end`, unless it is under way.
    fn mark_ahead(&self, state: &mut MarkState) -> (usize, Commit) {
        use futures_util::FutureExt;
        if let Some(a) = &state.ahead {
            return a.clone();
        }
        let to = (state.end + self.window).min(self.order.len());
        let commit = self
            .recorder
            .sending(&self.order[state.end..to])
            .boxed()
            .shared();
        state.ahead = Some((to, commit.clone()));
        (to, commit)
    }

    /// Returns once the item at `position` (in sending order) is marked as sending, committed.
    pub(crate) async fn ready(&self, position: usize) -> Result<()> {
        loop {
            let (to, commit) = {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if position < st.end {
                    if st.end < self.order.len() && position + self.window / 2 >= st.end {
                        // Queued now; awaited by whoever reaches that window.
                        let _ = self.mark_ahead(&mut st);
                    }
                    return Ok(());
                }
                self.mark_ahead(&mut st)
            };
            commit.await?;
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.end < to {
                st.end = to;
                st.ahead = None;
            }
        }
    }
}

/// The lab as JSON for the journal: the fields that say what was measured.
fn lab_json(lab: &LabResult) -> String {
    // Keys in sorted order, as the JSON of earlier versions had them; serialised straight to
    // text (no tree per row).
    #[derive(serde::Serialize)]
    struct Recorded<'a> {
        comparator: &'a Option<String>,
        display: &'a Option<String>,
        effective: &'a str,
        loinc: &'a str,
        reference_high: Option<f64>,
        reference_low: Option<f64>,
        status: &'a Option<String>,
        unit: &'a str,
        value: f64,
    }
    serde_json::to_string(&Recorded {
        comparator: &lab.comparator,
        display: &lab.display,
        effective: &lab.effective,
        loinc: &lab.loinc,
        reference_high: lab.reference_high,
        reference_low: lab.reference_low,
        status: &lab.status,
        unit: &lab.unit,
        value: lab.value,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorded lab is the JSON earlier versions wrote (a `serde_json::Value`: keys sorted),
    /// with and without the optional fields.
    #[test]
    fn recorded_lab_json_is_unchanged() {
        let plain = LabResult::new("718-7", 12.5, "g/dL", "2024-05-01T08:30:00Z");
        let mut full = plain.clone().with_reference_range(12.0, 16.0);
        full.comparator = Some("<".into());
        full.status = Some("amended".into());
        full.display = Some("Hemoglobin \"quoted\"".into());
        for lab in [plain, full] {
            let before = json!({
                "loinc": lab.loinc,
                "value": lab.value,
                "unit": lab.unit,
                "effective": lab.effective,
                "comparator": lab.comparator,
                "reference_low": lab.reference_low,
                "reference_high": lab.reference_high,
                "status": lab.status,
                "display": lab.display,
            })
            .to_string();
            assert_eq!(lab_json(&lab), before);
        }
    }

    #[test]
    fn timestamps_are_utc_milliseconds() {
        let t = now();
        assert_eq!(t.len(), "2024-05-01T13:30:00.123Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
        assert!(chrono::DateTime::parse_from_rfc3339(&t).is_ok(), "{t}");
    }
}
