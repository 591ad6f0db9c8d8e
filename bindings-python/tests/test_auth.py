"""Every token flow against the sandbox, through the Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cibmtr_fhir as cf

from conftest import follow_login, post_json


def test_password_grant_caches_one_token(sb: cf.Sandbox, okta: dict) -> None:
    auth = cf.PasswordGrant(
        okta["token_url"], okta["client_id"], okta["client_secret"], okta["username"],
        okta["password"], scope=okta["scope"],
    )
    tokens = {auth.token() for _ in range(500)}
    assert len(tokens) == 1 and len(next(iter(tokens))) > 20
    assert sb.token_requests(okta["client_id"]) == 1
    stats = auth.stats()
    assert stats["token_requests"] == 1 and stats["cache_hits"] == 499 and stats["failures"] == 0
    # A second object with the same credentials shares the cached token.
    twin = cf.PasswordGrant(
        okta["token_url"], okta["client_id"], okta["client_secret"], okta["username"],
        okta["password"], scope=okta["scope"],
    )
    assert twin.token() in tokens
    auth.invalidate()
    assert auth.token() not in tokens
    assert sb.token_requests(okta["client_id"]) == 2


def test_password_grant_file_store_shares_the_token(sb: cf.Sandbox, okta: dict, tmp_path) -> None:
    store = tmp_path / "tokens.json"
    args = (okta["token_url"], okta["client_id"], okta["client_secret"], okta["username"], okta["password"])
    first = cf.PasswordGrant(*args, scope=okta["scope"], token_store=store).token()
    assert store.exists() and (store.stat().st_mode & 0o777) == 0o600
    assert okta["password"] not in store.read_text()
    assert sb.token_requests(okta["client_id"]) == 1
    # Another process with the same credentials and store takes the token from the file.
    child = subprocess.run(
        [sys.executable, "-c", (
            "import json, os, sys, cibmtr_fhir as cf; a = json.loads(os.environ['ARGS']); "
            "sys.stdout.write(cf.PasswordGrant(*a[:5], scope=a[5], token_store=a[6]).token())"
        )],
        env={**os.environ, "ARGS": json.dumps([*args, okta["scope"], str(store)])},
        capture_output=True, text=True, check=True,
    )
    assert child.stdout == first
    assert sb.token_requests(okta["client_id"]) == 1


def test_client_credentials_both_auth_methods(sb: cf.Sandbox) -> None:
    for name, method in (("msk", "client_secret_post"), ("msk_basic", "client_secret_basic")):
        c = sb.credentials[name]
        auth = cf.ClientCredentials(c["token_url"], c["client_id"], c["client_secret"], scope="full", auth_method=method)
        assert auth.auth_method == method
        assert auth.token() == auth.token()
        assert sb.token_requests(c["client_id"]) == 1
        fhir = cf.FhirClient(sb.urls["msk_fhir"], auth, default_params={"researchstudy": "study-1"})
        created = fhir.create({"resourceType": "Patient", "gender": "female"})
        assert fhir.read("Patient", created["id"])["gender"] == "female"
        assert any(p["id"] == created["id"] for p in fhir.search("Patient", {"_id": created["id"]}))


def test_client_credentials_wrong_method_is_refused(sb: cf.Sandbox) -> None:
    c = sb.credentials["msk"]  # registered for client_secret_post only
    auth = cf.ClientCredentials(c["token_url"], c["client_id"], c["client_secret"], scope="full", auth_method="client_secret_basic")
    try:
        auth.token()
    except cf.AuthError as e:
        assert e.error == "invalid_client"
    else:
        raise AssertionError("client_secret_basic was accepted for a client_secret_post client")


def test_backend_services_with_the_sandbox_client(sb: cf.Sandbox) -> None:
    c = sb.credentials["backend"]
    auth = cf.BackendServices(
        c["client_id"], c["private_key_pem"], token_url=c["token_url"], key_id=c["key_id"],
        algorithm="ES384", scope=c["scope"],
    )
    assert auth.key_id == c["key_id"] and auth.algorithm == "ES384"
    assert auth.token() == auth.token()
    assert sb.token_requests(c["client_id"]) == 1
    fhir = cf.FhirClient(sb.urls["aidbox_fhir"], auth)
    assert fhir.capabilities()["resourceType"] == "CapabilityStatement"


def test_backend_services_with_a_generated_key_registered_through_the_admin_api(sb: cf.Sandbox) -> None:
    for alg in ("RS384", "ES384"):
        key = cf.generate_key(alg)
        assert key.algorithm == alg and key.jwks["keys"][0]["kid"] == key.key_id
        assert cf.public_jwks(key.private_pem, alg) == key.jwks
        client_id = f"py-backend-{alg.lower()}"
        post_json(sb.urls["admin"] + "/backend-clients", {"client_id": client_id, "jwks": key.jwks})
        # Token URL discovered from the FHIR base's .well-known/smart-configuration.
        auth = cf.BackendServices(client_id, key.private_pem, fhir_base=sb.urls["fhir_base"], algorithm=alg)
        assert auth.token_url is None
        token = auth.token()
        assert auth.token_url == sb.urls["smart_token"]
        assert auth.key_id == key.key_id and token
        fhir = cf.FhirClient(sb.urls["aidbox_fhir"], auth)
        p = fhir.create({"resourceType": "Patient", "gender": "male"})
        assert fhir.read("Patient", p["id"])["id"] == p["id"]
        assert sb.token_requests(client_id) == 1


def test_authorization_code_with_dynamic_registration(sb: cf.Sandbox) -> None:
    smart = sb.credentials["smart"]
    redirect = "http://127.0.0.1:9/py-callback"
    reg = cf.register_client(smart["registration_url"], "pytest app", [redirect], smart["scope"])
    assert reg.client_id and reg.client_secret
    auth = cf.AuthorizationCode(
        reg.client_id, redirect, smart["scope"], client_secret=reg.client_secret,
        fhir_base=smart["fhir_base"],
    )
    url = auth.authorization_url()
    assert url.startswith(smart["authorize_url"]) and "code_challenge=" in url and "state=" in url
    back = follow_login(url)
    assert back.startswith(redirect + "?") and "code=" in back
    auth.complete(back)
    assert auth.context["patient"] == smart["patient"]
    assert "access_token" not in auth.context and "refresh_token" not in auth.context
    first = auth.token()
    assert first == auth.token()
    # Refresh (the sandbox rotates refresh tokens): one request, a new token.
    auth.invalidate()
    assert auth.token() != first
    assert auth.stats()["token_requests"] == 2
    assert sb.token_requests(reg.client_id) == 2


def test_authorization_code_public_client_and_state_check(sb: cf.Sandbox) -> None:
    smart = sb.credentials["smart"]
    redirect = "http://127.0.0.1:9/public"
    reg = cf.register_public_client(smart["registration_url"], "public app", [redirect], smart["scope"])
    assert reg.client_secret is None
    auth = cf.AuthorizationCode(
        reg.client_id, redirect, smart["scope"],
        authorize_url=smart["authorize_url"], token_url=smart["token_url"], fhir_base=smart["fhir_base"],
    )
    back = follow_login(auth.authorization_url())
    forged = back.replace("state=", "state=x")
    try:
        auth.complete(forged)
    except cf.AuthError as e:
        assert e.error == "state_mismatch"
    else:
        raise AssertionError("a forged state was accepted")
    assert sb.token_requests(reg.client_id) == 0
    # The real redirect still completes (a failed check does not consume the login).
    back = follow_login(auth.authorization_url())
    auth.complete(back)
    assert auth.token()
