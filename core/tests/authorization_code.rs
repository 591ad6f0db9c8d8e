//! SMART App Launch (authorization code + PKCE + refresh) against the sandbox on loopback. Token
//! request counts are the *server's* counts.
use std::time::{Duration, SystemTime};

use cibmtr_fhir::Error;
use cibmtr_fhir::auth::{AuthorizationCode, TokenStore, register_client, register_public_client};
use cibmtr_fhir::http::HttpClient;
use cibmtr_fhir_sandbox::{Sandbox, SandboxConfig};

async fn sandbox(cfg: SandboxConfig) -> Sandbox {
    Sandbox::start(cfg).await.expect("sandbox starts")
}

fn flow(sb: &Sandbox) -> AuthorizationCode {
    let c = &sb.credentials.smart;
    AuthorizationCode::builder(&c.client_id, &c.redirect_uri, &c.scope)
        .client_secret(c.client_secret.as_str())
        .fhir_base(&c.fhir_base)
        .build()
        .expect("valid config")
}

/// Plays the browser: opens the authorization URL without following the redirect.
async fn browser(url: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(
        resp.status().as_u16(),
        302,
        "authorize redirects: {:?}",
        resp.text().await
    );
    resp.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn login(auth: &AuthorizationCode) {
    let url = auth.authorization_url().await.unwrap();
    auth.complete(&browser(&url).await).await.unwrap();
}

async fn protected_status(sb: &Sandbox, token: &str) -> u16 {
    reqwest::Client::new()
        .get(&sb.urls.protected)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

fn auth_error(e: Error) -> String {
    match e {
        Error::Auth { error, .. } => error,
        other => panic!("expected an Auth error, got {other:?}"),
    }
}

#[tokio::test]
async fn full_flow_with_discovery_gives_a_working_token_and_launch_context() {
    let sb = sandbox(SandboxConfig::default()).await;
    let auth = flow(&sb);
    let url = auth.authorization_url().await.unwrap();
    let parsed = url::Url::parse(&url).unwrap();
    assert!(url.starts_with(&sb.urls.smart_authorize), "{url}");
    let q: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["aud"], sb.urls.fhir_base);
    assert!(!q["state"].is_empty() && !q["code_challenge"].is_empty());
    auth.complete(&browser(&url).await).await.unwrap();
    let t = auth.token().await.unwrap();
    assert_eq!(protected_status(&sb, t.secret()).await, 200);
    let ctx = auth.context();
    assert_eq!(ctx["patient"], "smart-1288992");
    assert_eq!(ctx["need_patient_banner"], true);
    assert!(ctx["id_token"].as_str().unwrap().split('.').count() == 3);
    assert!(ctx.get("access_token").is_none() && ctx.get("refresh_token").is_none());
    assert!(!ctx.to_string().contains(t.secret()));
    assert!(t.token().refresh_token.is_some());
    assert_eq!(sb.token_requests(&sb.credentials.smart.client_id), 1);
    // Cached afterwards.
    assert_eq!(auth.token().await.unwrap().secret(), t.secret());
    assert_eq!(sb.token_requests(&sb.credentials.smart.client_id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_callers_in_the_mandatory_window_make_one_refresh() {
    let sb = sandbox(SandboxConfig {
        smart_token_ttl: Duration::from_secs(3),
        ..Default::default()
    })
    .await;
    let auth = flow(&sb);
    let started = tokio::time::Instant::now();
    login(&auth).await;
    let first = auth.token().await.unwrap();
    let old_refresh = first.token().refresh_token.clone().unwrap();
    // 3 s tokens: mandatory window from 2.7 s.
    tokio::time::sleep_until(started + Duration::from_millis(2800)).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let a = auth.clone();
            tokio::spawn(async move { a.token().await.map(|t| t.secret().to_owned()) })
        })
        .collect();
    let mut tokens = std::collections::HashSet::new();
    for t in tasks {
        tokens.insert(t.await.unwrap().unwrap());
    }
    assert_eq!(tokens.len(), 1);
    assert_ne!(tokens.iter().next().unwrap(), first.secret());
    assert_eq!(
        sb.token_requests(&sb.credentials.smart.client_id),
        2,
        "one code exchange + exactly one refresh"
    );
    let t = auth.token().await.unwrap();
    assert_eq!(
        protected_status(&sb, t.secret()).await,
        200,
        "the grant survived (no rotated-token replay)"
    );
    assert_ne!(
        t.token().refresh_token.as_ref().unwrap(),
        &old_refresh,
        "the refresh token rotated"
    );
    assert_eq!(
        auth.context()["patient"],
        "smart-1288992",
        "context survives refresh"
    );
}

#[tokio::test]
async fn rotation_changes_the_refresh_token_each_time() {
    let sb = sandbox(SandboxConfig::default()).await;
    let auth = flow(&sb);
    login(&auth).await;
    let mut seen = vec![
        auth.token()
            .await
            .unwrap()
            .token()
            .refresh_token
            .clone()
            .unwrap(),
    ];
    for _ in 0..2 {
        let cur = auth.token().await.unwrap();
        auth.restore(
            cur.secret(),
            cur.token().refresh_token.clone(),
            SystemTime::now(),
        )
        .unwrap();
        let t = auth.token().await.unwrap();
        assert_eq!(protected_status(&sb, t.secret()).await, 200);
        let rt = t.token().refresh_token.clone().unwrap();
        assert!(!seen.contains(&rt), "a new refresh token every time");
        seen.push(rt);
    }
    assert_eq!(sb.token_requests(&sb.credentials.smart.client_id), 3);
}

#[tokio::test]
async fn replaying_a_rotated_refresh_token_revokes_the_grant() {
    let sb = sandbox(SandboxConfig::default()).await;
    let auth = flow(&sb);
    login(&auth).await;
    let old = auth
        .token()
        .await
        .unwrap()
        .token()
        .refresh_token
        .clone()
        .unwrap();
    auth.invalidate();
    let t = auth.token().await.unwrap(); // refresh (the flow keeps the refresh token across invalidate)
    assert_eq!(protected_status(&sb, t.secret()).await, 200);
    let c = &sb.credentials.smart;
    let resp = reqwest::Client::new()
        .post(&c.token_url)
        .header("authorization", basic(&c.client_id, &c.client_secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", old.expose()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert_eq!(
        protected_status(&sb, t.secret()).await,
        401,
        "the whole grant is revoked"
    );
}

#[tokio::test]
async fn non_rotating_server_keeps_the_old_refresh_token() {
    let sb = sandbox(SandboxConfig {
        rotate_refresh_tokens: false,
        ..Default::default()
    })
    .await;
    let auth = flow(&sb);
    login(&auth).await;
    let rt = auth
        .token()
        .await
        .unwrap()
        .token()
        .refresh_token
        .clone()
        .unwrap();
    for _ in 0..2 {
        let cur = auth.token().await.unwrap();
        auth.restore(
            cur.secret(),
            cur.token().refresh_token.clone(),
            SystemTime::now(),
        )
        .unwrap();
        let t = auth.token().await.unwrap();
        assert_ne!(t.secret(), cur.secret());
        assert_eq!(protected_status(&sb, t.secret()).await, 200);
        assert_eq!(t.token().refresh_token.as_ref(), Some(&rt));
    }
    assert_eq!(sb.token_requests(&sb.credentials.smart.client_id), 3);
}

#[tokio::test]
async fn wrong_state_is_refused_before_any_request() {
    let sb = sandbox(SandboxConfig::default()).await;
    let auth = flow(&sb);
    let url = auth.authorization_url().await.unwrap();
    let location = browser(&url).await;
    let mut forged = url::Url::parse(&location).unwrap();
    let pairs: Vec<(String, String)> = forged.query_pairs().into_owned().collect();
    forged.query_pairs_mut().clear().extend_pairs(
        pairs
            .iter()
            .map(|(k, v)| (k.as_str(), if k == "state" { "forged" } else { v.as_str() })),
    );
    assert_eq!(
        auth_error(auth.complete(forged.as_str()).await.unwrap_err()),
        "state_mismatch"
    );
    let mut no_state = url::Url::parse(&location).unwrap();
    no_state
        .query_pairs_mut()
        .clear()
        .extend_pairs(pairs.iter().filter(|(k, _)| k != "state"));
    assert_eq!(
        auth_error(auth.complete(no_state.as_str()).await.unwrap_err()),
        "state_mismatch"
    );
    assert_eq!(sb.token_requests_total(), 0);
    // Not logged in.
    assert_eq!(
        auth_error(auth.token().await.unwrap_err()),
        "login_required"
    );
    assert_eq!(sb.token_requests_total(), 0);
}

#[tokio::test]
async fn tampered_pkce_verifier_is_invalid_grant() {
    let sb = sandbox(SandboxConfig::default()).await;
    let auth = flow(&sb);
    let location = browser(&auth.authorization_url().await.unwrap()).await;
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let c = &sb.credentials.smart;
    let resp = reqwest::Client::new()
        .post(&c.token_url)
        .header("authorization", basic(&c.client_id, &c.client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &c.redirect_uri),
            (
                "code_verifier",
                "tampered-verifier-tampered-verifier-tampered-verifier",
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    // The code was single-use: the genuine exchange now fails too.
    assert_eq!(
        auth_error(auth.complete(&location).await.unwrap_err()),
        "invalid_grant"
    );
}

#[tokio::test]
async fn access_denied_redirect_is_an_auth_error() {
    let sb = sandbox(SandboxConfig {
        deny_authorization: true,
        ..Default::default()
    })
    .await;
    let auth = flow(&sb);
    let location = browser(&auth.authorization_url().await.unwrap()).await;
    assert!(location.contains("error=access_denied"));
    assert_eq!(
        auth_error(auth.complete(&location).await.unwrap_err()),
        "access_denied"
    );
    assert_eq!(sb.token_requests_total(), 0);
}

#[tokio::test]
async fn registered_public_and_confidential_clients_work_end_to_end() {
    let sb = sandbox(SandboxConfig::default()).await;
    let http = HttpClient::shared();
    let redirect = vec!["http://127.0.0.1:9/app-callback".to_string()];
    let scope = "launch/patient patient/*.read offline_access";
    let public = register_public_client(
        &http,
        &sb.urls.smart_register,
        "public app",
        &redirect,
        scope,
    )
    .await
    .unwrap();
    assert!(public.client_secret.is_none());
    let auth = AuthorizationCode::builder(&public.client_id, &redirect[0], scope)
        .fhir_base(&sb.urls.fhir_base)
        .build()
        .unwrap();
    login(&auth).await;
    let t = auth.token().await.unwrap();
    assert_eq!(protected_status(&sb, t.secret()).await, 200);
    assert!(
        auth.context().get("id_token").is_none(),
        "no openid scope, no id_token"
    );
    assert_eq!(sb.token_requests(&public.client_id), 1);

    let conf = register_client(
        &http,
        &sb.urls.smart_register,
        "confidential app",
        &redirect,
        scope,
    )
    .await
    .unwrap();
    let secret = conf
        .client_secret
        .clone()
        .expect("confidential client gets a secret");
    assert!(!format!("{conf:?}").contains(secret.expose()));
    let auth = AuthorizationCode::builder(&conf.client_id, &redirect[0], scope)
        .client_secret(secret)
        .fhir_base(&sb.urls.fhir_base)
        .build()
        .unwrap();
    login(&auth).await;
    assert_eq!(
        protected_status(&sb, auth.token().await.unwrap().secret()).await,
        200
    );
}

#[tokio::test]
async fn restore_from_saved_tokens_then_refresh() {
    let sb = sandbox(SandboxConfig::default()).await;
    let first = flow(&sb);
    login(&first).await;
    let saved = first.token().await.unwrap();
    let (access, refresh) = (
        saved.secret().to_owned(),
        saved.token().refresh_token.clone(),
    );
    drop(first);
    let resumed = flow(&sb);
    resumed
        .restore(
            access.as_str(),
            refresh,
            SystemTime::now() + Duration::from_secs(3600),
        )
        .unwrap();
    assert_eq!(
        resumed.token().await.unwrap().secret(),
        access,
        "restored token is served"
    );
    assert_eq!(sb.token_requests(&sb.credentials.smart.client_id), 1);
    resumed.invalidate();
    let t = resumed.token().await.unwrap();
    assert_ne!(t.secret(), access);
    assert_eq!(protected_status(&sb, t.secret()).await, 200);
    assert_eq!(sb.token_requests(&sb.credentials.smart.client_id), 2);
}

#[tokio::test]
async fn debug_shows_no_state_verifier_code_tokens_or_secret() {
    let sb = sandbox(SandboxConfig::default()).await;
    let auth = flow(&sb);
    let url = auth.authorization_url().await.unwrap();
    let q: std::collections::HashMap<_, _> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let dbg = format!("{auth:?}");
    assert!(
        !dbg.contains(&q["state"]) && !dbg.contains(&q["code_challenge"]),
        "{dbg}"
    );
    assert!(!dbg.contains(&sb.credentials.smart.client_secret));
    let location = browser(&url).await;
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    auth.complete(&location).await.unwrap();
    let t = auth.token().await.unwrap();
    let dbg = format!("{auth:?} {t:?} {:?}", t.token());
    for s in [
        q["state"].as_str(),
        code.as_str(),
        t.secret(),
        t.token().refresh_token.as_ref().unwrap().expose(),
        &sb.credentials.smart.client_secret,
    ] {
        assert!(!dbg.contains(s), "{dbg}");
    }
    assert!(!format!("{:?}", sb.credentials.smart).contains(&sb.credentials.smart.client_secret));
}

/// Run by `a_named_session_resumes_in_another_process` as a child process: builds the same
/// session on the same store, never logs in, and prints a hash of the token it gets.
#[tokio::test]
async fn named_session_child() {
    let Ok(spec) = std::env::var("CIBMTR_TEST_APP_CHILD") else {
        return;
    };
    let v: Vec<&str> = spec.split('\u{1f}').collect();
    let auth = AuthorizationCode::builder(v[0], v[1], v[2])
        .client_secret(v[3])
        .fhir_base(v[4])
        .token_store(TokenStore::file(v[5]))
        .session("dr-example")
        .build()
        .unwrap();
    let t = auth.token().await.unwrap();
    println!("CHILD-TOKEN {}", short_hash(t.secret()));
}

fn short_hash(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_session_resumes_in_another_process() {
    let sb = sandbox(SandboxConfig {
        smart_token_ttl: Duration::from_secs(4),
        ..Default::default()
    })
    .await;
    let c = &sb.credentials.smart;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.json");
    let auth = AuthorizationCode::builder(&c.client_id, &c.redirect_uri, &c.scope)
        .client_secret(c.client_secret.as_str())
        .fhir_base(&c.fhir_base)
        .token_store(TokenStore::file(&path))
        .session("dr-example")
        .build()
        .unwrap();
    login(&auth).await;
    let token = auth.token().await.unwrap().secret().to_owned();
    assert_eq!(sb.token_requests(&c.client_id), 1, "the code exchange");

    let child = || {
        let spec = [
            c.client_id.as_str(),
            &c.redirect_uri,
            &c.scope,
            &c.client_secret,
            &c.fhir_base,
            path.to_str().unwrap(),
        ]
        .join("\u{1f}");
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "named_session_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("CIBMTR_TEST_APP_CHILD", spec)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let read = |c: std::process::Child| {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        text.split("CHILD-TOKEN ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("child printed its token hash")
            .to_owned()
    };
    // Another process resumes the session from the store: no login, no token request.
    let resumed = tokio::task::spawn_blocking({
        let c = child();
        move || read(c)
    });
    assert_eq!(resumed.await.unwrap(), short_hash(&token));
    assert_eq!(sb.token_requests(&c.client_id), 1);

    // Once the token has expired, two processes renewing at once make one refresh between
    // them, so the rotated refresh token is never presented twice (which would revoke the grant).
    tokio::time::sleep(Duration::from_millis(4200)).await;
    let (a, b) = (child(), child());
    let hashes = tokio::task::spawn_blocking(move || (read(a), read(b)))
        .await
        .unwrap();
    assert_eq!(hashes.0, hashes.1, "both use the one refreshed token");
    assert_eq!(sb.token_requests(&c.client_id), 2, "one refresh for both");
    // And this process picks the refreshed token up from the store, valid at the server.
    let now = auth.token().await.unwrap();
    assert_eq!(short_hash(now.secret()), hashes.0);
    assert_eq!(protected_status(&sb, now.secret()).await, 200);
}
