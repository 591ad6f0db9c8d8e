"""Each exception type, provoked against the sandbox, with its attributes."""

from __future__ import annotations

import datetime
import socket
import time

import pytest

import cibmtr_fhir as cf

from conftest import lab


def test_hierarchy() -> None:
    for cls in (cf.ValidationError, cf.AuthError, cf.RateLimitedError, cf.HttpError, cf.NetworkError, cf.ConfigError):
        assert issubclass(cls, cf.CibmtrFhirError) and issubclass(cls, Exception)
        assert cls.__module__ == "cibmtr_fhir" and cls.__doc__


def test_wrong_password_is_an_auth_error_and_is_not_retried(sb: cf.Sandbox, okta: dict) -> None:
    auth = cf.PasswordGrant(okta["token_url"], okta["client_id"], okta["client_secret"], okta["username"], "wrong", scope=okta["scope"])
    with pytest.raises(cf.AuthError) as e:
        auth.token()
    assert (e.value.code, e.value.error, e.value.status) == ("AUTH", "invalid_grant", 400)
    assert e.value.description and "invalid" in e.value.description
    assert str(e.value) == e.value.message and "invalid_grant" in str(e.value)
    with pytest.raises(cf.AuthError):
        auth.token()  # answered from memory: the locked-out account is not hammered
    assert sb.token_requests(okta["client_id"]) == 1
    # The right password is not answered from that memory.
    assert sb.password_grant().token()


def test_rate_limited_with_a_long_retry_after(sb: cf.Sandbox, okta: dict) -> None:
    sb.set_fault("okta_token", status=429, headers={"Retry-After": "3600"}, body='{"errorCode":"E0000047"}')
    started = time.monotonic()
    with pytest.raises(cf.RateLimitedError) as e:
        sb.password_grant().token()
    assert time.monotonic() - started < 5  # not waited out: longer than the SDK's bound
    assert e.value.code == "RATE_LIMITED" and e.value.retry_after == 3600.0
    assert "3600" in str(e.value)


def test_bad_input_is_a_validation_error_before_any_request(sb: cf.Sandbox) -> None:
    client = sb.cibmtr_client()
    crid = client.register_crid("Jane", "Doe", "1970-01-31", "F")
    client.ensure_patient(crid)
    posts = sb.requests("observation_create")
    cases = [
        (lambda: client.submit_lab(crid, "718-7", 1.0, "g/dL", datetime.datetime(2024, 5, 1, 8, 30)), "effective", "timezone"),
        (lambda: client.submit_lab(crid, "718-8", 1.0, "g/dL", "2024-05-01T08:30:00Z"), "loinc", "check digit"),
        (lambda: client.submit_lab(crid, lab(value=float("nan"))), "value", "finite"),
        (lambda: client.submit_lab(crid, lab(units="g/dL")), "units", "not a field"),
        (lambda: client.submit_lab(crid, "718-7", 1.0, "g/dL", "2024-05-01T08:30:00Z", reference_range=5), "reference_range", "pair"),
        (lambda: client.register_crid("Jane", "Doe", "1970-02-30", "F"), "birth_date", "real date"),
        (lambda: client.register_crid("Jane", "Doe", "1970-01-31", "X"), "gender", ""),
        (lambda: cf.LabResult("718-7", [1], "g/dL", "2024-05-01T08:30:00Z"), "value", "number"),
        (lambda: cf.CibmtrClient("123", sb.password_grant()), "ccn", ""),
        (lambda: cf.ClientCredentials("https://x/token", "id", "s", auth_method="magic"), "auth_method", "client_secret_post"),
        (lambda: cf.PasswordGrant("https://x/token", "id", "", "u", "p"), "client_secret", "required"),
        (lambda: sb.set_fault("nowhere", status=500), "route", "unknown route"),
    ]
    for call, field, rule in cases:
        with pytest.raises(cf.ValidationError) as e:
            call()
        assert e.value.code == "VALIDATION"
        assert (e.value.field, rule in e.value.rule) == (field, True), (field, e.value.rule)
    assert sb.requests("observation_create") == posts


def test_server_400_is_an_http_error_with_the_outcome(sb: cf.Sandbox) -> None:
    client = sb.cibmtr_client()
    with pytest.raises(cf.HttpError) as e:
        client.fhir.create({"resourceType": "Observation", "status": "final"})
    assert e.value.code == "HTTP" and e.value.status == 400
    assert e.value.outcome is not None and e.value.outcome["resourceType"] == "OperationOutcome"
    assert e.value.outcome["issue"][0]["severity"] == "error"
    with pytest.raises(cf.HttpError) as missing:
        client.fhir.read("Observation", "does-not-exist")
    assert missing.value.status == 404


def test_connection_refused_is_a_network_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    auth = cf.PasswordGrant(f"http://127.0.0.1:{port}/token", "id", "secret", "user", "pw")
    with pytest.raises(cf.NetworkError) as e:
        auth.token()
    assert e.value.code == "NETWORK" and "could not connect" in str(e.value)
    with pytest.raises(cf.NetworkError):
        cf.FhirClient(f"http://127.0.0.1:{port}/fhir").read("Patient", "1")


def test_plain_http_to_another_host_is_a_config_error() -> None:
    with pytest.raises(cf.ConfigError) as e:
        cf.PasswordGrant("http://example.org/token", "id", "secret", "user", "pw")
    assert e.value.code == "CONFIG" and "https" in str(e.value)
    with pytest.raises(cf.ConfigError):
        cf.FhirClient("http://example.org/fhir", auth=cf.ClientCredentials("https://example.org/t", "id", "s"))
    with pytest.raises(cf.ConfigError):
        cf.BackendServices("id", cf.generate_key("ES384").private_pem, token_url="http://10.0.0.1/token", algorithm="ES384")


def test_a_stopped_sandbox_says_so() -> None:
    sb = cf.Sandbox()
    sb.stop()
    assert not sb.running
    with pytest.raises(cf.ConfigError):
        sb.requests("crid")
