"""Shared fixtures: a fresh sandbox per test (each has its own random credentials, so token
caches never leak from one test into another)."""

from __future__ import annotations

import json
import os
import pathlib
import urllib.error
import urllib.request
import warnings
from typing import Any, Callable, Dict, Iterator

import pytest

import cibmtr_fhir as cf

REPO = pathlib.Path(__file__).resolve().parents[2]
LABS_CSV = REPO / "examples" / "data" / "form2402-labs.csv"


@pytest.fixture
def sb() -> Iterator[cf.Sandbox]:
    with cf.Sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def okta(sb: cf.Sandbox) -> Dict[str, str]:
    return sb.credentials["okta"]


def lab(value: float = 12.5, when: str = "2024-05-01T08:30:00-05:00", **extra: Any) -> Dict[str, Any]:
    return {"loinc": "718-7", "value": value, "unit": "g/dL", "effective": when, **extra}


def post_json(url: str, body: Dict[str, Any]) -> Dict[str, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read() or b"{}")  # type: ignore[no-any-return]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def follow_login(authorization_url: str) -> str:
    """What a browser does: open the authorization URL; return where the server redirects (the
    app's redirect URI with code and state), without following it."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        opener.open(authorization_url)
    except urllib.error.HTTPError as e:
        assert e.code in (302, 303), e.code
        return str(e.headers["Location"])
    raise AssertionError("the authorization endpoint did not redirect")


def in_forked_child(body: Callable[[Dict[str, Any]], None]) -> Dict[str, Any]:
    """Runs ``body(out)`` in a ``fork()``ed child and returns the ``out`` dict it filled (an
    exception in the child lands in ``out["error"]``). The child reports through a pipe and never
    returns into pytest; the child's exit status is asserted here."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded fork" on 3.12+
        pid = os.fork()
    if pid == 0:
        out: Dict[str, Any] = {}
        try:
            body(out)
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            out["error"] = repr(e)
        os.write(write_end, json.dumps(out).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        out = json.loads(f.read())
    _, status = os.waitpid(pid, 0)
    assert status == 0 and "error" not in out, out
    return out
