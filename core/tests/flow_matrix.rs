//! The token-cache behaviours, table-driven over every OAuth flow: PasswordGrant (Okta),
//! ClientCredentials with `client_secret_post` and with `client_secret_basic` (MSK),
//! BackendServices (`private_key_jwt`, SMART) and AuthorizationCode (SMART App Launch; renewals
//! go through the refresh-token grant).
//!
//! Every behaviour is one `async fn(Flow)` below; the `matrix!` macro at the bottom makes one
//! `#[tokio::test]` per behaviour x flow, named `<behaviour>::<flow>` (run one row with e.g.
//! `cargo test -p cibmtr-fhir --test flow_matrix refresh_at_margin`).
//!
//! Counts are asserted twice: the sandbox's own count of token requests for the client
//! (`Sandbox::token_requests`) and the provider's `stats()`, which must agree.
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use cibmtr_fhir::auth::{
    AuthorizationCode, BackendServices, CacheStats, ClientAuthMethod, ClientCredentials,
    KeyAlgorithm, PasswordGrant, TokenProvider, generate_key,
};
use cibmtr_fhir::http::{HttpClient, HttpConfig};
use cibmtr_fhir::{Error, Secret};
use cibmtr_fhir_sandbox::{Fault, Route, Sandbox, SandboxConfig};

/// Long enough that nothing expires during a test.
const LONG: Duration = Duration::from_secs(1800);

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Password,
    ClientSecretPost,
    ClientSecretBasic,
    BackendServices,
    AuthorizationCode,
}

/// A built flow, ready to be exercised through its [`TokenProvider`].
struct Subject {
    flow: Flow,
    provider: TokenProvider,
    /// The id the sandbox counts this flow's token requests under.
    client_id: String,
    /// The route that faults this flow's token endpoint.
    route: Route,
    /// The scope the server grants.
    scope: String,
    /// Token requests made while building (AuthorizationCode: the code exchange).
    setup_requests: u64,
    /// The AuthorizationCode object itself, for `restore`.
    session: Option<AuthorizationCode>,
}

impl std::ops::Deref for Subject {
    type Target = TokenProvider;
    fn deref(&self) -> &TokenProvider {
        &self.provider
    }
}

impl Flow {
    /// Builds the flow against `sb` with the sandbox's registered credentials (and `http`, if
    /// given). AuthorizationCode logs in (authorize -> redirect -> complete), so it holds an
    /// access token and a refresh token when this returns.
    async fn build(self, sb: &Sandbox, http: Option<HttpClient>) -> Subject {
        match self {
            Flow::Password => {
                let c = &sb.credentials.okta;
                let mut b = PasswordGrant::builder(
                    &c.token_url,
                    &c.client_id,
                    c.client_secret.as_str(),
                    &c.username,
                    c.password.as_str(),
                )
                .scope(&c.scope);
                if let Some(h) = http {
                    b = b.http(h);
                }
                Subject::new(self, (*b.build().unwrap()).clone(), &c.client_id, &c.scope)
            }
            Flow::ClientSecretPost | Flow::ClientSecretBasic => {
                let (c, method) = if self == Flow::ClientSecretPost {
                    (&sb.credentials.msk, ClientAuthMethod::ClientSecretPost)
                } else {
                    (
                        &sb.credentials.msk_basic,
                        ClientAuthMethod::ClientSecretBasic,
                    )
                };
                let mut b = ClientCredentials::builder(
                    &c.token_url,
                    &c.client_id,
                    c.client_secret.as_str(),
                )
                .scope(&c.scope)
                .auth_method(method);
                if let Some(h) = http {
                    b = b.http(h);
                }
                Subject::new(self, (*b.build().unwrap()).clone(), &c.client_id, &c.scope)
            }
            Flow::BackendServices => {
                let c = &sb.credentials.backend;
                // Endpoint discovered from the FHIR base, as a real deployment would.
                let mut b = BackendServices::builder(&c.client_id, c.private_key_pem.as_str())
                    .algorithm(KeyAlgorithm::ES384)
                    .fhir_base(&c.fhir_base)
                    .scope(&c.scope);
                if let Some(h) = http {
                    b = b.http(h);
                }
                Subject::new(self, (*b.build().unwrap()).clone(), &c.client_id, &c.scope)
            }
            Flow::AuthorizationCode => {
                let c = &sb.credentials.smart;
                let mut b = AuthorizationCode::builder(&c.client_id, &c.redirect_uri, &c.scope)
                    .client_secret(c.client_secret.as_str())
                    .fhir_base(&c.fhir_base);
                if let Some(h) = http {
                    b = b.http(h);
                }
                let auth = b.build().unwrap();
                let url = auth.authorization_url().await.unwrap();
                auth.complete(&browser(&url).await).await.unwrap();
                let mut s = Subject::new(self, (*auth).clone(), &c.client_id, &c.scope);
                s.setup_requests = 1;
                s.session = Some(auth);
                s
            }
        }
    }

    /// A flow the server refuses definitively, and the OAuth error it must surface.
    async fn build_refused(self, sb: &Sandbox) -> (Subject, &'static str) {
        match self {
            Flow::Password => {
                let c = &sb.credentials.okta;
                let p = PasswordGrant::builder(
                    &c.token_url,
                    &c.client_id,
                    c.client_secret.as_str(),
                    &c.username,
                    "not-the-password",
                )
                .scope(&c.scope)
                .build()
                .unwrap();
                let s = Subject::new(self, (*p).clone(), &c.client_id, &c.scope);
                (s, "invalid_grant")
            }
            Flow::ClientSecretPost | Flow::ClientSecretBasic => {
                let (c, method) = if self == Flow::ClientSecretPost {
                    (&sb.credentials.msk, ClientAuthMethod::ClientSecretPost)
                } else {
                    (
                        &sb.credentials.msk_basic,
                        ClientAuthMethod::ClientSecretBasic,
                    )
                };
                let p = ClientCredentials::builder(&c.token_url, &c.client_id, "wrong-secret")
                    .scope(&c.scope)
                    .auth_method(method)
                    .build()
                    .unwrap();
                let s = Subject::new(self, (*p).clone(), &c.client_id, &c.scope);
                (s, "invalid_client")
            }
            Flow::BackendServices => {
                // The registered client id, signed with a key the server does not know.
                let c = &sb.credentials.backend;
                let other = generate_key(KeyAlgorithm::ES384).unwrap();
                let p = BackendServices::builder(&c.client_id, other.private_pem.clone())
                    .algorithm(KeyAlgorithm::ES384)
                    .token_url(&c.token_url)
                    .scope(&c.scope)
                    .build()
                    .unwrap();
                let s = Subject::new(self, (*p).clone(), &c.client_id, &c.scope);
                (s, "invalid_client")
            }
            Flow::AuthorizationCode => {
                // Logged in, then the session resumes with an expired access token and a refresh
                // token the server never issued: the refresh is `invalid_grant`.
                let s = self.build(sb, None).await;
                let current = s.token().await.unwrap();
                s.session
                    .as_ref()
                    .unwrap()
                    .restore(
                        current.secret(),
                        Some(Secret::new("never-issued-refresh-token")),
                        SystemTime::now(),
                    )
                    .unwrap();
                (s, "invalid_grant")
            }
        }
    }

    /// Cached tokens are shared by every object built with the same configuration (an
    /// AuthorizationCode object is its own user session by design).
    fn shares_cache_across_objects(self) -> bool {
        self != Flow::AuthorizationCode
    }
}

impl Subject {
    fn new(flow: Flow, provider: TokenProvider, client_id: &str, scope: &str) -> Subject {
        Subject {
            flow,
            provider,
            client_id: client_id.to_owned(),
            route: match flow {
                Flow::Password => Route::OktaToken,
                Flow::ClientSecretPost | Flow::ClientSecretBasic => Route::MskToken,
                // The app-launch grants share the SMART token endpoint (and its fault).
                Flow::BackendServices | Flow::AuthorizationCode => Route::SmartToken,
            },
            scope: scope.to_owned(),
            setup_requests: 0,
            session: None,
        }
    }

    /// Leaves the flow with no current token but able to get one: a no-op for the flows that
    /// start empty; AuthorizationCode drops its access token and keeps its refresh token, so the
    /// next `token()` is a refresh-token grant.
    fn without_token(&self) {
        if self.flow == Flow::AuthorizationCode {
            self.invalidate();
        }
    }

    /// The sandbox's count of token requests for this client; checks that the provider's own
    /// count agrees.
    fn server_requests(&self, sb: &Sandbox) -> u64 {
        let server = sb.token_requests(&self.client_id);
        assert_eq!(
            self.stats().token_requests,
            server,
            "{:?}: the provider's count of token requests disagrees with the server's",
            self.flow
        );
        server
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A sandbox whose four token endpoints all issue `ttl` tokens, with Okta's per-user rate limit
/// out of the way (429s are injected explicitly where wanted).
async fn sandbox(ttl: Duration) -> Sandbox {
    Sandbox::start(SandboxConfig {
        okta_token_ttl: ttl,
        msk_token_ttl: ttl,
        backend_token_ttl: ttl,
        smart_token_ttl: ttl,
        okta_rate_per_second: 100_000,
        okta_rate_per_minute: 100_000,
        ..Default::default()
    })
    .await
    .expect("sandbox starts")
}

/// Plays the browser: opens the authorization URL without following the redirect.
async fn browser(url: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 302, "authorize redirects");
    resp.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned()
}

/// `GET /protected` with the bearer token: status, and the client the server says it belongs to.
async fn protected(http: &reqwest::Client, sb: &Sandbox, token: &str) -> (u16, Option<String>) {
    protected_at(http, &sb.urls.protected, token).await
}

async fn protected_at(http: &reqwest::Client, url: &str, token: &str) -> (u16, Option<String>) {
    let resp = http.get(url).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let client = body["client_id"].as_str().map(str::to_owned);
    (status, client)
}

/// Awaits `fut`, failing the test instead of hanging if it takes longer than `secs`.
async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: still running after {secs} s"))
}

fn oauth_error(flow: Flow, e: &Error) -> String {
    match e {
        Error::Auth { error, .. } => error.clone(),
        other => panic!("{flow:?}: expected an OAuth error, got {other:?}"),
    }
}

fn delay_once(ms: u64) -> Fault {
    Fault {
        status: 0,
        delay: Duration::from_millis(ms),
        times: 1,
        ..Default::default()
    }
}

fn rate_limited(retry_after_secs: u64, times: u32) -> Fault {
    Fault {
        status: 429,
        headers: vec![("Retry-After".into(), retry_after_secs.to_string())],
        body: r#"{"error":"rate_limited","error_description":"slow down"}"#.into(),
        times,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Behaviours
// ---------------------------------------------------------------------------------------------

/// A token the server accepts, for the right client, with the granted scope and lifetime, cached
/// afterwards (and shared with an identically configured object).
async fn happy_path(flow: Flow) {
    let sb = sandbox(LONG).await;
    let http = reqwest::Client::new();
    let s = flow.build(&sb, None).await;
    let t1 = s.token().await.unwrap();
    assert_eq!(
        protected(&http, &sb, t1.secret()).await,
        (200, Some(s.client_id.clone())),
        "{flow:?}: the token is accepted, as this client's"
    );
    assert_eq!(
        t1.scope(),
        Some(s.scope.as_str()),
        "{flow:?}: granted scope"
    );
    let left = t1.expires_at().duration_since(SystemTime::now()).unwrap();
    assert!(
        left > LONG - Duration::from_secs(30) && left <= LONG,
        "{flow:?}: expiry from expires_in: {left:?}"
    );
    if flow == Flow::AuthorizationCode {
        assert!(
            t1.token().refresh_token.is_some(),
            "offline_access gives a refresh token"
        );
        let ctx = s.session.as_ref().unwrap().context();
        assert_eq!(ctx["patient"], sb.credentials.smart.patient);
    }
    let t2 = s.token().await.unwrap();
    assert_eq!(
        t2.secret(),
        t1.secret(),
        "{flow:?}: the second call is a cache hit"
    );
    assert_eq!(
        s.server_requests(&sb),
        1,
        "{flow:?}: one token request in all"
    );
    assert_eq!(
        s.stats(),
        CacheStats {
            token_requests: 1,
            // AuthorizationCode's only request was the code exchange; both calls were hits.
            cache_hits: 1 + s.setup_requests,
            refreshes: 0,
            failures: 0,
        },
        "{flow:?}"
    );
    if flow.shares_cache_across_objects() {
        let again = flow.build(&sb, None).await;
        assert_eq!(again.token().await.unwrap().secret(), t1.secret());
        assert_eq!(s.server_requests(&sb), 1, "{flow:?}: the cache is shared");
    }
}

/// 3-second tokens (advisory margin 0.5 s, mandatory 0.3 s) used from 4 tasks for 7 s: one
/// request per ~2.5 s, and every token handed out is accepted by the server when it is used.
async fn refresh_at_margin(flow: Flow) {
    const TASKS: usize = 4;
    let run = Duration::from_secs(7);
    let sb = sandbox(Duration::from_secs(3)).await;
    let s = flow.build(&sb, None).await;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + run;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (p, http, url) = (s.provider.clone(), http.clone(), sb.urls.protected.clone());
            tokio::spawn(async move {
                // (token, validity left when it was handed out, /protected status)
                let mut seen = Vec::new();
                while Instant::now() < deadline {
                    let t = p.token().await.expect("token()");
                    let left = t
                        .expires_at()
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    let (status, _) = protected_at(&http, &url, t.secret()).await;
                    seen.push((t.secret().to_owned(), left, status));
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(within(20, "margin task", t).await.unwrap());
    }
    assert!(
        seen.len() > 40,
        "{flow:?}: the tasks kept asking ({} calls)",
        seen.len()
    );
    let rejected = seen.iter().filter(|(_, _, st)| *st != 200).count();
    assert_eq!(
        rejected,
        0,
        "{flow:?}: {rejected} of {} tokens were refused by the server when used",
        seen.len()
    );
    let min_left = seen.iter().map(|(_, l, _)| *l).min().unwrap();
    // The mandatory margin is 300 ms; a cache without one hands out tokens with ~0 s left.
    assert!(
        min_left > Duration::from_millis(150),
        "{flow:?}: a token inside its mandatory margin was handed out ({min_left:?} left)"
    );
    let requests = s.server_requests(&sb);
    // Requests at ~0 s, ~2.5 s and ~5 s (AuthorizationCode: the code exchange, then refreshes).
    assert!(
        (2..=4).contains(&requests),
        "{flow:?}: {requests} token requests in {run:?} of 3-second tokens"
    );
    let distinct: HashSet<&str> = seen.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(
        distinct.len() as u64,
        requests,
        "{flow:?}: every token obtained was used"
    );
    let stats = s.stats();
    assert_eq!(stats.refreshes, requests - 1, "{flow:?}: {stats:?}");
    assert_eq!(stats.failures, 0, "{flow:?}: {stats:?}");
}

/// 500 concurrent `token()` calls with no current token (and a slow token endpoint, so that they
/// all wait together) make exactly one token request.
async fn concurrent_callers_make_one_request(flow: Flow) {
    let sb = sandbox(LONG).await;
    let s = flow.build(&sb, None).await;
    s.without_token();
    let before = s.server_requests(&sb);
    sb.set_fault(s.route, delay_once(300));
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let p = s.provider.clone();
            tokio::spawn(async move { p.token().await.map(|t| t.secret().to_owned()) })
        })
        .collect();
    let mut tokens = HashSet::new();
    for t in tasks {
        let got = within(20, "concurrent token()", t).await.unwrap();
        tokens.insert(got.unwrap_or_else(|e| panic!("{flow:?}: {e:?}")));
    }
    assert_eq!(tokens.len(), 1, "{flow:?}: everyone got the same token");
    assert_eq!(
        s.server_requests(&sb),
        before + 1,
        "{flow:?}: 500 callers, one token request"
    );
    let token = tokens.into_iter().next().unwrap();
    // AuthorizationCode: the grant survived (a rotated refresh token replayed would revoke it).
    let http = reqwest::Client::new();
    assert_eq!(protected(&http, &sb, &token).await.0, 200, "{flow:?}");
    assert_eq!(s.token().await.unwrap().secret(), token);
}

/// The server revokes the token; 50 callers each see a 401, invalidate the token and ask again:
/// one re-mint, and only one `invalidate_token` call actually drops it.
async fn burst_of_401s_re_mints_once(flow: Flow) {
    let sb = sandbox(LONG).await;
    let s = flow.build(&sb, None).await;
    let stale = s.token().await.unwrap().secret().to_owned();
    let before = s.server_requests(&sb);
    sb.revoke_all_tokens();
    // A slow re-mint, so that the callers pile up behind it rather than arriving one by one.
    sb.set_fault(s.route, delay_once(200));
    let http = reqwest::Client::new();
    let dropped = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (p, h, url, stale, dropped) = (
                s.provider.clone(),
                http.clone(),
                sb.urls.protected.clone(),
                stale.clone(),
                dropped.clone(),
            );
            tokio::spawn(async move {
                assert_eq!(protected_at(&h, &url, &stale).await.0, 401);
                if p.invalidate_token(&stale) {
                    dropped.fetch_add(1, Ordering::SeqCst);
                }
                let fresh = p.token().await.expect("token after 401");
                let status = protected_at(&h, &url, fresh.secret()).await.0;
                (fresh.secret().to_owned(), status)
            })
        })
        .collect();
    let mut fresh = HashSet::new();
    for t in tasks {
        let (token, status) = within(20, "401 burst task", t).await.unwrap();
        assert_eq!(status, 200, "{flow:?}: the re-minted token works");
        fresh.insert(token);
    }
    assert_eq!(fresh.len(), 1, "{flow:?}: one new token for everyone");
    assert!(!fresh.contains(&stale));
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "{flow:?}: the stale token is dropped once"
    );
    assert_eq!(
        s.server_requests(&sb),
        before + 1,
        "{flow:?}: 50 401s, one re-mint"
    );
    assert!(
        !s.invalidate_token(&stale),
        "a stale token no longer matches"
    );
    assert_eq!(s.server_requests(&sb), before + 1);
}

/// A 429 with `Retry-After: 1` is waited out (not retried sooner, not surfaced), then succeeds.
async fn rate_limit_is_waited_out(flow: Flow) {
    let sb = sandbox(LONG).await;
    let s = flow.build(&sb, None).await;
    s.without_token();
    let before = s.server_requests(&sb);
    sb.set_fault(s.route, rate_limited(1, 1));
    let started = Instant::now();
    let t = within(20, "token() under 429", s.token())
        .await
        .unwrap_or_else(|e| panic!("{flow:?}: the 429 was not waited out: {e:?}"));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(990),
        "{flow:?}: retried after {took:?}, before Retry-After"
    );
    assert!(took < Duration::from_secs(10), "{flow:?}: {took:?}");
    assert_eq!(
        s.server_requests(&sb),
        before + 2,
        "{flow:?}: the 429, then the retry"
    );
    let http = reqwest::Client::new();
    assert_eq!(protected(&http, &sb, t.secret()).await.0, 200, "{flow:?}");
    assert_eq!(s.stats().failures, 0, "{flow:?}");
}

/// With `max_rate_limit_wait` = 2.5 s: a `Retry-After` beyond it is a `RateLimited` error at
/// once, carrying the wait; repeated 1-second 429s are waited out only while the total stays
/// within it; neither is remembered.
async fn rate_limit_wait_is_bounded(flow: Flow) {
    let sb = sandbox(LONG).await;
    let http = HttpClient::new(HttpConfig {
        max_rate_limit_wait: Duration::from_millis(2500),
        ..Default::default()
    })
    .unwrap();
    let s = flow.build(&sb, Some(http)).await;
    s.without_token();
    let before = s.server_requests(&sb);

    sb.set_fault(s.route, rate_limited(120, 0));
    let started = Instant::now();
    let err = within(20, "token() under a long 429", s.token())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(120)),
        "{flow:?}: {err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{flow:?}: nothing to wait for"
    );
    assert_eq!(s.server_requests(&sb), before + 1, "{flow:?}: not hammered");

    sb.set_fault(s.route, rate_limited(1, 0));
    let started = Instant::now();
    let err = within(20, "token() under repeated 429s", s.token())
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, Error::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(1)),
        "{flow:?}: {err:?}"
    );
    // 429, wait 1 s, 429, wait 1 s (2 s in all), 429: a third second would pass the bound.
    assert_eq!(
        s.server_requests(&sb),
        before + 4,
        "{flow:?}: three tries within the bound"
    );
    assert!(
        took >= Duration::from_millis(1990) && took < Duration::from_secs(10),
        "{flow:?}: {took:?}"
    );

    sb.clear_faults();
    let t = within(20, "token() after the 429s", s.token())
        .await
        .unwrap_or_else(|e| panic!("{flow:?}: a rate limit is not remembered: {e:?}"));
    assert_eq!(s.server_requests(&sb), before + 5);
    let http = reqwest::Client::new();
    assert_eq!(protected(&http, &sb, t.secret()).await.0, 200, "{flow:?}");
    assert_eq!(s.stats().failures, 2, "{flow:?}");
}

/// `invalid_grant` / `invalid_client`: one request, no retry, and asking again within the
/// remember window is answered from memory.
async fn definitive_refusal_is_not_retried(flow: Flow) {
    let sb = sandbox(LONG).await;
    let (s, expected) = flow.build_refused(&sb).await;
    let before = s.server_requests(&sb);
    let e1 = within(20, "refused token()", s.token()).await.unwrap_err();
    assert_eq!(oauth_error(flow, &e1), expected, "{flow:?}: {e1:?}");
    assert_eq!(s.server_requests(&sb), before + 1, "{flow:?}: not retried");
    assert_eq!(s.stats().failures, 1, "{flow:?}");
    let e2 = within(20, "refused token() again", s.token())
        .await
        .unwrap_err();
    assert_eq!(oauth_error(flow, &e2), expected, "{flow:?}: {e2:?}");
    assert_eq!(
        s.server_requests(&sb),
        before + 1,
        "{flow:?}: the refusal is remembered, not asked again"
    );
}

/// 6-second tokens: in the advisory window (1 s to 0.6 s before expiry) a refresh that fails
/// leaves the still-valid token in service; the next call refreshes.
async fn failed_early_refresh_serves_the_valid_token(flow: Flow) {
    let sb = sandbox(Duration::from_secs(6)).await;
    let s = flow.build(&sb, None).await;
    let http = reqwest::Client::new();
    let first = s.token().await.unwrap();
    let life = first.token().lifetime();
    let advisory_at = first.expires_at() - life / 6;
    let mandatory_at = first.expires_at() - life / 10;
    let before = s.server_requests(&sb);
    tokio::time::sleep(
        (advisory_at + Duration::from_millis(100))
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    )
    .await;
    // Neither retried nor remembered: the refresh fails once, quickly.
    sb.set_fault(
        s.route,
        Fault {
            status: 400,
            body: r#"{"error":"temporarily_unavailable"}"#.into(),
            times: 1,
            ..Default::default()
        },
    );
    assert!(
        SystemTime::now() < mandatory_at - Duration::from_millis(100),
        "timing precondition: the advisory window was missed (machine too slow?)"
    );
    let during = s
        .token()
        .await
        .unwrap_or_else(|e| panic!("{flow:?}: the still-valid token was not served: {e:?}"));
    assert_eq!(
        during.secret(),
        first.secret(),
        "{flow:?}: the valid token is served"
    );
    assert_eq!(
        s.server_requests(&sb),
        before + 1,
        "{flow:?}: an early refresh was attempted"
    );
    assert_eq!(s.stats().failures, 1, "{flow:?}");
    assert_eq!(
        protected(&http, &sb, during.secret()).await.0,
        200,
        "{flow:?}"
    );
    let next = s.token().await.unwrap();
    assert_ne!(
        next.secret(),
        first.secret(),
        "{flow:?}: the next call refreshes"
    );
    assert_eq!(s.server_requests(&sb), before + 2, "{flow:?}");
    assert_eq!(
        protected(&http, &sb, next.secret()).await.0,
        200,
        "{flow:?}"
    );
}

/// Two 503s then success: three requests, one token. A persistent 500 gives up after 1 + 3
/// tries with the HTTP error, is not remembered, and the next call succeeds.
async fn server_errors_are_retried(flow: Flow) {
    let sb = sandbox(LONG).await;
    let http = reqwest::Client::new();
    let s = flow.build(&sb, None).await;
    s.without_token();
    let before = s.server_requests(&sb);
    sb.set_fault(
        s.route,
        Fault {
            status: 503,
            body: "busy".into(),
            times: 2,
            ..Default::default()
        },
    );
    let t = within(20, "token() after 503s", s.token())
        .await
        .unwrap_or_else(|e| panic!("{flow:?}: the third try should succeed: {e:?}"));
    assert_eq!(
        s.server_requests(&sb),
        before + 3,
        "{flow:?}: 503, 503, 200"
    );
    assert_eq!(protected(&http, &sb, t.secret()).await.0, 200, "{flow:?}");
    assert_eq!(s.stats().failures, 0, "{flow:?}");

    s.invalidate();
    sb.set_fault(
        s.route,
        Fault {
            status: 500,
            body: "boom".into(),
            times: 0,
            ..Default::default()
        },
    );
    let err = within(20, "token() under a persistent 500", s.token())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Http { status: 500, .. }),
        "{flow:?}: {err:?}"
    );
    assert_eq!(
        s.server_requests(&sb),
        before + 3 + 4,
        "{flow:?}: 1 try + 3 retries"
    );
    sb.clear_faults();
    let t = within(20, "token() after the 500s", s.token())
        .await
        .unwrap_or_else(|e| panic!("{flow:?}: a 5xx is not remembered: {e:?}"));
    assert_eq!(s.server_requests(&sb), before + 3 + 4 + 1, "{flow:?}");
    assert_eq!(protected(&http, &sb, t.secret()).await.0, 200, "{flow:?}");
}

macro_rules! matrix {
    ($($behaviour:ident),* $(,)?) => {$(
        mod $behaviour {
            use super::Flow;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn password_grant() {
                super::$behaviour(Flow::Password).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn client_credentials_post() {
                super::$behaviour(Flow::ClientSecretPost).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn client_credentials_basic() {
                super::$behaviour(Flow::ClientSecretBasic).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn backend_services() {
                super::$behaviour(Flow::BackendServices).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn authorization_code() {
                super::$behaviour(Flow::AuthorizationCode).await
            }
        }
    )*};
}

matrix!(
    happy_path,
    refresh_at_margin,
    concurrent_callers_make_one_request,
    burst_of_401s_re_mints_once,
    rate_limit_is_waited_out,
    rate_limit_wait_is_bounded,
    definitive_refusal_is_not_retried,
    failed_early_refresh_serves_the_valid_token,
    server_errors_are_retried,
);

// ---------------------------------------------------------------------------------------------
// Flow-specific
// ---------------------------------------------------------------------------------------------
// Regressions of defects this file found in core/
// ---------------------------------------------------------------------------------------------

/// A server answering `429` with `Retry-After: 0` (or an HTTP date in the past) once made
/// `exchange` ask again at once, forever: a zero wait never grew the waited total. Now every wait
/// has a growing floor and the number of rate-limited tries is bounded.
#[tokio::test]
async fn retry_after_zero_is_not_a_tight_loop() {
    let sb = sandbox(LONG).await;
    let bounded = HttpClient::new(HttpConfig {
        max_rate_limit_wait: Duration::from_secs(2),
        ..Default::default()
    })
    .unwrap();
    let s = Flow::ClientSecretPost.build(&sb, Some(bounded)).await;
    sb.set_fault(s.route, rate_limited(0, 0));
    let outcome = tokio::time::timeout(Duration::from_secs(4), s.token()).await;
    let requests = sb.token_requests(&s.client_id);
    assert!(
        matches!(outcome, Ok(Err(Error::RateLimited { .. }))),
        "{outcome:?} after {requests} token requests"
    );
    assert!(requests <= 6, "{requests} token requests in under 4 s");
}

/// Objects with equal credentials once shared one cache cell that kept the `HttpClient` of the
/// first object built, so a second object's `HttpConfig` (here `max_rate_limit_wait`; equally
/// proxy, CA certificates, timeouts, `token_retries`) was silently ignored.
#[tokio::test]
async fn a_second_objects_http_config_is_honoured() {
    let sb = sandbox(LONG).await;
    let _first = Flow::Password.build(&sb, None).await;
    let bounded = HttpClient::new(HttpConfig {
        max_rate_limit_wait: Duration::from_secs(2),
        ..Default::default()
    })
    .unwrap();
    let second = Flow::Password.build(&sb, Some(bounded)).await;
    second.invalidate();
    sb.set_fault(second.route, rate_limited(10, 0));
    let outcome = tokio::time::timeout(Duration::from_secs(4), second.token()).await;
    assert!(
        matches!(outcome, Ok(Err(Error::RateLimited { .. }))),
        "a 10 s Retry-After exceeds this object's 2 s bound: expected RateLimited at once, \
         got {outcome:?}"
    );
}
