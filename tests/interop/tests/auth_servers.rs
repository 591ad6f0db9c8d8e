//! Every OAuth flow of the core against authorization servers nobody here wrote, each started on
//! 127.0.0.1 (port 0) by its test and stopped with it:
//!
//! * oidc-provider (npm, certified OpenID Connect server; `tests/interop/node/oidc-server.mjs`):
//!   client credentials with `client_secret_post` and `client_secret_basic`, `private_key_jwt`
//!   with keys from our own key helper (RS384, ES384, RS256; JWKS inline and by `jwks_uri`),
//!   the authorization-code flow with PKCE and strict refresh-token rotation, RFC 7591 dynamic
//!   registration.
//! * authlib (PyPI; `tests/interop/authlib/password_server.py`): Okta's password grant with HTTP
//!   Basic client authentication and short token lifetimes.
//!
//! Whether a token works is always the server's word (introspection, userinfo, or a protected
//! resource), never ours. Every failure message names the flow and the server.
use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::Engine;
use cibmtr_fhir::Error;
use cibmtr_fhir::auth::{
    AuthorizationCode, BackendServices, ClientAuthMethod, ClientCredentials, KeyAlgorithm,
    PasswordGrant, generate_key, public_jwks, register_client, register_public_client,
};
use cibmtr_fhir::http::HttpClient;
use cibmtr_fhir_interop::servers::{Browser, JwksServer, OidcProvider, PasswordServer, random_hex};
use serde_json::{Value, json};

const OIDC: &str = "oidc-provider";
const AUTHLIB: &str = "authlib";
/// Where the app says the browser comes back; never contacted (the test reads the redirect).
const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";
const SMART_SCOPE: &str = "openid offline_access launch/patient patient/*.read";

/// The OAuth error code of an SDK error, or a panic naming the flow and the server.
fn oauth_error<T>(flow: &str, server: &str, r: cibmtr_fhir::Result<T>) -> (String, Option<u16>) {
    match r {
        Err(Error::Auth { error, status, .. }) => (error, status),
        Err(other) => panic!("{flow} against {server}: expected an auth error, got {other:?}"),
        Ok(_) => panic!("{flow} against {server}: expected an auth error, got a token"),
    }
}

/// `Basic base64(id:secret)` WITHOUT the form-encoding RFC 6749 §2.3.1 requires: what a naive
/// client sends.
fn naive_basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

fn form_encoded_basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    naive_basic(&enc(id), &enc(secret))
}

fn client_credentials_client(id: &str, secret: &str, method: &str) -> Value {
    json!({
        "client_id": id,
        "client_secret": secret,
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "response_types": [],
        "token_endpoint_auth_method": method,
        "scope": "system/*.read system/*.write",
    })
}

// ---------------------------------------------------------------------------------------------
// oidc-provider: client credentials
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn oidc_provider_client_credentials_client_secret_post() {
    let flow = "ClientCredentials (client_secret_post)";
    let secret = format!("post-{}", random_hex(16));
    let op = OidcProvider::start(
        vec![client_credentials_client(
            "cc-post",
            &secret,
            "client_secret_post",
        )],
        Value::Null,
    );
    let auth = ClientCredentials::builder(&op.token_endpoint, "cc-post", secret.as_str())
        .scope("system/*.read interop/unknown.scope")
        .build()
        .unwrap();
    let token = auth
        .token()
        .await
        .unwrap_or_else(|e| panic!("{flow} against {OIDC}: {e}\nstderr:\n{}", op.peer.stderr()));
    let live = op.introspect(token.secret()).await;
    assert_eq!(live["active"], true, "{flow} against {OIDC}: {live}");
    assert_eq!(live["client_id"], "cc-post", "{flow} against {OIDC}");
    // oidc-provider drops an unknown scope silently and says what it granted.
    assert_eq!(
        token.scope(),
        Some("system/*.read"),
        "{flow} against {OIDC}: granted scope"
    );
    // Cached: one token request however often it is asked.
    for _ in 0..20 {
        assert_eq!(auth.token().await.unwrap().secret(), token.secret());
    }
    assert_eq!(auth.stats().token_requests, 1, "{flow} against {OIDC}");

    // A wrong secret: invalid_client, answered once, not retried.
    let wrong = ClientCredentials::builder(&op.token_endpoint, "cc-post", "not-the-secret")
        .scope("system/*.read")
        .build()
        .unwrap();
    let (error, status) = oauth_error(flow, OIDC, wrong.token().await);
    assert_eq!(
        (error.as_str(), status),
        ("invalid_client", Some(401)),
        "{flow} against {OIDC}"
    );
    assert_eq!(
        wrong.stats().token_requests,
        1,
        "{flow} against {OIDC}: not retried"
    );
}

#[tokio::test]
async fn oidc_provider_client_credentials_client_secret_basic_form_encodes_the_secret() {
    let flow = "ClientCredentials (client_secret_basic)";
    // `%`, `:` and `+` all change meaning unless form-encoded before base64 (RFC 6749 §2.3.1).
    let secret = format!("b%25asic:{}+plus/slash=eq %", random_hex(8));
    let op = OidcProvider::start(
        vec![client_credentials_client(
            "cc-basic",
            &secret,
            "client_secret_basic",
        )],
        Value::Null,
    );
    let auth = ClientCredentials::builder(&op.token_endpoint, "cc-basic", secret.as_str())
        .scope("system/*.read")
        .auth_method(ClientAuthMethod::ClientSecretBasic)
        .build()
        .unwrap();
    let token = auth
        .token()
        .await
        .unwrap_or_else(|e| panic!("{flow} against {OIDC}: {e}\nstderr:\n{}", op.peer.stderr()));
    let live = op.introspect(token.secret()).await;
    assert_eq!(live["active"], true, "{flow} against {OIDC}: {live}");
    assert_eq!(live["client_id"], "cc-basic");
    assert_eq!(auth.stats().token_requests, 1);

    // The same secret sent raw in Basic (no form-encoding) is refused: the encoding is what
    // made the SDK's request work. Correctly encoded by hand, it is accepted.
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "system/*.read"),
    ];
    let (status, body) = op
        .raw_token_request(&form, Some(&naive_basic("cc-basic", &secret)))
        .await;
    assert!(
        status == 400 || status == 401,
        "{OIDC} accepted an unencoded Basic secret: {status} {body}"
    );
    let (status, body) = op
        .raw_token_request(&form, Some(&form_encoded_basic("cc-basic", &secret)))
        .await;
    assert_eq!(
        status, 200,
        "{OIDC} refused a form-encoded Basic secret: {body}"
    );
}

// ---------------------------------------------------------------------------------------------
// oidc-provider: private_key_jwt (SMART Backend Services) with keys from our key helper
// ---------------------------------------------------------------------------------------------

/// How the client's public keys reach the server.
#[derive(Clone, Copy, Debug)]
enum Jwks {
    Inline,
    ByUri,
}

async fn private_key_jwt(alg: KeyAlgorithm, how: Jwks) {
    let flow = format!("BackendServices (private_key_jwt, {alg}, JWKS {how:?})");
    let key = generate_key(alg).unwrap();
    let pem = key.private_pem.expose().to_owned();
    let jwks = public_jwks(&pem, alg).unwrap();
    assert_eq!(jwks, key.jwks, "public_jwks agrees with generate_key");
    for jwk in jwks["keys"].as_array().unwrap() {
        let mut names: Vec<&str> = jwk
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        let expected: &[&str] = match alg {
            KeyAlgorithm::ES384 => &["alg", "crv", "kid", "kty", "use", "x", "y"],
            _ => &["alg", "e", "kid", "kty", "n", "use"],
        };
        assert_eq!(
            names, expected,
            "a public JWK carries no private or extra members"
        );
    }
    let client_id = format!("backend-{}", alg.as_str().to_ascii_lowercase());
    let jwks_host = match how {
        Jwks::ByUri => Some(JwksServer::start(jwks.clone()).await),
        Jwks::Inline => None,
    };
    let mut client = json!({
        "client_id": client_id,
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "response_types": [],
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": alg.as_str(),
        "scope": "system/*.read",
    });
    match &jwks_host {
        Some(h) => client["jwks_uri"] = json!(h.url),
        None => client["jwks"] = jwks.clone(),
    }
    let op = OidcProvider::start(vec![client], Value::Null);
    let auth = BackendServices::builder(&client_id, pem.as_str())
        .token_url(&op.token_endpoint)
        .algorithm(alg)
        .scope("system/*.read")
        .build()
        .unwrap();
    assert_eq!(auth.key_id(), key.key_id);
    let first = auth
        .token()
        .await
        .unwrap_or_else(|e| panic!("{flow} against {OIDC}: {e}\nstderr:\n{}", op.peer.stderr()));
    let live = op.introspect(first.secret()).await;
    assert_eq!(live["active"], true, "{flow} against {OIDC}: {live}");
    assert_eq!(
        live["client_id"],
        client_id.as_str(),
        "{flow} against {OIDC}"
    );
    assert_eq!(
        first.scope(),
        Some("system/*.read"),
        "{flow} against {OIDC}"
    );
    assert_eq!(
        auth.token().await.unwrap().secret(),
        first.secret(),
        "cached"
    );

    // A second token needs a second assertion: oidc-provider refuses a replayed `jti`, so this
    // passes only because every request is signed afresh.
    auth.invalidate();
    let second = auth.token().await.unwrap_or_else(|e| {
        panic!(
            "{flow} against {OIDC}, second assertion: {e}\nstderr:\n{}",
            op.peer.stderr()
        )
    });
    assert_ne!(second.secret(), first.secret());
    assert!(op.is_active(second.secret()).await, "{flow} against {OIDC}");
    assert_eq!(auth.stats().token_requests, 2, "{flow} against {OIDC}");
    if let Some(h) = &jwks_host {
        assert!(
            h.fetches() >= 1,
            "{flow}: {OIDC} never fetched the jwks_uri"
        );
    }

    // Another key under the same client id (not registered): invalid_client.
    let stranger = generate_key(alg).unwrap();
    let impostor = BackendServices::builder(&client_id, stranger.private_pem.expose())
        .token_url(&op.token_endpoint)
        .algorithm(alg)
        .scope("system/*.read")
        .build()
        .unwrap();
    let (error, _) = oauth_error(&flow, OIDC, impostor.token().await);
    assert_eq!(
        error, "invalid_client",
        "{flow} against {OIDC}: unregistered key"
    );
}

#[tokio::test]
async fn oidc_provider_private_key_jwt_rs384_inline_jwks() {
    private_key_jwt(KeyAlgorithm::RS384, Jwks::Inline).await;
}

#[tokio::test]
async fn oidc_provider_private_key_jwt_es384_inline_jwks() {
    private_key_jwt(KeyAlgorithm::ES384, Jwks::Inline).await;
}

#[tokio::test]
async fn oidc_provider_private_key_jwt_rs256_inline_jwks() {
    private_key_jwt(KeyAlgorithm::RS256, Jwks::Inline).await;
}

#[tokio::test]
async fn oidc_provider_private_key_jwt_rs384_jwks_uri() {
    private_key_jwt(KeyAlgorithm::RS384, Jwks::ByUri).await;
}

#[tokio::test]
async fn oidc_provider_private_key_jwt_es384_jwks_uri() {
    private_key_jwt(KeyAlgorithm::ES384, Jwks::ByUri).await;
}

// ---------------------------------------------------------------------------------------------
// oidc-provider: authorization code + PKCE + refresh-token rotation, and registration
// ---------------------------------------------------------------------------------------------

fn smart_app(id: &str, secret: Option<&str>) -> Value {
    let mut c = json!({
        "client_id": id,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "redirect_uris": [REDIRECT_URI],
        "scope": SMART_SCOPE,
    });
    match secret {
        Some(s) => {
            c["client_secret"] = json!(s);
            c["token_endpoint_auth_method"] = json!("client_secret_basic");
        }
        None => c["token_endpoint_auth_method"] = json!("none"),
    }
    c
}

fn smart_flow(op: &OidcProvider, client_id: &str, secret: Option<&str>) -> AuthorizationCode {
    let mut b = AuthorizationCode::builder(client_id, REDIRECT_URI, SMART_SCOPE)
        .authorize_url(&op.authorization_endpoint)
        .token_url(&op.token_endpoint);
    if let Some(s) = secret {
        b = b.client_secret(s);
    }
    b.build().unwrap()
}

/// authorization_url() -> the browser signs in and consents -> complete(redirect).
async fn login(flow: &str, op: &OidcProvider, auth: &AuthorizationCode, user: &str) {
    let url = auth.authorization_url().await.unwrap();
    let q: std::collections::HashMap<String, String> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(!q["state"].is_empty() && q["code_challenge"].len() >= 43);
    let mut browser = Browser::new();
    let redirect = browser
        .authorize(&url, REDIRECT_URI, user)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{flow} against {OIDC}: the browser did not get back to the app: {e}\nvisited {:?}\nstderr:\n{}",
                browser.trail,
                op.peer.stderr()
            )
        });
    let back: std::collections::HashMap<String, String> = url::Url::parse(&redirect)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert!(back.contains_key("code"), "{flow} against {OIDC}: no code");
    assert_eq!(
        back["state"], q["state"],
        "{flow} against {OIDC}: state echoed"
    );
    auth.complete(&redirect).await.unwrap_or_else(|e| {
        panic!(
            "{flow} against {OIDC}: code exchange: {e}\nstderr:\n{}",
            op.peer.stderr()
        )
    });
}

async fn userinfo_sub(op: &OidcProvider, token: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(&op.userinfo_endpoint)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn oidc_provider_authorization_code_pkce_and_refresh_rotation() {
    let flow = "AuthorizationCode (PKCE S256, confidential, refresh rotation)";
    let secret = format!("app:{}%+", random_hex(12));
    let op = OidcProvider::start(vec![smart_app("smart-app", Some(&secret))], Value::Null);
    let auth = smart_flow(&op, "smart-app", Some(&secret));
    login(flow, &op, &auth, "alice").await;

    let first = auth.token().await.unwrap();
    let old_refresh = first
        .token()
        .refresh_token
        .clone()
        .unwrap_or_else(|| panic!("{flow} against {OIDC}: no refresh token"));
    let live = op.introspect(first.secret()).await;
    assert_eq!(live["active"], true, "{flow} against {OIDC}: {live}");
    assert_eq!(live["sub"], "alice");
    assert_eq!(live["client_id"], "smart-app");
    let (status, me) = userinfo_sub(&op, first.secret()).await;
    assert_eq!(
        (status, &me["sub"]),
        (200, &json!("alice")),
        "{flow}: userinfo"
    );
    let ctx = auth.context();
    assert!(
        ctx["id_token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
    assert!(
        !ctx.to_string().contains(first.secret()),
        "context holds no token"
    );
    assert_eq!(auth.stats().token_requests, 1, "the code exchange");

    // Forced refresh: the refresh-token grant, and the server rotates the refresh token.
    auth.invalidate();
    let second = auth.token().await.unwrap_or_else(|e| {
        panic!(
            "{flow} against {OIDC}: refresh: {e}\nstderr:\n{}",
            op.peer.stderr()
        )
    });
    assert_ne!(second.secret(), first.secret());
    let new_refresh = second.token().refresh_token.clone().unwrap();
    assert_ne!(new_refresh, old_refresh, "{flow} against {OIDC}: rotated");
    assert!(
        op.is_active(second.secret()).await,
        "{flow}: the refreshed token works"
    );
    assert_eq!(userinfo_sub(&op, second.secret()).await.0, 200);
    assert_eq!(auth.stats().token_requests, 2);

    // The old refresh token is dead...
    let (status, body) = op
        .raw_token_request(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", old_refresh.expose()),
            ],
            Some(&form_encoded_basic("smart-app", &secret)),
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_grant")),
        "{flow} against {OIDC}: the rotated-out refresh token"
    );
    // ...and presenting it revoked the whole grant (oidc-provider's rule, the reason the SDK
    // never presents one refresh token twice): the next refresh fails with invalid_grant.
    assert!(!op.is_active(second.secret()).await, "grant revoked");
    auth.invalidate();
    let (error, _) = oauth_error(flow, OIDC, auth.token().await);
    assert_eq!(
        error, "invalid_grant",
        "{flow} against {OIDC}: after revocation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oidc_provider_refresh_ahead_is_single_flight_under_strict_rotation() {
    // Short access tokens, many concurrent callers for several lifetimes: one refresh per
    // lifetime. A second presentation of any rotated refresh token would revoke the grant and
    // every later call would fail with invalid_grant.
    let flow = "AuthorizationCode (refresh ahead, 40 concurrent callers)";
    let lifetime = 3u64;
    let secret = random_hex(16);
    let op = OidcProvider::start(
        vec![smart_app("busy-app", Some(&secret))],
        json!({ "AccessToken": lifetime }),
    );
    let auth = smart_flow(&op, "busy-app", Some(&secret));
    login(flow, &op, &auth, "bob").await;
    let run_for = Duration::from_secs(3 * lifetime + 1);
    let deadline = Instant::now() + run_for;
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move {
                let mut seen = HashSet::new();
                while Instant::now() < deadline {
                    let t = auth.token().await?;
                    seen.insert(t.secret().to_owned());
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Ok::<_, Error>(seen)
            })
        })
        .collect();
    let mut tokens = HashSet::new();
    for t in tasks {
        let seen = t.await.unwrap().unwrap_or_else(|e| {
            panic!("{flow} against {OIDC}: {e}\nstderr:\n{}", op.peer.stderr())
        });
        tokens.extend(seen);
    }
    let stats = auth.stats();
    // The code exchange, then about one refresh per 5/6 of a lifetime.
    let refreshes = stats.token_requests - 1;
    assert!(
        (3..=6).contains(&refreshes),
        "{flow} against {OIDC}: {refreshes} refreshes in {run_for:?} of {lifetime} s tokens ({stats:?})"
    );
    assert_eq!(
        tokens.len() as u64,
        stats.token_requests,
        "one token per request"
    );
    // The grant survived (no double refresh revoked it): a forced refresh still works and its
    // token is live. Introspecting the last cached token instead failed once on a loaded CI
    // machine: with 3 s lifetimes a cached token can expire between `token()` and the check.
    auth.invalidate();
    let last = auth
        .token()
        .await
        .unwrap_or_else(|e| panic!("{flow} against {OIDC}: the grant was revoked: {e}"));
    assert!(
        op.is_active(last.secret()).await,
        "{flow} against {OIDC}: the grant survived"
    );
}

#[tokio::test]
async fn oidc_provider_dynamic_registration_then_login() {
    let flow = "register_client (RFC 7591) + AuthorizationCode";
    let op = OidcProvider::start(vec![], Value::Null);
    let http = HttpClient::shared();
    let reg = register_client(
        &http,
        &op.registration_endpoint,
        "cibmtr-fhir interop",
        &[REDIRECT_URI.to_owned()],
        SMART_SCOPE,
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{flow} against {OIDC}: registration: {e}\nstderr:\n{}",
            op.peer.stderr()
        )
    });
    let secret = reg
        .client_secret
        .clone()
        .unwrap_or_else(|| panic!("{flow} against {OIDC}: a confidential client has a secret"));
    assert!(
        !format!("{reg:?}").contains(secret.expose()),
        "Debug hides the secret"
    );
    let auth = smart_flow(&op, &reg.client_id, Some(secret.expose()));
    login(flow, &op, &auth, "carol").await;
    let token = auth.token().await.unwrap();
    let live = op.introspect(token.secret()).await;
    assert_eq!(live["active"], true, "{flow} against {OIDC}: {live}");
    assert_eq!(live["client_id"], reg.client_id.as_str());
    auth.invalidate();
    let refreshed = auth.token().await.unwrap();
    assert!(op.is_active(refreshed.secret()).await, "{flow}: refresh");

    // A public client (no secret; PKCE alone protects the code).
    let flow = "register_public_client (RFC 7591) + AuthorizationCode (public)";
    let public = register_public_client(
        &http,
        &op.registration_endpoint,
        "cibmtr-fhir interop (public)",
        &[REDIRECT_URI.to_owned()],
        SMART_SCOPE,
    )
    .await
    .unwrap();
    assert!(public.client_secret.is_none());
    let auth = smart_flow(&op, &public.client_id, None);
    login(flow, &op, &auth, "dave").await;
    let token = auth.token().await.unwrap();
    let live = op.introspect(token.secret()).await;
    assert_eq!(live["active"], true, "{flow} against {OIDC}: {live}");
    assert_eq!(live["client_id"], public.client_id.as_str());
    auth.invalidate();
    assert!(op.is_active(auth.token().await.unwrap().secret()).await);
}

// ---------------------------------------------------------------------------------------------
// authlib: the password grant (Okta's flow)
// ---------------------------------------------------------------------------------------------

fn password_grant(s: &PasswordServer, password: &str) -> PasswordGrant {
    PasswordGrant::builder(
        &s.token_endpoint,
        &s.client_id,
        s.client_secret.as_str(),
        &s.username,
        password,
    )
    .scope(&s.scope)
    .build()
    .unwrap()
}

#[tokio::test]
async fn authlib_password_grant_token_is_accepted_and_sent_with_basic() {
    let flow = "PasswordGrant";
    let s = PasswordServer::start(300);
    let auth = password_grant(&s, &s.password);
    let token = auth.token().await.unwrap_or_else(|e| {
        panic!(
            "{flow} against {AUTHLIB}: {e}\nstderr:\n{}",
            s.peer.stderr()
        )
    });
    assert_eq!(token.scope(), Some("cibmtr_fhir"));
    assert_eq!(
        s.protected_status(token.secret()).await,
        200,
        "{flow} against {AUTHLIB}"
    );
    let stats = s.stats().await;
    assert_eq!(
        stats["token_requests"], 1,
        "{flow} against {AUTHLIB}: {stats}"
    );
    assert_eq!(
        stats["auth_methods"],
        json!({ "client_secret_basic": 1 }),
        "{flow} against {AUTHLIB}: how the client authenticated"
    );

    // The server takes HTTP Basic only: the same credentials in the body get 401.
    let form = [
        ("grant_type", "password"),
        ("username", s.username.as_str()),
        ("password", s.password.as_str()),
        ("client_id", s.client_id.as_str()),
        ("client_secret", s.client_secret.as_str()),
    ];
    let (status, body) = s.raw_token_request(&form, None).await;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("invalid_client")),
        "{AUTHLIB} must refuse a client secret in the body"
    );
    // And the secret (with `%`, `:`, `+`) has to be form-encoded inside Basic.
    let (status, _) = s
        .raw_token_request(
            &form[..3],
            Some(&naive_basic(&s.client_id, &s.client_secret)),
        )
        .await;
    assert_eq!(
        status, 401,
        "{AUTHLIB}: an unencoded Basic secret is refused"
    );

    // A wrong client secret through the SDK: invalid_client.
    let wrong = PasswordGrant::builder(
        &s.token_endpoint,
        &s.client_id,
        "wrong-secret",
        &s.username,
        s.password.as_str(),
    )
    .scope(&s.scope)
    .build()
    .unwrap();
    let (error, status) = oauth_error(flow, AUTHLIB, wrong.token().await);
    assert_eq!((error.as_str(), status), ("invalid_client", Some(401)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn authlib_password_grant_many_concurrent_callers_make_one_request() {
    let flow = "PasswordGrant (100 concurrent callers)";
    let s = PasswordServer::start(300);
    let auth = password_grant(&s, &s.password);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let a = auth.clone();
            tokio::spawn(async move { a.token().await.map(|t| t.secret().to_owned()) })
        })
        .collect();
    let mut tokens = HashSet::new();
    for t in tasks {
        tokens.insert(t.await.unwrap().unwrap_or_else(|e| {
            panic!(
                "{flow} against {AUTHLIB}: {e}\nstderr:\n{}",
                s.peer.stderr()
            )
        }));
    }
    assert_eq!(
        tokens.len(),
        1,
        "{flow} against {AUTHLIB}: one token for everyone"
    );
    assert_eq!(s.token_requests().await, 1, "{flow} against {AUTHLIB}");
    let token = tokens.into_iter().next().unwrap();
    assert_eq!(s.protected_status(&token).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn authlib_password_grant_refreshes_ahead_over_short_lifetimes() {
    let flow = "PasswordGrant (refresh ahead, 3 s tokens)";
    let lifetime = 3u64;
    let s = PasswordServer::start(lifetime);
    let auth = password_grant(&s, &s.password);
    let run_for = Duration::from_secs(3 * lifetime + 1);
    let deadline = Instant::now() + run_for;
    let protected = s.protected_url.clone();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let auth = auth.clone();
            let protected = protected.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut refused = 0u32;
                let mut seen = HashSet::new();
                while Instant::now() < deadline {
                    let t = auth.token().await?;
                    // Every token the SDK hands out is one the server still accepts.
                    let status = http
                        .get(&protected)
                        .bearer_auth(t.secret())
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    if status != 200 {
                        refused += 1;
                    }
                    seen.insert(t.secret().to_owned());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok::<_, Error>((refused, seen))
            })
        })
        .collect();
    let mut tokens = HashSet::new();
    for t in tasks {
        let (refused, seen) = t.await.unwrap().unwrap_or_else(|e| {
            panic!(
                "{flow} against {AUTHLIB}: {e}\nstderr:\n{}",
                s.peer.stderr()
            )
        });
        assert_eq!(
            refused, 0,
            "{flow} against {AUTHLIB}: a handed-out token was refused"
        );
        tokens.extend(seen);
    }
    let stats = s.stats().await;
    let requests = stats["token_requests"].as_u64().unwrap();
    // One at the start, then one per 5/6 of a lifetime (the advisory margin is lifetime/6).
    assert!(
        (3..=6).contains(&requests),
        "{flow} against {AUTHLIB}: {requests} token requests in {run_for:?} ({stats})"
    );
    assert_eq!(
        requests,
        auth.stats().token_requests,
        "the server and the SDK agree"
    );
    assert_eq!(tokens.len() as u64, requests, "one token per request");
    assert_eq!(
        stats["protected_refused"], 0,
        "{flow} against {AUTHLIB}: {stats}"
    );
}

#[tokio::test]
async fn authlib_password_grant_wrong_password_is_invalid_grant_and_not_retried() {
    let flow = "PasswordGrant (wrong password)";
    let s = PasswordServer::start(300);
    let auth = password_grant(&s, "not-the-password");
    let (error, status) = oauth_error(flow, AUTHLIB, auth.token().await);
    assert_eq!(
        (error.as_str(), status),
        ("invalid_grant", Some(400)),
        "{flow} against {AUTHLIB}"
    );
    assert_eq!(
        s.token_requests().await,
        1,
        "{flow} against {AUTHLIB}: not retried"
    );
    // Asked again at once: the refusal is remembered, the account is not hammered.
    let (error, _) = oauth_error(flow, AUTHLIB, auth.token().await);
    assert_eq!(error, "invalid_grant");
    assert_eq!(
        s.token_requests().await,
        1,
        "{flow} against {AUTHLIB}: not asked again"
    );
    // The right password (another cache entry) still works.
    let good = password_grant(&s, &s.password);
    let token = good.token().await.unwrap();
    assert_eq!(s.protected_status(token.secret()).await, 200);
}
