#!/usr/bin/env bash
# The JVM package (bindings-kotlin, Maven io.cibmtrfhir:cibmtr-fhir) and its examples, on a fresh
# machine: builds the uniffi cdylib (debug, into the workspace's target directory so the Rust
# crates are compiled once), fails if the committed Kotlin (bindings-kotlin/jvm/generated)
# differs from what uniffi-bindgen generates from that library, runs the JUnit 5 suite and
# packages the jar with `mvn verify` (the library goes into the jar under linux-x86-64/), checks
# that the packaged library is the one just built, runs the Java example against the jar, and
# runs the benchmark once in its quick mode.
#
#   bash scripts/test-kotlin.sh               # the whole check
#   bash scripts/test-kotlin.sh --regenerate  # rewrite jvm/generated after changing the crate
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if ! command -v java >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1 \
  || ! command -v mvn >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== Kotlin: installing a JDK and Maven (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless maven >/dev/null
  else
    echo "a JDK (17 or newer) and Maven are needed: install them and re-run" >&2
    exit 1
  fi
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
lib="$CARGO_TARGET_DIR/debug/libcibmtr_fhir_uniffi.so"
committed="$root/bindings-kotlin/jvm/generated"

echo "== Kotlin: cargo build (the cdylib and uniffi-bindgen, debug)"
cargo build --locked -q -p cibmtr-fhir-kotlin -p uniffi-bindgen

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bindgen() {
  "$CARGO_TARGET_DIR/debug/uniffi-bindgen" generate --no-format --library "$lib" \
    --language kotlin --out-dir "$1" >/dev/null
}

if [ "${1:-}" = "--regenerate" ]; then
  rm -rf "$committed"
  bindgen "$committed"
  echo "rewrote ${committed#"$root"/}"
  exit 0
fi

echo "== Kotlin: the committed bindings are what the crate generates"
bindgen "$work/generated"
if ! diff -ru "$committed" "$work/generated" >"$work/diff"; then
  head -40 "$work/diff" >&2
  echo "bindings-kotlin/jvm/generated is stale: run 'bash scripts/test-kotlin.sh --regenerate' and commit it" >&2
  exit 1
fi

# Debian's Maven writes ANSI resets even in batch mode; keep the log plain.
plain() { sed 's/\x1b\[[0-9;]*m//g'; }

echo "== Kotlin: mvn verify (compile, JUnit 5 under Surefire except the interop tag, which scripts/test-interop.sh runs; jar)"
cd "$root/bindings-kotlin"
mvn -B -ntp -Dcibmtr.native.dir="$CARGO_TARGET_DIR/debug" -DexcludedGroups=interop clean verify 2>&1 | plain
# A skipped test is not a pass.
if grep -l 'skipped="[1-9]' target/surefire-reports/TEST-*.xml; then
  echo "some JVM tests were skipped" >&2
  exit 1
fi

echo "== Kotlin: the jar carries the library just built"
jar=target/cibmtr-fhir-0.1.0.jar
(cd "$work" && jar xf "$root/bindings-kotlin/$jar" linux-x86-64/libcibmtr_fhir_uniffi.so)
if ! cmp -s "$work/linux-x86-64/libcibmtr_fhir_uniffi.so" "$lib"; then
  echo "the packaged native library differs from $lib" >&2
  exit 1
fi

echo "== Kotlin: the Java example runs against the packaged jar"
mvn -B -q -ntp dependency:build-classpath -Dmdep.includeScope=runtime \
  -Dmdep.outputFile="$work/classpath" >"$work/mvn.log" 2>&1 || { plain <"$work/mvn.log"; exit 1; }
java -cp "$jar:$(cat "$work/classpath")" "$root/examples/java/Quickstart.java" >"$work/example.out" 2>&1 \
  || { cat "$work/example.out"; exit 1; }
grep -q 'token requests 1' "$work/example.out" || { cat "$work/example.out"; exit 1; }
echo "the Java example ran: $(grep -c . "$work/example.out") lines of output"

echo "== Kotlin: the benchmark runs (quick mode, debug library; bench/run.sh measures)"
CIBMTR_BENCH_QUICK=1 java -cp "target/test-classes:$jar:$(cat "$work/classpath")" \
  io.cibmtrfhir.bench.BenchKt
