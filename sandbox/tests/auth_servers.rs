use std::time::Duration;

use cibmtr_fhir_sandbox::{Fault, Route, Sandbox, SandboxConfig};
use serde_json::Value;

fn form_enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    let raw = format!("{}:{}", form_enc(id), form_enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

async fn okta_request(sb: &Sandbox, password: &str) -> reqwest::Response {
    let c = &sb.credentials.okta;
    reqwest::Client::new()
        .post(&c.token_url)
        .header("Authorization", basic(&c.client_id, &c.client_secret))
        .form(&[
            ("grant_type", "password"),
            ("username", c.username.as_str()),
            ("password", password),
            ("scope", c.scope.as_str()),
        ])
        .send()
        .await
        .unwrap()
}

async fn protected(sb: &Sandbox, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(&sb.urls.protected)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn okta_happy_path_and_protected() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let c = sb.credentials.okta.clone();
    let r = okta_request(&sb, &c.password).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 1800);
    assert_eq!(v["scope"], "cibmtr_fhir");
    let token = v["access_token"].as_str().unwrap().to_string();
    assert!(token.len() >= 64);

    let r = protected(&sb, &token).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["client_id"], c.client_id.as_str());
    assert_eq!(v["scope"], "cibmtr_fhir");

    let r = protected(&sb, "nope").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );

    // Debug output hides secrets.
    let dbg = format!("{:?}", sb.credentials);
    assert!(!dbg.contains(&c.client_secret));
    assert!(!dbg.contains(&c.password));
    assert!(dbg.contains("[REDACTED]"));
}

#[tokio::test]
async fn okta_wrong_password() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let r = okta_request(&sb, "wrong").await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_grant");
    assert_eq!(
        v["error_description"],
        "The credentials provided were invalid."
    );
    assert_eq!(sb.tokens_issued(), 0);
}

#[tokio::test]
async fn okta_secret_in_body_rejected() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let c = &sb.credentials.okta;
    let r = reqwest::Client::new()
        .post(&c.token_url)
        .form(&[
            ("grant_type", "password"),
            ("client_id", c.client_id.as_str()),
            ("client_secret", c.client_secret.as_str()),
            ("username", c.username.as_str()),
            ("password", c.password.as_str()),
            ("scope", c.scope.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_client");
    assert_eq!(sb.token_requests(&c.client_id), 1);

    // Basic without URL-encoding the secret fails because the secret has '%', '+', ':'.
    use base64::Engine;
    let raw = format!("{}:{}", c.client_id, c.client_secret);
    let r = reqwest::Client::new()
        .post(&c.token_url)
        .header(
            "Authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            ),
        )
        .form(&[
            ("grant_type", "password"),
            ("username", c.username.as_str()),
            ("password", c.password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn okta_unsupported_grant() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let c = &sb.credentials.okta;
    let r = reqwest::Client::new()
        .post(&c.token_url)
        .header("Authorization", basic(&c.client_id, &c.client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn okta_rate_limit() {
    let cfg = SandboxConfig {
        okta_rate_per_second: 2,
        ..Default::default()
    };
    let sb = Sandbox::start(cfg).await.unwrap();
    let password = sb.credentials.okta.password.clone();
    // Retry in case the three requests straddle a second boundary.
    for attempt in 0..5 {
        let mut statuses = Vec::new();
        let mut last = None;
        for _ in 0..3 {
            let r = okta_request(&sb, &password).await;
            statuses.push(r.status().as_u16());
            last = Some(r);
        }
        if statuses == [200, 200, 429] {
            let r = last.unwrap();
            assert_eq!(r.headers()["x-rate-limit-remaining"], "0");
            assert_eq!(r.headers()["x-rate-limit-limit"], "2");
            let reset: u64 = r.headers()["x-rate-limit-reset"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert!(reset >= now && reset <= now + 2);
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["errorCode"], "E0000047");
            assert_eq!(
                sb.token_requests(&sb.credentials.okta.client_id),
                3 * (attempt + 1)
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    panic!("rate limit never observed");
}

async fn msk_body(sb: &Sandbox, secret: &str, scope: &str) -> reqwest::Response {
    let c = &sb.credentials.msk;
    reqwest::Client::new()
        .post(&c.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", c.client_id.as_str()),
            ("client_secret", secret),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn msk_clients() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let c = sb.credentials.msk.clone();
    let b = sb.credentials.msk_basic.clone();

    let r = msk_body(&sb, &c.client_secret, "full").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["scope"], "full");
    assert_eq!(v["expires_in"], 3600);
    assert!(v["consented_on"].as_u64().unwrap() > 1_600_000_000);
    let token = v["access_token"].as_str().unwrap().to_string();
    let v: Value = protected(&sb, &token).await.json().await.unwrap();
    assert_eq!(v["client_id"], c.client_id.as_str());

    // Wrong secret and wrong scope.
    assert_eq!(msk_body(&sb, "bad", "full").await.status(), 401);
    let r = msk_body(&sb, &c.client_secret, "other").await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_scope");

    // Body client using Basic is rejected.
    let r = reqwest::Client::new()
        .post(&c.token_url)
        .header("Authorization", basic(&c.client_id, &c.client_secret))
        .form(&[("grant_type", "client_credentials"), ("scope", "full")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Basic client ok.
    let r = reqwest::Client::new()
        .post(&b.token_url)
        .header("Authorization", basic(&b.client_id, &b.client_secret))
        .form(&[("grant_type", "client_credentials"), ("scope", "full")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Basic client sending its secret in the body is rejected.
    let r = reqwest::Client::new()
        .post(&b.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", b.client_id.as_str()),
            ("client_secret", b.client_secret.as_str()),
            ("scope", "full"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");

    assert_eq!(sb.token_requests(&c.client_id), 4);
    assert_eq!(sb.token_requests(&b.client_id), 2);
    assert_eq!(sb.tokens_issued(), 2);
}

#[tokio::test]
async fn fault_once_then_normal() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let password = sb.credentials.okta.password.clone();
    sb.set_fault(
        Route::OktaToken,
        Fault {
            status: 503,
            headers: vec![("Retry-After".into(), "1".into())],
            body: "down".into(),
            times: 1,
            ..Default::default()
        },
    );
    let r = okta_request(&sb, &password).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.text().await.unwrap(), "down");
    assert_eq!(okta_request(&sb, &password).await.status(), 200);
    assert_eq!(sb.token_requests(&sb.credentials.okta.client_id), 2);

    // Delay-only fault, and clearing.
    sb.set_fault(
        Route::Protected,
        Fault {
            delay: Duration::from_millis(50),
            ..Default::default()
        },
    );
    let t0 = std::time::Instant::now();
    assert_eq!(protected(&sb, "x").await.status(), 401);
    assert!(t0.elapsed() >= Duration::from_millis(50));
    sb.clear_faults();
}

#[tokio::test]
async fn revoke_invalidates_tokens() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let password = sb.credentials.okta.password.clone();
    let v: Value = okta_request(&sb, &password).await.json().await.unwrap();
    let token = v["access_token"].as_str().unwrap().to_string();
    assert_eq!(protected(&sb, &token).await.status(), 200);
    sb.revoke_all_tokens();
    assert_eq!(protected(&sb, &token).await.status(), 401);

    // Admin route revokes as well.
    let v: Value = okta_request(&sb, &password).await.json().await.unwrap();
    let token = v["access_token"].as_str().unwrap().to_string();
    assert_eq!(protected(&sb, &token).await.status(), 200);
    let r = reqwest::Client::new()
        .post(format!("{}/revoke", sb.urls.admin))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(protected(&sb, &token).await.status(), 401);
}

#[tokio::test]
async fn stats_and_admin_faults() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let password = sb.credentials.okta.password.clone();
    okta_request(&sb, &password).await;
    okta_request(&sb, "bad").await;
    msk_body(&sb, &sb.credentials.msk.client_secret.clone(), "full").await;
    reqwest::Client::new()
        .post(&sb.urls.msk_token)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(sb.token_requests_total(), 4);
    assert_eq!(sb.tokens_issued(), 2);
    assert_eq!(sb.token_requests("unknown"), 1);

    let http = reqwest::Client::new();
    let v: Value = http
        .get(format!("{}/stats", sb.urls.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["token_requests_total"], 4);
    assert_eq!(v["tokens_issued"], 2);
    assert_eq!(
        v["token_requests"][sb.credentials.okta.client_id.as_str()],
        2
    );
    assert_eq!(v["token_requests"]["unknown"], 1);

    let r = http
        .post(format!("{}/faults", sb.urls.admin))
        .json(&serde_json::json!({
            "route": "msk_token", "status": 429, "headers": {"Retry-After": "1"},
            "body": "slow down", "delay_ms": 0, "times": 0
        }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let secret = sb.credentials.msk.client_secret.clone();
    assert_eq!(msk_body(&sb, &secret, "full").await.status(), 429);
    assert_eq!(msk_body(&sb, &secret, "full").await.status(), 429);
    let r = http
        .delete(format!("{}/faults", sb.urls.admin))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(msk_body(&sb, &secret, "full").await.status(), 200);
}

#[tokio::test]
async fn drop_stops_listener() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let url = sb.urls.protected.clone();
    let http = reqwest::Client::new();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    drop(sb);
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Fresh client, so no pooled keep-alive connection is reused.
        match reqwest::Client::new().get(&url).send().await {
            Err(e) if e.is_connect() => {
                refused = true;
                break;
            }
            _ => {}
        }
    }
    assert!(refused, "listener still accepting after drop");
}
