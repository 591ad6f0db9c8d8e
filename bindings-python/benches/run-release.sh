#!/usr/bin/env bash
# The Python benchmark with release builds: a release wheel in its own virtualenv
# (target/py-bench-venv), the release CLI and the Rust token bench for the Rust figures, then
# bench.py --rust. Takes a few minutes the first time (release builds); run by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
venv="$CARGO_TARGET_DIR/py-bench-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q -r bindings-python/requirements-dev.txt
wheels="$CARGO_TARGET_DIR/wheels/python-release"
rm -rf "$wheels"
(cd bindings-python && "$venv/bin/maturin" build --locked --release --interpreter "$venv/bin/python" --out "$wheels" --quiet)
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheels"/cibmtr_fhir-*.whl
exec "$venv/bin/python" bindings-python/benches/bench.py --rust "$@"
