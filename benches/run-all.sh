#!/usr/bin/env bash
# Every benchmark of issue 8, one command. Writes BENCHMARKS.md (repo root), benches/throughput.png
# and benches/results/latest.json (the previous one becomes previous.json and is compared against).
#   benches/run-all.sh            full sizes, medians of 5 runs (bulk) or 3 (the rest) (release builds first; reused)
#   benches/run-all.sh --quick    smoke run: small sizes, one run each
#   benches/run-all.sh --skip kotlin,search   leave parts out (token,bulk,search,startup,kotlin)
#   benches/run-all.sh --update startup       re-measure some parts into latest.json, keep the rest
#   benches/run-all.sh --report-only          rewrite BENCHMARKS.md and the plot from latest.json
#   BENCH_NO_BUILD=1 benches/run-all.sh       use the release builds as they are
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
start=$SECONDS

if ! command -v wrk >/dev/null 2>&1; then
  echo "wrk (the raw-HTTP baseline) is missing; installing the Debian package" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get install -y -qq wrk >/dev/null || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null; }
fi

case " $* " in *" --report-only "*) BENCH_NO_BUILD=1 ;; esac
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  echo "release builds (reused when up to date)" >&2
  bash benches/build.sh
fi
venv="$CARGO_TARGET_DIR/py-bench-venv"
"$venv/bin/python" -m pip install -q "Authlib==1.9.6" "matplotlib>=3.8"

"$venv/bin/python" benches/run_all.py "$@"
echo "benches/run-all.sh: $((SECONDS - start)) s" >&2
