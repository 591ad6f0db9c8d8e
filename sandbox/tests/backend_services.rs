//! The SMART Backend Services token endpoint, driven with hand-made assertions.
use std::time::{SystemTime, UNIX_EPOCH};

use cibmtr_fhir_sandbox::{Fault, Route, Sandbox, SandboxConfig};
use serde_json::{Value, json};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(sb: &Sandbox, claims: Value) -> String {
    let c = &sb.credentials.backend;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
    header.kid = Some(c.key_id.clone());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(c.private_key_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn claims(sb: &Sandbox, jti: &str, exp: u64) -> Value {
    let c = &sb.credentials.backend;
    json!({"iss": c.client_id, "sub": c.client_id, "aud": c.token_url, "jti": jti, "iat": now(), "exp": exp})
}

async fn post(sb: &Sandbox, assertion: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
        ("scope", "system/*.read"),
    ];
    let resp = reqwest::Client::new()
        .post(&sb.urls.smart_token)
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn start() -> Sandbox {
    Sandbox::start(SandboxConfig::default()).await.unwrap()
}

#[tokio::test]
async fn discovery_and_a_valid_assertion() {
    let sb = start().await;
    let conf: Value = reqwest::get(&sb.urls.smart_configuration)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(conf["token_endpoint"], json!(sb.urls.smart_token));
    assert_eq!(
        conf["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );
    assert_eq!(
        format!(
            "{}/.well-known/smart-configuration",
            sb.credentials.backend.fhir_base
        ),
        sb.urls.smart_configuration
    );
    assert!(!format!("{:?}", sb.credentials).contains("PRIVATE KEY"));

    let (status, body) = post(&sb, &sign(&sb, claims(&sb, "jti-ok", now() + 240))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "system/*.read");
    let token = body["access_token"].as_str().unwrap();
    let r = reqwest::Client::new()
        .get(&sb.urls.protected)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(sb.token_requests("sandbox-backend"), 1);
}

#[tokio::test]
async fn expired_wrong_aud_too_long_and_replayed_assertions_are_refused() {
    let sb = start().await;
    let (s, b) = post(&sb, &sign(&sb, claims(&sb, "jti-expired", now() - 60))).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (401, Some("invalid_client")),
        "{b}"
    );

    let mut c = claims(&sb, "jti-aud", now() + 240);
    c["aud"] = json!(format!("{}/", sb.urls.smart_token));
    let (s, b) = post(&sb, &sign(&sb, c)).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (401, Some("invalid_client")),
        "{b}"
    );

    let (s, b) = post(&sb, &sign(&sb, claims(&sb, "jti-long", now() + 3600))).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (401, Some("invalid_client")),
        "{b}"
    );

    let assertion = sign(&sb, claims(&sb, "jti-replay", now() + 240));
    let (s, _) = post(&sb, &assertion).await;
    assert_eq!(s, 200);
    let (s, b) = post(&sb, &assertion).await;
    assert_eq!(
        (s, b["error"].as_str(), b["error_description"].as_str()),
        (401, Some("invalid_client"), Some("jti replayed"))
    );
    assert_eq!(sb.token_requests("sandbox-backend"), 5);
}

#[tokio::test]
async fn wrong_grant_type_and_faults_and_admin_registration() {
    let sb = start().await;
    let form = [
        ("grant_type", "password"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", "x"),
    ];
    let r = reqwest::Client::new()
        .post(&sb.urls.smart_token)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );
    assert_eq!(sb.token_requests("unknown"), 1);

    sb.set_fault(
        Route::SmartToken,
        Fault {
            status: 503,
            times: 1,
            ..Default::default()
        },
    );
    let (s, _) = post(&sb, &sign(&sb, claims(&sb, "jti-fault", now() + 240))).await;
    assert_eq!(s, 503);

    // Registering another client under the same public key, then using it.
    let jwks = {
        let conf = &sb.credentials.backend;
        // Re-derive the public JWK from the PEM.
        use base64::Engine;
        use p384::elliptic_curve::sec1::ToEncodedPoint;
        use p384::pkcs8::DecodePrivateKey;
        let sk = p384::SecretKey::from_pkcs8_pem(&conf.private_key_pem).unwrap();
        let p = sk.public_key().to_encoded_point(false);
        let b = |x: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(x);
        json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": conf.key_id, "alg": "ES384", "use": "sig", "x": b(p.x().unwrap()), "y": b(p.y().unwrap())}]})
    };
    let r = reqwest::Client::new()
        .post(format!("{}/backend-clients", sb.urls.admin))
        .json(&json!({"client_id": "admin-registered", "jwks": jwks}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = reqwest::Client::new()
        .post(format!("{}/backend-clients", sb.urls.admin))
        .json(&json!({"client_id": "by-uri", "jwks_uri": "https://example.org/jwks.json"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let mut c = claims(&sb, "jti-admin", now() + 240);
    c["iss"] = json!("admin-registered");
    c["sub"] = json!("admin-registered");
    let (s, b) = post(&sb, &sign(&sb, c)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sb.token_requests("admin-registered"), 1);
}
