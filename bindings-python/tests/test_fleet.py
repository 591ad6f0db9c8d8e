"""Fleet scale from Python: the token store location string (a file or a redis:// URL, parsed by
the core) and the submission journal (`journal=` / `resume=` of `submit_labs`). The Redis store
itself is tested against a real redis-server by scripts/test-fleet.sh."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import subprocess
import sys
from typing import Any, List

import pytest

import cibmtr_fhir as cf

from conftest import LABS_CSV, lab


def _query(journal: pathlib.Path, sql: str, *params: Any) -> List[List[Any]]:
    """Rows of the journal, read by another process: a second SQLite library in this process
    (Python's sqlite3 beside the package's own) must not open a file the package has open."""
    script = (
        "import json, sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        "print(json.dumps(db.execute(sys.argv[2], json.loads(sys.argv[3])).fetchall()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(journal), sql, json.dumps(params)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _grant(okta: dict, **kw: object) -> cf.PasswordGrant:
    return cf.PasswordGrant(
        okta["token_url"], okta["client_id"], okta["client_secret"], okta["username"],
        okta["password"], scope=okta["scope"], **kw,  # type: ignore[arg-type]
    )


def test_a_redis_url_needs_the_deployments_key(okta: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIBMTR_FHIR_STORE_KEY", raising=False)
    monkeypatch.delenv("CIBMTR_FHIR_STORE_KEY_FILE", raising=False)
    with pytest.raises(cf.ConfigError) as e:
        _grant(okta, token_store="redis://:redis-pw-123@127.0.0.1:1/0")
    assert "CIBMTR_FHIR_STORE_KEY" in str(e.value)
    assert "redis-pw-123" not in str(e.value)
    monkeypatch.setenv("CIBMTR_FHIR_STORE_KEY", "too-short")
    with pytest.raises(cf.ConfigError):
        _grant(okta, token_store="redis://127.0.0.1:1/0")
    with pytest.raises(cf.ValidationError) as v:
        _grant(okta, token_store="http://cache:6379")
    assert "token_store" in str(v.value)


def test_an_unreachable_redis_store_falls_back_to_this_process(
    sb: cf.Sandbox, okta: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIBMTR_FHIR_STORE_KEY", base64.b64encode(os.urandom(32)).decode())
    # Nothing listens on port 1: every call still gets a token, one request for all of them.
    auth = _grant(okta, token_store="redis://:redis-pw-123@127.0.0.1:1/0?timeout_ms=200")
    assert auth.token() == auth.token()
    assert auth.stats()["token_requests"] == 1
    assert "redis-pw-123" not in repr(auth)


def test_a_file_location_still_names_a_file(okta: dict, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "tokens.json"
    a = _grant(okta, token_store=path)
    b = _grant(okta, token_store=str(path))
    assert a.token() == b.token() and path.exists()


def test_submit_labs_records_a_journal_and_resumes_a_batch(sb: cf.Sandbox, tmp_path: pathlib.Path) -> None:
    client = sb.cibmtr_client()
    crid = client.register_crid("Jo", "Journal", "1970-01-31", "F")
    journal = tmp_path / "journal.sqlite3"
    labs = [lab(10.0 + i / 10) for i in range(20)]
    report = client.submit_labs(crid, labs, journal=journal)
    assert report.created == 20 and report.batch_id
    assert report.to_dict()["batch_id"] == report.batch_id
    rows = _query(
        journal, "SELECT item, state, server_id FROM items WHERE batch_id = ? ORDER BY item",
        report.batch_id,
    )
    assert [r[0] for r in rows] == list(range(20))
    assert {r[1] for r in rows} == {"created"}
    assert [r[2] for r in rows] == [i["id"] for i in report.items]

    # Resuming the complete batch sends nothing and says why.
    posts = sb.requests("observation_create")
    again = client.submit_labs(crid, labs, journal=journal, resume=report.batch_id)
    assert again.created == 20 and again.batch_id == report.batch_id
    assert sb.requests("observation_create") == posts
    assert "earlier run" in again.items[0]["warnings"][0]

    # A CSV file's items are numbered by line.
    csv_report = client.submit_labs(crid, LABS_CSV, journal=journal)
    lines = [
        r[0]
        for r in _query(
            journal, "SELECT item FROM items WHERE batch_id = ? ORDER BY item", csv_report.batch_id
        )
    ]
    assert lines == [i["line"] for i in csv_report.items]

    with pytest.raises(cf.ValidationError):
        client.submit_labs(crid, labs, resume=report.batch_id)  # no journal named
    with pytest.raises(cf.ValidationError):
        client.submit_labs(crid, labs, journal=journal, resume="no-such-batch")
