//! `labs submit`: a CSV file of lab results to CIBMTR, with a progress bar, a summary table and a
//! JSON report; re-running the same file submits nothing twice. With a journal, every row is
//! recorded (by its line number) before and after its request, and `--resume` continues an
//! interrupted run of the same file.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cibmtr_fhir::Error;
use cibmtr_fhir::cibmtr::{
    CibmtrClient, CsvLab, ItemStatus, LabResult, SubmissionReport, SubmitOptions, read_labs_csv,
};
use cibmtr_fhir::journal::JournalBatch;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

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

/// Submits `rows`: to `crid` when given, else to each row's own `crid` column; recorded in
/// `journal` by line number when given. The report lists every data row with its line number.
pub async fn submit_rows(
    client: &CibmtrClient,
    rows: Vec<CsvLab>,
    crid: Option<i64>,
    options: &mut SubmitOptions,
    show_progress: bool,
    journal: Option<&JournalBatch>,
) -> Result<Value, Error> {
    // Group rows by patient, keeping each row's line for the report.
    let mut groups: BTreeMap<i64, Vec<Row>> = BTreeMap::new();
    let mut orphans: Vec<Value> = Vec::new();
    for row in rows {
        match crid.or(row.crid) {
            Some(c) => groups.entry(c).or_default().push((row.line, row.result)),
            None => orphans.push(json!({
                "line": row.line,
                "status": "failed",
                "error": {"kind": "VALIDATION", "field": "crid",
                          "message": "invalid crid: no --crid given and the row has no crid"},
            })),
        }
    }
    let total: usize = groups.values().map(Vec::len).sum::<usize>() + orphans.len();
    let bar = if show_progress {
        let b = ProgressBar::new(total as u64);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} labs  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.inc(orphans.len() as u64);
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
    if let Some(batch) = journal.filter(|_| !orphans.is_empty()) {
        let rejected = orphans
            .iter()
            .map(|o| {
                let line = o["line"].as_u64().unwrap_or(0);
                (
                    line,
                    Error::Validation {
                        field: "crid".into(),
                        rule: "no --crid given and the row has no crid".into(),
                    },
                )
            })
            .collect();
        batch.record_rejected(rejected)?;
    }
    let mut items: Vec<Value> = orphans;
    let mut totals = Totals::default();
    totals.failed += items.len();
    for (crid, rows) in groups {
        let (lines, inputs): (Vec<usize>, Vec<Result<LabResult, Error>>) = rows.into_iter().unzip();
        if let Some(batch) = journal {
            options.journal = Some(batch.numbered(lines.iter().map(|&l| l as u64).collect()));
        }
        let report = client.submit_lab_inputs(crid, inputs, options).await?;
        totals.add(&report);
        for item in report.items {
            let mut v = item.to_json();
            v["line"] = json!(lines[item.index]);
            v["crid"] = json!(crid.to_string());
            items.push(v);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    items.sort_by_key(|v| v["line"].as_u64());
    Ok(json!({
        "batch_id": journal.map(|b| b.id()),
        "journal": journal.map(|b| b.journal().path().display().to_string()),
        "file_rows": total,
        "created": totals.created,
        "already_present": totals.already_present,
        "failed": totals.failed,
        "items": items,
    }))
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
pub fn print_summary(report: &Value) {
    outln!(
        "  {:>8}  {:>15}  {:>6}  {:>5}",
        "created",
        "already present",
        "failed",
        "rows"
    );
    let n = |k: &str| report[k].as_u64().unwrap_or(0);
    outln!(
        "  {:>8}  {:>15}  {:>6}  {:>5}",
        n("created"),
        n("already_present"),
        n("failed"),
        n("file_rows")
    );
    for item in report["items"].as_array().into_iter().flatten() {
        if item["status"] == ItemStatus::Failed.as_str() {
            outln!(
                "  line {}: failed: {}",
                item["line"],
                item["error"]["message"].as_str().unwrap_or("")
            );
        }
        for w in item["warnings"].as_array().into_iter().flatten() {
            outln!(
                "  line {}: note: {}",
                item["line"],
                w.as_str().unwrap_or("")
            );
        }
    }
}
