//! The fault switches the fault matrix (core/tests/fault_matrix*.rs) relies on: several faults on
//! one route, token revocation on a share of a route's requests, the count of faults hit, a
//! fault's headers replacing the defaults, and requests finished after the client hung up.
use std::time::Duration;

use cibmtr_fhir_sandbox::{Fault, Route, Sandbox, SandboxConfig, Store};
use serde_json::{Value, json};

fn http(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

async fn msk_token(sb: &Sandbox) -> String {
    let c = &sb.credentials.msk;
    let v: Value = http(Duration::from_secs(10))
        .post(&c.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", c.client_id.as_str()),
            ("client_secret", c.client_secret.as_str()),
            ("scope", "full"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

async fn protected(sb: &Sandbox, token: &str) -> reqwest::Response {
    static CLIENT: std::sync::LazyLock<reqwest::Client> =
        std::sync::LazyLock::new(|| http(Duration::from_secs(10)));
    CLIENT
        .get(&sb.urls.protected)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn faults_added_to_one_route_make_a_mix_and_are_counted() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let token = msk_token(&sb).await;
    sb.set_fault(
        Route::Protected,
        Fault {
            status: 418,
            ..Default::default()
        },
    );
    // `set_fault` replaces, `add_fault` adds: 503 for the first two requests, then 502 once,
    // then 418 is gone (it was replaced) and answers are normal.
    sb.set_fault(
        Route::Protected,
        Fault {
            status: 503,
            times: 2,
            ..Default::default()
        },
    );
    sb.add_fault(
        Route::Protected,
        Fault {
            status: 502,
            headers: vec![("Content-Type".into(), "text/html".into())],
            body: "<html><title>502 Bad Gateway</title></html>".into(),
            times: 1,
            ..Default::default()
        },
    );
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = protected(&sb, &token).await;
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        seen.push((r.status().as_u16(), ct));
    }
    assert_eq!(seen[0].0, 503);
    assert_eq!(seen[1].0, 503);
    assert_eq!(
        seen[2],
        (502, "text/html".to_owned()),
        "the fault's header replaces the default"
    );
    assert_eq!(seen[3].0, 200);
    assert_eq!(sb.faults_hit(Route::Protected), 3);
    assert_eq!(sb.requests(Route::Protected), 4);

    // Shares add up: two faults at 25% each hit about half the requests.
    for status in [500, 504] {
        sb.add_fault(
            Route::Protected,
            Fault {
                status,
                share: 0.25,
                ..Default::default()
            },
        );
    }
    let mut hit = 0;
    for _ in 0..400 {
        if protected(&sb, &token).await.status() != 200 {
            hit += 1;
        }
    }
    assert!((120..=280).contains(&hit), "{hit} of 400");
    assert_eq!(sb.faults_hit(Route::Protected), 3 + hit);
    sb.clear_faults();
    assert_eq!(protected(&sb, &token).await.status(), 200);
}

#[tokio::test]
async fn a_share_of_requests_can_revoke_every_token() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let token = msk_token(&sb).await;
    assert_eq!(protected(&sb, &token).await.status(), 200);
    sb.set_token_revocation(Route::Protected, 1.0);
    assert_eq!(protected(&sb, &token).await.status(), 401, "revoked first");
    assert_eq!(sb.revocations(), 1);
    sb.clear_faults();
    let fresh = msk_token(&sb).await;
    assert_eq!(protected(&sb, &fresh).await.status(), 200);
    assert_eq!(
        protected(&sb, &token).await.status(),
        401,
        "the old one stays revoked"
    );
    assert_eq!(sb.revocations(), 1);

    // The same through the admin API, and a plain revocation.
    let admin = http(Duration::from_secs(10));
    let r = admin
        .post(format!("{}/revoke", sb.urls.admin))
        .json(&json!({"route": "protected", "share": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(protected(&sb, &fresh).await.status(), 401);
    let r = admin
        .post(format!("{}/revoke", sb.urls.admin))
        .json(&json!({"route": "protected", "share": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let fresh = msk_token(&sb).await;
    assert_eq!(protected(&sb, &fresh).await.status(), 200);
    admin
        .post(format!("{}/revoke", sb.urls.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(protected(&sb, &fresh).await.status(), 401);
    assert_eq!(sb.revocations(), 3);
    let r = admin
        .post(format!("{}/revoke", sb.urls.admin))
        .json(&json!({"route": "nowhere", "share": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // `add` through the admin API keeps the faults already there; stats count the hits.
    for (status, add) in [(503, false), (502, true)] {
        let r = admin
            .post(format!("{}/faults", sb.urls.admin))
            .json(&json!({"route": "protected", "status": status, "times": 1, "add": add}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    assert_eq!(protected(&sb, &fresh).await.status(), 503);
    assert_eq!(protected(&sb, &fresh).await.status(), 502);
    let stats: Value = admin
        .get(format!("{}/stats", sb.urls.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["faults_hit"]["protected"], 2,
        "revocations are not faults"
    );
}

/// A POST held by a slow fault past the client's timeout: abandoned by default, stored after
/// all (as most servers would) with `set_finish_after_hang_up(true)`.
#[tokio::test]
async fn a_request_whose_client_hung_up_is_finished_only_when_asked() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let token = msk_token(&sb).await;
    let obs = json!({"resourceType": "Observation", "status": "final",
                     "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                     "subject": {"reference": "Patient/p1"}});
    let url = format!("{}/Observation?researchstudy=RS1", sb.urls.msk_fhir);
    let impatient = http(Duration::from_millis(200));
    for finish in [false, true] {
        sb.set_finish_after_hang_up(finish);
        sb.set_fault(
            Route::MskFhir,
            Fault {
                delay: Duration::from_millis(600),
                times: 1,
                ..Default::default()
            },
        );
        let before = sb.fhir_resources(Store::Msk).len();
        let e = impatient
            .post(&url)
            .bearer_auth(&token)
            .json(&obs)
            .send()
            .await
            .unwrap_err();
        assert!(e.is_timeout());
        tokio::time::sleep(Duration::from_millis(900)).await;
        let stored = sb.fhir_resources(Store::Msk).len() - before;
        assert_eq!(
            stored,
            usize::from(finish),
            "finish after hang-up: {finish}"
        );
    }
}
