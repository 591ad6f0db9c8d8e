//! Running the independent FHIR validators over resources the SDK builds.
//!
//! Two validators, because they catch different mistakes (shared/reference/interop-facts.md):
//!
//! - [`Validator::FhirResources`]: Python `fhir.resources` 8.3.0, its `fhir.resources.STU3`
//!   models for STU3 and its R4 models for R4 (`validators/validate.py`, run with the interop
//!   virtualenv's interpreter). Catches unknown elements, bad primitive formats, impossible dates
//!   and two `value[x]` at once; misses a bad `status` code and accepts `"72"` for a number.
//! - [`Validator::NpmFhir`]: npm `fhir` (FHIR.js) 4.12.0 with its R4 definitions, and with the
//!   STU3 3.0.1 definitions of `fhir@3.3.1` for STU3 (`validators/validate.mjs`, run with `node`
//!   against `tests/interop/node/node_modules`). Catches codes outside required value sets and
//!   JSON type mistakes; misses impossible dates.
//!
//! Both read one NDJSON file of tagged items, print a JSON report with `--json` and exit non-zero
//! when any item fails. [`validate`] writes the file, runs the driver as a subprocess and checks
//! that the exit status agrees with the report, so neither a crash nor a silent pass goes
//! unnoticed.
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use cibmtr_fhir::fhir::FhirVersion;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{interop_dir, node_dir, python};

/// One of the independent validators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Validator {
    /// Python `fhir.resources` 8.3.0 (STU3 and R4 models).
    FhirResources,
    /// npm `fhir` 4.12.0 (R4), with the STU3 definitions of `fhir@3.3.1`.
    NpmFhir,
}

impl Validator {
    /// Both validators.
    pub const ALL: [Validator; 2] = [Validator::FhirResources, Validator::NpmFhir];

    /// The name a failure message uses.
    pub fn name(self) -> &'static str {
        match self {
            Validator::FhirResources => "fhir.resources 8.3.0",
            Validator::NpmFhir => "npm fhir 4.12.0 (STU3 from fhir@3.3.1)",
        }
    }

    /// The driver script.
    pub fn script(self) -> PathBuf {
        interop_dir().join("validators").join(match self {
            Validator::FhirResources => "validate.py",
            Validator::NpmFhir => "validate.mjs",
        })
    }

    /// Whether this validator checks the body of `PUT /CRID` (not FHIR; validate.py holds a
    /// model of the guide's payload table).
    pub fn checks_crid_requests(self) -> bool {
        self == Validator::FhirResources
    }

    fn command(self) -> Command {
        match self {
            Validator::FhirResources => {
                let mut c = Command::new(python());
                c.arg(self.script());
                c
            }
            Validator::NpmFhir => {
                let mut c = Command::new(std::env::var_os("NODE").unwrap_or_else(|| "node".into()));
                c.arg(self.script())
                    .env("CIBMTR_INTEROP_NODE_DIR", node_dir());
                c
            }
        }
    }
}

impl fmt::Display for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an item is validated as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A FHIR resource of this version.
    Fhir(FhirVersion),
    /// The JSON body of CIBMTR's `PUT /CRID` (only [`Validator::FhirResources`] checks these).
    CridRequest,
}

/// One resource to validate, with the label a failure names (lab code, version, URI family, …).
#[derive(Debug, Clone)]
pub struct Item {
    pub label: String,
    pub kind: Kind,
    pub resource: Value,
}

impl Item {
    /// A FHIR resource of `version`.
    pub fn fhir(label: impl Into<String>, version: FhirVersion, resource: Value) -> Item {
        Item {
            label: label.into(),
            kind: Kind::Fhir(version),
            resource,
        }
    }

    /// A CRID registration body.
    pub fn crid_request(label: impl Into<String>, body: Value) -> Item {
        Item {
            label: label.into(),
            kind: Kind::CridRequest,
            resource: body,
        }
    }

    fn to_json(&self) -> Value {
        match self.kind {
            Kind::Fhir(v) => {
                json!({"id": self.label, "fhirVersion": version_tag(v), "resource": self.resource})
            }
            Kind::CridRequest => {
                json!({"id": self.label, "kind": "crid-request", "resource": self.resource})
            }
        }
    }
}

/// `STU3` or `R4`, as the drivers read it.
pub fn version_tag(v: FhirVersion) -> &'static str {
    match v {
        FhirVersion::Stu3 => "STU3",
        FhirVersion::R4 => "R4",
    }
}

/// A validator's verdict on one item.
#[derive(Debug, Clone, Deserialize)]
pub struct Verdict {
    /// The item's label.
    pub id: String,
    pub valid: bool,
    pub errors: Vec<String>,
    /// Messages that did not fail the item (npm fhir's unavoidable LOINC value-set warning).
    pub warnings: Vec<String>,
}

/// What a validator said about a batch of items.
#[derive(Debug)]
pub struct Report {
    pub validator: Validator,
    /// One per item, in input order.
    pub verdicts: Vec<Verdict>,
    /// The driver's exit status (0 when every item is valid, 1 otherwise).
    pub exit_code: i32,
}

impl Report {
    /// The verdicts of the items that failed.
    pub fn failures(&self) -> Vec<&Verdict> {
        self.verdicts.iter().filter(|v| !v.valid).collect()
    }

    /// The verdict on the item labelled `label`.
    pub fn verdict(&self, label: &str) -> &Verdict {
        self.verdicts
            .iter()
            .find(|v| v.id == label)
            .unwrap_or_else(|| panic!("{}: no verdict for {label}", self.validator))
    }

    /// Panics naming the validator and every failing item (label and errors) unless all passed.
    pub fn assert_all_valid(&self) {
        let failures = self.failures();
        if failures.is_empty() && self.exit_code == 0 {
            return;
        }
        let mut msg = format!(
            "{} rejected {} of {} resources (exit status {}):\n",
            self.validator,
            failures.len(),
            self.verdicts.len(),
            self.exit_code
        );
        for f in failures.iter().take(40) {
            msg.push_str(&format!("  {}: {}\n", f.id, f.errors.join("; ")));
        }
        if failures.len() > 40 {
            msg.push_str(&format!("  … and {} more\n", failures.len() - 40));
        }
        panic!("{msg}");
    }
}

/// Runs `validator` over `items` (labels must be unique) and returns its per-item report.
///
/// `Err` when the validator could not run at all (interpreter or package missing, crash,
/// unreadable output) or when its exit status disagrees with its report; the message names the
/// validator and says how to install the peers.
pub fn validate(validator: Validator, items: &[Item]) -> Result<Report, String> {
    let mut seen = std::collections::HashSet::new();
    for item in items {
        if !seen.insert(item.label.as_str()) {
            return Err(format!("duplicate label {}", item.label));
        }
        if item.kind == Kind::CridRequest && !validator.checks_crid_requests() {
            return Err(format!(
                "{validator} does not check CRID requests ({})",
                item.label
            ));
        }
    }
    let mut file = tempfile::Builder::new()
        .prefix("cibmtr-interop-")
        .suffix(".ndjson")
        .tempfile()
        .map_err(|e| format!("cannot create a temporary file: {e}"))?;
    for item in items {
        serde_json::to_writer(&mut file, &item.to_json()).map_err(|e| e.to_string())?;
        file.write_all(b"\n").map_err(|e| e.to_string())?;
    }
    file.flush().map_err(|e| e.to_string())?;

    let out = validator
        .command()
        .arg("--json")
        .arg(file.path())
        .output()
        .map_err(|e| {
            format!(
                "{validator}: cannot run {} ({e}); run scripts/test-interop.sh, which installs \
                 the validators",
                validator.script().display()
            )
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let exit_code = out.status.code().unwrap_or(-1);
    let verdicts: Vec<Verdict> = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "{validator}: no report (exit status {exit_code}, {e}); stderr:\n{stderr}\n\
             (run scripts/test-interop.sh, which installs the validators)"
        )
    })?;
    if verdicts.len() != items.len() || verdicts.iter().zip(items).any(|(v, i)| v.id != i.label) {
        return Err(format!(
            "{validator}: the report does not match the input ({} verdicts for {} items)",
            verdicts.len(),
            items.len()
        ));
    }
    let any_invalid = verdicts.iter().any(|v| !v.valid);
    if exit_code != i32::from(any_invalid) {
        return Err(format!(
            "{validator}: exit status {exit_code} disagrees with its report ({} invalid); \
             stderr:\n{stderr}",
            verdicts.iter().filter(|v| !v.valid).count()
        ));
    }
    Ok(Report {
        validator,
        verdicts,
        exit_code,
    })
}
