#!/usr/bin/env python3
"""Validate FHIR resources with `fhir.resources` 8.3.0 (pydantic models written from the FHIR
specification by people who are not us): STU3 resources against `fhir.resources.STU3`
(FHIR 3.0.2), R4 resources against the R4 models.

Input: a JSON array or NDJSON file of items

    {"id": "<label>", "fhirVersion": "STU3" | "R4", "resource": {...}}
    {"id": "<label>", "kind": "crid-request", "resource": {...}}

The second form is the body of CIBMTR's `PUT /CRID`, which is not FHIR: it is checked against a
model of the payload table in the Direct FHIR API guide (every key and type as listed there, plus
the rules the guide states: 5-digit CCN, YYYY-MM-DD birth date, M/F gender, race and ethnicity
from its code tables), with the birth date parsed as a FHIR `date` by fhir.resources.

Output: one line per item (`ok <id>` or `FAIL <id>: <error>`), or with --json one JSON array of
{"id", "valid", "errors", "warnings"}. Exit status 1 when any item fails, 2 on bad input.

fhir.resources forbids unknown elements, checks primitive formats (dateTime, decimal, uri, id),
real calendar dates and choice-type exclusivity (one `value[x]`). It does not check required
bindings such as `Observation.status` and accepts the string "72" for a decimal: npm `fhir`
(validate.mjs) catches those.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, Dict, List, Literal, Optional

import pydantic
from fhir.resources import get_fhir_model_class as r4_model
from fhir.resources.STU3 import get_fhir_model_class as stu3_model

MODELS = {"STU3": stu3_model, "R4": r4_model}


def read_items(path: str) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        items = json.loads(text)
    else:
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValueError("expected a JSON array or NDJSON of objects")
    return items


def pydantic_errors(e: pydantic.ValidationError) -> List[str]:
    out = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "<resource>"
        out.append(f"{loc}: {err.get('msg')} (input {err.get('input')!r:.80})")
    return out


def validate_fhir(version: str, resource: Any) -> List[str]:
    if version not in MODELS:
        return [f"fhirVersion: {version!r} is not STU3 or R4"]
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return ["resourceType: missing"]
    try:
        cls = MODELS[version](resource["resourceType"])
    except Exception as e:  # unknown resource type
        return [f"resourceType: {resource['resourceType']!r} is not a {version} resource ({e})"]
    try:
        cls.model_validate(resource)
    except pydantic.ValidationError as e:
        return pydantic_errors(e)
    return []


# --- CRID registration body, as the guide's "Complete list of payload options" lists it ---------

RACE = {"1002-5", "2028-9", "2054-5", "2076-8", "2106-3", "ASKU", "UNK"}
ETHNICITY = {"2135-2", "2186-5", "UNK"}
Strict = pydantic.ConfigDict(extra="forbid", strict=True)


class CridPatient(pydantic.BaseModel):
    model_config = Strict
    birthDate: str
    cibmtrIubmid: Optional[str] = None
    cibmtrTeam: Optional[int] = None
    ebmtCic: Optional[str] = None
    ebmtId: Optional[str] = None
    firstName: str
    gender: Literal["M", "F"]
    lastName: str
    mothersMaidenName: Optional[str] = None
    nmdpRid: Optional[int] = None
    ssn: Optional[str] = None
    race: Optional[List[str]] = None
    ethnicity: Optional[str] = None

    @pydantic.field_validator("birthDate")
    @classmethod
    def _birth(cls, v: str) -> str:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
            raise ValueError("must be YYYY-MM-DD")
        # The FHIR `date` primitive of fhir.resources: a real calendar date.
        r4_model("Patient").model_validate({"resourceType": "Patient", "birthDate": v})
        return v

    @pydantic.field_validator("firstName", "lastName")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v

    @pydantic.field_validator("ssn")
    @classmethod
    def _ssn(cls, v: Optional[str]) -> Optional[str]:
        # The guide prints "###-###-####"; a US SSN is ###-##-####, which is what we send.
        if v is not None and not re.fullmatch(r"\d{3}-\d{2}-\d{4}", v):
            raise ValueError("must be ###-##-####")
        return v

    @pydantic.field_validator("race")
    @classmethod
    def _race(cls, v: Optional[List[str]]) -> Optional[List[str]]:
        bad = [c for c in v or [] if c not in RACE]
        if bad:
            raise ValueError(f"codes not in the guide's race table: {bad}")
        return v

    @pydantic.field_validator("ethnicity")
    @classmethod
    def _ethnicity(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and v not in ETHNICITY:
            raise ValueError("not in the guide's ethnicity table")
        return v


class CridRequest(pydantic.BaseModel):
    model_config = Strict
    ccn: str = pydantic.Field(pattern=r"^\d{5}$")
    patient: CridPatient


def validate_item(item: Dict[str, Any]) -> List[str]:
    if item.get("kind") == "crid-request":
        try:
            CridRequest.model_validate(item.get("resource"))
        except pydantic.ValidationError as e:
            return pydantic_errors(e)
        return []
    return validate_fhir(str(item.get("fhirVersion")), item.get("resource"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", help="JSON array or NDJSON of tagged resources")
    ap.add_argument("--json", action="store_true", help="print one JSON report instead of lines")
    args = ap.parse_args()
    try:
        items = read_items(args.file)
    except (OSError, ValueError) as e:
        print(f"validate.py: cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    report = []
    for n, item in enumerate(items):
        label = str(item.get("id", f"#{n}"))
        errors = validate_item(item)
        report.append({"id": label, "valid": not errors, "errors": errors, "warnings": []})
    failed = [r for r in report if not r["valid"]]
    if args.json:
        json.dump(report, sys.stdout)
        sys.stdout.write("\n")
    else:
        for r in report:
            if r["valid"]:
                print(f"ok {r['id']}")
            else:
                print(f"FAIL {r['id']}: " + "; ".join(r["errors"]))
        print(f"fhir.resources 8.3.0: {len(report) - len(failed)} valid, {len(failed)} invalid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
