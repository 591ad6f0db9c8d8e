#!/usr/bin/env bash
# The Node package (bindings-node, npm name `cibmtr-fhir`) and its examples, on a fresh machine:
# installs the npm dev tools from the lockfile, builds the native addon with `napi build` (debug,
# into the workspace's target directory so the Rust crates are compiled once), fails if the
# committed loader (index.js) or TypeScript declarations (index.d.ts) differ from what the Rust
# sources generate, runs `node --test`, compiles the typed example with `tsc --noEmit`, runs the
# quick start, and runs the benchmark in its quick mode.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node and npm not found: install Node.js 18 or newer and re-run" >&2
  exit 1
fi
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 18 ]; then
  echo "Node.js 18 or newer is needed (found $(node --version))" >&2
  exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

echo "== Node: npm ci (bindings-node)"
cd "$root/bindings-node"
npm ci --no-audit --no-fund --loglevel=error

echo "== Node: napi build (debug) and the committed index.js / index.d.ts are current"
generated=$(mktemp -d)
trap 'rm -rf "$generated"' EXIT
npx --no-install napi build --platform --output-dir "$generated" -- --locked
stale=0
for f in index.js index.d.ts; do
  if ! diff -u "$f" "$generated/$f"; then
    echo "bindings-node/$f is stale: run 'npx napi build --platform' in bindings-node and commit it" >&2
    stale=1
  fi
done
[ "$stale" = 0 ] || exit 1
cp "$generated"/*.node .

echo "== Node: node --test"
node --test __test__/*.test.mjs

echo "== Node: examples (npm ci, tsc --noEmit on the typed example, the quick start)"
cd "$root/examples/node"
npm ci --no-audit --no-fund --loglevel=error
"$root/bindings-node/node_modules/.bin/tsc" -p tsconfig.json
node quickstart.mjs

echo "== Node: benchmark, quick mode"
cd "$root/bindings-node"
CIBMTR_BENCH_QUICK=1 node bench/bench.mjs
