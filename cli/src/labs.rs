//! `labs submit`: a CSV file of lab results to CIBMTR, with a progress bar, a summary table and a
//! JSON report; re-running the same file submits nothing twice.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cibmtr_fhir::Error;
use cibmtr_fhir::cibmtr::{
    CibmtrClient, CsvLab, ItemStatus, LabResult, SubmissionReport, SubmitOptions, read_labs_csv,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

/// Reads `path` and submits its rows: to `crid` when given, else to each row's own `crid` column.
/// The report lists every data row with its line number.
pub async fn submit_csv(
    client: &CibmtrClient,
    path: &Path,
    crid: Option<i64>,
    mut options: SubmitOptions,
    show_progress: bool,
) -> Result<Value, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::Config {
        message: format!("cannot open {}: {}", path.display(), e.kind()),
    })?;
    let rows = read_labs_csv(std::io::BufReader::new(file))?;
    submit_rows(client, rows, crid, &mut options, show_progress).await
}

/// A row's line number and its parsed lab (or why it could not be parsed).
type Row = (usize, Result<LabResult, Error>);

pub async fn submit_rows(
    client: &CibmtrClient,
    rows: Vec<CsvLab>,
    crid: Option<i64>,
    options: &mut SubmitOptions,
    show_progress: bool,
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
    let mut items: Vec<Value> = orphans;
    let mut totals = Totals::default();
    totals.failed += items.len();
    for (crid, rows) in groups {
        let (lines, inputs): (Vec<usize>, Vec<Result<LabResult, Error>>) = rows.into_iter().unzip();
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
    println!(
        "  {:>8}  {:>15}  {:>6}  {:>5}",
        "created", "already present", "failed", "rows"
    );
    let n = |k: &str| report[k].as_u64().unwrap_or(0);
    println!(
        "  {:>8}  {:>15}  {:>6}  {:>5}",
        n("created"),
        n("already_present"),
        n("failed"),
        n("file_rows")
    );
    for item in report["items"].as_array().into_iter().flatten() {
        if item["status"] == ItemStatus::Failed.as_str() {
            println!(
                "  line {}: failed: {}",
                item["line"],
                item["error"]["message"].as_str().unwrap_or("")
            );
        }
        for w in item["warnings"].as_array().into_iter().flatten() {
            println!(
                "  line {}: note: {}",
                item["line"],
                w.as_str().unwrap_or("")
            );
        }
    }
}
