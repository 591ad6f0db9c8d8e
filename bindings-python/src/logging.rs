//! The core's `tracing` events as Python `logging` records under the `cibmtr_fhir` logger
//! (`cibmtr_fhir.auth.cache`, `cibmtr_fhir.fhir.client`, ...; the sandbox under
//! `cibmtr_fhir.sandbox`; HTTP internals, warnings only, under `cibmtr_fhir.deps.<crate>`).
//! The core never puts a secret in an event, so records need no redaction here.
use std::fmt::Write as _;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

struct ToPythonLogging;

fn ours(target: &str) -> bool {
    target.starts_with("cibmtr_fhir")
}

fn logger_name(target: &str) -> String {
    if let Some(rest) = target.strip_prefix("cibmtr_fhir_sandbox") {
        format!("cibmtr_fhir.sandbox{}", rest.replace("::", "."))
    } else if ours(target) {
        target.replace("::", ".")
    } else {
        let krate = target.split("::").next().unwrap_or(target);
        format!("cibmtr_fhir.deps.{krate}")
    }
}

/// Python's level numbers.
fn py_level(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// `message key=value ...`.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }
}

static GET_LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

impl Subscriber for ToPythonLogging {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Our own crates down to DEBUG; the HTTP stack's chatter only from WARN up.
        if ours(metadata.target()) {
            *metadata.level() <= Level::DEBUG
        } else {
            *metadata.level() <= Level::WARN
        }
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::DEBUG)
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let level = py_level(meta.level());
        let mut line = Line::default();
        event.record(&mut line);
        // Not during interpreter shutdown, nor from a thread that cannot attach.
        crate::runtime::with_python(|py| {
            let emit = || -> PyResult<()> {
                let logger = GET_LOGGER
                    .import(py, "logging", "getLogger")?
                    .call1((logger_name(meta.target()),))?;
                if logger.call_method1("isEnabledFor", (level,))?.is_truthy()? {
                    logger.call_method1(
                        "log",
                        (level, "%s%s", line.message.as_str(), line.fields.as_str()),
                    )?;
                }
                Ok(())
            };
            if let Err(e) = emit() {
                e.write_unraisable(py, None);
            }
        });
    }
}

/// Installs the forwarding as the process's tracing subscriber (unless something else already
/// installed one).
pub fn install() {
    let _ = tracing::subscriber::set_global_default(ToPythonLogging);
}
