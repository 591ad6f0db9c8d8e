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
