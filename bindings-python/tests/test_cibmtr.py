"""The CIBMTR workflow from Python: CRID, Patient, labs in every input form, the report."""

from __future__ import annotations

import asyncio
import datetime

import pandas as pd
import pytest

import cibmtr_fhir as cf

from conftest import LABS_CSV, lab

UTC = datetime.timezone.utc


def test_workflow(sb: cf.Sandbox) -> None:
    client = sb.cibmtr_client()
    assert client.ccn == "12345"
    crid = client.register_crid(
        "Jane", "Doe", datetime.date(1970, 1, 31), "F", race=["2106-3"], ethnicity="2186-5",
        ssn="123-45-6789",
    )
    assert isinstance(crid, int) and crid > 2**53  # 16 digits, kept exact
    assert client.register_crid("jane", "DOE", "1970-01-31", "female") == crid
    patient = client.ensure_patient(crid)
    assert client.ensure_patient(crid) == patient and len(sb.patients()) == 1
    stored = sb.patients()[0]
    assert "name" not in stored and "birthDate" not in stored  # de-identified

    one = client.submit_lab(crid, "718-7", 12.5, "g/dL", "2024-05-01T08:30:00-05:00", reference_range=(12, 16))
    assert one.status == "created" and one.id and one.submission_id
    again = client.submit_lab(crid, cf.LabResult("718-7", 12.5, "g/dL", "2024-05-01T08:30:00-05:00", reference_low=12, reference_high=16))
    assert (again.status, again.id) == ("already_present", one.id)
    from_dict = client.submit_lab(crid, lab(13.0, comparator="<"))
    assert from_dict.status == "created"

    obs = client.observations(crid)
    assert len(obs) == 2 and {o["resourceType"] for o in obs} == {"Observation"}
    assert obs[0]["valueQuantity"]["unit"] == "g/dL"
    # The per-area FHIR client of the CIBMTR root, for searches of one's own.
    assert client.fhir.read("Observation", one.id)["id"] == one.id


def test_submit_labs_from_dicts_lab_results_and_datetimes(sb: cf.Sandbox) -> None:
    client = sb.cibmtr_client()
    crid = client.register_crid("Ann", "Lee", "1980-02-03", "F")
    when = datetime.datetime(2024, 5, 1, 13, 30, tzinfo=UTC)
    labs = [
        lab(10.0),
        cf.LabResult("26464-8", 4.2, "10*9/L", when),
        {"loinc": "777-3", "value": "150", "unit": "10*9/L", "effective": when},
        lab(11.0, when=datetime.datetime(2024, 5, 1, 13, 30)),  # naive: refused, named
        {"loinc": "718-7", "value": 12, "unit": "g/dL", "efective": "2024-05-01T08:30:00Z"},  # typo
        lab(10.0),  # repeated in the batch: sent once
    ]
    seen = []
    report = client.submit_labs(crid, labs, concurrency=4, progress=seen.append)
    assert (report.total, report.created, report.already_present, report.failed) == (6, 3, 1, 2)
    assert len(report) == 6 and report.elapsed > 0
    items = report.to_list()
    assert [i["index"] for i in items] == list(range(6))
    assert items[3]["error"]["field"] == "effective" and "timezone" in items[3]["error"]["rule"]
    assert items[4]["error"]["field"] == "efective"
    assert items[5]["status"] == "already_present" and items[5]["id"] == items[0]["id"]
    assert [i["index"] for i in report.failures()] == [3, 4]
    assert seen[-1] == {"done": 6, "total": 6, "created": 3, "already_present": 1, "failed": 2}
    assert report.to_dict()["created"] == 3 and list(report) == items
    # Re-running sends nothing.
    posts = sb.requests("observation_create")
    rerun = client.submit_labs(crid, labs)
    assert (rerun.created, rerun.already_present, rerun.failed) == (0, 4, 2)
    assert sb.requests("observation_create") == posts


def test_submit_labs_from_a_csv_path_and_a_dataframe(sb: cf.Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    client = sb.cibmtr_client()
    crid = client.register_crid("Bo", "Kim", "1975-06-07", "M")
    report = client.submit_labs(crid, LABS_CSV, progress=True)  # tqdm bar on stderr
    assert (report.created, report.failed) == (14, 1)
    failed = report.failures()[0]
    assert failed["line"] == 16 and failed["error"]["field"] == "effective"
    assert "labs" in capsys.readouterr().err  # the tqdm bar was drawn
    frame = report.to_dataframe()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 15
    assert frame.loc[frame["status"] == "failed", "error.field"].tolist() == ["effective"]

    df = pd.read_csv(LABS_CSV)
    df_report = client.submit_labs(crid, df)
    # Same rows: everything valid is already there; the bad row fails the same way; empty
    # cells (NaN) are treated as absent.
    assert (df_report.created, df_report.already_present, df_report.failed) == (0, 14, 1)
    df2 = pd.DataFrame({
        "loinc": ["718-7"], "value": [9.9], "unit": ["g/dL"],
        "effective": [pd.Timestamp("2024-06-01 08:00", tz="America/Chicago")],
    })
    assert client.submit_labs(crid, df2).created == 1


def test_csv_rows_for_another_patient_are_refused(sb: cf.Sandbox, tmp_path) -> None:
    client = sb.cibmtr_client()
    crid = client.register_crid("Cy", "Ng", "1990-01-01", "M")
    path = tmp_path / "labs.csv"
    path.write_text(
        "loinc,value,unit,effective,crid\n"
        f"718-7,12,g/dL,2024-05-01T08:30:00Z,{crid}\n"
        "718-7,13,g/dL,2024-05-01T08:30:00Z,1234\n"
    )
    report = client.submit_labs(crid, str(path))
    assert (report.created, report.failed) == (1, 1)
    assert report.failures()[0]["error"]["field"] == "crid" and report.failures()[0]["line"] == 3


def test_a_missing_csv_is_file_not_found_before_anything_is_sent(sb: cf.Sandbox, tmp_path) -> None:
    client = sb.cibmtr_client()
    crid = client.register_crid("Di", "Oh", "1990-01-01", "F")
    missing = tmp_path / "nope.csv"
    posts = sb.requests("observation_create")
    with pytest.raises(FileNotFoundError) as e:
        client.submit_labs(crid, missing)
    assert e.value.filename == str(missing)
    with pytest.raises(FileNotFoundError):
        asyncio.run(client.asubmit_labs(crid, str(missing)))
    assert sb.requests("observation_create") == posts


def test_lab_result_and_catalog() -> None:
    r = cf.LabResult("26515-7", "<5", "10*9/L", "2024-05-01T13:30:00Z", status="final")
    assert (r.value, r.comparator, r.status) == (5.0, "<", "final")
    assert r == cf.LabResult.from_dict(r.to_dict())
    assert "loinc='26515-7'" in repr(r)
    assert r.check() == []
    assert any("not in the form 2402" in w or "catalog" in w for w in cf.LabResult("2345-7", 1, "mg/dL", "2024-05-01T13:30:00Z").check())
    converted = cf.LabResult("718-7", 120, "g/L", "2024-05-01T13:30:00Z").check(convert_units=True)
    assert any("converted" in w for w in converted)
    catalog = cf.lab_catalog()
    assert len(catalog) == 11 and catalog[3]["name"] == "Hemoglobin"
    assert cf.lab_for_code("718-7")["name"] == "Hemoglobin"
    assert cf.lab_for_code("0000-0") is None
    urls = cf.environment_urls("production")
    assert urls["token_url"].startswith("https://") and urls["api_base"].startswith("https://")


def test_bundles_and_r3_root(sb: cf.Sandbox) -> None:
    client = cf.CibmtrClient("12345", sb.password_grant(), base_url=sb.urls["cibmtr_base"], fhir_path="r3", uri_family="terminology")
    crid = client.register_crid("Di", "Ox", "1985-03-04", "F")
    labs = [lab(float(v)) for v in range(1, 61)]
    report = client.submit_labs(crid, labs, use_bundles=True, bundle_size=25)
    assert report.created == 60 and report.failed == 0
    assert len(client.observations(crid)) == 60
