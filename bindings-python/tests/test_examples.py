"""The examples run (each against its own cibmtr_fhir.Sandbox) and succeed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.parametrize("name", ["quickstart.py", "asyncio_fhir.py"])
def test_example_runs(name: str) -> None:
    r = subprocess.run([sys.executable, str(REPO / "examples" / "python" / name)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip()
