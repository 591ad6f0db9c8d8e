#!/usr/bin/env bash
# The Python package (bindings-python, `import cibmtr_fhir`) and its examples, on a fresh machine:
# makes a virtualenv under target/py-venv with the pinned tools of
# bindings-python/requirements-dev.txt, builds the abi3 wheel with maturin (dev profile, into the
# workspace's target directory so the Rust crates are compiled once), installs it, runs the pytest
# suite, runs the examples, type-checks them strictly against the stubs with mypy, and runs the
# benchmark in its quick (smoke) mode.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

python=""
for candidate in python3 python; do
  if command -v "$candidate" >/dev/null 2>&1 &&
    "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "Python 3.9 or newer (with the venv module) not found: install it and re-run" >&2
  exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONDONTWRITEBYTECODE=1
venv="$CARGO_TARGET_DIR/py-venv"

echo "== Python: virtualenv $venv ($("$python" --version))"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q -r bindings-python/requirements-dev.txt

echo "== Python: maturin build (dev profile, abi3 wheel) and install"
wheels="$CARGO_TARGET_DIR/wheels/python"
rm -rf "$wheels"
(cd bindings-python && "$venv/bin/maturin" build --locked --profile dev --strip \
  --interpreter "$venv/bin/python" --out "$wheels" --quiet)
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheels"/cibmtr_fhir-*.whl

echo "== Python: pytest"
# The journal test compares the package's export with the command line's.
cargo build --locked -q -p cibmtr-fhir-cli
export CIBMTR_FHIR_CLI="$CARGO_TARGET_DIR/debug/cibmtr-fhir"
"$venv/bin/python" -m pytest bindings-python/tests -q -o cache_dir="$CARGO_TARGET_DIR/pytest-cache"

echo "== Python: examples"
"$venv/bin/python" examples/python/quickstart.py
"$venv/bin/python" examples/python/asyncio_fhir.py

echo "== Python: mypy --strict on the examples, against the package's stubs"
"$venv/bin/python" -m mypy --strict --cache-dir "$CARGO_TARGET_DIR/mypy-cache" examples/python

echo "== Python: benchmark, quick mode (smoke: a dev build; run bench.py on a release build for figures)"
"$venv/bin/python" bindings-python/benches/bench.py --quick
