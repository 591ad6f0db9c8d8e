#!/usr/bin/env bash
# The bulk-submission benchmark, full size: 10,000 labs to the sandbox at concurrency 8 and 32
# against one-at-a-time submission and wrk's raw HTTP limit, medians of 3 runs, and peak memory
# at 1,000 and 10,000 labs. Prints a markdown table; JSON in target/bench-submit-labs.json.
#   scripts/bench-submit.sh            full run (about a minute after the build)
#   scripts/bench-submit.sh --test     quick mode (what scripts/test.sh runs)
# CIBMTR_BENCH_PIN=0 lets the sandbox and the client share all CPUs instead of half each.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
  echo "wrk (the raw-HTTP baseline) is missing; installing the Debian package" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get install -y -qq wrk >/dev/null || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null; }
fi

exec cargo bench --locked -p cibmtr-fhir --bench submit_labs -- "$@"
