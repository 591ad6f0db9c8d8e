"""The Python package (``cibmtr_fhir``) against authorization servers nobody here wrote, each
started on 127.0.0.1 (port 0) by its test and stopped with it: oidc-provider (npm,
tests/interop/node/oidc-server.mjs) and an authlib password server
(tests/interop/authlib/password_server.py). Every flow once; the Rust suite
(tests/interop/tests/auth_servers.rs) covers more cases.

Run by scripts/test-interop.sh with the interop virtualenv, after installing the package's wheel.
Whether a token works is the server's word (introspection, userinfo, a protected resource).
"""

from __future__ import annotations

import base64
import html
import json
import os
import pathlib
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import requests

import cibmtr_fhir as cf

INTEROP = pathlib.Path(__file__).resolve().parents[1]
OIDC = "oidc-provider"
AUTHLIB = "authlib"
REDIRECT_URI = "http://127.0.0.1:9/callback"
SMART_SCOPE = "openid offline_access launch/patient patient/*.read"
INTROSPECTOR = ("interop-resource-server", secrets.token_hex(16))


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------


class Peer:
    """A server process that prints one JSON line when ready and exits when its stdin closes."""

    def __init__(self, name: str, argv: List[str], cwd: Optional[pathlib.Path] = None) -> None:
        self.name = name
        self._stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
            )
        except OSError as e:
            pytest.fail(f"{name} could not be started ({argv[0]}): {e}")
        line: List[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(60)
        if not line or not line[0]:
            self.stop()
            pytest.fail(f"{name} did not start (exit {self.proc.poll()}); stderr:\n{self.stderr()}")
        self.ready: Dict[str, Any] = json.loads(line[0])
        # Keep draining stdout so the server never blocks on a full pipe.
        threading.Thread(target=lambda: self.proc.stdout.read(), daemon=True).start()  # type: ignore[union-attr]

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class OidcProvider:
    def __init__(self, clients: List[Dict[str, Any]], ttl: Optional[Dict[str, int]] = None) -> None:
        introspector = {
            "client_id": INTROSPECTOR[0],
            "client_secret": INTROSPECTOR[1],
            "grant_types": ["client_credentials"],
            "redirect_uris": [],
            "response_types": [],
            "token_endpoint_auth_method": "client_secret_basic",
        }
        config: Dict[str, Any] = {"clients": [*clients, introspector]}
        if ttl:
            config["ttl"] = ttl
        node = INTEROP / "node"
        self.peer = Peer(OIDC, ["node", str(node / "oidc-server.mjs"), json.dumps(config)], cwd=node)
        r = self.peer.ready
        self.issuer: str = r["issuer"]
        self.token_url: str = r["token_endpoint"]
        self.authorize_url: str = r["authorization_endpoint"]
        self.registration_url: str = r["registration_endpoint"]
        self.introspection_url: str = r["introspection_endpoint"]
        self.userinfo_url: str = r["userinfo_endpoint"]

    def introspect(self, token: str) -> Dict[str, Any]:
        resp = requests.post(self.introspection_url, data={"token": token}, auth=INTROSPECTOR, timeout=10)
        assert resp.status_code == 200, f"{OIDC} introspection: {resp.status_code} {resp.text}"
        return resp.json()  # type: ignore[no-any-return]


class PasswordServer:
    def __init__(self, lifetime: int) -> None:
        self.client_id = f"okta-like-{secrets.token_hex(4)}"
        self.client_secret = f"s%3A:{secrets.token_hex(12)}+/="
        self.username = "recipient.coordinator@center.example"
        self.password = f"pw:{secrets.token_hex(8)}%+"
        config = {
            "client_id": self.client_id, "client_secret": self.client_secret,
            "username": self.username, "password": self.password,
            "lifetime": lifetime, "scope": "cibmtr_fhir",
        }
        self.peer = Peer(
            f"{AUTHLIB} password server",
            [sys.executable, str(INTEROP / "authlib" / "password_server.py"), json.dumps(config)],
        )
        self.token_url: str = self.peer.ready["token_endpoint"]
        self.protected_url: str = self.peer.ready["protected_url"]
        self.stats_url: str = self.peer.ready["stats_url"]

    def stats(self) -> Dict[str, Any]:
        return requests.get(self.stats_url, timeout=10).json()  # type: ignore[no-any-return]

    def protected_status(self, token: str) -> int:
        return requests.get(self.protected_url, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code

    def grant(self, password: Optional[str] = None) -> cf.PasswordGrant:
        return cf.PasswordGrant(
            self.token_url, self.client_id, self.client_secret, self.username,
            self.password if password is None else password, scope="cibmtr_fhir",
        )


@pytest.fixture
def servers() -> Iterator[List[Any]]:
    """Everything a test starts goes in this list and is stopped after it."""
    started: List[Any] = []
    yield started
    for s in started:
        s.peer.stop()


def oidc(servers: List[Any], clients: List[Dict[str, Any]], ttl: Optional[Dict[str, int]] = None) -> OidcProvider:
    op = OidcProvider(clients, ttl)
    servers.append(op)
    return op


def password_server(servers: List[Any], lifetime: int) -> PasswordServer:
    s = PasswordServer(lifetime)
    servers.append(s)
    return s


class JwksHost:
    """Serves a JWKS on a loopback port (a client's ``jwks_uri``), counting fetches."""

    def __init__(self, jwks: Dict[str, Any]) -> None:
        body = json.dumps(jwks).encode()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                host.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.fetches = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def browser_login(op: OidcProvider, authorization_url: str, login: str) -> str:
    """The user's browser: follows redirects by hand with a cookie jar, submits oidc-provider's
    development login (any login) and consent forms, and returns the redirect to the app."""
    s = requests.Session()
    resp = s.get(authorization_url, allow_redirects=False, timeout=10)
    trail = [authorization_url.split("?")[0]]
    for _ in range(16):
        if resp.is_redirect:
            target = urllib.parse.urljoin(resp.url, resp.headers["Location"])
            if target.startswith(REDIRECT_URI):
                return target
            trail.append(target)
            resp = s.get(target, allow_redirects=False, timeout=10)
            continue
        assert resp.status_code == 200, f"{OIDC}: {resp.status_code} at {resp.url}: {resp.text[:300]}\n{op.peer.stderr()}"
        action = re.search(r'<form[^>]*action="([^"]+)"', resp.text)
        prompt = re.search(r'name="prompt" value="(\w+)"', resp.text)
        assert action and prompt, f"{OIDC}: no interaction form at {resp.url}"
        form = {"prompt": prompt.group(1)}
        if prompt.group(1) == "login":
            form.update(login=login, password="any password")
        target = urllib.parse.urljoin(resp.url, html.unescape(action.group(1)))
        resp = s.post(target, data=form, allow_redirects=False, timeout=10)
    raise AssertionError(f"{OIDC}: never got back to the app; visited {trail}")


def login(op: OidcProvider, auth: cf.AuthorizationCode, user: str) -> None:
    url = auth.authorization_url()
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert q["code_challenge_method"] == "S256" and q["state"]
    redirect = browser_login(op, url, user)
    back = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(redirect).query))
    assert back["state"] == q["state"] and back["code"]
    auth.complete(redirect)


def smart_app(client_id: str, secret: Optional[str]) -> Dict[str, Any]:
    c: Dict[str, Any] = {
        "client_id": client_id,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "redirect_uris": [REDIRECT_URI],
        "scope": SMART_SCOPE,
        "token_endpoint_auth_method": "client_secret_basic" if secret else "none",
    }
    if secret:
        c["client_secret"] = secret
    return c


def cc_client(client_id: str, secret: str, method: str) -> Dict[str, Any]:
    return {
        "client_id": client_id, "client_secret": secret, "grant_types": ["client_credentials"],
        "redirect_uris": [], "response_types": [], "token_endpoint_auth_method": method,
        "scope": "system/*.read",
    }


# ---------------------------------------------------------------------------------------------
# oidc-provider
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_client_credentials_against_oidc_provider(servers: List[Any], method: str) -> None:
    flow = f"ClientCredentials ({method})"
    # `%`, `:` and `+` in the secret: Basic must form-encode it (RFC 6749 §2.3.1).
    secret = f"py%25:{secrets.token_hex(8)}+/="
    op = oidc(servers, [cc_client("cc", secret, method)])
    auth = cf.ClientCredentials(op.token_url, "cc", secret, scope="system/*.read unknown/scope", auth_method=method)
    try:
        token = auth.token()
    except cf.CibmtrFhirError as e:
        pytest.fail(f"{flow} against {OIDC}: {e}\n{op.peer.stderr()}")
    live = op.introspect(token)
    assert live["active"] is True and live["client_id"] == "cc", f"{flow} against {OIDC}: {live}"
    assert live["scope"] == "system/*.read", f"{flow} against {OIDC}: unknown scope dropped"
    assert auth.token() == token
    assert auth.stats()["token_requests"] == 1, f"{flow} against {OIDC}"

    wrong = cf.ClientCredentials(op.token_url, "cc", "wrong", scope="system/*.read", auth_method=method)
    with pytest.raises(cf.AuthError) as e:
        wrong.token()
    assert e.value.error == "invalid_client", f"{flow} against {OIDC}"


@pytest.mark.parametrize(
    "algorithm,by_uri", [("RS384", False), ("ES384", False), ("RS384", True), ("ES384", True)]
)
def test_private_key_jwt_against_oidc_provider(servers: List[Any], algorithm: str, by_uri: bool) -> None:
    flow = f"BackendServices (private_key_jwt {algorithm}, JWKS {'by jwks_uri' if by_uri else 'inline'})"
    key = cf.generate_key(algorithm)  # type: ignore[arg-type]
    jwks = cf.public_jwks(key.private_pem, algorithm)  # type: ignore[arg-type]
    assert jwks == key.jwks
    client: Dict[str, Any] = {
        "client_id": "backend", "grant_types": ["client_credentials"], "redirect_uris": [],
        "response_types": [], "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": algorithm, "scope": "system/*.read",
    }
    host = JwksHost(jwks) if by_uri else None
    try:
        if host:
            client["jwks_uri"] = host.url
        else:
            client["jwks"] = jwks
        op = oidc(servers, [client])
        auth = cf.BackendServices("backend", key.private_pem, token_url=op.token_url,
                                  algorithm=algorithm, scope="system/*.read")  # type: ignore[arg-type]
        assert auth.key_id == key.key_id
        try:
            first = auth.token()
        except cf.CibmtrFhirError as e:
            pytest.fail(f"{flow} against {OIDC}: {e}\n{op.peer.stderr()}")
        live = op.introspect(first)
        assert live["active"] is True and live["client_id"] == "backend", f"{flow} against {OIDC}: {live}"
        # A second token, a second (fresh) assertion: oidc-provider refuses a replayed jti.
        auth.invalidate()
        second = auth.token()
        assert second != first and op.introspect(second)["active"] is True, f"{flow} against {OIDC}"
        assert auth.stats()["token_requests"] == 2
        if host:
            assert host.fetches >= 1, f"{flow}: {OIDC} never fetched the jwks_uri"
        # A key the server does not know, under the same client id.
        stranger = cf.generate_key(algorithm)  # type: ignore[arg-type]
        impostor = cf.BackendServices("backend", stranger.private_pem, token_url=op.token_url,
                                      algorithm=algorithm, scope="system/*.read")  # type: ignore[arg-type]
        with pytest.raises(cf.AuthError) as e:
            impostor.token()
        assert e.value.error == "invalid_client", f"{flow} against {OIDC}: unregistered key"
    finally:
        if host:
            host.close()


def test_authorization_code_and_refresh_against_oidc_provider(servers: List[Any]) -> None:
    flow = "AuthorizationCode (PKCE S256, refresh rotation)"
    secret = f"app:{secrets.token_hex(8)}%+"
    op = oidc(servers, [smart_app("smart-app", secret)])
    auth = cf.AuthorizationCode("smart-app", REDIRECT_URI, SMART_SCOPE, client_secret=secret,
                                authorize_url=op.authorize_url, token_url=op.token_url)
    login(op, auth, "alice")
    first = auth.token()
    live = op.introspect(first)
    assert live["active"] is True and live["sub"] == "alice", f"{flow} against {OIDC}: {live}"
    me = requests.get(op.userinfo_url, headers={"Authorization": f"Bearer {first}"}, timeout=10)
    assert me.status_code == 200 and me.json()["sub"] == "alice", f"{flow} against {OIDC}: userinfo"
    assert "id_token" in auth.context and first not in json.dumps(auth.context)

    # Forced refresh from 20 threads at once: one refresh-token request. oidc-provider rotates
    # strictly (a rotated refresh token presented again revokes the grant), so a duplicate
    # refresh would leave every token dead.
    auth.invalidate()
    with ThreadPoolExecutor(20) as pool:
        tokens = set(pool.map(lambda _: auth.token(), range(20)))
    assert len(tokens) == 1, f"{flow} against {OIDC}: {len(tokens)} tokens"
    second = tokens.pop()
    assert second != first
    assert auth.stats()["token_requests"] == 2, f"{flow} against {OIDC}: {auth.stats()}"
    assert op.introspect(second)["active"] is True, f"{flow} against {OIDC}: the grant survived"
    # And again: the rotated refresh token is the one the SDK presents next.
    auth.invalidate()
    third = auth.token()
    assert third not in (first, second) and op.introspect(third)["active"] is True


def test_dynamic_registration_then_login_against_oidc_provider(servers: List[Any]) -> None:
    flow = "register_client (RFC 7591) + AuthorizationCode"
    op = oidc(servers, [])
    reg = cf.register_client(op.registration_url, "cibmtr-fhir python interop", [REDIRECT_URI], SMART_SCOPE)
    assert reg.client_id and reg.client_secret
    assert reg.client_secret not in repr(reg)
    auth = cf.AuthorizationCode(reg.client_id, REDIRECT_URI, SMART_SCOPE, client_secret=reg.client_secret,
                                authorize_url=op.authorize_url, token_url=op.token_url)
    login(op, auth, "carol")
    live = op.introspect(auth.token())
    assert live["active"] is True and live["client_id"] == reg.client_id, f"{flow} against {OIDC}: {live}"


# ---------------------------------------------------------------------------------------------
# authlib: the password grant
# ---------------------------------------------------------------------------------------------


def test_password_grant_against_authlib(servers: List[Any]) -> None:
    flow = "PasswordGrant"
    s = password_server(servers, 300)
    auth = s.grant()
    with ThreadPoolExecutor(32) as pool:
        tokens = set(pool.map(lambda _: auth.token(), range(64)))
    assert len(tokens) == 1, f"{flow} against {AUTHLIB}"
    token = tokens.pop()
    assert s.protected_status(token) == 200, f"{flow} against {AUTHLIB}"
    stats = s.stats()
    assert stats["token_requests"] == 1, f"{flow} against {AUTHLIB}: {stats}"
    assert stats["auth_methods"] == {"client_secret_basic": 1}, f"{flow} against {AUTHLIB}: {stats}"
    # The same client secret in the body is refused: the SDK's success means it sent Basic.
    body = requests.post(s.token_url, data={
        "grant_type": "password", "username": s.username, "password": s.password,
        "client_id": s.client_id, "client_secret": s.client_secret,
    }, timeout=10)
    assert body.status_code == 401 and body.json()["error"] == "invalid_client"


def test_password_grant_refreshes_ahead_against_authlib(servers: List[Any]) -> None:
    flow = "PasswordGrant (refresh ahead, 2 s tokens)"
    lifetime = 2
    s = password_server(servers, lifetime)
    auth = s.grant()
    deadline = time.monotonic() + 3 * lifetime + 0.5
    seen = set()
    while time.monotonic() < deadline:
        token = auth.token()
        if token not in seen:
            seen.add(token)
        assert s.protected_status(token) == 200, f"{flow} against {AUTHLIB}: a handed-out token was refused"
        time.sleep(0.05)
    requests_made = s.stats()["token_requests"]
    assert 3 <= requests_made <= 6, f"{flow} against {AUTHLIB}: {requests_made} token requests"
    assert requests_made == len(seen) == auth.stats()["token_requests"]


def test_password_grant_wrong_password_against_authlib(servers: List[Any]) -> None:
    flow = "PasswordGrant (wrong password)"
    s = password_server(servers, 300)
    auth = s.grant(password="not-the-password")
    for _ in range(3):
        with pytest.raises(cf.AuthError) as e:
            auth.token()
        assert e.value.error == "invalid_grant" and e.value.status == 400, f"{flow} against {AUTHLIB}"
    assert s.stats()["token_requests"] == 1, f"{flow} against {AUTHLIB}: retried or asked again"
