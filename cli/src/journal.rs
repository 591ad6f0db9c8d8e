//! `cibmtr-fhir journal`: the batches `labs submit --journal` recorded, and one batch exported for
//! audit; and the choice of batch for `labs submit` (new, or resumed).
use std::io::Write;
use std::path::{Path, PathBuf};

use cibmtr_fhir::Error;
use cibmtr_fhir::cibmtr::CibmtrClient;
use cibmtr_fhir::journal::{BatchInfo, Journal, JournalBatch};
use clap::{Subcommand, ValueEnum};

#[derive(Subcommand)]
pub enum JournalCommand {
    /// List the batches, newest first: id, status (complete, incomplete, failures, empty),
    /// counts by state, source file.
    List {
        /// The journal (default: the profile's, else ~/.local/share/cibmtr-fhir/journal.sqlite3).
        #[arg(long, env = "CIBMTR_JOURNAL")]
        journal: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Export one batch, item by item: number (CSV line), CRID, content hash, state, server id,
    /// error, attempts, timestamps and the lab as sent.
    Export {
        /// The batch id (see `journal list`).
        batch: String,
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
        /// The journal (default: the profile's, else ~/.local/share/cibmtr-fhir/journal.sqlite3).
        #[arg(long, env = "CIBMTR_JOURNAL")]
        journal: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

/// The journal at `path`, or the default one for an empty path: created if need be to record
/// into it (`existing` false), only opened to read it (`existing` true).
fn open(path: &Path, existing: bool) -> Result<Journal, Error> {
    let path = if path.as_os_str().is_empty() {
        Journal::default_path().ok_or_else(|| Error::Config {
            message: "no default journal location (neither $XDG_DATA_HOME nor $HOME is set): \
                      pass --journal PATH"
                .into(),
        })?
    } else {
        path.to_owned()
    };
    if existing {
        Journal::open_existing(path)
    } else {
        Journal::open(path)
    }
}

/// The batch `labs submit` records into: a new one, the one named by `--resume BATCH`, or (for a
/// bare `--resume`) the newest incomplete batch of the same file.
pub fn batch_for(
    journal: &Path,
    csv: &Path,
    sha256: &str,
    rows: usize,
    resume: Option<&str>,
    client: &CibmtrClient,
) -> Result<JournalBatch, Error> {
    let journal = open(journal, false)?;
    let resumed = match resume {
        None => None,
        Some("") => match journal.resumable_batch(sha256)? {
            Some(id) => Some(journal.resume_batch(&id)?),
            None => {
                eprintln!("journal: no incomplete batch for this file; starting a new one");
                None
            }
        },
        Some(id) => {
            let batch = journal.resume_batch(id)?;
            let recorded = journal.batch(id)?;
            if recorded
                .source_sha256
                .as_deref()
                .is_some_and(|s| s != sha256)
            {
                return Err(Error::Validation {
                    field: "resume".into(),
                    rule: format!(
                        "batch {id} was recorded for another file (or this file changed since): \
                         resume it with the same file, or start a new batch"
                    ),
                });
            }
            Some(batch)
        }
    };
    let batch = match resumed {
        Some(b) => {
            eprintln!(
                "journal: resuming batch {} in {}",
                b.id(),
                journal.path().display()
            );
            b
        }
        None => {
            let source = std::fs::canonicalize(csv).unwrap_or_else(|_| csv.to_owned());
            let b = journal.start_batch(&BatchInfo {
                source: Some(source.display().to_string()),
                source_sha256: Some(sha256.to_owned()),
                label: None,
                ccn: Some(client.ccn().to_owned()),
                server: Some(client.fhir().base_url().to_owned()),
                expected_items: Some(rows as u64),
            })?;
            eprintln!("journal: batch {} in {}", b.id(), journal.path().display());
            b
        }
    };
    Ok(batch)
}

pub fn run(command: JournalCommand, from_profile: Option<PathBuf>) -> Result<(), Error> {
    let pick = |flag: Option<PathBuf>| flag.or(from_profile.clone()).unwrap_or_default();
    match command {
        JournalCommand::List { journal, json } => {
            let journal = open(&pick(journal), true)?;
            let batches = journal.batches()?;
            if json {
                let all: Vec<_> = batches.iter().map(|b| b.to_json()).collect();
                outln!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
                return Ok(());
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{:<24}  {:<10}  {:>6}  {:>7}  {:>7}  {:>7}  {:>6}  {:<24}  source",
                "batch", "status", "items", "created", "present", "pending", "failed", "updated"
            );
            for b in &batches {
                let _ = writeln!(
                    out,
                    "{:<24}  {:<10}  {:>6}  {:>7}  {:>7}  {:>7}  {:>6}  {:<24}  {}",
                    b.id,
                    b.status(),
                    b.total,
                    b.created,
                    b.already_present,
                    b.pending + b.sending,
                    b.failed,
                    b.updated_at,
                    b.source.as_deref().unwrap_or("")
                );
            }
            if batches.is_empty() {
                let _ = writeln!(out, "(no batches in {})", journal.path().display());
            }
            Ok(())
        }
        JournalCommand::Export {
            batch,
            format,
            output,
            journal,
        } => {
            let journal = open(&pick(journal), true)?;
            let bytes = journal.export(
                &batch,
                match format {
                    ExportFormat::Csv => cibmtr_fhir::journal::ExportFormat::Csv,
                    ExportFormat::Json => cibmtr_fhir::journal::ExportFormat::Json,
                },
            )?;
            match output {
                Some(path) => std::fs::write(&path, &bytes).map_err(|e| Error::Config {
                    message: format!("cannot write {}: {}", path.display(), e.kind()),
                }),
                None => {
                    // A closed stdout (`| head`) is not an error worth a panic.
                    let _ = std::io::stdout().lock().write_all(&bytes);
                    Ok(())
                }
            }
        }
    }
}
