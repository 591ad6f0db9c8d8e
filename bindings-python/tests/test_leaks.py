"""No secret and no patient data in anything the package shows: run every flow against the
sandbox with the `cibmtr_fhir` logger as verbose as it goes, gather every rendering (stdout and
stderr at the file-descriptor level, log records, exceptions with their tracebacks, repr/str of
every object handed out), and scan it for every value the sandbox saw on its wire
(`Sandbox.secrets_seen()`). The recording is checked too, so that the scan cannot pass by
scanning for nothing."""

from __future__ import annotations

import logging
import re
import traceback
import urllib.parse
import warnings
from typing import Any, Callable, Iterable, List, Set, Tuple

import pytest

import cibmtr_fhir as cf

from conftest import follow_login, lab

FIRST, LAST, BIRTH, SSN, MAIDEN = "Zephyrine", "Quillfeather", "1961-07-14", "123-45-6789", "Thistlewood"
REDIRECT = "http://127.0.0.1:9/leak-callback"


class Records(logging.Handler):
    """Keeps every record that reaches the `cibmtr_fhir` logger."""

    def __init__(self) -> None:
        super().__init__(level=1)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def rendered_record(r: logging.LogRecord) -> List[str]:
    """A record as a formatter shows it, and its parts as a handler could show them."""
    formatter = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    return [formatter.format(r), str(r.msg), repr(r.args), r.getMessage(), repr(r.__dict__)]


def rendered_error(e: BaseException) -> List[str]:
    return [
        str(e), repr(e), repr(e.args), "".join(traceback.format_exception(type(e), e, e.__traceback__)),
        repr({k: v for k, v in vars(e).items()}),
    ]


def variants(secret: str) -> Set[str]:
    """A secret as text may carry it: as it is, and URL-encoded (in a form body or a URL)."""
    return {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}


def leaks(texts: Iterable[str], secrets: Iterable[str]) -> List[Tuple[str, str]]:
    """Every (secret, text) where the text shows the secret."""
    wanted = [(s, v) for s in secrets for v in variants(s)]
    return [(s, t) for t in texts for s, v in wanted if v in t]


def query(url: str, name: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)[name][0]


def test_nothing_the_sandbox_saw_shows_anywhere(sb: cf.Sandbox, capfd: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("cibmtr_fhir")
    # DEBUG is the most verbose level the binding forwards (TRACE events, level 5, are not
    # enabled); level 1 lets through whatever it may forward one day.
    handler, old_level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(1)
    caught_warnings = warnings.catch_warnings(record=True)
    warned = caught_warnings.__enter__()
    warnings.simplefilter("always")
    try:
        shown, tokens, codes, refreshed, private_pems = run_every_flow(sb)
    finally:
        caught_warnings.__exit__(None, None, None)
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    out, err = capfd.readouterr()
    records = handler.records
    texts = shown + [out, err] + [t for r in records for t in rendered_record(r)]
    texts += [str(w.message) + str(w.filename) for w in warned]

    seen = sb.secrets_seen()
    # The private keys the test generated never cross the wire (only assertions signed with them).
    key_lines = {line.strip() for pem in private_pems for line in pem.splitlines() if not line.startswith("-----")}
    secrets = set(seen) | set(private_pems) | {line for line in key_lines if len(line) >= 6}

    # The recording is complete enough for the scan to mean something.
    creds = sb.credentials
    missing = [t for t in tokens if t not in seen]
    assert not missing, f"{len(missing)} access tokens the flows returned are not recorded"
    for value in (SSN, FIRST, LAST, BIRTH, MAIDEN, creds["okta"]["password"], creds["msk"]["client_secret"],
                  creds["msk_basic"]["client_secret"], creds["smart"]["client_secret"], *codes):
        assert value in seen, "not recorded: a value of the flows"
    assert any(s.startswith("ey") and s.count(".") == 2 for s in seen), "no client assertion recorded"
    assert re.fullmatch(r"[A-Za-z0-9]{48}", refreshed), "no rotated refresh token recorded"
    # The scan finds a secret when there is one (it is not vacuous).
    for planted in (f"token={tokens[0]}; done", f"ssn: {SSN}", "pw=" + urllib.parse.quote(creds["okta"]["password"], safe="")):
        assert leaks([planted], secrets), "the scanner misses a planted secret"

    # The logging really was verbose: retries, rate-limit waits and FHIR traffic are logged.
    messages = [f"{r.name} {r.levelname} {r.getMessage()}" for r in records]
    assert any(r.name.startswith("cibmtr_fhir.auth") and r.levelno == logging.DEBUG for r in records), messages
    assert any("rate limited" in m for m in messages), messages
    assert any(r.name.startswith("cibmtr_fhir.fhir") for r in records), messages

    found = leaks(texts, secrets)
    assert not found, "a secret shows in: " + " || ".join(sorted({t[:300] for _, t in found}))
    print_counts(capfd, len(secrets), len(texts), len(records))


def print_counts(capfd: pytest.CaptureFixture[str], secrets: int, texts: int, records: int) -> None:
    with capfd.disabled():
        print(f"\n[leak scan] {secrets} secrets x {texts} renderings ({records} log records): 0 hits")


def run_every_flow(sb: cf.Sandbox) -> Tuple[List[str], List[str], List[str], str, List[str]]:
    """Runs every flow, success and failure; returns the renderings of what the package handed
    out, the access tokens it returned, the authorization codes, a rotated refresh token and
    the private keys it generated."""
    creds = sb.credentials
    okta, msk, msk_basic, backend, smart = (creds[k] for k in ("okta", "msk", "msk_basic", "backend", "smart"))
    handed: List[Any] = [sb]  # every object the package handed out
    tokens: List[str] = []
    errors: List[BaseException] = []

    def expect_error(call: Callable[[], Any]) -> None:
        with pytest.raises(cf.CibmtrFhirError) as e:
            call()
        errors.append(e.value)

    # Password grant, with a 503 and then a 429 (Retry-After: 0) on the token endpoint.
    sb.set_fault("okta_token", status=503, times=1)
    password = sb.password_grant()
    tokens.append(password.token())
    sb.set_fault("okta_token", status=429, headers={"Retry-After": "0"}, times=1)
    password.invalidate()
    tokens.append(password.token())
    handed += [password, password.stats()]

    # Client credentials: client_secret_post and client_secret_basic.
    post = cf.ClientCredentials(msk["token_url"], msk["client_id"], msk["client_secret"], scope="full")
    basic = cf.ClientCredentials(msk_basic["token_url"], msk_basic["client_id"], msk_basic["client_secret"],
                                 scope="full", auth_method="client_secret_basic")
    tokens += [post.token(), basic.token()]
    msk_fhir = cf.FhirClient(sb.urls["msk_fhir"], post, default_params={"researchstudy": "leak-study"})
    handed += [post, basic, msk_fhir, msk_fhir.create({"resourceType": "Patient", "gender": "female"})]

    # Backend Services: a generated RS384 key registered with the sandbox, and its ES384 key.
    key = cf.generate_key("RS384")
    sb.register_backend_client("leak-rs384", key.jwks)
    rs = cf.BackendServices("leak-rs384", key.private_pem, token_url=backend["token_url"], algorithm="RS384")
    es = cf.BackendServices(backend["client_id"], backend["private_key_pem"], token_url=backend["token_url"],
                            key_id=backend["key_id"], algorithm="ES384", scope=backend["scope"])
    tokens += [rs.token(), es.token()]
    aidbox = cf.FhirClient(sb.urls["aidbox_fhir"], rs)
    handed += [key, key.jwks, rs, es, aidbox, aidbox.create({"resourceType": "Patient", "gender": "male"}),
               aidbox.search_all("Patient")]

    # Dynamic registration, then the authorization code flow with PKCE, a forced refresh (the
    # sandbox rotates refresh tokens) and a replayed completion.
    reg = cf.register_client(smart["registration_url"], "leak test app", [REDIRECT], smart["scope"])
    public = cf.register_public_client(smart["registration_url"], "leak public app", [REDIRECT], smart["scope"])
    code_flow = cf.AuthorizationCode(reg.client_id, REDIRECT, smart["scope"], client_secret=reg.client_secret,
                                     fhir_base=smart["fhir_base"])
    url = code_flow.authorization_url()
    back = follow_login(url)
    code_flow.complete(back)
    tokens.append(code_flow.token())
    before = set(sb.secrets_seen())
    code_flow.invalidate()
    tokens.append(code_flow.token())
    new = set(sb.secrets_seen()) - before - set(tokens)
    refreshed = next(iter(new)) if len(new) == 1 else ""
    expect_error(lambda: code_flow.complete(back))
    handed += [reg, public, code_flow, code_flow.context, code_flow.stats(), url]

    # CIBMTR: CRID with distinctive demographics, the Patient, labs with faults, searches.
    client = cf.CibmtrClient("12345", password, base_url=sb.urls["cibmtr_base"])
    crid = client.register_crid(FIRST, LAST, BIRTH, "F", ssn=SSN, mothers_maiden_name=MAIDEN, race=["2106-3"])
    patient = client.ensure_patient(crid)
    sb.set_fault("observation_search", status=503, times=1)
    sb.set_fault("observation_create", status=500, times=1)
    report = client.submit_labs(crid, [lab(1.0), lab(2.0, when="2024-05-01T08:30:00"), lab(3.0), {"value": 1}])
    sb.clear_faults()
    single = client.submit_lab(crid, lab(4.0))
    # A revoked token: the 401 makes the client mint a new one and retry once.
    sb.revoke_all_tokens()
    observations = client.observations(crid)
    tokens.append(password.token())
    handed += [client, client.fhir, crid, patient, report, report.items, report.to_dict(), report.failures(),
               list(report), single, single.to_dict(), observations, cf.LabResult.from_dict(lab(5.0)),
               client.fhir.search("Patient"), sb.patients()]

    # Errors: wrong password, wrong client secret, an invalid FHIR create, a bad argument.
    expect_error(lambda: cf.PasswordGrant(okta["token_url"], okta["client_id"], okta["client_secret"],
                                          okta["username"], "nope-" + okta["password"]).token())
    expect_error(lambda: cf.ClientCredentials(msk["token_url"], msk["client_id"], "bad-" + msk["client_secret"],
                                              scope="full").token())
    expect_error(lambda: client.fhir.create({"resourceType": "Observation"}))
    expect_error(lambda: client.register_crid(FIRST, LAST, "1961-02-30", "F", ssn=SSN))

    # The reprs say something useful (and the scan below says they say nothing secret).
    assert "PasswordGrant" in repr(password) and okta["username"] in repr(password)
    assert "12345" in repr(client) and "Sandbox(base=" in repr(sb)
    shown = [r for o in handed for r in (repr(o), str(o))] + [t for e in errors for t in rendered_error(e)]
    return shown, tokens, [query(back, "code")], refreshed, [key.private_pem]
