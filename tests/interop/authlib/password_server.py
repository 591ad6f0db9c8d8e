"""An Okta-like resource-owner password server built on authlib's server components (pinned in
tests/interop/requirements.txt), for the interop suite.

    python password_server.py '<config JSON>'

Config: {"client_id", "client_secret", "username", "password", "lifetime" (seconds, default 3),
"scope" (default "cibmtr_fhir")}. authlib does the OAuth work: client authentication by HTTP
Basic only (``TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic"]``, so a secret in the body is
refused with 401 invalid_client), ``grant_type=password``, Bearer tokens with the configured
lifetime, and a protected resource (``ResourceProtector``) that refuses expired or unknown tokens.
This file only supplies the in-memory client, user and token records, as any authlib server must.

Routes:
  POST /oauth2/token   the token endpoint
  GET  /api/whoami     a protected resource: 200 {"sub", "client_id", "scope"} or 401
  GET  /stats          what the server saw (token requests, how clients authenticated, errors,
                       protected-resource answers), so a test can count token requests

Binds 127.0.0.1 port 0, prints ONE line of JSON when it listens ({"server", "version", "port",
"token_endpoint", "protected_url", "stats_url", "lifetime"}), and exits when its stdin closes or
its parent process goes away, so it never outlives a test.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from importlib.metadata import version
from typing import Any, Dict, Optional

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError
from authlib.oauth2.rfc6750 import BearerTokenValidator
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

CONFIG: Dict[str, Any] = json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}")
LIFETIME = int(CONFIG.get("lifetime", 3))
SCOPE = str(CONFIG.get("scope", "cibmtr_fhir"))


class Client(ClientMixin):
    def __init__(self, client_id: str, secret: str) -> None:
        self.client_id = client_id
        self.secret = secret

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> Optional[str]:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(SCOPE.split())
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return bool(client_secret) and client_secret == self.secret

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic"

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "password"


class User:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_user_id(self) -> str:
        return self.name


class Token(TokenMixin):
    def __init__(self, data: Dict[str, Any], client: Client, user: User) -> None:
        self.access_token = data["access_token"]
        self.scope = data.get("scope", "")
        self.expires_in = int(data.get("expires_in", LIFETIME))
        self.issued_at = time.time()
        self.client = client
        self.user = user

    def check_client(self, client: ClientMixin) -> bool:
        return client.get_client_id() == self.client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return False

    def get_user(self) -> User:
        return self.user

    def get_client(self) -> Client:
        return self.client


CLIENT = Client(CONFIG["client_id"], CONFIG["client_secret"])
USERNAME = CONFIG["username"]
PASSWORD = CONFIG["password"]
TOKENS: Dict[str, Token] = {}
LOCK = threading.Lock()
STATS: Dict[str, Any] = {
    "token_requests": 0,
    "tokens_issued": 0,
    "auth_methods": {},
    "errors": {},
    "protected_ok": 0,
    "protected_refused": 0,
}


def query_client(client_id: str) -> Optional[Client]:
    return CLIENT if client_id == CLIENT.client_id else None


def save_token(data: Dict[str, Any], req: Any) -> None:
    with LOCK:
        TOKENS[data["access_token"]] = Token(data, req.client, req.user)
        STATS["tokens_issued"] += 1
        method = getattr(req, "auth_method", None) or "unknown"
        STATS["auth_methods"][method] = STATS["auth_methods"].get(method, 0) + 1


class PasswordGrant(grants.ResourceOwnerPasswordCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic"]

    def authenticate_user(self, username: str, password: str) -> User:
        if username == USERNAME and password == PASSWORD:
            return User(username)
        # What Okta and RFC 6749 answer (authlib's default for a None user is invalid_request).
        raise InvalidGrantError(description="The credentials provided were invalid.")


class Validator(BearerTokenValidator):
    def authenticate_token(self, token_string: str) -> Optional[Token]:
        with LOCK:
            return TOKENS.get(token_string)


app = Flask(__name__)
app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"password": LIFETIME}
server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
server.register_grant(PasswordGrant)
require_oauth = ResourceProtector()
require_oauth.register_token_validator(Validator())


@app.post("/oauth2/token")
def token_endpoint() -> Any:
    with LOCK:
        STATS["token_requests"] += 1
    response = server.create_token_response()
    if response.status_code >= 400:
        try:
            error = json.loads(response.get_data()).get("error", "unknown")
        except ValueError:
            error = "unknown"
        with LOCK:
            STATS["errors"][error] = STATS["errors"].get(error, 0) + 1
    return response


@app.get("/api/whoami")
def whoami() -> Any:
    try:
        token = require_oauth.acquire_token()
    except HTTPException:
        # authlib's 401 (invalid_token: unknown or expired).
        with LOCK:
            STATS["protected_refused"] += 1
        raise
    with LOCK:
        STATS["protected_ok"] += 1
    return jsonify(sub=token.user.name, client_id=token.client.client_id, scope=token.scope)


@app.get("/stats")
def stats() -> Any:
    with LOCK:
        return jsonify(json.loads(json.dumps(STATS)))


def exit_when_orphaned() -> None:
    parent = os.getppid()

    def stdin_closed() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            os._exit(0)

    def parent_gone() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=stdin_closed, daemon=True).start()
    threading.Thread(target=parent_gone, daemon=True).start()


def main() -> None:
    exit_when_orphaned()
    # Only warnings and errors on stderr (the test quotes it when something fails).
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    base = f"http://127.0.0.1:{httpd.server_port}"
    ready = {
        "server": "authlib",
        "version": version("authlib"),
        "port": httpd.server_port,
        "token_endpoint": f"{base}/oauth2/token",
        "protected_url": f"{base}/api/whoami",
        "stats_url": f"{base}/stats",
        "lifetime": LIFETIME,
    }
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    httpd.serve_forever()


if __name__ == "__main__":
    main()
