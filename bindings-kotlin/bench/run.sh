#!/usr/bin/env bash
# The JVM benchmark, run by hand: a cached token() and submitLab from Kotlin (suspend and
# blocking) against the same calls from Rust, and 10,000 labs at concurrency 8 and 32 (one
# submitLabs call; one coroutine or task per lab). Release builds of the library and of the
# Rust side (examples/jvm_baseline.rs); the sandbox runs in each process on its runtime.
# Prints two markdown tables (wall and process CPU time per operation): the token calls beside
# the floor of a call into the library (a trivial method returning a short String) and beside
# Rust, through the core and through the binding's own Rust function; then the lab operations.
#
#   bash bindings-kotlin/bench/run.sh            # 210,000 Kotlin token calls per kind, 2,000 labs, 10,000 labs
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
by = {(r["side"], r["op"]): r for r in rows if not r["op"].startswith("warmup_")}

def wall(r, digits=",.0f"):
    """Wall time; a median over rounds or runs shows the fastest and slowest beside it."""
    if r is None:
        return "-"
    if "wall_min" in r:
        return f'{r["wall"]:{digits}} ({r["wall_min"]:{digits}}–{r["wall_max"]:{digits}})'
    return f'{r["wall"]:.2f}'

def op_wall(r):
    return wall(r, ".3f")

def ratio(a, b):
    return f'{a["wall"] / b["wall"]:.2f}' if a and b and b["wall"] else "-"

# Calls into the library, beside the floor: a trivial method returning a short String.
floor = by.get(("kotlin", "floor_call"))
print("| call (ns) | Kotlin wall: median (rounds) | Kotlin CPU | ÷ floor | Rust core | Rust, binding | Kotlin/Rust core |")
print("|---|---|---:|---:|---:|---:|---:|")
for op, label in [("floor_call", "floor: `algorithm()`"), ("token", "cached `token()`"),
                  ("token_blocking", "cached `tokenBlocking()`")]:
    k = by.get(("kotlin", op))
    if k is None:
        continue
    core = by.get(("rust", "token")) if op != "floor_call" else None
    binding = by.get(("rust", "token_binding_blocking")) if op == "token_blocking" else None
    print(f'| {label} | {wall(k)} | {k["cpu"]:,.0f} | {ratio(k, floor)} | {wall(core)} | {wall(binding)} | {ratio(k, core)} |')
print()
print("| operation | unit | Kotlin wall | Kotlin CPU | Rust wall | Rust CPU | Rust, binding | Kotlin/Rust (wall) |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for (side, op), k in by.items():
    if side != "kotlin" or op in ("floor_call", "token", "token_blocking"):
        continue
    base = op.replace("_blocking", "")
    r = by.get(("rust", base))
    b = by.get(("rust", base + "_binding_blocking")) if op.endswith("_blocking") else None
    rw = op_wall(r)
    rc = f'{r["cpu"]:.2f}' if r else "-"
    bw = f'{b["wall"]:.2f}' if b else "-"
    unit = k["unit"] + ("/op" if k["unit"] != "s" else f' ({k["ops"]} labs)')
    print(f'| {op} | {unit} | {op_wall(k)} | {k["cpu"]:.2f} | {rw} | {rc} | {bw} | {ratio(k, r)} |')
PY
