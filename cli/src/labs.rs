//! `labs submit`: a CSV file of lab results to CIBMTR, with a progress bar, a summary table and a
//! JSON report; re-running the same file submits nothing twice. With a journal, every row is
//! recorded (by its line number) before and after its request, and `--resume` continues an
//! interrupted run of the same file.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cibmtr_fhir::Error;
use cibmtr_fhir::cibmtr::{
    CibmtrClient, CsvLab, ItemJson, ItemResult, ItemStatus, LabResult, SubmissionReport,
    SubmitOptions, read_labs_csv,
};
use cibmtr_fhir::journal::JournalBatch;
use indicatif::{ProgressBar, ProgressStyle};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::json;

/// The rows of the CSV file at `path` and the SHA-256 of its bytes (which finds the file's
/// journal batch again for `--resume`).
pub fn read_csv(path: &Path) -> Result<(Vec<CsvLab>, String), Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::Config {
        message: format!("cannot open {}: {}", path.display(), e.kind()),
    })?;
    let sha = {
        use sha2::Digest;
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    Ok((read_labs_csv(&bytes[..])?, sha))
}

/// A row's line number and its parsed lab (or why it could not be parsed).
type Row = (usize, Result<LabResult, Error>);

/// The outcome of `labs submit`: every data row of the file, by line. Its JSON (`--json`,
/// `--report`) is streamed, keys in sorted order.
pub struct CsvReport {
    pub batch_id: Option<String>,
    /// The journal's path, when the run was journaled.
    pub journal: Option<String>,
    pub file_rows: usize,
    pub created: usize,
    pub already_present: usize,
    pub failed: usize,
    /// In line order.
    pub rows: Vec<CsvRow>,
}

/// One data row of the file.
pub enum CsvRow {
    /// No `--crid` given and the row has none: not sent.
    NoCrid { line: usize },
    /// Submitted to `crid` (or refused by the checks): the item of its submission.
    Item {
        crid: i64,
        line: usize,
        item: ItemResult,
    },
}

const NO_CRID: &str = "no --crid given and the row has no crid";

impl CsvRow {
    fn line(&self) -> usize {
        match self {
            CsvRow::NoCrid { line } | CsvRow::Item { line, .. } => *line,
        }
    }
}

impl Serialize for CsvRow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CsvRow::NoCrid { line } => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry(
                    "error",
                    &json!({"kind": "VALIDATION", "field": "crid",
                            "message": format!("invalid crid: {NO_CRID}")}),
                )?;
                m.serialize_entry("line", line)?;
                m.serialize_entry("status", ItemStatus::Failed.as_str())?;
                m.end()
            }
            CsvRow::Item { crid, line, item } => ItemJson {
                item,
                crid: Some(*crid),
                line: Some(*line),
            }
            .serialize(s),
        }
    }
}

impl Serialize for CsvReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(7))?;
        m.serialize_entry("already_present", &self.already_present)?;
        m.serialize_entry("batch_id", &self.batch_id)?;
        m.serialize_entry("created", &self.created)?;
        m.serialize_entry("failed", &self.failed)?;
        m.serialize_entry("file_rows", &self.file_rows)?;
        m.serialize_entry("items", &self.rows)?;
        m.serialize_entry("journal", &self.journal)?;
        m.end()
    }
}

/// Submits `rows`: to `crid` when given, else to each row's own `crid` column; recorded in
/// `journal` by line number when given. The report lists every data row with its line number.
pub async fn submit_rows(
    client: &CibmtrClient,
    rows: Vec<CsvLab>,
    crid: Option<i64>,
    options: &mut SubmitOptions,
    show_progress: bool,
    journal: Option<&JournalBatch>,
) -> Result<CsvReport, Error> {
    // Group rows by patient, keeping each row's line for the report.
    let mut groups: BTreeMap<i64, Vec<Row>> = BTreeMap::new();
    let mut out: Vec<CsvRow> = Vec::new();
    for row in rows {
        match crid.or(row.crid) {
            Some(c) => groups.entry(c).or_default().push((row.line, row.result)),
            None => out.push(CsvRow::NoCrid { line: row.line }),
        }
    }
    let orphans = out.len();
    let total: usize = groups.values().map(Vec::len).sum::<usize>() + orphans;
    let bar = if show_progress {
        let b = ProgressBar::new(total as u64);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} labs  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.inc(orphans as u64);
        Some(b)
    } else {
        None
    };
    if let Some(b) = &bar {
        let b = b.clone();
        options.progress = Some(Arc::new(move |p| {
            b.inc(1);
            b.set_message(format!(
                "{} created, {} already there, {} failed",
                p.created, p.already_present, p.failed
            ));
        }));
    }
    if let Some(batch) = journal.filter(|_| orphans > 0) {
        let rejected = out
            .iter()
            .map(|o| {
                (
                    o.line() as u64,
                    Error::Validation {
                        field: "crid".into(),
                        rule: NO_CRID.into(),
                    },
                )
            })
            .collect();
        batch.record_rejected(rejected)?;
    }
    let mut totals = Totals {
        failed: orphans,
        ..Totals::default()
    };
    for (crid, rows) in groups {
        let (lines, inputs): (Vec<usize>, Vec<Result<LabResult, Error>>) = rows.into_iter().unzip();
        if let Some(batch) = journal {
            options.journal = Some(batch.numbered(lines.iter().map(|&l| l as u64).collect()));
        }
        let report = client.submit_lab_inputs(crid, inputs, options).await?;
        totals.add(&report);
        out.extend(report.items.into_iter().map(|item| CsvRow::Item {
            crid,
            line: lines[item.index],
            item,
        }));
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out.sort_by_key(CsvRow::line);
    Ok(CsvReport {
        batch_id: journal.map(|b| b.id().to_owned()),
        journal: journal.map(|b| b.journal().path().display().to_string()),
        file_rows: total,
        created: totals.created,
        already_present: totals.already_present,
        failed: totals.failed,
        rows: out,
    })
}

#[derive(Default)]
struct Totals {
    created: usize,
    already_present: usize,
    failed: usize,
}

impl Totals {
    fn add(&mut self, r: &SubmissionReport) {
        self.created += r.created;
        self.already_present += r.already_present;
        self.failed += r.failed;
    }
}

/// A human summary of a report: counts, then one line per failure or warning.
pub fn print_summary(report: &CsvReport) {
    outln!(
        "  {:>8}  {:>15}  {:>6}  {:>5}",
        "created",
        "already present",
        "failed",
        "rows"
    );
    outln!(
        "  {:>8}  {:>15}  {:>6}  {:>5}",
        report.created,
        report.already_present,
        report.failed,
        report.file_rows
    );
    for row in &report.rows {
        match row {
            CsvRow::NoCrid { line } => outln!("  line {line}: failed: invalid crid: {NO_CRID}"),
            CsvRow::Item { line, item, .. } => {
                if item.status == ItemStatus::Failed {
                    let why = item
                        .error
                        .as_ref()
                        .map(Error::to_string)
                        .unwrap_or_default();
                    outln!("  line {line}: failed: {why}");
                }
                for w in &item.warnings {
                    outln!("  line {line}: note: {w}");
                }
            }
        }
    }
}
