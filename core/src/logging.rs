//! Diagnostic logging to standard error, switched on by the `CIBMTR_FHIR_LOG` environment
//! variable (`error`, `warn`, `info`, `debug` or `trace`; unset or `off`: nothing).
//!
//! The core reports retries, waits, rate limiting, token refreshes and fallbacks as [`tracing`]
//! events under targets starting `cibmtr_fhir`. A Rust program installs the subscriber it likes;
//! the command line and the Node and JVM packages call [`init_from_env`] once when they load (the
//! Python package forwards the same events to Python's `logging` instead). No event carries a
//! secret or patient data, whatever the level: the leak tests of every language run at `trace`.

use std::sync::OnceLock;

use tracing::Level;

/// The environment variable read by [`init_from_env`].
pub const ENV_VAR: &str = "CIBMTR_FHIR_LOG";

/// The level a `CIBMTR_FHIR_LOG` value names: `Ok(None)` for unset, empty or `off`.
///
/// # Errors
/// A value that names no level, with the accepted ones.
pub fn parse_level(value: Option<&str>) -> Result<Option<Level>, String> {
    let v = value.map(str::trim).unwrap_or("");
    match v.to_ascii_lowercase().as_str() {
        "" | "off" | "none" => Ok(None),
        "error" => Ok(Some(Level::ERROR)),
        "warn" | "warning" => Ok(Some(Level::WARN)),
        "info" => Ok(Some(Level::INFO)),
        "debug" => Ok(Some(Level::DEBUG)),
        "trace" => Ok(Some(Level::TRACE)),
        _ => Err(format!(
            "{ENV_VAR}={v:?} is not a level: use error, warn, info, debug, trace or off"
        )),
    }
}

/// Installs a subscriber that prints the SDK's events at `level` and above to standard error,
/// unless the process already has a global subscriber. Returns whether this call installed it.
pub fn init_stderr(level: Level) -> bool {
    static DONE: OnceLock<bool> = OnceLock::new();
    *DONE.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(level)
            .with_ansi(false)
            .with_target(true)
            .finish();
        tracing::subscriber::set_global_default(subscriber).is_ok()
    })
}

/// Reads `CIBMTR_FHIR_LOG` and, when it names a level, calls [`init_stderr`] with it. An
/// unknown value prints one line saying so to standard error and logs nothing. Returns whether
/// logging is now on through this call.
pub fn init_from_env() -> bool {
    match parse_level(std::env::var(ENV_VAR).ok().as_deref()) {
        Ok(Some(level)) => init_stderr(level),
        Ok(None) => false,
        Err(e) => {
            eprintln!("cibmtr-fhir: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_unknown_ones_are_named() {
        assert_eq!(parse_level(None), Ok(None));
        assert_eq!(parse_level(Some(" OFF ")), Ok(None));
        assert_eq!(parse_level(Some("Trace")), Ok(Some(Level::TRACE)));
        assert_eq!(parse_level(Some("warning")), Ok(Some(Level::WARN)));
        let e = parse_level(Some("loud")).unwrap_err();
        assert!(
            e.contains("CIBMTR_FHIR_LOG") && e.contains("\"loud\"") && e.contains("trace"),
            "{e}"
        );
    }
}
