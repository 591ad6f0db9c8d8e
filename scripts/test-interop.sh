#!/usr/bin/env bash
# The interoperability suite (tests/interop): the SDK against servers, validators and peer
# clients that nobody here wrote, installed from the registries on a fresh machine:
#   - Node peers (oidc-provider, npm `fhir` R4 and STU3) from tests/interop/node/package-lock.json;
#   - Python peers (authlib + Flask, fhir.resources, fhirclient, fhirpy, requests-oauthlib) into a
#     virtualenv under target/interop-venv from tests/interop/requirements.txt;
# then the Rust interop tests (cargo test -p cibmtr-fhir-interop), then each language package
# against the same servers, then the peer-client comparison. Every server binds 127.0.0.1 port 0
# and stops with its test. A failure names the flow and the server.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONDONTWRITEBYTECODE=1
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

echo "== Interop: npm ci (oidc-provider, fhir)"
(cd tests/interop/node && npm ci --no-audit --no-fund --loglevel=error)

echo "== Interop: Python peers into $CARGO_TARGET_DIR/interop-venv"
venv="$CARGO_TARGET_DIR/interop-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q -r tests/interop/requirements.txt
export CIBMTR_INTEROP_PYTHON="$venv/bin/python"

echo "== Interop: Rust core against the independent servers and validators"
cargo test --locked -p cibmtr-fhir-interop

# ---------------------------------------------------------------------------------------------
# Authorization servers through the three language packages (issue 7, "Authorization servers"):
# every flow against oidc-provider and the authlib password server, once per package. Each
# package is (re)built here when it is missing or older than its sources, the same way its own
# scripts/test-<language>.sh builds it (debug, into the workspace's target directory).
# ---------------------------------------------------------------------------------------------

# Prints the first file under the given paths newer than $1 (nothing if $1 is current).
newer_than() {
  local artifact=$1
  shift
  find "$@" -type f -newer "$artifact" -not -path '*/node_modules/*' -not -path '*/target/*' \
    -print -quit 2>/dev/null
}

echo "== Interop: the Python package (cibmtr_fhir wheel) against the authorization servers"
wheels="$CARGO_TARGET_DIR/wheels/python"
wheel=$(ls "$wheels"/cibmtr_fhir-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ] || [ -n "$(newer_than "$wheel" core bindings-python Cargo.lock)" ]; then
  maturin_pin=$(grep -i '^maturin==' bindings-python/requirements-dev.txt)
  "$venv/bin/python" -m pip install -q "$maturin_pin"
  rm -rf "$wheels"
  (cd bindings-python && "$venv/bin/maturin" build --locked --profile dev --strip \
    --interpreter "$venv/bin/python" --out "$wheels" --quiet)
  wheel=$(ls "$wheels"/cibmtr_fhir-*.whl | head -1)
fi
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel"
"$venv/bin/python" -m pytest tests/interop/python/test_auth_interop.py -q -p no:cacheprovider

echo "== Interop: the Node package (cibmtr-fhir) against the authorization servers"
addon=$(ls bindings-node/*.node 2>/dev/null | head -1 || true)
if [ -z "$addon" ] || [ -n "$(newer_than "$addon" core bindings-node/src bindings-node/Cargo.toml Cargo.lock)" ]; then
  built=$(mktemp -d)
  (cd bindings-node && npm ci --no-audit --no-fund --loglevel=error &&
    npx --no-install napi build --platform --output-dir "$built" -- --locked)
  cp "$built"/*.node bindings-node/
  rm -rf "$built"
fi
node --test tests/interop/node-package/

echo "== Interop: the JVM package against the authorization servers (JUnit tag 'interop')"
cargo build --locked -q -p cibmtr-fhir-kotlin
rm -f bindings-kotlin/target/surefire-reports/*io.cibmtrfhir.interop.*
(cd bindings-kotlin &&
  mvn -B -ntp -Dcibmtr.native.dir="$CARGO_TARGET_DIR/debug" -Dgroups=interop test 2>&1 |
  sed 's/\x1b\[[0-9;]*m//g')
if ! ls bindings-kotlin/target/surefire-reports/TEST-io.cibmtrfhir.interop.*.xml >/dev/null 2>&1; then
  echo "no JVM interop test ran" >&2
  exit 1
fi
if grep -l 'skipped="[1-9]' bindings-kotlin/target/surefire-reports/TEST-io.cibmtrfhir.interop.*.xml; then
  echo "some JVM interop tests were skipped" >&2
  exit 1
fi
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Resource validation and peer clients (issue 7, "Resource validation" and "Peer clients, side
# by side"). The validators (tests/interop/validators: fhir.resources 8.3.0 and npm fhir) already
# ran inside `cargo test -p cibmtr-fhir-interop` above (tests/resources.rs, tests/figures.rs).
# Here: the same small job (one token, one Observation POST, one paged search) by
# requests-oauthlib, authlib, fhirpy, fhirclient and our Python package against the sandbox CLI,
# recorded on the wire in five conditions; the report goes to target/interop-peers.md, and the
# script fails if our SDK's figures do not hold. It uses the cibmtr_fhir wheel installed above.
# ---------------------------------------------------------------------------------------------
echo "== Interop: peer clients side by side (tests/interop/peers/compare.py)"
cargo build --locked -q -p cibmtr-fhir-cli
"$venv/bin/python" tests/interop/peers/compare.py \
  --sandbox-bin "$CARGO_TARGET_DIR/debug/cibmtr-fhir" --out "$CARGO_TARGET_DIR/interop-peers.md"
