#!/usr/bin/env bash
# Release builds for benches/run-all.sh, each reused when cargo finds it up to date:
#   the CLI, the core's bench binaries, the Node addon (copied to target/bench-node, loaded via
#   NAPI_RS_NATIVE_LIBRARY_PATH so bindings-node/ keeps whatever build its tests use), the Python
#   wheel (installed into target/py-bench-venv) and the JVM library (bindings-kotlin/bench/run.sh
#   builds its own and its jar is measured from bindings-kotlin/target).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
t() { local s=$SECONDS; "$@"; echo "  built in $((SECONDS - s)) s: $*" >&2; }

t cargo build --locked -q --release -p cibmtr-fhir-cli -p cibmtr-fhir-node
t cargo bench --locked -q -p cibmtr-fhir --bench token_cache --bench submit_labs --no-run
# The bench executables' paths (run_all.py runs them directly, so it never waits on cargo's build
# lock while other builds run): target/bench-<name>.path.
cargo bench --locked -q -p cibmtr-fhir --bench token_cache --bench submit_labs --no-run --message-format=json \
  | python3 -c 'import json,os,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("submit_labs", "token_cache"):
        open(os.path.join(os.environ["CARGO_TARGET_DIR"], "bench-" + m["target"]["name"].replace("_", "-") + ".path"), "w").write(m["executable"] + "\n")'
mkdir -p "$CARGO_TARGET_DIR/bench-node"
cp "$CARGO_TARGET_DIR/release/libcibmtr_fhir_node.so" "$CARGO_TARGET_DIR/bench-node/cibmtr-fhir.linux-x64-gnu.node"

venv="$CARGO_TARGET_DIR/py-bench-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q -r bindings-python/requirements-dev.txt
wheels="$CARGO_TARGET_DIR/wheels/python-release"
rm -rf "$wheels"
(cd bindings-python && t "$venv/bin/maturin" build --locked --release --interpreter "$venv/bin/python" --out "$wheels" --quiet)
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheels"/cibmtr_fhir-*.whl
