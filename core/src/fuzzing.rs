//! Entry points for fuzzing every parser of server input, for the cargo-fuzz targets in `fuzz/`
//! and the stable smoke run in `core/tests/fuzz_smoke.rs`. Not part of the SDK's API.
//!
//! Each function takes arbitrary bytes, feeds them to the parser exactly as the SDK does with a
//! server's answer, and panics only if the parser panics or breaks a promise its callers rely
//! on (a CRID that is not positive, a paging URL on another origin, a token endpoint over plain
//! http to a non-loopback host, a state check passed without the state, a wait longer than a
//! day, a secret in `Debug` output).
use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde_json::Value;

use crate::Secret;
use crate::cibmtr::{Ccn, observation_submission_id, parse_crid_response, patient_matches};
use crate::error::{Error, ErrorKind};
use crate::fhir::{FhirClient, id_from_location};
use crate::http::HttpClient;

/// A fuzz target: any bytes in, a panic only for a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name its cargo-fuzz binary and corpus folder have.
pub const TARGETS: &[(&str, Target)] = &[
    ("token_response", token_response),
    ("oauth_error", oauth_error),
    ("crid_response", crid_response),
    ("fhir_error", fhir_error),
    ("bundle", bundle),
    ("transaction_response", transaction_response),
    ("smart_configuration", smart_configuration),
    ("jwks", jwks),
    ("redirect_url", redirect_url),
    ("retry_headers", retry_headers),
];

/// A token endpoint's `200` body (`parse_token`).
pub fn token_response(data: &[u8]) {
    let sent_at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    match crate::auth::parse_token(data, sent_at) {
        Ok(t) => {
            let access = t.access_token.expose();
            assert!(!access.is_empty());
            for k in ["access_token", "refresh_token"] {
                assert!(!t.extra.contains_key(k), "{k} kept among the extras");
            }
            // The scope is printed as the server sent it (it may contain anything, even the
            // token's text); everything else must not show the token.
            let debug = format!(
                "{:?}",
                crate::auth::Token {
                    scope: None,
                    ..t.clone()
                }
            );
            if access.len() >= 16 {
                assert!(!debug.contains(access), "access token in Debug: {debug}");
            }
            let _ = t.lifetime();
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::Network, "{e:?}"),
    }
}

/// A token endpoint's error answer (`oauth_error`): the first byte picks the status.
pub fn oauth_error(data: &[u8]) {
    let Some((&s, body)) = data.split_first() else {
        return;
    };
    let status = 400 + u16::from(s) % 200;
    let e = crate::auth::oauth_error(status, body);
    assert!(
        matches!(e.kind(), ErrorKind::Auth | ErrorKind::Http),
        "{e:?}"
    );
    let _ = e.to_string();
}

/// The answer to `PUT /CRID`.
pub fn crid_response(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match parse_crid_response(&v) {
        Ok(crid) => assert!(crid > 0),
        Err(e) => assert!(matches!(e, Error::Http { status: 200, .. }), "{e:?}"),
    }
}

/// A FHIR server's error answer (`OperationOutcome`, CIBMTR `errorMessage`, OAuth error, HTML,
/// text): the first byte picks the status.
pub fn fhir_error(data: &[u8]) {
    let Some((&s, body)) = data.split_first() else {
        return;
    };
    let status = StatusCode::from_u16(400 + u16::from(s) % 200).unwrap();
    match crate::fhir::http_error(status, body) {
        Error::Http {
            status: st,
            message,
            outcome,
        } => {
            assert_eq!(st, status.as_u16());
            assert!(!message.trim().is_empty());
            if let Some(o) = outcome {
                assert_eq!(o["resourceType"], "OperationOutcome");
            }
        }
        other => panic!("not an HTTP error: {other:?}"),
    }
}

/// A client of a server at `https://fhir.example.org/fhir` (never contacted), for paging links.
static PAGING: LazyLock<FhirClient> = LazyLock::new(|| {
    FhirClient::builder("https://fhir.example.org/fhir")
        .default_param("researchstudy", "s1")
        .build()
        .expect("a valid base")
});

/// A `200` answer's body as the FHIR client reads it (`None`: not JSON).
fn fhir_json_body(data: &[u8]) -> Option<Value> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json"),
    );
    crate::fhir::parse_body(StatusCode::OK, &headers, data).ok()
}

/// A search answer: a `searchset` Bundle (or anything else) with its paging link, its entries,
/// and what the SDK reads from them.
pub fn bundle(data: &[u8]) {
    let Some(v) = fhir_json_body(data) else {
        return;
    };
    if let Some(link) = crate::fhir::next_link(&v)
        && let Ok(url) = PAGING.paging_url(link)
    {
        assert_eq!(
            url.origin().ascii_serialization(),
            "https://fhir.example.org",
            "a paging link followed to another origin: {link}"
        );
        // The default parameters are on every request (a value the server's link sets itself
        // is kept).
        assert!(
            url.query_pairs().any(|(k, _)| k == "researchstudy"),
            "{url}"
        );
    }
    let ccn = Ccn::parse("12345").expect("a CCN");
    for r in crate::fhir::bundle_resources(v) {
        let _ = observation_submission_id(&r);
        let _ = patient_matches(&r, 9_007_199_254_740_993, &ccn);
        if let Some(full) = r.get("fullUrl").and_then(Value::as_str) {
            location(full);
        }
    }
}

fn location(l: &str) {
    for rt in ["Patient", "Observation"] {
        if let Some(id) = id_from_location(l, rt) {
            assert!(
                !id.is_empty() && !id.contains('/') && id != "_history",
                "{l} -> {id}"
            );
        }
    }
}

/// The answer to a transaction Bundle of labs: the first byte is the number of requests sent
/// (1–32), the rest the server's body. Every request gets exactly one outcome; a created or
/// matched one carries a plain Observation id.
pub fn transaction_response(data: &[u8]) {
    let Some((&n, body)) = data.split_first() else {
        return;
    };
    let requests = usize::from(n % 32) + 1;
    let Some(v) = fhir_json_body(body) else {
        return;
    };
    let results = crate::cibmtr::transaction_results(&v, requests);
    assert_eq!(results.len(), requests);
    for r in results {
        match r {
            Ok((status, id)) => {
                assert!(
                    matches!(
                        status,
                        crate::cibmtr::ItemStatus::Created
                            | crate::cibmtr::ItemStatus::AlreadyPresent
                    ),
                    "{status:?}"
                );
                assert!(!id.is_empty(), "an empty Observation id");
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::Http, "{e:?}"),
        }
    }
}

/// A `.well-known/smart-configuration` document: its endpoints must obey the transport rule.
pub fn smart_configuration(data: &[u8]) {
    static HTTP: LazyLock<HttpClient> = LazyLock::new(HttpClient::shared);
    if let Ok(c) = crate::auth::read_smart_configuration(&HTTP, data) {
        for u in std::iter::once(&c.token_endpoint.1).chain(c.authorization_endpoint.as_ref()) {
            let host = u.host_str().unwrap_or("");
            assert!(
                u.scheme() == "https" || (u.scheme() == "http" && crate::http::is_loopback(host)),
                "insecure endpoint accepted: {u}"
            );
        }
    }
}

/// A JWKS (or one JWK): RFC 7638 thumbprints of every key; small inputs also go through the
/// private-key reader.
pub fn jwks(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let keys = v.get("keys").and_then(Value::as_array).cloned();
        for k in std::iter::once(v).chain(keys.into_iter().flatten()) {
            if let Ok(t) = crate::auth::jwk_thumbprint(&k) {
                assert_eq!(t.len(), 43, "a SHA-256 thumbprint in base64url: {t}");
            }
        }
    }
    // An RSA JWK's primes are recovered from n, e and d: keep the numbers small.
    if data.len() <= 512
        && let Ok(text) = std::str::from_utf8(data)
    {
        for alg in [
            crate::auth::KeyAlgorithm::ES384,
            crate::auth::KeyAlgorithm::RS384,
        ] {
            match crate::auth::public_jwks(text, alg) {
                Ok(jwks) => assert_eq!(jwks["keys"][0]["kid"].as_str().map(str::len), Some(43)),
                // The rules are fixed sentences: a key is never echoed into an error.
                Err(Error::Validation { field, rule }) => {
                    assert!(field == "private_key" || field == "algorithm", "{field}");
                    assert!(rule.len() <= 100, "{rule}");
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }
}

/// The URL the browser is redirected to after login. `STATE` in the input stands for the state
/// of the login in progress, so the fuzzer reaches the paths after the state check too.
pub fn redirect_url(data: &[u8]) {
    let state = Secret::new("s3cr3t-STATE-9f2c");
    let text = String::from_utf8_lossy(data).replace("STATE", state.expose());
    match crate::auth::authorization_code::read_redirect(&text, Some(&state)) {
        Ok(code) => {
            let url = url::Url::parse(&text).expect("parsed once already");
            let get = |k: &str| url.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v);
            assert_eq!(get("state").as_deref(), Some(state.expose()), "{text}");
            assert!(get("error").is_none());
            if let Some(c) = code {
                assert!(!c.is_empty());
            }
        }
        Err(Error::Auth { .. }) => {}
        Err(Error::Validation { field, .. }) => assert_eq!(field, "redirect_url"),
        Err(e) => panic!("{e:?}"),
    }
    // Without a login in progress nothing is ever accepted.
    assert!(crate::auth::authorization_code::read_redirect(&text, None).is_err());
}

/// `Retry-After` and Okta's `X-Rate-Limit-Reset` as a server may send them: the wait the SDK
/// takes from them is bounded.
pub fn retry_headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once('\n').unwrap_or((&text, ""));
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(a) {
        headers.insert(header::RETRY_AFTER, v.clone());
        check_wait(&headers);
        headers.remove(header::RETRY_AFTER);
        headers.insert("x-rate-limit-reset", v);
        check_wait(&headers);
    }
    if let (Ok(a), Ok(b)) = (HeaderValue::from_str(a), HeaderValue::from_str(b)) {
        headers.insert(header::RETRY_AFTER, a);
        headers.insert("x-rate-limit-reset", b);
        check_wait(&headers);
    }
}

fn check_wait(headers: &HeaderMap) {
    if let Some(w) = crate::http::retry_after(headers) {
        assert!(w <= Duration::from_secs(24 * 3600), "a wait of {w:?}");
        // What the retry loops do with it.
        let _ = std::time::Instant::now().elapsed() + w;
        let _ = Duration::from_secs(60) + w;
    }
}
