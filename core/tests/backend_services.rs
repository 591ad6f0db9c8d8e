//! SMART Backend Services (`private_key_jwt`) against the sandbox's SMART token endpoint. Counts
//! are the server's count of token requests.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cibmtr_fhir::auth::{BackendServices, KeyAlgorithm, generate_key, jwk_thumbprint, public_jwks};
use cibmtr_fhir::{Error, ErrorKind};
use cibmtr_fhir_sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts")
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

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

async fn generated_key_works(alg: KeyAlgorithm) {
    let sb = sandbox().await;
    let key = generate_key(alg).unwrap();
    let client = unique("bs");
    sb.register_backend_client(&client, key.jwks.clone())
        .unwrap();
    let auth = BackendServices::builder(&client, key.private_pem.clone())
        .algorithm(alg)
        .token_url(&sb.urls.smart_token)
        .build()
        .unwrap();
    assert_eq!(auth.key_id(), key.key_id);
    let t = auth.token().await.unwrap();
    assert_eq!(t.scope(), Some("system/*.read"));
    assert_eq!(protected_status(&sb, t.secret()).await, 200);
    assert_eq!(sb.token_requests(&client), 1);
}

#[tokio::test]
async fn rs384_generated_key_gets_a_token() {
    generated_key_works(KeyAlgorithm::RS384).await
}

#[tokio::test]
async fn es384_generated_key_gets_a_token() {
    generated_key_works(KeyAlgorithm::ES384).await
}

#[tokio::test]
async fn preregistered_client_with_fhir_base_discovery() {
    let sb = sandbox().await;
    let c = &sb.credentials.backend;
    let auth = BackendServices::builder(&c.client_id, c.private_key_pem.as_str())
        .algorithm(KeyAlgorithm::ES384)
        .fhir_base(&c.fhir_base)
        .scope(&c.scope)
        .build()
        .unwrap();
    assert_eq!(
        auth.key_id(),
        c.key_id,
        "default kid is the RFC 7638 thumbprint"
    );
    assert_eq!(auth.token_url(), None, "discovery is lazy");
    let t = auth.token().await.unwrap();
    assert_eq!(auth.token_url(), Some(c.token_url.as_str()));
    assert_eq!(protected_status(&sb, t.secret()).await, 200);
    assert_eq!(sb.token_requests(&c.client_id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_callers_make_one_token_request() {
    let sb = sandbox().await;
    let key = generate_key(KeyAlgorithm::ES384).unwrap();
    let client = unique("conc");
    sb.register_backend_client(&client, key.jwks.clone())
        .unwrap();
    let auth = BackendServices::builder(&client, key.private_pem.clone())
        .algorithm(KeyAlgorithm::ES384)
        .token_url(&sb.urls.smart_token)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..200)
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
    assert_eq!(sb.token_requests(&client), 1);
}

#[tokio::test]
async fn every_token_request_carries_a_fresh_assertion() {
    let sb = sandbox().await;
    let key = generate_key(KeyAlgorithm::ES384).unwrap();
    let client = unique("fresh");
    sb.register_backend_client(&client, key.jwks.clone())
        .unwrap();
    let auth = BackendServices::builder(&client, key.private_pem.clone())
        .algorithm(KeyAlgorithm::ES384)
        .token_url(&sb.urls.smart_token)
        .build()
        .unwrap();
    let t1 = auth.token().await.unwrap().secret().to_owned();
    auth.invalidate();
    let t2 = auth.token().await.unwrap().secret().to_owned();
    assert_ne!(t1, t2);
    assert_eq!(
        sb.token_requests(&client),
        2,
        "two requests, neither refused as a jti replay"
    );
    assert_eq!(auth.stats().failures, 0);
}

#[tokio::test]
async fn assertion_signed_by_the_wrong_key_is_invalid_client() {
    let sb = sandbox().await;
    let registered = generate_key(KeyAlgorithm::ES384).unwrap();
    let other = generate_key(KeyAlgorithm::ES384).unwrap();
    let client = unique("wrong");
    sb.register_backend_client(&client, registered.jwks.clone())
        .unwrap();
    // Claims the registered kid but signs with another key: the signature check must fail.
    let auth = BackendServices::builder(&client, other.private_pem.clone())
        .algorithm(KeyAlgorithm::ES384)
        .key_id(&registered.key_id)
        .token_url(&sb.urls.smart_token)
        .build()
        .unwrap();
    match auth.token().await.unwrap_err() {
        Error::Auth { error, status, .. } => {
            assert_eq!(error, "invalid_client");
            assert_eq!(status, Some(401));
        }
        e => panic!("expected invalid_client, got {e:?}"),
    }
    // Unknown kid (the other key's own thumbprint) is refused too.
    let client2 = unique("wrong2");
    sb.register_backend_client(&client2, registered.jwks.clone())
        .unwrap();
    let auth2 = BackendServices::builder(&client2, other.private_pem.clone())
        .algorithm(KeyAlgorithm::ES384)
        .token_url(&sb.urls.smart_token)
        .build()
        .unwrap();
    assert!(
        matches!(auth2.token().await.unwrap_err(), Error::Auth { ref error, .. } if error == "invalid_client")
    );
}

#[tokio::test]
async fn pkcs1_pem_and_private_jwks_load_and_work() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let sb = sandbox().await;
    let key = generate_key(KeyAlgorithm::RS384).unwrap();
    let rsa_key = rsa::RsaPrivateKey::from_pkcs8_pem(key.private_pem.expose()).unwrap();
    let pkcs1 = rsa_key
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"));
    assert_eq!(public_jwks(&pkcs1, KeyAlgorithm::RS384).unwrap(), key.jwks);
    let b = |x: &rsa::BigUint| URL_SAFE_NO_PAD.encode(x.to_bytes_be());
    let primes = rsa_key.primes();
    let jwk = json!({"kty": "RSA", "n": b(rsa_key.n()), "e": b(rsa_key.e()), "d": b(rsa_key.d()), "p": b(&primes[0]), "q": b(&primes[1])}).to_string();
    assert_eq!(public_jwks(&jwk, KeyAlgorithm::RS384).unwrap(), key.jwks);

    let client = unique("pkcs1");
    sb.register_backend_client(&client, key.jwks.clone())
        .unwrap();
    for (i, pk) in [pkcs1, jwk].into_iter().enumerate() {
        let auth = BackendServices::builder(&client, pk)
            .token_url(&sb.urls.smart_token)
            .build()
            .unwrap();
        let t = auth.token().await.unwrap();
        assert_eq!(protected_status(&sb, t.secret()).await, 200);
        assert_eq!(sb.token_requests(&client), i as u64 + 1);
    }

    // EC: SEC1 PEM and a private JWK give the same public key set as the PKCS#8 PEM.
    let ec = generate_key(KeyAlgorithm::ES384).unwrap();
    let sk = p384::SecretKey::from_pkcs8_pem(ec.private_pem.expose()).unwrap();
    let sec1 = sk
        .to_sec1_pem(p384::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    assert!(sec1.contains("BEGIN EC PRIVATE KEY"));
    assert_eq!(public_jwks(&sec1, KeyAlgorithm::ES384).unwrap(), ec.jwks);
    let ec_jwk = sk.to_jwk_string().to_string();
    assert_eq!(public_jwks(&ec_jwk, KeyAlgorithm::ES384).unwrap(), ec.jwks);
}

#[test]
fn bad_keys_and_algorithms_are_validation_errors_without_echoing_the_key() {
    let junk = "-----BEGIN PRIVATE KEY-----\nTk9UQUtFWQ==\n-----END PRIVATE KEY-----";
    for input in [junk, "not a key", "{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}"] {
        let e = BackendServices::builder("c", input)
            .token_url("https://example.org/token")
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Validation);
        assert!(
            matches!(&e, Error::Validation { field, .. } if field == "private_key"),
            "{e:?}"
        );
        assert!(!e.to_string().contains("Tk9UQUtFWQ") && !e.to_string().contains("c2VjcmV0"));
    }
    assert!(
        matches!("HS256".parse::<KeyAlgorithm>().unwrap_err(), Error::Validation { ref field, .. } if field == "algorithm")
    );
    assert_eq!(
        "ES384".parse::<KeyAlgorithm>().unwrap(),
        KeyAlgorithm::ES384
    );
    let ec = generate_key(KeyAlgorithm::ES384).unwrap();
    let e = BackendServices::builder("c", ec.private_pem.clone())
        .token_url("https://example.org/token")
        .build()
        .unwrap_err();
    assert!(
        matches!(e, Error::Validation { ref field, .. } if field == "algorithm"),
        "RS384 default with an EC key"
    );
    let e = BackendServices::builder("c", ec.private_pem.clone())
        .algorithm(KeyAlgorithm::ES384)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::Validation { ref field, .. } if field == "token_url"));
}

fn rfc7638(members: &[(&str, &str)]) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
        .collect();
    URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{{{}}}", body.join(",")).as_bytes()))
}

#[test]
fn jwks_members_and_rfc7638_kid() {
    // RFC 7638 §3.1.
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let vector = json!({"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"});
    assert_eq!(
        jwk_thumbprint(&vector).unwrap(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    assert_eq!(
        rfc7638(&[("e", "AQAB"), ("kty", "RSA"), ("n", n)]),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );

    for alg in [
        KeyAlgorithm::RS384,
        KeyAlgorithm::ES384,
        KeyAlgorithm::RS256,
    ] {
        let key = generate_key(alg).unwrap();
        let keys = key.jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let jwk = keys[0].as_object().unwrap();
        let mut names: Vec<&str> = jwk.keys().map(String::as_str).collect();
        names.sort_unstable();
        let s = |k: &str| jwk[k].as_str().unwrap();
        let expected_kid = if alg == KeyAlgorithm::ES384 {
            assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
            assert_eq!(s("crv"), "P-384");
            rfc7638(&[
                ("crv", s("crv")),
                ("kty", "EC"),
                ("x", s("x")),
                ("y", s("y")),
            ])
        } else {
            assert_eq!(names, ["alg", "e", "kid", "kty", "n", "use"]);
            rfc7638(&[("e", s("e")), ("kty", "RSA"), ("n", s("n"))])
        };
        assert_eq!(s("kid"), expected_kid);
        assert_eq!(key.key_id, expected_kid);
        assert_eq!(s("alg"), alg.as_str());
        assert_eq!(s("use"), "sig");
        assert_eq!(
            public_jwks(key.private_pem.expose(), alg).unwrap(),
            key.jwks
        );
    }
}

#[test]
fn debug_never_shows_the_private_key() {
    let key = generate_key(KeyAlgorithm::ES384).unwrap();
    let pem_body: String = key.private_pem.expose().lines().nth(1).unwrap().to_owned();
    let dbg = format!("{key:?}");
    assert!(
        !dbg.contains("PRIVATE KEY") && !dbg.contains(&pem_body),
        "{dbg}"
    );
    let auth = BackendServices::builder("c", key.private_pem.clone())
        .algorithm(KeyAlgorithm::ES384)
        .token_url("https://example.org/token")
        .build()
        .unwrap();
    let dbg = format!("{auth:?}");
    assert!(
        !dbg.contains("PRIVATE KEY") && !dbg.contains(&pem_body),
        "{dbg}"
    );
    let _: Value = key.jwks;
}
