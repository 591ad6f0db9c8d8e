"""`cibmtr_fhir.Journal`: the submission journal read through the SDK's own SQLite (never Python's
`sqlite3` in the process that submits), against the Sandbox; its export compared with the CLI's
`cibmtr-fhir journal export` when the CLI binary is built."""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import shutil
import sqlite3
import subprocess
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

import cibmtr_fhir as cf

from conftest import REPO, in_forked_child, lab


def _cli() -> Optional[pathlib.Path]:
    """The `cibmtr-fhir` binary: $CIBMTR_FHIR_CLI, else the workspace's debug build, else PATH."""
    candidates = [os.environ.get("CIBMTR_FHIR_CLI")]
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        candidates.append(str(pathlib.Path(target) / "debug" / "cibmtr-fhir"))
    candidates += [str(REPO / "target" / "debug" / "cibmtr-fhir"), shutil.which("cibmtr-fhir")]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return pathlib.Path(c)
    return None


Submitted = Tuple[pathlib.Path, cf.SubmissionReport, cf.Sandbox]


@pytest.fixture
def submitted(sb: cf.Sandbox, tmp_path: pathlib.Path) -> Iterator[Submitted]:
    """Five labs into a journal: one refused by the checks (a naive time), one refused by the
    server (an injected 422), three created."""
    client = sb.cibmtr_client()
    crid = client.register_crid("Jo", "Journal", "1970-01-31", "F")
    path = tmp_path / "journal.sqlite3"
    labs = [lab(1.0), lab(2.0), lab(3.0, when="2024-05-01T08:30:00"), lab(4.0), lab(5.0)]
    sb.set_fault("observation_create", status=422, times=1)
    report = client.submit_labs(crid, labs, journal=path, concurrency=1)
    sb.clear_faults()
    assert (report.created, report.failed) == (3, 2), report.to_dict()
    yield path, report, sb


def test_batches_and_batch_show_the_counts(submitted: Submitted) -> None:
    path, report, _ = submitted
    journal = cf.Journal(path)
    assert journal.path == path and isinstance(journal.path, pathlib.Path)
    assert repr(journal) == f"Journal({str(path)!r})"
    batches = journal.batches()
    assert [b["id"] for b in batches] == [report.batch_id]
    b = batches[0]
    assert b == journal.batch(report.batch_id)
    assert (b["total"], b["created"], b["already_present"], b["failed"]) == (5, 3, 0, 2)
    assert (b["pending"], b["sending"]) == (0, 0)
    assert b["status"] == "failures"
    assert b["source"] == "python"
    for key in ("created_at", "updated_at", "ccn", "server", "source_sha256", "label", "expected"):
        assert key in b


def test_items_match_the_sandbox_and_the_report(submitted: Submitted) -> None:
    path, report, sb = submitted
    items = cf.Journal(path).items(report.batch_id)
    assert [i["item"] for i in items] == [r["index"] for r in report.items] == list(range(5))
    held = {o["id"] for o in sb.observations()}
    created = [i for i in items if i["state"] == "created"]
    assert len(created) == 3 and {i["server_id"] for i in created} == held
    for item, r in zip(items, report.items):
        assert item["server_id"] == r.get("id")
        assert item["state"] == r["status"]
        assert item["lab"] is None or item["lab"]["loinc"] == "718-7"
        assert item["created_at"].endswith("Z")
        if r["status"] == "failed":
            assert item["error_kind"] == r["error"]["kind"] and item["error"]
            assert item["server_id"] is None and item["done_at"]
        else:
            assert item["error_kind"] is None and item["error"] is None
            assert item["submission_id"] == r["submission_id"] and item["attempts"] == 1
    failed = {i["item"]: i for i in items if i["state"] == "failed"}
    assert failed[2]["error_kind"] == "VALIDATION" and "effective" in failed[2]["error"]
    (http,) = [i for n, i in failed.items() if n != 2]
    assert http["error_kind"] == "HTTP" and "422" in http["error"] and http["attempts"] == 1


def test_export_csv_and_json(submitted: Submitted, tmp_path: pathlib.Path) -> None:
    path, report, _ = submitted
    journal = cf.Journal(path)
    items = journal.items(report.batch_id)
    text = journal.export(report.batch_id)
    assert text == journal.export(report.batch_id, "csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == cf.Journal.CSV_COLUMNS
    assert rows[0][:6] == ["batch_id", "item", "crid", "submission_id", "state", "server_id"]
    assert len(rows) == 1 + len(items)
    for row, item in zip(rows[1:], items):
        cells = dict(zip(rows[0], row))
        assert cells["batch_id"] == report.batch_id and cells["item"] == str(item["item"])
        assert cells["state"] == item["state"] and cells["server_id"] == (item["server_id"] or "")
        assert cells["loinc"] == ("718-7" if item["lab"] else "")

    exported = json.loads(journal.export(report.batch_id, format="json"))
    assert exported == {"batch": journal.batch(report.batch_id), "items": items}

    out = tmp_path / "out"
    out.mkdir()
    written = journal.export(report.batch_id, "json", path=out / "batch.json")
    assert (out / "batch.json").read_bytes() == written.encode()
    assert written.endswith("}\n")
    with pytest.raises(cf.ValidationError) as e:
        journal.export(report.batch_id, "xml")
    assert e.value.field == "format"
    with pytest.raises(cf.ConfigError, match="cannot write"):
        journal.export(report.batch_id, path=out)  # a folder


def test_export_is_byte_identical_to_the_cli(submitted: Submitted) -> None:
    cli = _cli()
    assert cli is not None, "the cibmtr-fhir CLI is not built: cargo build -p cibmtr-fhir-cli"
    path, report, _ = submitted
    journal = cf.Journal(path)
    env = {k: v for k, v in os.environ.items() if k != "CIBMTR_JOURNAL"}
    for fmt in ("csv", "json"):
        r = subprocess.run(
            [str(cli), "journal", "export", report.batch_id, "--format", fmt, "--journal", str(path)],
            capture_output=True, timeout=60, env=env,
        )
        assert r.returncode == 0, r.stderr.decode()
        assert r.stdout == journal.export(report.batch_id, fmt).encode(), fmt


def test_to_dataframe(submitted: Submitted) -> None:
    pd = pytest.importorskip("pandas")
    path, report, _ = submitted
    df = cf.Journal(path).to_dataframe(report.batch_id)
    assert isinstance(df, pd.DataFrame) and len(df) == 5
    assert list(df["item"]) == list(range(5))
    assert {"state", "server_id", "error_kind", "lab.loinc", "lab.value"} <= set(df.columns)
    assert list(df["state"]).count("failed") == 2


def test_a_path_that_is_not_a_journal(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nowhere" / "journal.sqlite3"
    with pytest.raises(cf.ConfigError, match="no such file") as e:
        cf.Journal(missing)
    assert str(missing) in str(e.value) and e.value.code == "CONFIG"
    assert not missing.exists() and not missing.parent.exists()  # nothing made

    text = tmp_path / "labs.csv"
    text.write_text("loinc,value,unit,effective\n" * 200)
    with pytest.raises(cf.ConfigError) as e:
        cf.Journal(text)
    assert str(text) in str(e.value)
    assert text.read_text().startswith("loinc,value")  # left alone

    # Another SQLite database: refused, and left without journal tables.
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    db.close()
    with pytest.raises(cf.ConfigError, match="not a submission journal") as e:
        cf.Journal(other)
    with sqlite3.connect(other) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert tables == {"notes"}

    with pytest.raises(cf.ConfigError) as e:
        cf.Journal(tmp_path)  # a folder
    assert str(tmp_path) in str(e.value)
    with pytest.raises(TypeError):
        cf.Journal(42)  # type: ignore[arg-type]


def test_an_unknown_batch_id(submitted: Submitted) -> None:
    path, _, _ = submitted
    journal = cf.Journal(path)
    calls: List[Any] = [
        journal.batch, journal.items, journal.export, journal.to_dataframe,
        lambda b: journal.export(b, "json"),
    ]
    for call in calls:
        with pytest.raises(cf.ValidationError, match="no-such-batch") as e:
            call("no-such-batch")
        assert e.value.field == "batch"


def test_read_while_the_same_process_submits(sb: cf.Sandbox, tmp_path: pathlib.Path) -> None:
    """The point of the class: a progress callback (the submitting process itself, mid-batch) and
    other threads read the journal the submission is writing."""
    client = sb.cibmtr_client()
    crid = client.register_crid("Mid", "Batch", "1970-01-31", "F")
    path = tmp_path / "journal.sqlite3"
    client.submit_labs(crid, [lab(0.5)], journal=path)  # makes the file
    journal = cf.Journal(path)
    seen: List[Dict[str, Any]] = []
    errors: List[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                for b in journal.batches():
                    journal.items(b["id"])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        report = client.submit_labs(
            crid, [lab(10.0 + i / 10) for i in range(40)], journal=path,
            progress=lambda p: seen.append(journal.batches()[0]) if p["done"] == 20 else None,
        )
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert seen and seen[0]["id"] == report.batch_id and seen[0]["total"] == 40
    assert seen[0]["status"] == "incomplete"  # half-way: items in flight or not sent yet
    done = journal.batch(report.batch_id)
    assert (done["status"], done["created"]) == ("complete", 40)


def test_a_forked_child_opens_the_journal_again(submitted: Submitted) -> None:
    """A journal handle made before fork() refuses in the child (its writer thread and
    connections stay with the parent) instead of hanging; the child's own submission with the same
    path opens it afresh and records; the parent sees the child's batch."""
    path, report, sb = submitted
    journal = cf.Journal(path)
    journal.batches()

    def child(out: Dict[str, Any]) -> None:
        try:
            journal.batches()
            out["inherited"] = "worked"
        except cf.ConfigError as e:
            out["inherited"] = str(e)
        client = sb.cibmtr_client()
        crid = client.register_crid("Jo", "Journal", "1970-01-31", "F")
        out["batch"] = client.submit_labs(crid, [lab(42.0)], journal=path).batch_id
        out["seen"] = [b["id"] for b in cf.Journal(path).batches()]

    out = in_forked_child(child)
    assert "fork" in out["inherited"], out
    assert set(out["seen"]) == {report.batch_id, out["batch"]}, out
    assert {b["id"] for b in journal.batches()} == {report.batch_id, out["batch"]}
    assert journal.batch(out["batch"])["created"] == 1
