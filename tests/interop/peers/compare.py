#!/usr/bin/env python3
"""Peer clients side by side: the same small job run by `requests-oauthlib`, `authlib`, `fhirpy`,
`fhirclient` and our SDK (the `cibmtr_fhir` Python package) against the sandbox, with what each
does on the wire recorded.

The job is what a CIBMTR submitter does: get an Okta token (password grant, client credentials
as HTTP Basic), POST one lab Observation, run one paged search (every Observation of the CRID,
61 of them, two pages of the server's default 50). It runs in five conditions:

  clean          a healthy server
  token expires  4-second tokens; the job pauses 5 s between the POST and the search
  token revoked  the server invalidates every token between the POST and the search
  503 on POST    the first Observation POST is answered 503 (and not processed)
  429 on search  the first search page is answered 429 with Retry-After: 1

The sandbox is the CLI binary (`cibmtr-fhir sandbox --port 0 --okta-token-ttl N`, which prints
its URLs and credentials as JSON on stdout), one fresh process per client and condition, driven
through its admin API (`/admin/faults`, `/admin/revoke`, `/admin/stats`). Every client talks to
it through a recording reverse proxy written here, so the counts are what crossed the wire:
token requests, POSTs, search pages, error answers, repeated requests, headers. The sandbox's own
token counter is checked against the proxy's for every run.

Each peer is driven the way its documentation suggests, without retry code of our own. Where a
peer cannot get past the token endpoint with the sandbox's secret (which, like real ones,
contains characters that HTTP Basic must form-encode, RFC 6749 section 2.3.1), that is recorded
in the notes and the job is given pre-encoded credentials, so the rest of the comparison runs.
Two more settings are needed and recorded: requests-oauthlib refuses http even on loopback
without OAUTHLIB_INSECURE_TRANSPORT=1, and authlib's 60-second expiry leeway would treat a
4-second token as expired on arrival, so it gets leeway=1.

Output: a markdown report on stdout and in --out (default target/interop-peers.md). Exit status
1 if any of our SDK's expected figures does not hold (one token request on a healthy run, a
second one only after expiry or revocation, no duplicate POST, the 503'd POST checked before it
is repeated, the 429 waited out), naming the condition and the figure.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import http.server
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import requests

ROOT = Path(__file__).resolve().parents[3]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
CCN = "12345"
SEEDED = 60
EFFECTIVE = "2024-05-01T08:30:00-05:00"


# --------------------------------------------------------------------------------------------
# The sandbox (CLI binary) and its admin API
# --------------------------------------------------------------------------------------------


class Sandbox:
    def __init__(self, binary: Path, token_ttl: int = 1800) -> None:
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [str(binary), "sandbox", "--port", "0", "--okta-token-ttl", str(token_ttl)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        # The CLI prints one pretty-printed JSON object, then serves until SIGINT.
        text = ""
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.stop()
                self.log.seek(0)
                raise RuntimeError(f"sandbox did not start: {self.log.read().decode()[-500:]}")
            text += line
            try:
                self.info = json.loads(text)
                break
            except json.JSONDecodeError:
                continue
        self.base: str = self.info["base"]
        self.okta: Dict[str, str] = self.info["okta"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        r = requests.request(method, f"{self.base}/admin/{path}", json=body, timeout=10)
        r.raise_for_status()
        return r.json() if r.content else None

    def stats(self) -> Dict[str, Any]:
        return self.admin("GET", "stats")

    def fault(self, route: str, status: int, headers: Optional[Dict[str, str]] = None) -> None:
        self.admin("POST", "faults", {"route": route, "status": status, "headers": headers or {}, "times": 1})

    def revoke(self) -> None:
        self.admin("POST", "revoke")


def form_encode(s: str) -> str:
    """application/x-www-form-urlencoded, as RFC 6749 section 2.3.1 wants for HTTP Basic."""
    return urllib.parse.quote_plus(s, safe="")


# --------------------------------------------------------------------------------------------
# The recording reverse proxy
# --------------------------------------------------------------------------------------------

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server", "proxy-connection"}


@dataclass
class Exchange:
    t: float
    method: str
    path: str
    query: str
    headers: Dict[str, str]
    status: int
    retry_after: Optional[str]


class WireRecorder:
    """Forwards every request to the sandbox and records it; rewrites the sandbox's own base URL
    in answers (Bundle links, Location) to the proxy's, so clients stay on the recorded origin."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.upstream_base = upstream.rstrip("/")
        self.exchanges: List[Exchange] = []
        self.lock = threading.Lock()
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def forward(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                headers["Host"] = recorder.upstream.netloc
                conn = http.client.HTTPConnection(recorder.upstream.hostname, recorder.upstream.port, timeout=60)
                try:
                    conn.request(self.command, self.path, body, headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    answer_headers = resp.getheaders()
                finally:
                    conn.close()
                data = data.replace(recorder.upstream_base.encode(), recorder.base.encode())
                self.send_response(resp.status)
                retry_after = None
                for k, v in answer_headers:
                    if k.lower() in HOP:
                        continue
                    if k.lower() == "retry-after":
                        retry_after = v
                    self.send_header(k, v.replace(recorder.upstream_base, recorder.base))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                path, _, query = self.path.partition("?")
                recorder.record(Exchange(time.monotonic(), self.command, path, query, redact(self.headers), resp.status, retry_after))

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def record(self, e: Exchange) -> None:
        with self.lock:
            self.exchanges.append(e)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def redact(headers: Any) -> Dict[str, str]:
    """Header names and values, with credentials replaced by their scheme and a short hash (so
    distinct tokens can be counted without keeping them)."""
    out = {}
    for k, v in headers.items():
        if k.lower() == "authorization":
            scheme, _, cred = v.partition(" ")
            v = f"{scheme} #{hashlib.sha256(cred.encode()).hexdigest()[:8]}"
        out[k.lower()] = v
    return out


# --------------------------------------------------------------------------------------------
# The job and its setting
# --------------------------------------------------------------------------------------------


@dataclass
class Context:
    sb: Sandbox
    wire: WireRecorder
    crid: int
    patient_id: str
    marker: str
    # Runs between the POST and the search (pause, revocation, fault).
    between: Callable[[], None] = lambda: None

    @property
    def api(self) -> str:
        return self.wire.base + "/cibmtr/v1"

    @property
    def token_url(self) -> str:
        return self.wire.base + urllib.parse.urlsplit(self.sb.okta["token_url"]).path

    def observation(self) -> Dict[str, Any]:
        """The Observation the peers POST: the guide's Figure 8 shape, with a marker identifier."""
        q = lambda v: {"value": v, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"}
        return {
            "resourceType": "Observation",
            "meta": {"security": [{"system": "http://cibmtr.org/codesystem/transplant-center", "code": f"rc_{CCN}"}]},
            "identifier": [{"system": "urn:peer-job", "value": self.marker}],
            "status": "final",
            "category": [{"coding": [{"system": "http://hl7.org/fhir/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": f"Patient/{self.patient_id}"},
            "effectiveDateTime": EFFECTIVE,
            "valueQuantity": q(12.5),
            "referenceRange": [{"low": q(12.0), "high": q(16.0)}],
        }


def direct_token(sb: Sandbox) -> str:
    o = sb.okta
    r = requests.post(
        o["token_url"],
        data={"grant_type": "password", "username": o["username"], "password": o["password"], "scope": o["scope"]},
        auth=(form_encode(o["client_id"]), form_encode(o["client_secret"])),
        timeout=10,
    )
    r.raise_for_status()
    return r.json()["access_token"]


def seed(sb: Sandbox) -> Tuple[int, str]:
    """A CRID, its Patient and SEEDED Observations, straight to the sandbox (not recorded)."""
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {direct_token(sb)}"
    api = sb.info["cibmtr_base"]
    r = s.put(f"{api}/CRID", json={"ccn": CCN, "patient": {"firstName": "Jane", "lastName": "Doe", "birthDate": "1970-01-31", "gender": "F"}})
    r.raise_for_status()
    crid = r.json()["perfectMatch"][0]["crid"]
    fhir = {"Content-Type": "application/fhir+json"}
    security = {"security": [{"system": "http://cibmtr.org/codesystem/transplant-center", "code": f"rc_{CCN}"}]}
    patient = {"resourceType": "Patient", "meta": security, "identifier": [{"system": "http://cibmtr.org/identifier/CRID", "value": str(crid)}]}
    r = s.post(f"{api}/Patient", data=json.dumps(patient), headers=fhir)
    r.raise_for_status()
    pid = r.json()["id"]
    for i in range(SEEDED):
        obs = {
            "resourceType": "Observation", "meta": security, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "26515-7"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": f"2024-04-{1 + i % 28:02d}T08:{i % 60:02d}:00Z",
            "valueQuantity": {"value": 100 + i, "unit": "10*9/L", "system": "http://unitsofmeasure.org", "code": "10*9/L"},
        }
        s.post(f"{api}/Observation", data=json.dumps(obs), headers=fhir).raise_for_status()
    return crid, pid


def count_observations(sb: Sandbox, crid: int) -> int:
    r = requests.get(
        f"{sb.info['cibmtr_base']}/Observation",
        params={"subject:Patient.identifier": str(crid), "_count": "1000"},
        headers={"Authorization": f"Bearer {direct_token(sb)}"},
        timeout=10,
    )
    r.raise_for_status()
    return len(r.json().get("entry", []))


def follow_pages(get: Callable[..., Any], url: str, params: Dict[str, str]) -> List[Any]:
    """FHIR paging by hand, for the OAuth sessions that are not FHIR clients."""
    found: List[Any] = []
    while url:
        r = get(url, params=params)
        r.raise_for_status()
        bundle = r.json()
        found += [e["resource"] for e in bundle.get("entry", [])]
        url = next((l["url"] for l in bundle.get("link", []) if l["relation"] == "next"), "")
        params = {}
    return found


# --------------------------------------------------------------------------------------------
# The clients
# --------------------------------------------------------------------------------------------

Job = Callable[[Context, Dict[str, str]], int]
SEARCH = lambda ctx: {"subject:Patient.identifier": str(ctx.crid)}


def job_requests_oauthlib(ctx: Context, creds: Dict[str, str]) -> int:
    from oauthlib.oauth2 import LegacyApplicationClient
    from requests.auth import HTTPBasicAuth
    from requests_oauthlib import OAuth2Session

    o = ctx.sb.okta
    # The scope goes to fetch_token: a session-level scope is not sent with the password grant.
    s = OAuth2Session(client=LegacyApplicationClient(client_id=creds["client_id"]))
    s.fetch_token(ctx.token_url, username=o["username"], password=o["password"], scope=o["scope"],
                  auth=HTTPBasicAuth(creds["client_id"], creds["client_secret"]))
    s.post(f"{ctx.api}/Observation", json=ctx.observation()).raise_for_status()
    ctx.between()
    return len(follow_pages(s.get, f"{ctx.api}/Observation", SEARCH(ctx)))


def job_authlib(ctx: Context, creds: Dict[str, str]) -> int:
    from authlib.integrations.requests_client import OAuth2Session

    o = ctx.sb.okta
    s = OAuth2Session(creds["client_id"], creds["client_secret"], scope=o["scope"], token_endpoint=ctx.token_url,
                      token_endpoint_auth_method="client_secret_basic", leeway=1)
    s.fetch_token(ctx.token_url, grant_type="password", username=o["username"], password=o["password"])
    s.post(f"{ctx.api}/Observation", json=ctx.observation()).raise_for_status()
    ctx.between()
    return len(follow_pages(s.get, f"{ctx.api}/Observation", SEARCH(ctx)))


def user_token(ctx: Context, creds: Dict[str, str]) -> str:
    """fhirpy and fhirclient have no password grant: the user fetches the token with requests."""
    o = ctx.sb.okta
    r = requests.post(ctx.token_url, auth=(creds["client_id"], creds["client_secret"]),
                      data={"grant_type": "password", "username": o["username"], "password": o["password"], "scope": o["scope"]})
    r.raise_for_status()
    return r.json()["access_token"]


def job_fhirpy(ctx: Context, creds: Dict[str, str]) -> int:
    from fhirpy import SyncFHIRClient

    client = SyncFHIRClient(ctx.api, authorization=f"Bearer {user_token(ctx, creds)}")
    client.resource("Observation", **ctx.observation()).save()
    ctx.between()
    return len(client.resources("Observation").search(**SEARCH(ctx)).fetch_all())


def job_fhirclient(ctx: Context, creds: Dict[str, str]) -> int:
    from fhirclient import auth, client
    from fhirclient.models.observation import Observation

    smart = client.FHIRClient(settings={"app_id": "peer-job", "api_base": ctx.api + "/"})
    # No password grant either; a token from elsewhere goes into its OAuth2 auth state.
    smart.server.auth = auth.FHIROAuth2Auth(state={"app_id": "peer-job", "access_token": user_token(ctx, creds)})
    Observation(ctx.observation()).create(smart.server)
    ctx.between()
    return len(list(Observation.where(SEARCH(ctx)).perform_resources_iter(smart.server)))


def our_auth(ctx: Context, creds: Dict[str, str]) -> Any:
    import cibmtr_fhir as cf

    o = ctx.sb.okta
    # The raw secret: the SDK form-encodes HTTP Basic itself.
    return cf.PasswordGrant(ctx.token_url, o["client_id"], o["client_secret"], o["username"], o["password"], scope=o["scope"])


def job_sdk_fhir(ctx: Context, creds: Dict[str, str]) -> int:
    import cibmtr_fhir as cf

    auth = our_auth(ctx, creds)
    auth.token()
    fhir = cf.FhirClient(ctx.api, auth, fhir_version="STU3")
    fhir.create(ctx.observation())
    ctx.between()
    return len(fhir.search_all("Observation", SEARCH(ctx)))


def job_sdk_cibmtr(ctx: Context, creds: Dict[str, str]) -> int:
    import cibmtr_fhir as cf

    auth = our_auth(ctx, creds)
    auth.token()
    client = cf.CibmtrClient(CCN, auth, base_url=ctx.api)
    client.submit_lab(ctx.crid, "718-7", 12.5, "g/dL", EFFECTIVE, (12.0, 16.0))
    ctx.between()
    return len(client.observations(ctx.crid))


@dataclass
class Peer:
    name: str
    job: Job
    ours: bool = False
    # Sends the client credentials as HTTP Basic from what the user passes (so may need them
    # form-encoded beforehand); None when the SDK or the user's own code does it.
    raw_basic_probe: Optional[Callable[[Sandbox], None]] = None
    # Who builds that HTTP Basic header, for the note.
    basic_by: str = ""
    notes: List[str] = field(default_factory=list)


def probe_requests_oauthlib(sb: Sandbox) -> None:
    from oauthlib.oauth2 import LegacyApplicationClient
    from requests_oauthlib import OAuth2Session

    o = sb.okta
    s = OAuth2Session(client=LegacyApplicationClient(client_id=o["client_id"]))
    s.fetch_token(o["token_url"], username=o["username"], password=o["password"], scope=o["scope"],
                  client_secret=o["client_secret"])


def probe_authlib(sb: Sandbox) -> None:
    from authlib.integrations.requests_client import OAuth2Session

    o = sb.okta
    s = OAuth2Session(o["client_id"], o["client_secret"], scope=o["scope"], token_endpoint_auth_method="client_secret_basic")
    s.fetch_token(o["token_url"], grant_type="password", username=o["username"], password=o["password"])


def probe_requests(sb: Sandbox) -> None:
    o = sb.okta
    requests.post(o["token_url"], auth=(o["client_id"], o["client_secret"]),
                  data={"grant_type": "password", "username": o["username"], "password": o["password"], "scope": o["scope"]}).raise_for_status()


PEERS = [
    Peer("requests-oauthlib 2.0.0", job_requests_oauthlib, raw_basic_probe=probe_requests_oauthlib,
         basic_by="`fetch_token(client_secret=...)`",
         notes=["refuses http, even loopback, without `OAUTHLIB_INSECURE_TRANSPORT=1` (set here)"]),
    Peer("authlib 1.9.6 (sync `OAuth2Session`)", job_authlib, raw_basic_probe=probe_authlib,
         basic_by="`client_secret_basic`",
         notes=["`leeway=1` (default 60 s would call a 4 s token expired on arrival)"]),
    Peer("fhirpy 2.3.1 (+ `requests` for the token)", job_fhirpy, raw_basic_probe=probe_requests,
         basic_by="the user's token code (`requests`, `auth=(id, secret)`)",
         notes=["no OAuth: a static `Authorization` header"]),
    Peer("fhirclient 4.4.0 (+ `requests` for the token)", job_fhirclient, raw_basic_probe=probe_requests,
         basic_by="the user's token code (`requests`, `auth=(id, secret)`)",
         notes=["no password grant: the token is put into its `FHIROAuth2Auth` state"]),
    Peer("**cibmtr_fhir `FhirClient`**", job_sdk_fhir, ours=True),
    Peer("**cibmtr_fhir `CibmtrClient`**", job_sdk_cibmtr, ours=True),
]


@dataclass
class Condition:
    key: str
    title: str
    token_ttl: int = 1800
    before: Callable[[Sandbox], None] = lambda sb: None
    between: Callable[[Sandbox], None] = lambda sb: None


CONDITIONS = [
    Condition("clean", "clean"),
    Condition("expiry", "token expires mid-job", token_ttl=4, between=lambda sb: time.sleep(5)),
    Condition("revoked", "token revoked mid-job", between=lambda sb: sb.revoke()),
    Condition("post503", "503 once on the POST", before=lambda sb: sb.fault("observation_create", 503)),
    Condition("search429", "429 once on the search",
              between=lambda sb: sb.fault("observation_search", 429, {"Retry-After": "1"})),
]


# --------------------------------------------------------------------------------------------
# Running and measuring
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    peer: Peer
    cond: Condition
    ok: bool
    error: str
    found: int
    created: int
    exchanges: List[Exchange]
    sandbox_token_requests: int

    def on(self, method: str, path_suffix: str) -> List[Exchange]:
        return [e for e in self.exchanges if e.method == method and e.path.endswith(path_suffix)]

    @property
    def tokens(self) -> int:
        return len([e for e in self.exchanges if e.path.endswith("/v1/token")])

    @property
    def posts(self) -> int:
        return len(self.on("POST", "/Observation"))

    @property
    def gets(self) -> int:
        return len([e for e in self.exchanges if e.method == "GET"])

    @property
    def errors(self) -> List[int]:
        return [e.status for e in self.exchanges if e.status >= 400]

    @property
    def retries(self) -> int:
        """Requests repeated after an error answer to the same method and path."""
        n = 0
        for i, e in enumerate(self.exchanges):
            if e.status >= 400 and not e.path.endswith("/v1/token"):
                if any(l.method == e.method and l.path == e.path for l in self.exchanges[i + 1:]):
                    n += 1
        return n

    @property
    def duplicates(self) -> int:
        return max(0, self.created - 1)


def short_error(e: BaseException) -> str:
    """The exception's class, and for an error the client raised without asking the server
    (nothing on the wire explains it) the start of its message."""
    text = " ".join(str(e).split())
    if text and not any(c in text for c in "{<") and "Error:" not in text and "://" not in text:
        return f"{type(e).__name__}: {text[:50]}"
    return type(e).__name__


def run(peer: Peer, cond: Condition, binary: Path) -> Result:
    sb = Sandbox(binary, cond.token_ttl)
    wire = WireRecorder(sb.base)
    try:
        crid, pid = seed(sb)
        creds = {"client_id": sb.okta["client_id"], "client_secret": sb.okta["client_secret"]}
        if peer.raw_basic_probe is not None:
            try:
                peer.raw_basic_probe(sb)
            except Exception as e:  # noqa: BLE001 - recorded, not hidden
                note = (f"{peer.basic_by} puts the client secret into HTTP Basic unencoded: the sandbox's "
                        f"secret (`%+:/ &=` in it) is refused (`{type(e).__name__}`); the job gets "
                        f"form-encoded credentials (RFC 6749 2.3.1)")
                if note not in peer.notes:
                    peer.notes.append(note)
                creds = {k: form_encode(v) for k, v in creds.items()}
        before = sb.stats()["token_requests_total"]
        ctx = Context(sb, wire, crid, pid, marker=f"{peer.name}/{cond.key}", between=lambda: cond.between(sb))
        cond.before(sb)
        ok, error, found = True, "", 0
        try:
            found = peer.job(ctx, creds)
        except Exception as e:  # noqa: BLE001 - the peer's failure is the measurement
            ok, error = False, short_error(e)
            if os.environ.get("PEERS_DEBUG"):
                traceback.print_exc()
        token_requests = sb.stats()["token_requests_total"] - before
        created = count_observations(sb, crid) - SEEDED
        return Result(peer, cond, ok, error, found, created, list(wire.exchanges), token_requests)
    finally:
        wire.close()
        sb.stop()


def cell(r: Result) -> str:
    counts = f"{r.tokens} token, {r.posts} POST, {r.gets} GET"
    errs = ", ".join(str(s) for s in r.errors)
    extra = []
    if errs:
        extra.append(f"answered {errs}")
    if r.retries:
        extra.append(f"{r.retries} retried")
    if r.duplicates:
        extra.append(f"**{r.duplicates} duplicate**")
    head = f"ok ({r.found} found)" if r.ok else f"fails: `{r.error}`"
    return f"{head}<br>{counts}" + (f"; {'; '.join(extra)}" if extra else "")


def headers_row(r: Result) -> List[str]:
    post = r.on("POST", "/Observation")
    token = [e for e in r.exchanges if e.path.endswith("/v1/token")]
    h = post[0].headers if post else {}
    t = token[0].headers if token else {}
    auth = h.get("authorization", "").split(" ")[0] or "–"
    ua = h.get("user-agent", "–")
    return [
        f"`{t.get('authorization', '–').split(' ')[0]}`" if t else "–",
        f"`{auth}`",
        f"`{h.get('content-type', '–')}`",
        f"`{h.get('accept', '–')}`",
        f"`{ua[:40]}`",
    ]


def report(results: List[Result]) -> str:
    by = {(r.peer.name, r.cond.key): r for r in results}
    lines = ["| client | " + " | ".join(c.title for c in CONDITIONS) + " |",
             "|---|" + "---|" * len(CONDITIONS)]
    for p in PEERS:
        lines.append(f"| {p.name} | " + " | ".join(cell(by[(p.name, c.key)]) for c in CONDITIONS) + " |")
    out = [
        "## Peer clients side by side",
        "",
        "One Okta token, one Observation POST, one paged search (61 Observations, 2 pages) against the "
        "sandbox, through a recording proxy. Counts are requests on the wire for the job alone; "
        "\"found\" is what the search returned; duplicates are Observations stored beyond the one "
        "POSTed. Generated by `tests/interop/peers/compare.py`.",
        "",
        *lines,
        "",
        "What each sends (clean run): client authentication at the token endpoint, and the headers "
        "of the Observation POST.",
        "",
        "| client | token request | POST auth | POST Content-Type | POST Accept | User-Agent |",
        "|---|---|---|---|---|---|",
    ]
    for p in PEERS:
        out.append(f"| {p.name} | " + " | ".join(headers_row(by[(p.name, 'clean')])) + " |")
    out += ["", "Notes:", "",
            "- cibmtr_fhir `CibmtrClient`'s extra GETs: it finds the recipient's Patient and looks for the "
            "lab's content-derived identifier before it POSTs, which is what makes re-sending after the 503 "
            "safe (no duplicate). `FhirClient.create` is a bare POST: it reports the 503 and does not re-send "
            "a non-idempotent request.",
            "- Counts are the recording proxy's; the sandbox's own token counter agrees for every run."]
    for p in PEERS:
        for n in p.notes:
            out.append(f"- {p.name}: {n}")
    return "\n".join(out) + "\n"


def check_ours(results: List[Result]) -> List[str]:
    """Our SDK's figures; each failure names the client, the condition and the figure."""
    problems: List[str] = []

    def expect(r: Result, what: str, cond: bool) -> None:
        if not cond:
            problems.append(f"{r.peer.name} / {r.cond.title}: expected {what}; got {cell(r)}")

    for r in results:
        expect(r, f"sandbox token counter = wire count ({r.sandbox_token_requests})", r.sandbox_token_requests == r.tokens)
        if not r.peer.ours:
            continue
        cibmtr = "CibmtrClient" in r.peer.name
        k = r.cond.key
        expect(r, "no duplicate Observation", r.duplicates == 0)
        if k == "post503" and not cibmtr:
            # A bare create is not idempotent: the SDK reports the 503 instead of re-sending.
            expect(r, "the 503 reported, the POST not re-sent", not r.ok and r.errors == [503] and r.posts == 1)
            continue
        expect(r, "the job to succeed", r.ok)
        expect(r, f"the search to find all {SEEDED + 1}", r.found == SEEDED + 1)
        expect(r, "exactly one Observation created", r.created == 1)
        expect(r, "every request but the token's to carry a Bearer token",
               all(e.headers.get("authorization", "").startswith("Bearer ") for e in r.exchanges if "/cibmtr/" in e.path))
        expect(r, "Content-Type application/fhir+json on the POST",
               all(e.headers.get("content-type", "").startswith("application/fhir+json") for e in r.on("POST", "/Observation")))
        if k in ("expiry", "revoked"):
            expect(r, "exactly two token requests (one renewal)", r.tokens == 2)
        else:
            expect(r, "exactly one token request", r.tokens == 1)
        if k == "expiry":
            expect(r, "no 401 (renewed before expiry)", 401 not in r.errors)
        if k == "revoked":
            expect(r, "one 401, retried once", r.errors == [401] and r.retries == 1)
        if k == "post503":
            # CibmtrClient looks for its submission identifier before posting again.
            expect(r, "two POSTs (the 503'd one and the retry) with a search between",
                   r.posts == 2 and r.errors == [503] and r.retries == 1)
            posts = [i for i, e in enumerate(r.exchanges) if e.method == "POST" and e.path.endswith("/Observation")]
            expect(r, "an identifier search between the two POSTs",
                   len(posts) == 2 and any(e.method == "GET" and "identifier=" in e.query for e in r.exchanges[posts[0]:posts[1]]))
        if k == "search429":
            expect(r, "the 429 retried once", r.errors == [429] and r.retries == 1)
            i = next((i for i, e in enumerate(r.exchanges) if e.status == 429), None)
            waited = i is not None and i + 1 < len(r.exchanges) and r.exchanges[i + 1].t - r.exchanges[i].t >= 0.9
            expect(r, "Retry-After: 1 waited out", waited)
        if k in ("clean", "expiry"):
            expect(r, "no error answers", not r.errors)
            expect(r, "exactly one POST", r.posts == 1)
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sandbox-bin", type=Path,
                    default=Path(os.environ.get("CIBMTR_FHIR_BIN") or TARGET / "debug" / "cibmtr-fhir"))
    ap.add_argument("--out", type=Path, default=TARGET / "interop-peers.md")
    args = ap.parse_args()
    if not args.sandbox_bin.exists():
        print(f"compare.py: no sandbox binary at {args.sandbox_bin} (cargo build -p cibmtr-fhir-cli)", file=sys.stderr)
        return 2
    try:
        import cibmtr_fhir  # noqa: F401
    except ImportError as e:
        print(f"compare.py: our SDK's Python package is not installed in this interpreter ({e})", file=sys.stderr)
        return 2
    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    results = []
    for cond in CONDITIONS:
        for peer in PEERS:
            results.append(run(peer, cond, args.sandbox_bin))
            print(f"  {cond.key:<10} {peer.name}: {'ok' if results[-1].ok else results[-1].error}", file=sys.stderr)
    text = report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    problems = check_ours(results)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"our SDK's figures hold in all {len(CONDITIONS)} conditions; report in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
