"""No secret (client secret, password, private key, access or refresh token, SSN) in any repr,
str or log record, with logging at DEBUG."""

from __future__ import annotations

import logging

import pytest

import cibmtr_fhir as cf

from conftest import follow_login, lab


def test_no_secret_in_repr_str_or_debug_logs(sb: cf.Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cibmtr_fhir")
    creds = sb.credentials
    okta, msk, backend, smart = creds["okta"], creds["msk_basic"], creds["backend"], creds["smart"]
    ssn = "123-45-6789"
    secrets = {
        okta["client_secret"], okta["password"], msk["client_secret"], smart["client_secret"],
        backend["private_key_pem"], ssn,
    }

    # Retries and waits that the core logs: a 503 then a 429 on the token endpoint, a 503 on a
    # search.
    sb.set_fault("okta_token", status=503, times=1)
    auth = sb.password_grant()
    token = auth.token()
    secrets.add(token)
    sb.set_fault("okta_token", status=429, headers={"Retry-After": "0"}, times=1)
    auth.invalidate()
    secrets.add(auth.token())
    client = cf.CibmtrClient("12345", auth, base_url=sb.urls["cibmtr_base"])
    crid = client.register_crid("Jane", "Doe", "1970-01-31", "F", ssn=ssn)
    sb.set_fault("observation_search", status=503, times=1)
    report = client.submit_labs(crid, [lab(1.0), lab(2.0, when="2024-05-01T08:30:00")])
    sub = client.submit_lab(crid, lab(3.0))

    mskauth = cf.ClientCredentials(msk["token_url"], msk["client_id"], msk["client_secret"], scope="full", auth_method="client_secret_basic")
    secrets.add(mskauth.token())
    backauth = cf.BackendServices(backend["client_id"], backend["private_key_pem"], token_url=backend["token_url"], key_id=backend["key_id"], algorithm="ES384")
    secrets.add(backauth.token())
    code = cf.AuthorizationCode(smart["client_id"], smart["redirect_uri"], smart["scope"], client_secret=smart["client_secret"], fhir_base=smart["fhir_base"])
    url = code.authorization_url()
    back = follow_login(url)
    code.complete(back)
    secrets.add(code.token())
    for part in url.split("&") + back.split("?")[1].split("&"):
        if part.startswith(("state=", "code=")):  # the login's state and one-time code
            secrets.add(part.split("=", 1)[1])
    key = cf.generate_key("RS384")
    secrets.add(key.private_pem)
    reg = cf.register_client(smart["registration_url"], "app", ["http://127.0.0.1:9/x"], "openid")
    secrets.add(reg.client_secret or "")

    errors: list = []
    for call in (
        lambda: cf.PasswordGrant(okta["token_url"], okta["client_id"], okta["client_secret"], okta["username"], "nope-" + okta["password"]).token(),
        lambda: cf.ClientCredentials(msk["token_url"], msk["client_id"], "bad" + msk["client_secret"], scope="full").token(),
        lambda: client.fhir.create({"resourceType": "Observation"}),
        lambda: code.complete(back),
    ):
        with pytest.raises(cf.CibmtrFhirError) as e:
            call()
        errors.append(e.value)

    shown = [
        repr(o) for o in (auth, mskauth, backauth, code, client, client.fhir, sb, key, reg, report, sub,
                          cf.LabResult.from_dict(lab(1.0)), client.fhir.search("Patient"), *errors)
    ] + [str(e) for e in errors] + [str(auth.stats()), str(code.context), str(report.to_list())]
    records = [f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records]
    assert any(r.name.startswith("cibmtr_fhir.auth") and r.levelno == logging.DEBUG for r in caplog.records), records
    assert any("rate limited" in r for r in records), records
    assert any(r.name.startswith("cibmtr_fhir.fhir") for r in caplog.records), records

    for text in shown + records:
        for secret in secrets:
            assert secret and secret not in text, f"a secret shows in: {text[:200]}"
    # The reprs say something useful.
    assert "PasswordGrant" in repr(auth) and okta["username"] in repr(auth)
    assert "12345" in repr(client) and "Sandbox(base=" in repr(sb)
