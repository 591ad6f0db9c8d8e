//! A batch for audit: JSON (the batch with its counts, and every item) or CSV (one row per item,
//! the lab's fields in columns of their own).
use std::io::Write;

use serde_json::{Value, json};

use super::{Journal, JournalItem};
use crate::error::{Error, Result};

/// The CSV columns, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "batch_id",
    "item",
    "crid",
    "submission_id",
    "state",
    "server_id",
    "error_kind",
    "error",
    "attempts",
    "created_at",
    "sent_at",
    "done_at",
    "loinc",
    "value",
    "unit",
    "effective",
    "comparator",
    "reference_low",
    "reference_high",
    "status",
];

/// A format of [`Journal::export`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// One row per item (see [`CSV_COLUMNS`]).
    Csv,
    /// `{"batch": {...}, "items": [...]}`, pretty-printed, with a final newline.
    Json,
}

impl std::str::FromStr for ExportFormat {
    type Err = Error;

    /// `csv` or `json`, in any case; anything else is a validation error on `format`.
    fn from_str(name: &str) -> Result<ExportFormat> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Ok(ExportFormat::Csv),
            "json" => Ok(ExportFormat::Json),
            _ => Err(Error::validation(
                "format",
                format!("must be \"csv\" or \"json\", not {name:?}"),
            )),
        }
    }
}

impl Journal {
    /// The batch for audit in `format`, as the bytes every front end writes (`cibmtr-fhir
    /// journal export`, the language packages).
    pub fn export(&self, batch_id: &str, format: ExportFormat) -> Result<Vec<u8>> {
        match format {
            ExportFormat::Csv => {
                let mut bytes = Vec::new();
                self.export_csv(batch_id, &mut bytes)?;
                Ok(bytes)
            }
            ExportFormat::Json => {
                let mut bytes = serde_json::to_vec_pretty(&self.export_json(batch_id)?)
                    .map_err(|e| Error::config(format!("cannot write the JSON export: {e}")))?;
                bytes.push(b'\n');
                Ok(bytes)
            }
        }
    }

    /// The batch as JSON: `{"batch": {...counts, status...}, "items": [...]}`.
    pub fn export_json(&self, batch_id: &str) -> Result<Value> {
        let batch = self.batch(batch_id)?;
        let items = self.items(batch_id)?;
        Ok(json!({
            "batch": batch.to_json(),
            "items": items.iter().map(JournalItem::to_json).collect::<Vec<_>>(),
        }))
    }

    /// The batch as CSV, one row per item (see [`CSV_COLUMNS`]).
    pub fn export_csv(&self, batch_id: &str, out: impl Write) -> Result<()> {
        let items = self.items(batch_id)?;
        let io = |e: csv::Error| Error::config(format!("cannot write the CSV export: {e}"));
        let mut w = csv::Writer::from_writer(out);
        w.write_record(CSV_COLUMNS).map_err(io)?;
        for it in &items {
            let lab = |k: &str| -> String {
                match it.lab.as_ref().and_then(|l| l.get(k)) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                }
            };
            let opt = |v: &Option<String>| v.clone().unwrap_or_default();
            w.write_record([
                batch_id.to_owned(),
                it.item.to_string(),
                it.crid.map(|c| c.to_string()).unwrap_or_default(),
                opt(&it.submission_id),
                it.state.as_str().to_owned(),
                opt(&it.server_id),
                opt(&it.error_kind),
                opt(&it.error),
                it.attempts.to_string(),
                it.created_at.clone(),
                opt(&it.sent_at),
                opt(&it.done_at),
                lab("loinc"),
                lab("value"),
                lab("unit"),
                lab("effective"),
                lab("comparator"),
                lab("reference_low"),
                lab("reference_high"),
                lab("status"),
            ])
            .map_err(io)?;
        }
        w.flush()
            .map_err(|e| Error::config(format!("cannot write the CSV export: {e}")))
    }
}
