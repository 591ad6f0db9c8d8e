//! The leak test of the Rust core: every flow, a CRID registration and a submission, with the
//! SDK's events logged at TRACE into a buffer; then everything logged, every `Debug` and
//! `Display` of what the SDK handed out and every error is scanned for every secret and piece of
//! patient data the sandbox saw on the wire ([`Sandbox::secrets_seen`]): zero hits.
//!
//! One test in this file: it installs the process's global tracing subscriber.
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cibmtr_fhir::auth::{
    AuthorizationCode, BackendServices, ClientAuthMethod, ClientCredentials, KeyAlgorithm,
    PasswordGrant, generate_key, register_client,
};
use cibmtr_fhir::cibmtr::{CibmtrClient, Demographics, LabResult, SubmitOptions};
use cibmtr_fhir::http::HttpClient;
use cibmtr_fhir_sandbox::{Fault, Route, Sandbox, SandboxConfig};

/// Everything the subscriber prints, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn fault(status: u16, headers: &[(&str, &str)]) -> Fault {
    Fault {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        times: 1,
        ..Fault::default()
    }
}

/// Plays the browser: the authorization URL's redirect, not followed.
async fn login_redirect(url: &str) -> String {
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    resp.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned()
}

fn query_value(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_or_identifying_is_logged_or_shown() {
    let log = Captured::default();
    let writer = log.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();
    let sb = Sandbox::start(SandboxConfig {
        okta_rate_per_second: 100,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let mut shown: Vec<String> = Vec::new();
    let mut tokens: Vec<String> = Vec::new();

    // Password grant, through a 503 and a 429 with Retry-After, so retries are logged.
    let o = &sb.credentials.okta;
    sb.set_fault(Route::OktaToken, fault(503, &[]));
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
    let t = okta.token().await.unwrap();
    shown.push(format!("{okta:?} {t:?} {:?}", t.token()));
    tokens.push(t.secret().to_owned());
    sb.set_fault(Route::OktaToken, fault(429, &[("Retry-After", "0")]));
    okta.invalidate();
    tokens.push(okta.token().await.unwrap().secret().to_owned());

    // Client credentials, in the body and as HTTP Basic.
    for (c, method) in [
        (&sb.credentials.msk, ClientAuthMethod::ClientSecretPost),
        (
            &sb.credentials.msk_basic,
            ClientAuthMethod::ClientSecretBasic,
        ),
    ] {
        let cc = ClientCredentials::builder(&c.token_url, &c.client_id, c.client_secret.as_str())
            .scope(&c.scope)
            .auth_method(method)
            .build()
            .unwrap();
        let t = cc.token().await.unwrap();
        shown.push(format!("{cc:?} {t:?} {:?}", cc.stats()));
        tokens.push(t.secret().to_owned());
    }

    // Backend Services: a generated RS384 key registered by its JWKS, and the sandbox's ES384.
    let key = generate_key(KeyAlgorithm::RS384).unwrap();
    sb.register_backend_client("leak-test-rs384", key.jwks.clone())
        .unwrap();
    let b = &sb.credentials.backend;
    for (client, pem, alg) in [
        (
            "leak-test-rs384",
            key.private_pem.clone(),
            KeyAlgorithm::RS384,
        ),
        (
            b.client_id.as_str(),
            b.private_key_pem.clone().into(),
            KeyAlgorithm::ES384,
        ),
    ] {
        let bs = BackendServices::builder(client, pem)
            .algorithm(alg)
            .token_url(&b.token_url)
            .build()
            .unwrap();
        let t = bs.token().await.unwrap();
        shown.push(format!("{bs:?} {t:?}"));
        tokens.push(t.secret().to_owned());
    }
    shown.push(format!("{key:?}"));

    // Authorization code + PKCE, a forced refresh, a replayed code; then a registered client.
    let s = &sb.credentials.smart;
    let app = AuthorizationCode::builder(&s.client_id, &s.redirect_uri, &s.scope)
        .client_secret(s.client_secret.as_str())
        .fhir_base(&s.fhir_base)
        .build()
        .unwrap();
    let url = app.authorization_url().await.unwrap();
    let back = login_redirect(&url).await;
    let code = query_value(&back, "code");
    app.complete(&back).await.unwrap();
    tokens.push(app.token().await.unwrap().secret().to_owned());
    app.invalidate();
    let t = app.token().await.unwrap();
    let refresh = t
        .token()
        .refresh_token
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    tokens.push(t.secret().to_owned());
    shown.push(format!("{app:?} {t:?} {:?} {:?}", t.token(), app.context()));
    let replay = app.complete(&back).await.unwrap_err();
    shown.push(format!("{replay:?} {replay}"));
    let registered = register_client(
        &HttpClient::shared(),
        &s.registration_url,
        "leak test app",
        std::slice::from_ref(&s.redirect_uri),
        "launch/patient patient/*.read offline_access",
    )
    .await
    .unwrap();
    shown.push(format!("{registered:?}"));

    // CRID, Patient, a submission through a failed search and a failed POST, the list.
    let client = CibmtrClient::builder("12345", &okta)
        .base_url(&sb.urls.cibmtr_base)
        .build()
        .unwrap();
    let mut who = Demographics::new("Zephyrine", "Quillfeather", "1971-09-23", "F");
    who.ssn = Some("123-45-6789".into());
    shown.push(format!("{who:?}"));
    let crid = client.register_crid(&who).await.unwrap();
    client.ensure_patient(crid).await.unwrap();
    sb.set_fault(Route::ObservationSearch, fault(503, &[]));
    sb.set_fault(Route::ObservationCreate, fault(502, &[]));
    let labs: Vec<LabResult> = (0..5)
        .map(|i| {
            LabResult::new(
                "718-7",
                10.0 + f64::from(i),
                "g/dL",
                "2024-03-01T07:45:00-06:00",
            )
        })
        .collect();
    let report = client
        .submit_labs(crid, labs.clone(), &SubmitOptions::default())
        .await
        .unwrap();
    shown.push(format!("{report:?} {client:?} {labs:?}"));
    let one = client.submit_lab(crid, &labs[0]).await.unwrap();
    shown.push(format!("{one:?}"));
    shown.push(format!("{:?}", client.observations(crid).await.unwrap()));

    // Errors: wrong password, wrong client secret, an invalid FHIR create.
    let wrong_password = PasswordGrant::builder(
        &o.token_url,
        &o.client_id,
        o.client_secret.as_str(),
        &o.username,
        format!("{}-wrong", o.password),
    )
    .build()
    .unwrap();
    let m = &sb.credentials.msk;
    let wrong_secret =
        ClientCredentials::builder(&m.token_url, &m.client_id, format!("{}x", m.client_secret))
            .build()
            .unwrap();
    for err in [
        wrong_password.token().await.unwrap_err(),
        wrong_secret.token().await.unwrap_err(),
        client
            .fhir()
            .create(&serde_json::json!({"resourceType": "Observation"}))
            .await
            .unwrap_err(),
    ] {
        shown.push(format!("{err:?} {err}"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    if std::env::var_os("CIBMTR_LEAK_TEST_SHOW").is_some() {
        eprintln!("{logged}");
    }
    // Logging was on and had things to say.
    assert!(
        logged.contains("TRACE") || logged.contains("DEBUG"),
        "{logged}"
    );
    assert!(logged.contains("retrying"), "{logged}");

    let seen = sb.secrets_seen();
    // The recording is complete, so that the scan below can fail.
    for must in tokens.iter().map(String::as_str).chain([
        code.as_str(),
        refresh.as_str(),
        "123-45-6789",
        "Zephyrine",
        "Quillfeather",
        "1971-09-23",
        o.password.as_str(),
        o.client_secret.as_str(),
        s.client_secret.as_str(),
        registered.client_secret.as_ref().unwrap().expose(),
    ]) {
        assert!(seen.iter().any(|s| s == must), "not recorded: {must:.12}…");
    }
    let assertions = seen
        .iter()
        .filter(|s| s.starts_with("ey") && s.matches('.').count() == 2)
        .count();
    assert!(assertions >= 2, "client assertions recorded: {assertions}");
    let verifiers = seen
        .iter()
        .filter(|s| s.len() >= 43 && !s.contains('.'))
        .count();
    assert!(verifiers >= 1);

    let leak = |text: &str| seen.iter().find(|s| text.contains(s.as_str())).cloned();
    // The scan finds a secret where there is one.
    assert!(leak(&format!("Bearer {}", tokens[0])).is_some());
    assert_eq!(leak(&logged), None, "in the log");
    for text in &shown {
        assert_eq!(leak(text), None, "in {text:.300}");
    }
    eprintln!(
        "leak test: {} secrets and values scanned for in {} log bytes and {} renderings",
        seen.len(),
        logged.len(),
        shown.len()
    );
}
