//! `FhirClient` against the sandbox's FHIR stores on loopback: the MSK-like Blaze store (which
//! answers 403 without `researchstudy` and drops it from its paging links), the Aidbox-like store
//! behind SMART Backend Services, and CIBMTR's API. Counts are the server's.
use std::time::{Duration, Instant};

use cibmtr_fhir::auth::{BackendServices, ClientCredentials, KeyAlgorithm, PasswordGrant};
use cibmtr_fhir::fhir::{CreateOutcome, FhirClient, FhirVersion};
use cibmtr_fhir::http::{HttpClient, HttpConfig};
use cibmtr_fhir::{Error, ErrorKind};
use cibmtr_fhir_sandbox::{DropMode, Fault, Route, Sandbox, SandboxConfig, Store};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts")
}

fn msk_auth(sb: &Sandbox) -> ClientCredentials {
    let c = &sb.credentials.msk;
    ClientCredentials::builder(&c.token_url, &c.client_id, c.client_secret.as_str())
        .scope(&c.scope)
        .build()
        .unwrap()
}

fn msk_fhir(sb: &Sandbox, auth: &ClientCredentials) -> FhirClient {
    FhirClient::builder(&sb.urls.msk_fhir)
        .auth(auth)
        .default_param("researchstudy", "study-1")
        .build()
        .unwrap()
}

fn observation(code: &str, n: usize) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:test", "value": format!("{code}-{n}")}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-05-01T08:30:00-05:00",
        "valueQuantity": {"value": n, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"}
    })
}

#[tokio::test]
async fn researchstudy_is_added_to_every_request_including_paging_links() {
    let sb = sandbox().await;
    let auth = msk_auth(&sb);
    let fhir = msk_fhir(&sb, &auth);
    for n in 0..25 {
        let created = fhir.create(&observation("718-7", n)).await.unwrap();
        assert!(created["id"].as_str().is_some_and(|s| !s.is_empty()));
    }
    // 25 results in pages of 10: three pages, and the server's next links lack researchstudy.
    let before = sb.requests(Route::MskFhir);
    let mut seen = std::collections::HashSet::new();
    let mut s = fhir.search("Observation", &[("code", "718-7"), ("_count", "10")]);
    while let Some(r) = s.next().await {
        let r = r.expect("every page is accepted, so researchstudy was on every request");
        assert!(
            seen.insert(r["id"].as_str().unwrap().to_owned()),
            "no resource twice"
        );
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(
        sb.requests(Route::MskFhir) - before,
        3,
        "three pages, no retries"
    );
    // One token for all 28 requests.
    assert_eq!(sb.token_requests(&sb.credentials.msk.client_id), 1);

    // The same client without the default parameter is refused: the test can fail.
    let bare = FhirClient::builder(&sb.urls.msk_fhir)
        .auth(&auth)
        .build()
        .unwrap();
    let err = bare.search_all("Observation", &[]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Http { status: 403, message, .. } if message.contains("researchstudy")),
        "{err:?}"
    );
}

#[tokio::test]
async fn read_update_conditional_create_and_capabilities() {
    let sb = sandbox().await;
    let auth = msk_auth(&sb);
    let fhir = msk_fhir(&sb, &auth);
    let created = fhir.create(&observation("2532-0", 1)).await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let read = fhir.read("Observation", &id).await.unwrap();
    assert_eq!(read["identifier"][0]["value"], "2532-0-1");

    let mut changed = read.clone();
    changed["status"] = json!("amended");
    let updated = fhir.update(&changed).await.unwrap();
    assert_eq!(updated["id"], id.as_str());
    assert_eq!(updated["meta"]["versionId"], "2");
    assert_eq!(
        fhir.read("Observation", &id).await.unwrap()["status"],
        "amended"
    );

    let obs = observation("2532-0", 2);
    let first = fhir
        .create_if_none_exist(&obs, "identifier=urn:test|2532-0-2")
        .await
        .unwrap();
    let second = fhir
        .create_if_none_exist(&obs, "identifier=urn:test|2532-0-2")
        .await
        .unwrap();
    assert!(matches!(first, CreateOutcome::Created(_)), "{first:?}");
    assert!(matches!(second, CreateOutcome::Existing(_)), "{second:?}");
    assert_eq!(first.id(), second.id());
    assert_eq!(sb.fhir_resources(Store::Msk).len(), 2);

    let caps = fhir.capabilities().await.unwrap();
    assert_eq!(caps["resourceType"], "CapabilityStatement");
    assert_eq!(caps["fhirVersion"], "4.0.1");
}

#[tokio::test]
async fn bad_input_is_refused_before_sending() {
    let sb = sandbox().await;
    let auth = msk_auth(&sb);
    let fhir = msk_fhir(&sb, &auth);
    let before = sb.requests(Route::MskFhir);
    let e = fhir.create(&json!({"status": "final"})).await.unwrap_err();
    assert!(matches!(&e, Error::Validation { field, .. } if field == "resource.resourceType"));
    let e = fhir.read("Observation", "../Patient/1").await.unwrap_err();
    assert!(matches!(&e, Error::Validation { field, .. } if field == "id"));
    let e = fhir
        .update(&json!({"resourceType": "Observation"}))
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Validation { field, .. } if field == "resource.id"));
    assert_eq!(sb.requests(Route::MskFhir), before, "nothing was sent");

    // A bearer token never crosses a network in clear text.
    let e = FhirClient::builder("http://fhir.example.org/fhir")
        .auth(&auth)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
}

#[tokio::test]
async fn get_is_retried_on_503_and_429_with_retry_after() {
    let sb = sandbox().await;
    let auth = msk_auth(&sb);
    let fhir = msk_fhir(&sb, &auth);
    let id = fhir.create(&observation("777-3", 1)).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    sb.set_fault(
        Route::MskFhir,
        Fault {
            status: 503,
            times: 2,
            ..Default::default()
        },
    );
    let before = sb.requests(Route::MskFhir);
    fhir.read("Observation", &id).await.unwrap();
    assert_eq!(
        sb.requests(Route::MskFhir) - before,
        3,
        "two 503s, then success"
    );

    sb.set_fault(
        Route::MskFhir,
        Fault {
            status: 429,
            headers: vec![("Retry-After".into(), "1".into())],
            times: 1,
            ..Default::default()
        },
    );
    let t = Instant::now();
    fhir.read("Observation", &id).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "Retry-After was honoured"
    );
}

#[tokio::test]
async fn retries_are_bounded_and_a_rate_limit_past_the_bound_is_reported() {
    let sb = sandbox().await;
    let auth = msk_auth(&sb);
    let http = HttpClient::new(HttpConfig {
        request_retries: 2,
        max_retry_time: Duration::from_secs(5),
        ..Default::default()
    })
    .unwrap();
    let fhir = FhirClient::builder(&sb.urls.msk_fhir)
        .auth(&auth)
        .default_param("researchstudy", "s")
        .http_client(http)
        .build()
        .unwrap();
    sb.set_fault(
        Route::MskFhir,
        Fault {
            status: 502,
            ..Default::default()
        },
    );
    let before = sb.requests(Route::MskFhir);
    let e = fhir.read("Observation", "x").await.unwrap_err();
    assert!(matches!(e, Error::Http { status: 502, .. }), "{e:?}");
    assert_eq!(
        sb.requests(Route::MskFhir) - before,
        3,
        "one try and two retries"
    );

    sb.set_fault(
        Route::MskFhir,
        Fault {
            status: 429,
            headers: vec![("Retry-After".into(), "30".into())],
            ..Default::default()
        },
    );
    let t = Instant::now();
    let e = fhir.read("Observation", "x").await.unwrap_err();
    assert!(
        matches!(e, Error::RateLimited { retry_after: Some(w) } if w == Duration::from_secs(30)),
        "{e:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "did not wait past the bound"
    );
}

#[tokio::test]
async fn a_plain_post_is_not_repeated_when_it_may_have_reached_the_server() {
    let sb = sandbox().await;
    let auth = msk_auth(&sb);
    let fhir = msk_fhir(&sb, &auth);
    for (status, drop) in [(503, None), (0, Some(DropMode::AfterProcessing))] {
        sb.set_fault(
            Route::MskFhir,
            Fault {
                status,
                drop_connection: drop,
                times: 1,
                ..Default::default()
            },
        );
        let before = sb.requests(Route::MskFhir);
        let stored = sb.fhir_resources(Store::Msk).len();
        let e = fhir.create(&observation("26464-8", 1)).await.unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Http | ErrorKind::Network),
            "{e:?}"
        );
        assert_eq!(sb.requests(Route::MskFhir) - before, 1, "POST sent once");
        let expected = stored + usize::from(drop.is_some());
        assert_eq!(sb.fhir_resources(Store::Msk).len(), expected);
    }
    // A GET through a dropped connection is simply repeated.
    sb.set_fault(
        Route::MskFhir,
        Fault {
            drop_connection: Some(DropMode::BeforeProcessing),
            times: 1,
            ..Default::default()
        },
    );
    fhir.search_all("Observation", &[]).await.unwrap();
}

#[tokio::test]
async fn a_burst_of_401s_re_mints_one_token() {
    let sb = sandbox().await;
    let auth = msk_auth(&sb);
    let fhir = msk_fhir(&sb, &auth);
    fhir.create(&observation("718-7", 1)).await.unwrap();
    assert_eq!(sb.token_requests(&sb.credentials.msk.client_id), 1);
    sb.revoke_all_tokens();
    let results = futures_util::future::join_all(
        (0..50).map(|_| fhir.search_all("Observation", &[("code", "718-7")])),
    )
    .await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        sb.token_requests(&sb.credentials.msk.client_id),
        2,
        "fifty 401s, one new token"
    );
}

#[tokio::test]
async fn backend_services_token_opens_the_aidbox_store() {
    let sb = sandbox().await;
    let c = &sb.credentials.backend;
    let auth = BackendServices::builder(&c.client_id, c.private_key_pem.clone())
        .algorithm(KeyAlgorithm::ES384)
        .token_url(&c.token_url)
        .scope(&c.scope)
        .build()
        .unwrap();
    let fhir = FhirClient::builder(&sb.urls.aidbox_fhir)
        .auth(&auth)
        .fhir_version(FhirVersion::R4)
        .build()
        .unwrap();
    let created = fhir
        .create(&json!({"resourceType": "Patient", "gender": "female"}))
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(fhir.read("Patient", id).await.unwrap()["gender"], "female");
    // An Okta token is not good there.
    let o = &sb.credentials.okta;
    let okta = PasswordGrant::builder(
        &o.token_url,
        &o.client_id,
        o.client_secret.as_str(),
        &o.username,
        o.password.as_str(),
    )
    .scope(&o.scope)
    .build()
    .unwrap();
    let wrong = FhirClient::builder(&sb.urls.aidbox_fhir)
        .auth(&okta)
        .build()
        .unwrap();
    let e = wrong.read("Patient", id).await.unwrap_err();
    assert!(matches!(e, Error::Http { status: 401, .. }), "{e:?}");
}

#[tokio::test]
async fn operation_outcome_and_error_message_bodies_become_http_errors() {
    let sb = sandbox().await;
    let o = &sb.credentials.okta;
    let okta = PasswordGrant::builder(
        &o.token_url,
        &o.client_id,
        o.client_secret.as_str(),
        &o.username,
        o.password.as_str(),
    )
    .scope(&o.scope)
    .build()
    .unwrap();
    let fhir = FhirClient::builder(&sb.urls.cibmtr_base)
        .auth(&okta)
        .fhir_version(FhirVersion::Stu3)
        .build()
        .unwrap();
    // An Observation without its security label: an OperationOutcome.
    let e = fhir.create(&observation("718-7", 1)).await.unwrap_err();
    match &e {
        Error::Http {
            status: 400,
            message,
            outcome: Some(outcome),
        } => {
            assert_eq!(outcome["resourceType"], "OperationOutcome");
            assert!(!message.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // CIBMTR's backend errors carry an `errorMessage`.
    sb.set_fault(
        Route::ObservationSearch,
        Fault {
            status: 400,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: r#"{"errorMessage":"subject:Patient.identifier is not a known CRID"}"#.into(),
            times: 1,
            ..Default::default()
        },
    );
    let e = fhir.search_all("Observation", &[]).await.unwrap_err();
    assert!(
        matches!(&e, Error::Http { status: 400, message, outcome: None } if message == "subject:Patient.identifier is not a known CRID"),
        "{e:?}"
    );
    sb.set_fault(
        Route::ObservationSearch,
        Fault {
            status: 502,
            headers: vec![("Content-Type".into(), "text/html".into())],
            body: "<html><head><title>502 Bad Gateway</title></head><body>upstream</body></html>"
                .into(),
            ..Default::default()
        },
    );
    let http = HttpClient::new(HttpConfig {
        request_retries: 0,
        ..Default::default()
    })
    .unwrap();
    let no_retry = FhirClient::builder(&sb.urls.cibmtr_base)
        .auth(&okta)
        .http_client(http)
        .build()
        .unwrap();
    let e = no_retry.search_all("Observation", &[]).await.unwrap_err();
    assert!(
        matches!(&e, Error::Http { status: 502, message, .. } if message == "HTML error page: 502 Bad Gateway"),
        "{e:?}"
    );
}

/// A one-route HTTP server that answers every request with `body` and counts requests.
async fn fixed_server(body: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = sock.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), hits)
}

#[tokio::test]
async fn a_paging_link_to_another_origin_is_not_followed() {
    let sb = sandbox().await;
    let auth = msk_auth(&sb);
    // The "other origin" counts the requests it gets: it must get none.
    let (other, other_hits) =
        fixed_server(r#"{"resourceType":"Bundle","type":"searchset"}"#.into()).await;
    let page = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Observation", "id": "1"}}],
        "link": [{"relation": "next", "url": format!("{other}/fhir/Observation?page=2")}]
    })
    .to_string();
    let (base, _) = fixed_server(page).await;
    let fhir = FhirClient::builder(format!("{base}/fhir"))
        .auth(&auth)
        .build()
        .unwrap();
    let items: Vec<_> = fhir.search("Observation", &[]).collect().await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().unwrap()["id"], "1");
    assert_eq!(items[1].as_ref().unwrap_err().kind(), ErrorKind::Config);
    assert_eq!(other_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}
