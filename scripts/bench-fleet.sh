#!/usr/bin/env bash
# The fleet benchmark, full size: token requests per token lifetime with 1, 4 and 8 processes on a
# shared Redis store vs each with its own cache, and submission throughput with the journal on vs
# off (2,000 labs, 7 alternated pairs). Prints markdown tables; JSON in target/bench-fleet.json.
#   scripts/bench-fleet.sh            full run (about two minutes after the build)
#   scripts/bench-fleet.sh --test     quick mode (what scripts/test-fleet.sh runs)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server is missing; installing the Debian package" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get install -y -qq redis-server >/dev/null \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null; }
fi

exec cargo bench --locked -p cibmtr-fhir --bench fleet -- "$@"
