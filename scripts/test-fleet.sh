#!/usr/bin/env bash
# The fleet-scale tests: the shared token store on a real redis-server (8 processes x 50 tasks
# over several token lifetimes, Redis killed mid-run, a lock holder killed, what a Redis dump
# shows) and the submission journal (a 2,000-lab `labs submit` killed at random points and
# resumed), then the fleet benchmark once in quick mode.
#   scripts/test-fleet.sh            tests + quick benchmark
#   scripts/bench-fleet.sh           the full benchmark
# Installs the Debian package redis-server when it is missing; the tests start their own server
# on 127.0.0.1 (a free port, no persistence) and kill it when they end.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  echo "redis-server is missing; installing the Debian package" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get install -y -qq redis-server >/dev/null \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null; }
fi
# The package may start a system service on 6379; the tests neither need nor touch it.

echo "== Fleet: shared token store on redis-server ($(redis-server --version | cut -d' ' -f3))"
# One test at a time: each runs up to 8 processes with 50 tasks against token lifetimes of a few
# seconds, and two such fleets at once on a small machine would blur the timings they check.
cargo test --locked -p cibmtr-fhir --test fleet_redis -- --test-threads 1
cargo test --locked -p cibmtr-fhir-cli --test fleet_redis

echo "== Fleet: submission journal (core, and the CLI killed at random points)"
cargo test --locked -p cibmtr-fhir --test journal
cargo test --locked -p cibmtr-fhir-cli --test journal

echo "== Fleet: benchmark runs once in quick mode"
CIBMTR_BENCH_QUICK=1 cargo bench --locked -p cibmtr-fhir --bench fleet -- --test
