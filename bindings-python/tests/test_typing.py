"""The type stubs: they match the native module (mypy's stubtest), type-check the examples
strictly, and catch a wrong call (so they are really consulted, not Any)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

from conftest import REPO

EXAMPLES = [REPO / "examples" / "python" / "quickstart.py", REPO / "examples" / "python" / "asyncio_fhir.py"]
CACHE = str(REPO / "target" / "mypy-cache")


def mypy(*args: str, cwd: pathlib.Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", CACHE, *args],
        cwd=cwd, capture_output=True, text=True, env={**os.environ, "MYPY_FORCE_COLOR": "0"},
    )


def test_stubs_match_the_native_module() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "cibmtr_fhir._native", "--mypy-config-file", os.devnull],
        capture_output=True, text=True, cwd=REPO / "target",
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_examples_type_check_strictly() -> None:
    r = mypy("--strict", *map(str, EXAMPLES))
    assert r.returncode == 0, r.stdout + r.stderr


def test_wrong_calls_are_caught(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(textwrap.dedent("""
        import cibmtr_fhir as cf
        auth = cf.PasswordGrant("https://x/token", "id", "secret", "user")
        client = cf.CibmtrClient("12345", "not an auth")
        crid: str = client.register_crid("Jane", "Doe", "1970-01-31", "F")
        report = client.submit_labs(1, [], concurrency="8")
        report.created.upper()
    """))
    r = mypy("--strict", str(bad))
    assert r.returncode == 1
    for line in (3, 4, 5, 6, 7):
        assert f"bad.py:{line}: error" in r.stdout, r.stdout


def test_every_public_name_has_a_docstring() -> None:
    import inspect

    import cibmtr_fhir as cf

    missing = []
    for name in cf.__all__:
        obj = getattr(cf, name)
        if not (inspect.isclass(obj) or callable(obj)) or name in ("LabInput", "Progress"):
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(name)
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if not (getattr(member, "__doc__", None) or "").strip():
                    missing.append(f"{name}.{attr}")
    assert missing == []
