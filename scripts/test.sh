#!/usr/bin/env bash
# Runs every test suite of the project. This is the README's test command and what CI runs.
# The Rust crates (core, sandbox, CLI including its demo), then each language package's own
# script (scripts/test-<language>.sh), which installs what that suite needs, the reliability
# and fleet scripts, then the interoperability suite against independent servers and validators (scripts/test-interop.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) and re-run" >&2
  exit 1
fi

# The default members: the binding crates are cdylibs built and tested by their own scripts.
echo "== Rust: cargo test (core, sandbox, CLI)"
cargo test --locked

echo "== Rust: the README's quick-start example runs"
cargo run --locked -q -p cibmtr-fhir --example quickstart

echo "== Rust: benchmarks compile and run once in test mode"
CIBMTR_BENCH_QUICK=1 cargo bench --locked -p cibmtr-fhir --bench token_cache -- --test
CIBMTR_BENCH_QUICK=1 cargo bench --locked -p cibmtr-fhir --bench submit_labs -- --test
# The reliability checks (a longer stable fuzz run, cargo deny) and the fleet tests on a real
# redis-server; each script installs what it needs (cargo-deny from crates.io, redis-server from
# Debian).
bash scripts/test-reliability.sh
bash scripts/test-fleet.sh
bash scripts/test-node.sh
bash scripts/test-kotlin.sh
bash scripts/test-python.sh
# After the language packages: it reuses the wheel, the .node and the cdylib they built.
bash scripts/test-interop.sh
