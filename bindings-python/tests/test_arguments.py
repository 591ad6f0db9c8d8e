"""Arguments of the wrong Python type are a `TypeError` naming the parameter; well-typed but bad
values (and lab dicts missing a field) are a `ValidationError` (also a `ValueError`) whose `field`
names it. Nothing is sent in either case."""

from __future__ import annotations

import sys
import traceback
from typing import Any, Callable, Dict, List, Tuple

import pytest

import cibmtr_fhir as cf

from conftest import lab

URL = "https://auth.example.org/token"
FHIR = "https://fhir.example.org/fhir"
CB = "http://127.0.0.1:9/cb"
Call = Callable[[], Any]


def message(e: BaseException) -> str:
    """What a traceback shows of the exception, notes included (pyo3 names the parameter of an
    argument it could not convert in a note, which Python 3.11 and newer show)."""
    return "".join(traceback.format_exception_only(type(e), e))


@pytest.fixture
def client(sb: cf.Sandbox) -> cf.CibmtrClient:
    return sb.cibmtr_client()


def type_cases(sb: cf.Sandbox, client: cf.CibmtrClient, rsa: str) -> List[Tuple[str, Call]]:
    fhir = cf.FhirClient(FHIR)
    code = cf.AuthorizationCode("id", CB, "launch", fhir_base=FHIR)
    good = lab()
    return [
        # PasswordGrant
        ("token_url", lambda: cf.PasswordGrant(1, "id", "s", "u", "p")),  # type: ignore[arg-type]
        ("client_id", lambda: cf.PasswordGrant(URL, None, "s", "u", "p")),  # type: ignore[arg-type]
        ("password", lambda: cf.PasswordGrant(URL, "id", "s", "u")),  # type: ignore[call-arg]
        ("bogus", lambda: cf.PasswordGrant(URL, "id", "s", "u", "p", bogus=1)),  # type: ignore[call-arg]
        ("scope", lambda: cf.PasswordGrant(URL, "id", "s", "u", "p", scope=5)),  # type: ignore[arg-type]
        ("token_store", lambda: cf.PasswordGrant(URL, "id", "s", "u", "p", token_store=5)),  # type: ignore[arg-type]
        # ClientCredentials
        ("client_secret", lambda: cf.ClientCredentials(URL, "id", None)),  # type: ignore[arg-type]
        ("auth_method", lambda: cf.ClientCredentials(URL, "id", "s", auth_method=3)),  # type: ignore[arg-type]
        ("scopes", lambda: cf.ClientCredentials(URL, "id", "s", scopes="full")),  # type: ignore[call-arg]
        # BackendServices
        ("client_id", lambda: cf.BackendServices(7, rsa, token_url=URL)),  # type: ignore[arg-type]
        ("private_key", lambda: cf.BackendServices("id", 5, token_url=URL)),  # type: ignore[arg-type]
        ("private_key", lambda: cf.BackendServices("id", [rsa], token_url=URL)),  # type: ignore[arg-type]
        ("private_key", lambda: cf.BackendServices("id")),  # type: ignore[call-arg]
        ("algorithm", lambda: cf.BackendServices("id", rsa, token_url=URL, algorithm=384)),  # type: ignore[arg-type]
        ("token_url", lambda: cf.BackendServices("id", rsa, token_url=["a"])),  # type: ignore[arg-type]
        # AuthorizationCode
        ("scope", lambda: cf.AuthorizationCode("id", CB, ["launch"], fhir_base=FHIR)),  # type: ignore[arg-type]
        ("redirect_uri", lambda: cf.AuthorizationCode("id", None, "launch", fhir_base=FHIR)),  # type: ignore[arg-type]
        ("redirect_url", lambda: code.complete(5)),  # type: ignore[arg-type]
        ("pkce", lambda: cf.AuthorizationCode("id", CB, "launch", fhir_base=FHIR, pkce=True)),  # type: ignore[call-arg]
        # register_client
        ("redirect_uris", lambda: cf.register_client(FHIR + "/register", "app", CB, "openid")),  # type: ignore[arg-type]
        ("redirect_uris", lambda: cf.register_public_client(FHIR + "/register", "app", 5, "openid")),  # type: ignore[arg-type]
        # FhirClient
        ("base_url", lambda: cf.FhirClient(5)),  # type: ignore[arg-type]
        ("auth", lambda: cf.FhirClient(FHIR, auth="Bearer x")),  # type: ignore[arg-type]
        ("default_params", lambda: cf.FhirClient(FHIR, default_params="researchstudy=x")),  # type: ignore[arg-type]
        ("default_params", lambda: cf.FhirClient(FHIR, default_params=5)),  # type: ignore[arg-type]
        ("resource_type", lambda: fhir.read(5, "1")),  # type: ignore[arg-type]
        ("id", lambda: fhir.read("Patient", None)),  # type: ignore[arg-type]
        ("resource", lambda: fhir.create('{"resourceType": "Patient"}')),  # type: ignore[arg-type]
        ("resource", lambda: fhir.update(["Patient"])),  # type: ignore[arg-type]
        ("bundle", lambda: fhir.transaction("Bundle")),  # type: ignore[arg-type]
        ("params", lambda: fhir.search_all("Patient", 5)),  # type: ignore[arg-type]
        ("params", lambda: fhir.search_all("Patient", "name=x")),  # type: ignore[arg-type]
        # CibmtrClient
        ("ccn", lambda: cf.CibmtrClient(12345, sb.password_grant())),  # type: ignore[arg-type]
        ("auth", lambda: cf.CibmtrClient("12345", "token")),  # type: ignore[arg-type]
        ("base_url", lambda: cf.CibmtrClient("12345", sb.password_grant(), base_url=5)),  # type: ignore[arg-type]
        ("strict", lambda: cf.CibmtrClient("12345", sb.password_grant(), strict="yes")),  # type: ignore[arg-type]
        ("first_name", lambda: client.register_crid(123, "Doe", "1970-01-31", "F")),  # type: ignore[arg-type]
        ("last_name", lambda: client.register_crid("Jane", None, "1970-01-31", "F")),  # type: ignore[arg-type]
        ("birth_date", lambda: client.register_crid("Jane", "Doe", 19700131, "F")),  # type: ignore[arg-type]
        ("gender", lambda: client.register_crid("Jane", "Doe", "1970-01-31")),  # type: ignore[call-arg]
        ("ssn", lambda: client.register_crid("Jane", "Doe", "1970-01-31", "F", ssn=123456789)),  # type: ignore[arg-type]
        ("race", lambda: client.register_crid("Jane", "Doe", "1970-01-31", "F", race=5)),  # type: ignore[arg-type]
        ("nmdp_rid", lambda: client.register_crid("Jane", "Doe", "1970-01-31", "F", nmdp_rid="42")),  # type: ignore[arg-type]
        ("middle_name", lambda: client.register_crid("Jane", "Doe", "1970-01-31", "F", middle_name="Q")),  # type: ignore[call-arg]
        ("crid", lambda: client.submit_lab("abc", good)),  # type: ignore[arg-type]
        ("crid", lambda: client.submit_lab(None, good)),  # type: ignore[arg-type]
        ("lab_or_loinc", lambda: client.submit_lab(1, 718)),  # type: ignore[arg-type]
        ("lab_or_loinc", lambda: client.submit_lab(1, ["718-7", 1.0])),  # type: ignore[arg-type]
        ("unit", lambda: client.submit_lab(1, "718-7", 1.0, 5, "2024-05-01T08:30:00Z")),  # type: ignore[arg-type]
        ("effective", lambda: client.submit_lab(1, "718-7", 1.0, "g/dL", 20240501)),  # type: ignore[arg-type]
        ("units", lambda: client.submit_lab(1, "718-7", 1.0, units="g/dL")),  # type: ignore[call-arg]
        ("labs", lambda: client.submit_labs(1, 5)),
        ("labs", lambda: client.submit_labs(1, None)),
        ("labs", lambda: client.submit_labs(1, good)),
        ("concurrency", lambda: client.submit_labs(1, [good], concurrency="8")),  # type: ignore[arg-type]
        ("retries", lambda: client.submit_labs(1, [good], retries=2)),  # type: ignore[call-arg]
        ("crid", lambda: client.ensure_patient("1")),  # type: ignore[arg-type]
        ("crid", lambda: client.observations(None)),  # type: ignore[arg-type]
        ("loinc", lambda: cf.LabResult(718, 1.0, "g/dL", "2024-05-01T08:30:00Z")),  # type: ignore[arg-type]
        # generate_key
        ("algorithm", lambda: cf.generate_key(384)),  # type: ignore[arg-type]
        ("algorithm", lambda: cf.generate_key(algorithm=None)),  # type: ignore[arg-type]
        ("size", lambda: cf.generate_key("RS384", size=2048)),  # type: ignore[call-arg]
        # Sandbox
        ("port", lambda: cf.Sandbox(port="8080")),  # type: ignore[arg-type]
        ("okta_token_ttl", lambda: cf.Sandbox(okta_token_ttl="60")),  # type: ignore[arg-type]
        ("verbose", lambda: cf.Sandbox(verbose=True)),  # type: ignore[call-arg]
        ("route", lambda: sb.set_fault(5, status=500)),  # type: ignore[arg-type]
        ("headers", lambda: sb.set_fault("okta_token", status=429, headers="Retry-After: 1")),  # type: ignore[arg-type]
        ("client_id", lambda: sb.register_backend_client(5, {"keys": []})),  # type: ignore[arg-type]
    ]


def value_cases(sb: cf.Sandbox, client: cf.CibmtrClient, rsa: str) -> List[Tuple[str, Call]]:
    no_code = {k: v for k, v in lab().items() if k != "loinc"}
    return [
        ("client_id", lambda: cf.PasswordGrant(URL, "", "s", "u", "p")),
        ("token_url", lambda: cf.PasswordGrant("auth.example.org/token", "id", "s", "u", "p")),
        ("client_id", lambda: cf.ClientCredentials(URL, "", "s")),
        ("token_url", lambda: cf.ClientCredentials("ftp://auth.example.org/token", "id", "s")),
        ("auth_method", lambda: cf.ClientCredentials(URL, "id", "s", auth_method="private_key_jwt")),  # type: ignore[arg-type]
        ("client_id", lambda: cf.BackendServices("", rsa, token_url=URL)),
        ("algorithm", lambda: cf.BackendServices("id", rsa, token_url=URL, algorithm="HS256")),  # type: ignore[arg-type]
        ("algorithm", lambda: cf.BackendServices("id", rsa, token_url=URL, algorithm="ES384")),
        ("private_key", lambda: cf.BackendServices("id", "not a key", token_url=URL)),
        ("token_url", lambda: cf.BackendServices("id", rsa)),
        ("client_id", lambda: cf.AuthorizationCode("", CB, "launch", fhir_base=FHIR)),
        ("redirect_uri", lambda: cf.AuthorizationCode("id", "not a url", "launch", fhir_base=FHIR)),
        ("fhir_base", lambda: cf.AuthorizationCode("id", CB, "launch")),
        ("redirect_url", lambda: cf.AuthorizationCode("id", CB, "launch", fhir_base=FHIR).complete("not a url")),
        ("registration_url", lambda: cf.register_client("not a url", "app", [CB], "openid")),
        ("base_url", lambda: cf.FhirClient("fhir.example.org")),
        ("fhir_version", lambda: cf.FhirClient(FHIR, fhir_version="DSTU2")),  # type: ignore[arg-type]
        ("resource.resourceType", lambda: cf.FhirClient(FHIR).create({"id": "1"})),
        ("ccn", lambda: cf.CibmtrClient("1234", sb.password_grant())),
        ("environment", lambda: cf.CibmtrClient("12345", sb.password_grant(), environment="staging")),  # type: ignore[arg-type]
        ("base_url", lambda: cf.CibmtrClient("12345", sb.password_grant(), base_url="cibmtr")),
        ("first_name", lambda: client.register_crid("", "Doe", "1970-01-31", "F")),
        ("birth_date", lambda: client.register_crid("Jane", "Doe", "2024-02-30", "F")),
        ("ssn", lambda: client.register_crid("Jane", "Doe", "1970-01-31", "F", ssn="12-34")),
        ("gender", lambda: client.register_crid("Jane", "Doe", "1970-01-31", "unknown")),
        ("loinc", lambda: client.submit_lab(1, no_code)),
        ("value", lambda: client.submit_lab(1, lab(value="high"))),  # type: ignore[arg-type]
        ("value", lambda: client.submit_lab(1, "718-7", "twelve", "g/dL", "2024-05-01T08:30:00Z")),
        ("effective", lambda: client.submit_lab(1, lab(when="2024-02-30T08:30:00Z"))),
        ("effective", lambda: client.submit_lab(1, "718-7", 1.0, "g/dL", "2024-05-01")),
        ("concurrency", lambda: client.submit_labs(1, [lab()], concurrency=0)),
        ("concurrency", lambda: client.submit_labs(1, [lab()], concurrency=-1)),
        ("bundle_size", lambda: client.submit_labs(1, [lab()], use_bundles=True, bundle_size=-5)),
        ("loinc", lambda: cf.LabResult.from_dict(no_code)),
        ("algorithm", lambda: cf.generate_key("HS256")),  # type: ignore[arg-type]
        ("okta_token_ttl", lambda: cf.Sandbox(okta_token_ttl=-1)),
        ("crid_response", lambda: cf.Sandbox(crid_response="fuzzy")),  # type: ignore[arg-type]
        ("route", lambda: sb.set_fault("nowhere", status=500)),  # type: ignore[arg-type]
        ("drop_connection", lambda: sb.set_fault("okta_token", drop_connection="middle")),  # type: ignore[arg-type]
        ("status", lambda: sb.set_fault("okta_token", status=99)),
        ("share", lambda: sb.set_fault("okta_token", status=503, share=50)),
        ("share", lambda: sb.set_fault("okta_token", status=503, share=float("nan"))),
        ("jwks", lambda: sb.register_backend_client("c", {"keys": 5})),
    ]


@pytest.fixture
def rsa() -> str:
    return cf.generate_key("RS384").private_pem


def quiet(sb: cf.Sandbox) -> Dict[str, int]:
    """What reached the sandbox: nothing should, for a refused argument."""
    return {"tokens": sb.token_requests_total(), "crid": sb.requests("crid"),
            "labs": sb.requests("observation_create") + sb.requests("observation_search")}


def test_wrong_types_are_type_errors_naming_the_parameter(sb: cf.Sandbox, client: cf.CibmtrClient, rsa: str) -> None:
    before = quiet(sb)
    for name, call in type_cases(sb, client, rsa):
        with pytest.raises(TypeError) as e:
            call()
        assert not isinstance(e.value, cf.CibmtrFhirError)
        # pyo3 names an argument it failed to convert in a note (Python 3.11+ only); the
        # binding's own checks name it in the message on every version.
        assert name in message(e.value) or sys.version_info < (3, 11), (name, message(e.value))
    assert quiet(sb) == before


def test_bad_values_are_validation_errors_naming_the_field(sb: cf.Sandbox, client: cf.CibmtrClient, rsa: str) -> None:
    assert issubclass(cf.ValidationError, ValueError) and issubclass(cf.ValidationError, cf.CibmtrFhirError)
    before = quiet(sb)
    for field, call in value_cases(sb, client, rsa):
        with pytest.raises(cf.ValidationError) as e:
            call()
        assert isinstance(e.value, ValueError) and e.value.code == "VALIDATION"
        assert e.value.field == field, (field, e.value.field, str(e.value))
        assert field in str(e.value) and e.value.rule in str(e.value)
    assert quiet(sb) == before


def test_the_own_type_errors_name_the_parameter_in_the_message(client: cf.CibmtrClient, rsa: str) -> None:
    """The checks the binding makes itself say what was expected and what was given."""
    cases: List[Tuple[Call, str]] = [
        (lambda: client.register_crid(123, "Doe", "1970-01-31", "F"), "first_name must be a str, not int"),  # type: ignore[arg-type]
        (lambda: client.register_crid("Jane", "Doe", None, "F"), "birth_date must be a str or a date, not None"),  # type: ignore[arg-type]
        (lambda: client.submit_labs(1, 5), "labs must be an iterable"),
        (lambda: cf.BackendServices("id", 5, token_url=URL), "private_key must be a PEM string or a JWK"),  # type: ignore[arg-type]
        (lambda: cf.register_client(URL, "app", CB, "openid"), "redirect_uris must be a list of str, not str"),  # type: ignore[arg-type]
        (lambda: cf.FhirClient(FHIR).create("{}"), "resource must be a dict, not str"),  # type: ignore[arg-type]
    ]
    for call, text in cases:
        with pytest.raises(TypeError, match=text):
            call()


def test_a_bad_item_of_submit_labs_is_a_failed_item_naming_the_field(sb: cf.Sandbox, client: cf.CibmtrClient) -> None:
    crid = client.register_crid("Jane", "Doe", "1970-01-31", "F")
    no_code = {k: v for k, v in lab().items() if k != "loinc"}
    report = client.submit_labs(crid, [lab(), no_code, lab(value="n/a"), lab(when="2024-02-30T08:30:00Z"), 5])  # type: ignore[arg-type]
    assert (report.created, report.failed) == (1, 4)
    fields = [item["error"]["field"] for item in report.failures()]
    assert fields == ["loinc", "value", "effective", "lab"]
    assert all(item["error"]["kind"] == "VALIDATION" for item in report.failures())
