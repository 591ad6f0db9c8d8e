#!/usr/bin/env bash
# Runs every test suite of the project. This is the README's test command and what CI runs.
# Today: the Rust workspace (core, sandbox, CLI, including the CLI demo). The Python, Node and
# Kotlin packages and the interop suite add their steps here as they land.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) and re-run" >&2
  exit 1
fi

echo "== Rust: cargo test --workspace"
cargo test --workspace --locked

echo "== Rust: benchmarks compile and run once in test mode"
CIBMTR_BENCH_QUICK=1 cargo bench --locked -p cibmtr-fhir --bench token_cache -- --test
