#!/usr/bin/env python3
"""Benchmark of the Python package against the Rust SDK and the usual Python approaches.

1. A cached ``token()``: nanoseconds per call from Python (the blocking call and the awaitable),
   against the Rust core's own figure for the same call (criterion's ``warm_token`` median from
   ``cargo bench --bench token_cache``, run by this script with ``--rust``).
2. ``submit_lab`` one at a time: microseconds per call from Python, and what the binding adds to
   it (marshalling a dict into a ``LabResult`` and the result back).
3. 10,000 labs for one recipient, concurrency 8, to a fresh sandbox each run:
   * ``cibmtr_fhir`` (``submit_labs`` from a list of dicts, from a CSV path, ``asubmit_labs``);
   * the Rust SDK on the same input (the ``cibmtr-fhir labs submit`` command, release build, with
     ``--rust``);
   * the guide's approach with ``requests``: one lab at a time, a new Okta token per lab (as its
     scripts do), and with a hand-cached token and a kept-alive ``Session``;
   * ``fhirpy``'s ``AsyncFHIRClient`` with a hand-cached token at the same concurrency.
   Every run checks with the sandbox's counters that each lab was POSTed exactly once.

The sandbox runs in a separate process, its Okta rate limits raised so the token-per-lab baseline
is not throttled (real Okta allows 4 token requests per second per user: 10,000 labs that way
take 40 minutes). With two CPUs or more the sandbox gets one half and the clients the other.

    python bindings-python/benches/bench.py            # 10,000 labs; needs a release wheel
    python bindings-python/benches/bench.py --rust     # also the Rust figures (cargo, release)
    python bindings-python/benches/bench.py --quick    # smoke run: 300 labs, every path
    bash bindings-python/benches/run-release.sh        # release wheel + CLI, then --rust

Writes a markdown table to stdout and ``target/bench-python.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import datetime
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Optional, Tuple

REPO = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
CCN = "12345"
SERVER_CPUS_ENV = "CIBMTR_BENCH_SERVER_CPUS"


# ---------------------------------------------------------------------------------------------
# The sandbox in its own process
# ---------------------------------------------------------------------------------------------


def serve() -> None:
    """Child role: a sandbox with unthrottled Okta; serves until stdin closes."""
    cpus = os.environ.get(SERVER_CPUS_ENV)
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    import cibmtr_fhir as cf

    sb = cf.Sandbox(okta_rate_per_second=1_000_000_000, okta_rate_per_minute=1_000_000_000)
    print(json.dumps({"urls": sb.urls, "credentials": sb.credentials}), flush=True)
    sys.stdin.read()
    sb.stop()


class Server:
    def __init__(self, server_cpus: Optional[List[int]]) -> None:
        env = dict(os.environ)
        if server_cpus:
            env[SERVER_CPUS_ENV] = ",".join(map(str, server_cpus))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, text=True,
        )
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.urls: Dict[str, str] = info["urls"]
        self.creds: Dict[str, Dict[str, str]] = info["credentials"]

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def route_count(self, route: str) -> int:
        with urllib.request.urlopen(self.urls["admin"] + "/stats") as r:
            return int(json.loads(r.read())["routes"][route])

    def okta(self) -> Any:
        import cibmtr_fhir as cf

        c = self.creds["okta"]
        return cf.PasswordGrant(c["token_url"], c["client_id"], c["client_secret"], c["username"], c["password"], scope=c["scope"])

    def client(self) -> Any:
        import cibmtr_fhir as cf

        return cf.CibmtrClient(CCN, self.okta(), base_url=self.urls["cibmtr_base"])


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

START = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def labs(n: int) -> List[Dict[str, Any]]:
    """n distinct hemoglobin results, one a minute."""
    return [
        {"loinc": "718-7", "value": 12.5, "unit": "g/dL",
         "effective": (START + datetime.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        for i in range(n)
    ]


def write_csv(rows: List[Dict[str, Any]], path: pathlib.Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["loinc", "value", "unit", "effective"])
        w.writeheader()
        w.writerows(rows)


def observation_template(server: Server) -> Tuple[Dict[str, Any], int]:
    """The Observation the SDK sends (read back, server fields removed), for the baselines."""
    client = server.client()
    crid = client.register_crid("Base", "Line", "1970-01-31", "F")
    sub = client.submit_lab(crid, labs(1)[0])
    obs = client.fhir.read("Observation", sub.id)
    obs.pop("id")
    obs["meta"] = {"security": obs["meta"]["security"]}
    return obs, crid


def observation(template: Dict[str, Any], lab: Dict[str, Any], i: int) -> Dict[str, Any]:
    o = json.loads(json.dumps(template))
    o["effectiveDateTime"] = lab["effective"]
    o["valueQuantity"]["value"] = lab["value"]
    o["identifier"][0]["value"] = f"baseline-{i}"
    return o


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def per_call_ns(fn: Callable[[], Any], n: int, batches: int = 7) -> float:
    fn()
    samples = []
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter_ns() - t0) / n)
    return statistics.median(samples)


def rust_warm_token_ns() -> Optional[float]:
    """criterion's median of the Rust core's warm ``token()`` (release build, via cargo)."""
    if shutil.which("cargo") is None:
        return None
    subprocess.run(
        ["cargo", "bench", "--locked", "-q", "-p", "cibmtr-fhir", "--bench", "token_cache", "--", "warm_token"],
        cwd=REPO, check=True, env={**os.environ, "CIBMTR_BENCH_QUICK": "1"}, stdout=subprocess.DEVNULL,
    )
    est = TARGET / "criterion" / "token_cache" / "warm_token" / "new" / "estimates.json"
    return float(json.loads(est.read_text())["median"]["point_estimate"])


def rust_submit_labs() -> Optional[Dict[str, Any]]:
    """The Rust SDK's `submit_labs` at concurrency 8 on 10,000 labs from the core's own
    benchmark (`cargo bench --bench submit_labs`, which also fires wrk at the sandbox), run now."""
    if shutil.which("cargo") is None:
        return None
    subprocess.run(["cargo", "bench", "--locked", "-q", "-p", "cibmtr-fhir", "--bench", "submit_labs"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    rows = json.loads((TARGET / "bench-submit-labs.json").read_text())["rows"]
    row = next((r for r in rows if r["configuration"].startswith("SDK") and r["concurrency"] == 8), None)
    return dict(row) if row else None


def rust_cli() -> Optional[pathlib.Path]:
    if shutil.which("cargo") is None:
        return None
    subprocess.run(["cargo", "build", "--locked", "-q", "--release", "-p", "cibmtr-fhir-cli"], cwd=REPO, check=True)
    path = TARGET / "release" / "cibmtr-fhir"
    return path if path.exists() else None


class Run:
    def __init__(self, name: str, n: int) -> None:
        self.name, self.n = name, n
        self.seconds = 0.0
        self.posts = 0
        self.note = ""

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0


def bulk_runs(n: int, concurrency: int, server_cpus: Optional[List[int]], cli: Optional[pathlib.Path], repeat: int) -> List[Run]:
    import cibmtr_fhir as cf

    rows = labs(n)
    tmp = pathlib.Path(tempfile.mkdtemp())
    csv_path = tmp / "labs.csv"
    write_csv(rows, csv_path)
    results: List[Run] = []
    rust_runs: List[Run] = []

    def spread(times: List[float]) -> str:
        return f"median of {len(times)}: {', '.join(f'{t:.2f}' for t in sorted(times))} s" if len(times) > 1 else ""

    def sdk(name: str, submit: Callable[[Any, int], Any]) -> None:
        run = Run(name, n)
        times = []
        for _ in range(repeat):
            with Server(server_cpus) as server:
                client = server.client()
                crid = client.register_crid("Jane", "Doe", "1970-01-31", "F")
                client.ensure_patient(crid)
                before = server.route_count("observation_create")
                t0 = time.perf_counter()
                report = submit(client, crid)
                times.append(time.perf_counter() - t0)
                run.posts = server.route_count("observation_create") - before
                assert report.created == n and report.failed == 0, report
        run.seconds = statistics.median(times)
        run.note = spread(times)
        results.append(run)

    sdk("cibmtr_fhir `submit_labs` (list of dicts)", lambda c, crid: c.submit_labs(crid, rows, concurrency=concurrency))
    sdk("cibmtr_fhir `submit_labs` (CSV path)", lambda c, crid: c.submit_labs(crid, csv_path, concurrency=concurrency))
    sdk("cibmtr_fhir `asubmit_labs` (asyncio)", lambda c, crid: asyncio.run(c.asubmit_labs(crid, rows, concurrency=concurrency)))

    for _ in range(repeat if cli is not None else 0):
        run = Run("Rust SDK (`cibmtr-fhir labs submit`, CSV)", n)
        with Server(server_cpus) as server:
            client = server.client()
            crid = client.register_crid("Jane", "Doe", "1970-01-31", "F")
            client.ensure_patient(crid)
            c = server.creds["okta"]
            env = {**os.environ, "CIBMTR_TOKEN_URL": c["token_url"], "CIBMTR_BASE_URL": server.urls["cibmtr_base"],
                   "CIBMTR_CLIENT_ID": c["client_id"], "CIBMTR_CLIENT_SECRET": c["client_secret"],
                   "CIBMTR_USERNAME": c["username"], "CIBMTR_PASSWORD": c["password"], "CIBMTR_SCOPE": c["scope"],
                   "CIBMTR_CCN": CCN}
            before = server.route_count("observation_create")
            t0 = time.perf_counter()
            out = subprocess.run(
                [str(cli), "labs", "submit", "--csv", str(csv_path), "--crid", str(crid),
                 "--concurrency", str(concurrency), "--no-progress", "--json"],
                env=env, capture_output=True, text=True, check=True,
            )
            run.seconds = time.perf_counter() - t0
            run.posts = server.route_count("observation_create") - before
            assert json.loads(out.stdout)["created"] == n
        rust_runs.append(run)
    if rust_runs:
        times = [r.seconds for r in rust_runs]
        rust_runs[0].seconds = statistics.median(times)
        rust_runs[0].note = spread(times) + "; includes process start"
        results.append(rust_runs[0])

    import requests

    def baseline(name: str, go: Callable[[Server, Dict[str, Any], List[Dict[str, Any]]], None], note: str) -> None:
        run = Run(name, n)
        with Server(server_cpus) as server:
            template, _ = observation_template(server)
            bodies = [observation(template, lab, i) for i, lab in enumerate(rows)]
            before = server.route_count("observation_create")
            t0 = time.perf_counter()
            go(server, template, bodies)
            run.seconds = time.perf_counter() - t0
            run.posts = server.route_count("observation_create") - before
            run.note = note
        results.append(run)

    def basic(client_id: str, secret: str) -> str:
        # RFC 6749 2.3.1: form-urlencoded before base64 (the sandbox's secret needs it).
        pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}"
        return "Basic " + base64.b64encode(pair.encode()).decode()

    def okta_token(server: Server, session: Any = requests) -> str:
        c = server.creds["okta"]
        r = session.post(c["token_url"], data={"grant_type": "password", "username": c["username"],
                                                "password": c["password"], "scope": c["scope"]},
                         headers={"Authorization": basic(c["client_id"], c["client_secret"])})
        r.raise_for_status()
        return str(r.json()["access_token"])

    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}

    def token_per_lab(server: Server, template: Dict[str, Any], bodies: List[Dict[str, Any]]) -> None:
        url = server.urls["cibmtr_base"] + "/Observation"
        for body in bodies:
            token = okta_token(server)
            r = requests.post(url, data=json.dumps(body), headers={**headers, "Authorization": f"Bearer {token}"})
            r.raise_for_status()

    def cached_token(server: Server, template: Dict[str, Any], bodies: List[Dict[str, Any]]) -> None:
        url = server.urls["cibmtr_base"] + "/Observation"
        with requests.Session() as s:
            s.headers.update({**headers, "Authorization": f"Bearer {okta_token(server, s)}"})
            for body in bodies:
                s.post(url, data=json.dumps(body)).raise_for_status()

    def fhirpy_async(server: Server, template: Dict[str, Any], bodies: List[Dict[str, Any]]) -> None:
        from fhirpy import AsyncFHIRClient

        async def main() -> None:
            client = AsyncFHIRClient(server.urls["cibmtr_base"], authorization=f"Bearer {okta_token(server)}",
                                     extra_headers={"Content-Type": "application/fhir+json"})
            gate = asyncio.Semaphore(concurrency)

            async def one(body: Dict[str, Any]) -> None:
                async with gate:
                    await client.resource("Observation", **body).create()

            await asyncio.gather(*(one(b) for b in bodies))

        asyncio.run(main())

    baseline("requests, one at a time, a new token per lab (the guide's scripts)", token_per_lab,
             "no Session; a token request before every POST")
    baseline("requests, one at a time, hand-cached token", cached_token, "one token, kept-alive Session")
    baseline(f"fhirpy AsyncFHIRClient, concurrency {concurrency}, hand-cached token", fhirpy_async,
             "fhirpy opens a connection per request")
    shutil.rmtree(tmp, ignore_errors=True)
    for run in results:
        assert run.posts == n, f"{run.name}: {run.posts} POSTs for {n} labs"
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, every path")
    ap.add_argument("--rust", action="store_true", help="also measure the Rust SDK (cargo, release)")
    ap.add_argument("--labs", type=int, default=None, help="labs per bulk run (default 10,000; quick 300)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=None, help="runs of each SDK configuration (median; default 3, quick 1)")
    ap.add_argument("--no-pin", action="store_true", help="do not split the CPUs between sandbox and clients")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve()
        return 0

    # Pin before the SDK's runtime starts (its worker threads inherit the affinity).
    server_cpus = None
    if hasattr(os, "sched_getaffinity") and not args.no_pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            half = len(cpus) // 2
            server_cpus = cpus[half:]
            os.sched_setaffinity(0, set(cpus[:half]))

    import cibmtr_fhir as cf

    profile = getattr(cf._native, "_build_profile", "unknown")
    n = args.labs or (300 if args.quick else 10_000)
    token_calls = 20_000 if args.quick else 200_000
    single = 50 if args.quick else 1_000
    print(f"cibmtr_fhir {cf.__version__} ({profile} build), Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, sandbox CPUs {server_cpus or 'shared'}")
    if profile != "release":
        print("NOTE: not a release build: these figures only show that every path runs.")

    report: Dict[str, Any] = {"quick": args.quick, "build": profile, "labs": n, "concurrency": args.concurrency}

    # 1. Cached token.
    with Server(server_cpus) as server:
        auth = server.okta()
        py_ns = per_call_ns(auth.token, token_calls)

        async def awaited() -> float:
            await auth.atoken()
            t0 = time.perf_counter_ns()
            k = token_calls // 20
            for _ in range(k):
                await auth.atoken()
            return (time.perf_counter_ns() - t0) / k

        py_async_ns = asyncio.run(awaited())
        assert auth.stats()["token_requests"] == 1
    rust_ns = rust_warm_token_ns() if args.rust else None
    report["token"] = {"python_ns": py_ns, "python_async_ns": py_async_ns, "rust_ns": rust_ns}

    # 2. submit_lab one at a time, and what the binding adds to it.
    with Server(server_cpus) as server:
        client = server.client()
        crid = client.register_crid("Jane", "Doe", "1970-01-31", "F")
        client.ensure_patient(crid)
        items = labs(single)
        t0 = time.perf_counter()
        for lab in items:
            client.submit_lab(crid, lab)
        per_lab_us = (time.perf_counter() - t0) / single * 1e6
    sample = labs(1)[0]
    marshal_us = per_call_ns(lambda: cf.LabResult.from_dict(sample), 20_000) / 1000
    report["submit_lab"] = {"python_us": per_lab_us, "binding_marshalling_us": marshal_us}

    # 3. Bulk.
    cli = rust_cli() if args.rust else None
    runs = bulk_runs(n, args.concurrency, server_cpus, cli, args.repeat or (1 if args.quick else 3))
    report["bulk"] = [{"name": r.name, "seconds": r.seconds, "labs_per_second": r.rate, "posts": r.posts, "note": r.note} for r in runs]

    rust_bulk = rust_submit_labs() if args.rust else None
    report["rust_submit_labs_c8"] = rust_bulk

    # The table.
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| cached `token()` from Python (blocking) | {py_ns:.0f} ns/call |")
    print(f"| cached `await atoken()` from Python | {py_async_ns / 1000:.1f} µs/call |")
    if rust_ns:
        print(f"| cached `token()` in Rust (criterion median) | {rust_ns:.0f} ns/call |")
        print(f"| Python / Rust | {py_ns / rust_ns:.1f}x (+{py_ns - rust_ns:.0f} ns per call) |")
    print(f"| `submit_lab` from Python, one at a time (search + POST) | {per_lab_us:.0f} µs/lab |")
    print(f"| of which the binding's marshalling (dict → LabResult) | {marshal_us:.1f} µs |")
    print()
    sdk_rate = runs[0].rate
    print(f"{n:,} labs, concurrency {args.concurrency}, a fresh sandbox per run:")
    print()
    print("| client | seconds | labs/s | vs cibmtr_fhir | note |")
    print("|---|---:|---:|---:|---|")
    for r in runs:
        print(f"| {r.name} | {r.seconds:.2f} | {r.rate:,.0f} | {r.rate / sdk_rate:.2f}x | {r.note} |")
    if rust_bulk:
        print()
        print(f"Rust SDK `submit_labs` (labs in memory, concurrency 8, 10,000 labs), from `cargo bench "
              f"--bench submit_labs` run just now: median {rust_bulk['median']:,.0f} labs/s "
              f"(runs: {', '.join(f'{x:,.0f}' for x in rust_bulk['labs_per_second'])}); "
              f"Python list of dicts / Rust: {sdk_rate / rust_bulk['median']:.2f}x")
    rust = next((r for r in runs if r.name.startswith("Rust")), None)
    checks = []
    if rust_bulk:
        checks.append(("Python within 10% of Rust, labs in memory (labs/s)", sdk_rate >= 0.9 * rust_bulk["median"]))
    if rust:
        csv_run = runs[1]  # the same input as the command: a CSV file
        checks.append(("Python within 10% of Rust, same CSV input (labs/s)", csv_run.rate >= 0.9 * rust.rate))
    for r in runs[len(runs) - 3:]:
        checks.append((f"ahead of: {r.name}", sdk_rate > r.rate))
    print()
    for name, ok in checks:
        print(f"- {name}: {'met' if ok else 'MISSED'}")
    report["checks"] = {name: ok for name, ok in checks}
    TARGET.mkdir(parents=True, exist_ok=True)
    out = TARGET / "bench-python.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
