//! The sandbox's SMART App Launch endpoints, driven with plain HTTP.
use base64::Engine;
use cibmtr_fhir_sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn no_redirect() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn discovery_lists_app_launch_endpoints() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let v: Value = reqwest::get(&sb.urls.smart_configuration)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["authorization_endpoint"], sb.urls.smart_authorize);
    assert_eq!(v["registration_endpoint"], sb.urls.smart_register);
    assert_eq!(v["code_challenge_methods_supported"], json!(["S256"]));
    let grants = v["grant_types_supported"].as_array().unwrap();
    assert!(
        grants.contains(&json!("authorization_code")) && grants.contains(&json!("refresh_token"))
    );
    assert!(!format!("{:?}", sb.credentials.smart).contains(&sb.credentials.smart.client_secret));
}

#[tokio::test]
async fn public_client_code_flow_with_pkce_and_authorize_validation() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let http = reqwest::Client::new();
    let redirect = "http://127.0.0.1:9/cb";
    let resp = http.post(&sb.urls.smart_register)
        .json(&json!({"client_name": "t", "redirect_uris": [redirect], "scope": "patient/*.read offline_access", "token_endpoint_auth_method": "none"}))
        .send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let reg: Value = resp.json().await.unwrap();
    assert!(reg.get("client_secret").is_none());
    assert_eq!(reg["client_secret_expires_at"], 0);
    let client_id = reg["client_id"].as_str().unwrap().to_string();
    let verifier = "v".repeat(50);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    let authorize = |aud: String, method: &'static str| {
        let mut u = url::Url::parse(&sb.urls.smart_authorize).unwrap();
        u.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", redirect)
            .append_pair("scope", "patient/*.read offline_access")
            .append_pair("state", "s1")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", method)
            .append_pair("aud", &aud);
        u.to_string()
    };
    let loc = |r: reqwest::Response| r.headers()["location"].to_str().unwrap().to_string();
    let bad = no_redirect()
        .get(authorize("http://elsewhere/fhir".into(), "S256"))
        .send()
        .await
        .unwrap();
    assert!(loc(bad).contains("error=invalid_request"));
    let bad = no_redirect()
        .get(authorize(sb.urls.fhir_base.clone(), "plain"))
        .send()
        .await
        .unwrap();
    assert!(loc(bad).contains("error=invalid_request"));
    let ok = no_redirect()
        .get(authorize(sb.urls.fhir_base.clone(), "S256"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 302);
    let location = url::Url::parse(&loc(ok)).unwrap();
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "s1");
    let tok = |code: String, v: String| {
        http.post(&sb.urls.smart_token)
            .form(&[
                ("grant_type", "authorization_code".to_string()),
                ("code", code),
                ("redirect_uri", redirect.to_string()),
                ("code_verifier", v),
                ("client_id", client_id.clone()),
            ])
            .send()
    };
    let r = tok(q["code"].clone(), verifier.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);
    assert_eq!(t["patient"], "smart-1288992");
    assert!(t["refresh_token"].is_string());
    // Single use.
    let r = tok(q["code"].clone(), verifier.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(sb.token_requests(&client_id), 2);
}
