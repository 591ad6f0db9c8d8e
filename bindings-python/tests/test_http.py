"""HTTP settings (``HttpConfig``, ``http=``): timeouts, retry bounds, a proxy, extra CA
certificates and ``allow_http_hosts``, against the sandbox and small local servers."""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import pathlib
import socket
import ssl
import threading
import time
from typing import Any, Callable, Iterator, List, Tuple

import pytest

import cibmtr_fhir as cf

# A test-only CA and a server certificate it signed for localhost and 127.0.0.1 (P-256, valid
# until 2126): see tls/README.
TLS = pathlib.Path(__file__).parent / "tls"


def test_repr_shows_what_was_given_and_never_a_proxy_password() -> None:
    config = cf.HttpConfig(
        timeout=2.5,
        connect_timeout=datetime.timedelta(seconds=1),
        proxy="http://svc:hunter2@proxy.example.org:3128",
        allow_http_hosts="fhir.internal",
        request_retries=0,
    )
    text = repr(config)
    assert "hunter2" not in text and "svc" not in text, text
    assert text == (
        "HttpConfig(timeout=2.5, connect_timeout=1.0, proxy='http://proxy.example.org:3128', "
        "allow_http_hosts=['fhir.internal'], request_retries=0)"
    )
    assert config.proxy == "http://proxy.example.org:3128"
    assert (config.timeout, config.connect_timeout, config.request_retries) == (2.5, 1.0, 0)
    assert (config.token_retries, config.max_retry_time, config.ca_files) == (None, None, [])
    assert config.allow_http_hosts == ["fhir.internal"]
    assert repr(cf.HttpConfig()) == "HttpConfig()"
    # Objects built with it do not show the password either.
    auth = cf.ClientCredentials("https://auth.example.org/token", "id", "secret", http=config)
    assert "hunter2" not in repr(auth)
    assert "hunter2" not in repr(cf.FhirClient("https://fhir.example.org/r4", auth=auth, http=config))


def test_bad_settings_are_refused_naming_the_argument(tmp_path: pathlib.Path) -> None:
    not_pem = tmp_path / "not-a-cert.pem"
    not_pem.write_text("hello")
    cases: List[Tuple[Callable[[], Any], str]] = [
        (lambda: cf.HttpConfig(timeout=-1), "timeout"),
        (lambda: cf.HttpConfig(timeout=0), "timeout"),
        (lambda: cf.HttpConfig(connect_timeout=float("nan")), "connect_timeout"),
        (lambda: cf.HttpConfig(max_rate_limit_wait=float("inf")), "max_rate_limit_wait"),
        (lambda: cf.HttpConfig(max_retry_time=datetime.timedelta(seconds=-1)), "max_retry_time"),
        (lambda: cf.HttpConfig(proxy="proxy.example.org:3128"), "proxy"),
        (lambda: cf.HttpConfig(proxy="ftp://proxy.example.org"), "proxy"),
        (lambda: cf.HttpConfig(ca_files="/nonexistent/ca.pem"), "ca_files"),
        (lambda: cf.HttpConfig(ca_files=[TLS / "ca.pem", not_pem]), "ca_files"),
        (lambda: cf.HttpConfig(allow_http_hosts=["http://fhir.internal"]), "allow_http_hosts"),
        (lambda: cf.HttpConfig(token_retries=-1), "token_retries"),
        (lambda: cf.HttpConfig(request_retries=2**40), "request_retries"),
    ]
    for make, field in cases:
        with pytest.raises(cf.ValidationError) as e:
            make()
        assert (e.value.code, e.value.field) == ("VALIDATION", field), e.value
    # A proxy that is refused is not echoed either.
    with pytest.raises(cf.ValidationError) as bad_proxy:
        cf.HttpConfig(proxy="svc:hunter2@proxy.example.org")
    assert "hunter2" not in str(bad_proxy.value)
    # Wrong types are TypeErrors.
    wrong: List[Callable[[], Any]] = [
        lambda: cf.HttpConfig(timeout="5"),  # type: ignore[arg-type]
        lambda: cf.HttpConfig(timeout=True),
        lambda: cf.HttpConfig(token_retries=1.5),  # type: ignore[arg-type]
        lambda: cf.HttpConfig(request_retries=True),
        lambda: cf.HttpConfig(ca_files=5),  # type: ignore[arg-type]
        lambda: cf.HttpConfig(allow_http_hosts=[1]),  # type: ignore[list-item]
        lambda: cf.HttpConfig(proxy=3128),  # type: ignore[arg-type]
        lambda: cf.HttpConfig(5),  # type: ignore[misc]
        lambda: cf.ClientCredentials("https://x/token", "id", "s", http={"timeout": 1}),  # type: ignore[arg-type]
    ]
    for make in wrong:
        with pytest.raises(TypeError):
            make()
    # Several CA files (each may hold several certificates), as paths or str.
    ok = cf.HttpConfig(ca_files=[TLS / "ca.pem", str(TLS / "server.pem")])
    assert ok.ca_files == [str(TLS / "ca.pem"), str(TLS / "server.pem")]


def test_a_short_timeout_fails_fast_where_the_default_waits(sb: cf.Sandbox) -> None:
    sb.set_fault("observation_search", delay=1.5)
    auth = sb.password_grant()
    quick = cf.FhirClient(
        sb.urls["cibmtr_base"], auth=auth, fhir_version="STU3",
        http=cf.HttpConfig(timeout=0.3, request_retries=0),
    )
    started = time.monotonic()
    with pytest.raises(cf.NetworkError) as e:
        quick.read("Observation", "nope")
    assert time.monotonic() - started < 1.2
    assert "timed out" in str(e.value)
    patient = cf.FhirClient(sb.urls["cibmtr_base"], auth=auth, fhir_version="STU3")
    started = time.monotonic()
    with pytest.raises(cf.HttpError) as answered:  # the default waits for the slow answer
        patient.read("Observation", "nope")
    assert answered.value.status == 404 and time.monotonic() - started >= 1.4

    # The token endpoint too: the flow's own settings.
    sb.set_fault("okta_token", delay=1.5)
    started = time.monotonic()
    with pytest.raises(cf.NetworkError):
        sb.password_grant(http=cf.HttpConfig(timeout=0.3, token_retries=0)).token()
    assert time.monotonic() - started < 1.2
    assert sb.requests("okta_token") == 2  # the grant above, then this single attempt


def test_retry_bounds_count_the_requests(sb: cf.Sandbox) -> None:
    auth = sb.password_grant()
    auth.token()
    sb.set_fault("observation_search", status=503)
    once = cf.FhirClient(sb.urls["cibmtr_base"], auth=auth, fhir_version="STU3", http=cf.HttpConfig(request_retries=0))
    with pytest.raises(cf.HttpError):
        once.read("Observation", "x")
    assert sb.requests("observation_search") == 1
    default = cf.FhirClient(sb.urls["cibmtr_base"], auth=auth, fhir_version="STU3")
    with pytest.raises(cf.HttpError):
        default.read("Observation", "x")
    assert sb.requests("observation_search") == 1 + 5  # 1 attempt + 4 retries by default

    sb.set_fault("okta_token", status=503)
    with pytest.raises(cf.CibmtrFhirError):
        sb.password_grant(http=cf.HttpConfig(token_retries=0)).token()
    assert sb.requests("okta_token") == 1 + 1
    with pytest.raises(cf.CibmtrFhirError):
        # A config of its own (all defaults), so the token cached by `auth` is not used.
        sb.password_grant(http=cf.HttpConfig()).token()
    assert sb.requests("okta_token") == 2 + 4  # 1 attempt + 3 retries by default


class _FakeProxy:
    """An HTTP proxy that answers every request itself with a token and records what it got."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.port = self.server.getsockname()[1]
        self.requests: List[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                body = b'{"access_token":"via-proxy","token_type":"Bearer","expires_in":3600}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )

    def close(self) -> None:
        self.server.close()


def test_a_proxy_carries_the_requests_with_its_credentials_never_shown(sb: cf.Sandbox) -> None:
    proxy = _FakeProxy()
    try:
        config = cf.HttpConfig(proxy=f"http://svc:hunter2@127.0.0.1:{proxy.port}", token_retries=0)
        auth = sb.password_grant(http=config)
        assert auth.token() == "via-proxy"
        assert sb.requests("okta_token") == 0  # it went to the proxy, not to the sandbox
        head = proxy.requests[0].decode("latin-1")
        assert head.startswith(f"POST {sb.credentials['okta']['token_url']} HTTP/1.1"), head
        expected = base64.b64encode(b"svc:hunter2").decode()
        assert f"proxy-authorization: basic {expected}".lower() in head.lower(), head
        for text in (repr(config), repr(auth), str(config.proxy)):
            assert "hunter2" not in text, text
    finally:
        proxy.close()
    # A proxy that does not answer: the error names the target, never the proxy's password.
    gone = socket.socket()
    gone.bind(("127.0.0.1", 0))
    port = gone.getsockname()[1]
    gone.close()
    failing = sb.password_grant(http=cf.HttpConfig(proxy=f"http://svc:hunter2@127.0.0.1:{port}", token_retries=0))
    with pytest.raises(cf.NetworkError) as e:
        failing.token()
    assert "hunter2" not in str(e.value) and "hunter2" not in repr(e.value.args)


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"access_token": "over-tls", "token_type": "Bearer", "expires_in": 3600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def tls_token_url() -> Iterator[str]:
    """An https token endpoint whose certificate only the test CA vouches for (as behind a
    hospital's TLS-inspecting proxy)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS / "server.pem", TLS / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://localhost:{server.server_address[1]}/token"
    server.shutdown()
    server.server_close()


def test_ca_files_trust_a_private_certificate_authority(tls_token_url: str) -> None:
    untrusted = cf.ClientCredentials(tls_token_url, "id", "secret", http=cf.HttpConfig(token_retries=0))
    with pytest.raises(cf.NetworkError):
        untrusted.token()
    trusted = cf.ClientCredentials(
        tls_token_url, "id", "secret", http=cf.HttpConfig(ca_files=TLS / "ca.pem", token_retries=0)
    )
    assert trusted.token() == "over-tls"


def test_allow_http_hosts(sb: cf.Sandbox) -> None:
    o = sb.credentials["okta"]
    args = (o["client_id"], o["client_secret"], o["username"], o["password"])
    # Refused by default, before any request; accepted when the host is listed.
    with pytest.raises(cf.ConfigError) as e:
        cf.PasswordGrant("http://okta.internal/token", *args)
    assert "allow_http_hosts" in str(e.value)
    cf.PasswordGrant("http://okta.internal/token", *args, http=cf.HttpConfig(allow_http_hosts=["okta.internal"]))
    # End to end through a host name that is not loopback by name but reaches this machine
    # (0.0.0.0 connects to the local host on Linux).
    url = o["token_url"].replace("127.0.0.1", "0.0.0.0")
    with pytest.raises(cf.ConfigError):
        cf.PasswordGrant(url, *args, scope=o["scope"])
    auth = cf.PasswordGrant(url, *args, scope=o["scope"], http=cf.HttpConfig(allow_http_hosts="0.0.0.0"))
    assert auth.token()
    assert sb.requests("okta_token") == 1


def test_every_entry_point_takes_http(sb: cf.Sandbox) -> None:
    config = cf.HttpConfig(timeout=10, request_retries=1)
    client = sb.cibmtr_client(http=config)  # the sandbox's grant uses it too
    crid = client.register_crid("Ida", "Moe", "1961-02-03", "F")
    assert client.ensure_patient(crid)
    smart = sb.credentials["smart"]
    reg = cf.register_client(smart["registration_url"], "app", [smart["redirect_uri"]], smart["scope"], http=config)
    public = cf.register_public_client(smart["registration_url"], "app", [smart["redirect_uri"]], smart["scope"], http=config)
    assert reg.client_secret and public.client_secret is None
    code = cf.AuthorizationCode(reg.client_id, smart["redirect_uri"], smart["scope"], client_secret=reg.client_secret, fhir_base=smart["fhir_base"], http=config)
    assert code.authorization_url().startswith(smart["authorize_url"])
    backend = sb.credentials["backend"]
    bs = cf.BackendServices(backend["client_id"], backend["private_key_pem"], token_url=backend["token_url"], algorithm="ES384", scope=backend["scope"], http=config)
    assert bs.token()
    msk = sb.credentials["msk"]
    assert cf.ClientCredentials(msk["token_url"], msk["client_id"], msk["client_secret"], scope=msk["scope"], http=config).token()
    # The asyncio registration too, and a validation error before any request.
    import asyncio

    async def register() -> cf.RegisteredClient:
        return await cf.aregister_client(smart["registration_url"], "app", [smart["redirect_uri"]], smart["scope"], http=config)

    assert asyncio.run(register()).client_id
