//! The token engine against the sandbox's authorization servers on loopback. Every count below is
//! the *server's* count of token requests, not the client's own.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cibmtr_fhir::auth::{ClientAuthMethod, ClientCredentials, PasswordGrant, TokenStore};
use cibmtr_fhir::http::{HttpClient, HttpConfig};
use cibmtr_fhir::{Error, ErrorKind};
use cibmtr_fhir_sandbox::{Fault, Route, Sandbox, SandboxConfig};

async fn sandbox_with(okta_ttl: Duration) -> Sandbox {
    Sandbox::start(SandboxConfig {
        okta_token_ttl: okta_ttl,
        okta_rate_per_second: 1000,
        ..Default::default()
    })
    .await
    .expect("sandbox starts")
}

fn okta(sb: &Sandbox) -> PasswordGrant {
    let c = &sb.credentials.okta;
    PasswordGrant::builder(
        &c.token_url,
        &c.client_id,
        c.client_secret.as_str(),
        &c.username,
        c.password.as_str(),
    )
    .scope(&c.scope)
    .build()
    .expect("valid config")
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

#[tokio::test]
async fn password_grant_happy_path_and_cache_hit() {
    let sb = sandbox_with(Duration::from_secs(1800)).await;
    let auth = okta(&sb);
    let t1 = auth.token().await.unwrap();
    assert_eq!(
        protected_status(&sb, t1.secret()).await,
        200,
        "the token is accepted by the server"
    );
    let t2 = auth.token().await.unwrap();
    assert_eq!(t1.secret(), t2.secret());
    // A second object with the same credentials shares the cached token.
    let t3 = okta(&sb).token().await.unwrap();
    assert_eq!(t1.secret(), t3.secret());
    assert_eq!(sb.token_requests(&sb.credentials.okta.client_id), 1);
    let s = auth.stats();
    assert_eq!((s.token_requests, s.cache_hits, s.failures), (1, 2, 0));
    let ttl = t1.expires_at().duration_since(SystemTime::now()).unwrap();
    assert!(
        ttl > Duration::from_secs(1790) && ttl <= Duration::from_secs(1800),
        "expiry from expires_in: {ttl:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_callers_make_one_token_request() {
    let sb = sandbox_with(Duration::from_secs(1800)).await;
    sb.set_fault(
        Route::OktaToken,
        Fault {
            status: 0,
            delay: Duration::from_millis(200),
            times: 1,
            ..Default::default()
        },
    );
    let auth = okta(&sb);
    let tasks: Vec<_> = (0..500)
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
    assert_eq!(sb.token_requests(&sb.credentials.okta.client_id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_ahead_of_expiry_and_never_hands_out_an_expired_token() {
    // 3-second tokens: advisory margin 0.5 s, mandatory margin 0.3 s.
    let sb = sandbox_with(Duration::from_secs(3)).await;
    let auth = okta(&sb);
    let start = Instant::now();
    let mut distinct = std::collections::HashSet::new();
    while start.elapsed() < Duration::from_millis(7500) {
        let t = auth.token().await.unwrap();
        assert!(
            t.expires_at() > SystemTime::now() + Duration::from_millis(250),
            "a token inside its mandatory margin was served"
        );
        distinct.insert(t.secret().to_owned());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = sb.token_requests(&sb.credentials.okta.client_id);
    // One per ~2.5 s of use: 3 or 4 in 7.5 s, never one per call.
    assert!((3..=4).contains(&requests), "token requests: {requests}");
    assert_eq!(distinct.len() as u64, requests);
    assert!(auth.stats().refreshes >= 2);
    let last = auth.token().await.unwrap();
    assert_eq!(protected_status(&sb, last.secret()).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_401s_causes_one_re_mint() {
    let sb = sandbox_with(Duration::from_secs(1800)).await;
    let auth = okta(&sb);
    let stale = auth.token().await.unwrap().secret().to_owned();
    sb.revoke_all_tokens();
    let http = reqwest::Client::new();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (a, h, url, stale) = (
                auth.clone(),
                http.clone(),
                sb.urls.protected.clone(),
                stale.clone(),
            );
            tokio::spawn(async move {
                let first = h
                    .get(&url)
                    .bearer_auth(&stale)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16();
                assert_eq!(first, 401);
                a.invalidate_token(&stale);
                let fresh = a.token().await.unwrap();
                h.get(&url)
                    .bearer_auth(fresh.secret())
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(
        sb.token_requests(&sb.credentials.okta.client_id),
        2,
        "one initial token, one re-mint"
    );
    // Invalidating a token that is no longer current changes nothing.
    assert!(!auth.invalidate_token(&stale));
}

#[tokio::test]
async fn okta_429_is_waited_out_using_x_rate_limit_reset() {
    let sb = sandbox_with(Duration::from_secs(1800)).await;
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    sb.set_fault(Route::OktaToken, Fault {
        status: 429, times: 1,
        headers: vec![("X-Rate-Limit-Limit".into(), "4".into()), ("X-Rate-Limit-Remaining".into(), "0".into()), ("X-Rate-Limit-Reset".into(), reset.to_string())],
        body: r#"{"errorCode":"E0000047","errorSummary":"API call exceeded rate limit due to too many requests."}"#.into(),
        ..Default::default()
    });
    let auth = okta(&sb);
    let before = SystemTime::now();
    let t = auth.token().await.expect("the rate limit is waited out");
    assert!(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            >= reset,
        "returned before the reset time"
    );
    assert!(before.elapsed().unwrap() < Duration::from_secs(3));
    assert_eq!(protected_status(&sb, t.secret()).await, 200);
    assert_eq!(sb.token_requests(&sb.credentials.okta.client_id), 2);
}

#[tokio::test]
async fn a_wait_past_the_bound_is_a_rate_limited_error_carrying_the_wait() {
    let sb = sandbox_with(Duration::from_secs(1800)).await;
    sb.set_fault(
        Route::OktaToken,
        Fault {
            status: 429,
            headers: vec![("Retry-After".into(), "120".into())],
            times: 0,
            ..Default::default()
        },
    );
    let http = HttpClient::new(HttpConfig {
        max_rate_limit_wait: Duration::from_secs(5),
        ..Default::default()
    })
    .unwrap();
    let c = &sb.credentials.okta;
    let auth = PasswordGrant::builder(
        &c.token_url,
        &c.client_id,
        c.client_secret.as_str(),
        &c.username,
        c.password.as_str(),
    )
    .http(http)
    .build()
    .unwrap();
    let err = auth.token().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert!(
        matches!(err, Error::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(120)),
        "{err:?}"
    );
    assert_eq!(sb.token_requests(&c.client_id), 1, "not hammered");
}

#[tokio::test]
async fn server_errors_are_retried_a_few_times() {
    let sb = sandbox_with(Duration::from_secs(1800)).await;
    sb.set_fault(
        Route::OktaToken,
        Fault {
            status: 503,
            body: "busy".into(),
            times: 2,
            ..Default::default()
        },
    );
    let auth = okta(&sb);
    auth.token().await.expect("third attempt succeeds");
    assert_eq!(sb.token_requests(&sb.credentials.okta.client_id), 3);
    // A persistent 500 gives up after the bounded retries with an HTTP error.
    let sb = sandbox_with(Duration::from_secs(1800)).await;
    sb.set_fault(
        Route::OktaToken,
        Fault {
            status: 500,
            body: "boom".into(),
            times: 0,
            ..Default::default()
        },
    );
    let err = okta(&sb).token().await.unwrap_err();
    assert!(matches!(err, Error::Http { status: 500, .. }), "{err:?}");
    assert_eq!(
        sb.token_requests(&sb.credentials.okta.client_id),
        4,
        "1 try + 3 retries"
    );
}

#[tokio::test]
async fn invalid_grant_is_not_retried_and_a_wrong_password_never_gets_the_cached_token() {
    let sb = sandbox_with(Duration::from_secs(1800)).await;
    let c = &sb.credentials.okta;
    okta(&sb).token().await.unwrap(); // the right password has a cached token
    let wrong = PasswordGrant::builder(
        &c.token_url,
        &c.client_id,
        c.client_secret.as_str(),
        &c.username,
        "not-the-password",
    )
    .scope(&c.scope)
    .build()
    .unwrap();
    let e1 = wrong.token().await.unwrap_err();
    assert!(
        matches!(&e1, Error::Auth { error, .. } if error == "invalid_grant"),
        "{e1:?}"
    );
    let e2 = wrong.token().await.unwrap_err();
    assert!(matches!(&e2, Error::Auth { error, .. } if error == "invalid_grant"));
    assert_eq!(
        sb.token_requests(&c.client_id),
        2,
        "one success, one refusal, the repeat answered from memory"
    );
    assert_eq!(wrong.stats().token_requests, 1);
}

#[tokio::test]
async fn client_credentials_post_and_basic() {
    let sb = sandbox_with(Duration::from_secs(1800)).await;
    let m = &sb.credentials.msk;
    let post = ClientCredentials::builder(&m.token_url, &m.client_id, m.client_secret.as_str())
        .scope("full")
        .build()
        .unwrap();
    let t = post.token().await.unwrap();
    assert_eq!(protected_status(&sb, t.secret()).await, 200);
    assert_eq!(t.scope(), Some("full"));

    let b = &sb.credentials.msk_basic;
    let basic = ClientCredentials::builder(&b.token_url, &b.client_id, b.client_secret.as_str())
        .scope("full")
        .auth_method("client_secret_basic".parse().unwrap())
        .build()
        .unwrap();
    assert_eq!(
        protected_status(&sb, basic.token().await.unwrap().secret()).await,
        200
    );

    // The server catches credentials sent in the wrong place.
    let misplaced =
        ClientCredentials::builder(&m.token_url, &m.client_id, m.client_secret.as_str())
            .scope("full")
            .auth_method(ClientAuthMethod::ClientSecretBasic)
            .build()
            .unwrap();
    let err = misplaced.token().await.unwrap_err();
    assert!(
        matches!(&err, Error::Auth { error, .. } if error == "invalid_client"),
        "{err:?}"
    );
    assert!("basic_auth".parse::<ClientAuthMethod>().is_err());
}

#[tokio::test]
async fn bad_configuration_is_refused_before_any_request() {
    let sb = sandbox_with(Duration::from_secs(1800)).await;
    let c = &sb.credentials.okta;
    let err = PasswordGrant::builder(
        &c.token_url,
        &c.client_id,
        c.client_secret.as_str(),
        &c.username,
        "",
    )
    .build()
    .unwrap_err();
    assert!(
        matches!(&err, Error::Validation { field, .. } if field == "password"),
        "{err:?}"
    );
    let err = PasswordGrant::builder("http://okta.example.org/v1/token", "id", "secret", "u", "p")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("https"), "{err}");
    let err = ClientCredentials::builder("not a url", "id", "secret")
        .build()
        .unwrap_err();
    assert!(matches!(&err, Error::Validation { field, .. } if field == "token_url"));
    let allowed = HttpClient::new(HttpConfig {
        allow_http_hosts: vec!["okta.example.org".into()],
        ..Default::default()
    })
    .unwrap();
    assert!(
        PasswordGrant::builder("http://okta.example.org/v1/token", "id", "secret", "u", "p")
            .http(allowed)
            .build()
            .is_ok()
    );
    assert_eq!(sb.token_requests_total(), 0);
}

#[tokio::test]
async fn no_secret_in_debug_or_errors() {
    let sb = sandbox_with(Duration::from_secs(1800)).await;
    let c = sb.credentials.okta.clone();
    let auth = okta(&sb);
    let token = auth.token().await.unwrap();
    let wrong = PasswordGrant::builder(
        &c.token_url,
        &c.client_id,
        c.client_secret.as_str(),
        &c.username,
        "wrong-password-xyz",
    )
    .build()
    .unwrap();
    let err = wrong.token().await.unwrap_err();
    let shown = format!(
        "{auth:?} {token:?} {:?} {err:?} {err} {:?}",
        token.token(),
        sb.credentials.okta
    );
    for secret in [
        c.client_secret.as_str(),
        c.password.as_str(),
        token.secret(),
        "wrong-password-xyz",
    ] {
        assert!(!shown.contains(secret), "a secret leaked into: {shown}");
    }
    assert!(shown.contains("[REDACTED]"));
}

/// Run by `two_processes_sharing_a_file_store_make_one_token_request` as a child process.
#[tokio::test]
async fn file_store_child() {
    let Ok(spec) = std::env::var("CIBMTR_TEST_CHILD") else {
        return;
    };
    let v: Vec<&str> = spec.split('\u{1f}').collect();
    let auth = PasswordGrant::builder(v[0], v[1], v[2], v[3], v[4])
        .token_store(TokenStore::file(v[5]))
        .build()
        .unwrap();
    let t = auth.token().await.unwrap();
    println!("CHILD-TOKEN-SHA {}", sha(t.secret()));
}

fn sha(s: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    format!("{:x}", h.finish())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_file_store_make_one_token_request() {
    let sb = sandbox_with(Duration::from_secs(1800)).await;
    // Slow token endpoint, so both processes are waiting at the same time.
    sb.set_fault(
        Route::OktaToken,
        Fault {
            status: 0,
            delay: Duration::from_millis(700),
            times: 0,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let c = &sb.credentials.okta;
    let spec = [
        c.token_url.as_str(),
        &c.client_id,
        &c.client_secret,
        &c.username,
        &c.password,
        path.to_str().unwrap(),
    ]
    .join("\u{1f}");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "file_store_child",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("CIBMTR_TEST_CHILD", &spec)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<String> = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                assert!(out.status.success());
                String::from_utf8(out.stdout).unwrap()
            })
            .collect()
    })
    .await
    .unwrap();
    let hashes: Vec<&str> = outputs
        .iter()
        .map(|o| {
            o.split("CHILD-TOKEN-SHA ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .expect("child printed its token hash")
        })
        .collect();
    assert_eq!(hashes[0], hashes[1], "both processes use the same token");
    assert_eq!(
        sb.token_requests(&c.client_id),
        1,
        "two processes, one token request"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let stored = std::fs::read_to_string(&path).unwrap();
    assert!(
        !stored.contains(&c.password) && !stored.contains(&c.client_secret),
        "the store holds tokens, not credentials"
    );
    // This process now reads the token from the file instead of asking.
    let here = PasswordGrant::builder(
        &c.token_url,
        &c.client_id,
        c.client_secret.as_str(),
        &c.username,
        c.password.as_str(),
    )
    .token_store(TokenStore::file(&path))
    .build()
    .unwrap();
    assert_eq!(sha(here.token().await.unwrap().secret()), hashes[0]);
    assert_eq!(sb.token_requests(&c.client_id), 1);
}

#[tokio::test]
async fn a_failed_early_refresh_keeps_serving_the_valid_token() {
    // 6-second tokens: advisory window opens at 5 s, mandatory at 5.4 s.
    let sb = sandbox_with(Duration::from_secs(6)).await;
    let auth = okta(&sb);
    let first = auth.token().await.unwrap();
    let advisory = first.expires_at() - Duration::from_millis(900);
    tokio::time::sleep(advisory.duration_since(SystemTime::now()).unwrap()).await;
    // A refusal that is neither retried nor remembered (not invalid_grant/invalid_client).
    sb.set_fault(
        Route::OktaToken,
        Fault {
            status: 400,
            body: r#"{"error":"temporarily_unavailable"}"#.into(),
            times: 1,
            ..Default::default()
        },
    );
    let during = auth.token().await.expect("the still-valid token is served");
    assert_eq!(during.secret(), first.secret());
    assert_eq!(auth.stats().failures, 1);
    assert_eq!(protected_status(&sb, during.secret()).await, 200);
    // The next caller in the window refreshes successfully.
    let next = auth.token().await.unwrap();
    assert_ne!(next.secret(), first.secret());
    assert_eq!(sb.token_requests(&sb.credentials.okta.client_id), 3);
}
