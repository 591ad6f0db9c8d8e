"""Shared fixtures: a fresh sandbox per test (each has its own random credentials, so token
caches never leak from one test into another)."""

from __future__ import annotations

import json
import pathlib
import urllib.error
import urllib.request
from typing import Any, Dict, Iterator

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
