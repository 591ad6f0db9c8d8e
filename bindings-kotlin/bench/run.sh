#!/usr/bin/env bash
# The JVM benchmark, run by hand: a cached token() and submitLab from Kotlin (suspend and
# blocking) against the same calls from Rust, and 10,000 labs at concurrency 8 and 32 (one
# submitLabs call; one coroutine or task per lab). Release builds of the library and of the
# Rust side (examples/jvm_baseline.rs); the sandbox runs in each process on its runtime.
# Prints a markdown table (wall and process CPU time per operation).
#
#   bash bindings-kotlin/bench/run.sh            # 1,000,000 token calls, 2,000 labs, 10,000 labs
#   CIBMTR_BENCH_QUICK=1 bash bindings-kotlin/bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
release="$CARGO_TARGET_DIR/release"

cargo build --locked --release -q -p cibmtr-fhir-kotlin --lib --example jvm_baseline
cd bindings-kotlin
quiet() { "$@" >target/bench-mvn.log 2>&1 || { cat target/bench-mvn.log; exit 1; }; }
mkdir -p target
quiet mvn -B -q -ntp -Dcibmtr.native.dir="$release" test-compile
quiet mvn -B -q -ntp dependency:build-classpath -Dmdep.includeScope=test \
  -Dmdep.outputFile=target/bench-classpath

out=$(mktemp)
trap 'rm -f "$out"' EXIT
java -Duniffi.component.CibmtrFhir.libraryOverride="$release/libcibmtr_fhir_uniffi.so" \
  -cp "target/test-classes:target/classes:$(cat target/bench-classpath)" \
  io.cibmtrfhir.bench.BenchKt >>"$out"
"$release/examples/jvm_baseline" >>"$out"

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = {(r["side"], r["op"]): r for r in rows}
print("| operation | unit | Kotlin wall | Kotlin CPU | Rust wall | Rust CPU | Kotlin/Rust (wall) |")
print("|---|---|---:|---:|---:|---:|---:|")
for (side, op), k in by.items():
    if side != "kotlin":
        continue
    base = op.replace("_blocking", "")
    r = by.get(("rust", base))
    rw = f'{r["wall"]:.2f}' if r else "-"
    rc = f'{r["cpu"]:.2f}' if r else "-"
    ratio = f'{k["wall"] / r["wall"]:.2f}' if r and r["wall"] else "-"
    unit = k["unit"] + ("/op" if k["unit"] != "s" else f' ({k["ops"]} labs)')
    print(f'| {op} | {unit} | {k["wall"]:.2f} | {k["cpu"]:.2f} | {rw} | {rc} | {ratio} |')
PY
