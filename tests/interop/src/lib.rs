//! Helpers for the interoperability suite: starting the independent servers of `tests/interop/`
//! on loopback and running the independent validators. The tests themselves are in `tests/`.
//!
//! Nothing here is skipped when a peer is missing: `scripts/test-interop.sh` installs every peer
//! first, and a test whose peer cannot start fails with the name of the server and the reason.

use std::path::PathBuf;

pub mod servers;
pub mod validators;

/// `tests/interop/` in the source tree.
pub fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python interpreter of the interop virtualenv (`CIBMTR_INTEROP_PYTHON`, or the one
/// `scripts/test-interop.sh` makes under the workspace's target directory).
pub fn python() -> PathBuf {
    match std::env::var_os("CIBMTR_INTEROP_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => interop_dir().join("../../target/interop-venv/bin/python"),
    }
}

/// `tests/interop/node`, where `npm ci` installed the Node peers (oidc-provider, fhir).
pub fn node_dir() -> PathBuf {
    interop_dir().join("node")
}
