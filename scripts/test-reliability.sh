#!/usr/bin/env bash
# Reliability checks beyond the plain `cargo test` (which already runs the fault matrix, the
# property tests and a 10,000-input fuzz run of every parser; see RELIABILITY.md):
#
#   * a longer stable fuzz run of every parser of server input (FUZZ_SMOKE_EXECS, default
#     100,000 mutated inputs per target), reporting executions and crashes;
#   * cargo deny: licenses, banned and duplicate crates, sources (the advisory database needs
#     GitHub, so no advisories); cargo-deny is installed from crates.io if missing;
#
# and, only when asked:
#
#   --fuzz-minutes N   each cargo-fuzz target (libFuzzer) for N minutes, on stable without a
#                      sanitizer (FUZZ_TOOLCHAIN=nightly: with AddressSanitizer); new inputs go
#                      to a temp folder, fuzz/corpus is only read;
#   --soak N           the soak: N minutes of batches under every fault at once, across many
#                      token lifetimes; prints token requests, retries and lost items;
#   --no-deny          skip cargo deny (e.g. offline, with no cargo-deny installed).
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_MINUTES=0
SOAK_MINUTES=0
DENY=1
while [ $# -gt 0 ]; do
  case "$1" in
    --fuzz-minutes) FUZZ_MINUTES="$2"; shift 2 ;;
    --soak) SOAK_MINUTES="$2"; shift 2 ;;
    --no-deny) DENY=0; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

echo "== Reliability: stable fuzz run of every parser of server input"
FUZZ_SMOKE_EXECS="${FUZZ_SMOKE_EXECS:-100000}" \
  cargo test --locked -q -p cibmtr-fhir --test fuzz_smoke -- --nocapture 2>&1 \
  | grep -E '^FUZZ-SMOKE|test result|crash' || { echo "fuzz smoke run failed" >&2; exit 1; }

if [ "$DENY" = 1 ]; then
  echo "== Reliability: cargo deny (licenses, bans, sources)"
  if ! cargo deny --version >/dev/null 2>&1; then
    echo "installing cargo-deny from crates.io (a few minutes, once)"
    cargo install --locked cargo-deny
  fi
  cargo deny --all-features check --hide-inclusion-graph licenses bans sources
fi

if [ "$FUZZ_MINUTES" != 0 ]; then
  # libFuzzer through cargo-fuzz. On stable (the default) without a sanitizer: the core forbids
  # unsafe code, so coverage-guided search is what matters; FUZZ_TOOLCHAIN=nightly adds
  # AddressSanitizer.
  toolchain="${FUZZ_TOOLCHAIN:-stable}"
  sanitizer=(--sanitizer none)
  [ "$toolchain" = nightly ] && sanitizer=()
  echo "== Reliability: cargo fuzz ($toolchain), $FUZZ_MINUTES min per target"
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io (a few minutes, once)"
    cargo install --locked cargo-fuzz
  fi
  secs=$(awk "BEGIN { print int($FUZZ_MINUTES * 60) }")
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  cargo "+$toolchain" fuzz build -O "${sanitizer[@]}"
  for target in $(cargo "+$toolchain" fuzz list); do
    mkdir -p "$work/$target"
    # New inputs go to the temp folder; fuzz/corpus/<target> is only read.
    if ! cargo "+$toolchain" fuzz run -O "${sanitizer[@]}" "$target" "$work/$target" \
      "fuzz/corpus/$target" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 2>"$work/$target.log"; then
      tail -40 "$work/$target.log"
      echo "cargo fuzz: $target crashed; the input is in fuzz/artifacts/$target" >&2
      exit 1
    fi
    runs=$(grep -E '^stat::number_of_executed_units' "$work/$target.log" | awk '{print $2}')
    echo "CARGO-FUZZ | $target | ${runs:-?} executions in $FUZZ_MINUTES min | 0 crashes"
  done
fi

if [ "$SOAK_MINUTES" != 0 ]; then
  echo "== Reliability: soak, $SOAK_MINUTES min"
  SOAK_MINUTES="$SOAK_MINUTES" cargo test --locked -q -p cibmtr-fhir --test fault_matrix_clock \
    -- --ignored --exact soak --nocapture 2>&1 | grep -E '^SOAK|test result|panicked'
fi
