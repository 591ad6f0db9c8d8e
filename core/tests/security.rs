//! Security properties of issue 9 that no other test file already pins down (see RELIABILITY.md
//! for the ones covered elsewhere):
//!
//! * no bearer token or client credential follows a redirect, to another host or the same one;
//! * SMART discovery cannot send the credentials over plain http to another host;
//! * the token file is replaced atomically (a reader never sees half a file), leaves no temp
//!   file behind, and a token file other users can access is refused with a clear error;
//! * every login uses a fresh `state` and PKCE S256 challenge, and a redirect is accepted once;
//! * every client assertion has its own `jti`, the token URL as `aud` and expires within
//!   5 minutes;
//! * the Patient that goes over the wire carries the CRID and the centre's label and nothing
//!   the caller gave for the CRID registration.
//!
//! Servers that must be seen byte for byte are a small recording HTTP/1.1 server here.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cibmtr_fhir::auth::{
    AuthorizationCode, BackendServices, ClientCredentials, KeyAlgorithm, PasswordGrant, TokenStore,
    generate_key,
};
use cibmtr_fhir::cibmtr::{CibmtrClient, Demographics};
use cibmtr_fhir::fhir::FhirClient;
use cibmtr_fhir::http::{HttpClient, HttpConfig};
use cibmtr_fhir::{Error, ErrorKind};
use cibmtr_fhir_sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// A recording server
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
}

type Answer = (u16, Vec<(&'static str, String)>, String);

/// An HTTP/1.1 server on loopback that records every request and answers with `answer`.
struct Recorder {
    base: String,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Recorder {
    async fn start(answer: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (seen, answer) = (s.clone(), answer.clone());
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut sock).await else {
                        return;
                    };
                    let (status, headers, body) = answer(&req);
                    seen.lock().unwrap().push(req);
                    let mut head = format!("HTTP/1.1 {status} X\r\n");
                    for (k, v) in headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str(&format!(
                        "content-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    ));
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                });
            }
        });
        Recorder { base, seen }
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

fn json_answer(status: u16, v: Value) -> Answer {
    (
        status,
        vec![("content-type", "application/json".to_owned())],
        v.to_string(),
    )
}

fn token_answer() -> Answer {
    json_answer(
        200,
        json!({"access_token": "tok-0123456789abcdef", "token_type": "Bearer", "expires_in": 300}),
    )
}

// ---------------------------------------------------------------------------------------------
// Redirects and discovery
// ---------------------------------------------------------------------------------------------

/// A configured proxy carries plain http to an allowed host: the client for plain http, which
/// loads no root certificates, honours it as the one for https does. The proxy sees the
/// absolute URL, and the host itself (which does not exist) is never looked up.
#[tokio::test]
async fn a_configured_proxy_carries_plain_http_requests() {
    let proxy = Recorder::start(|_| token_answer()).await;
    let http = HttpClient::new(HttpConfig {
        proxy: Some(proxy.base.clone()),
        allow_http_hosts: vec!["auth.hospital.invalid".into()],
        token_retries: 0,
        ..Default::default()
    })
    .unwrap();
    let auth = ClientCredentials::builder(
        "http://auth.hospital.invalid/oauth2/token",
        "id",
        "not-a-real-secret",
    )
    .http(http)
    .build()
    .unwrap();
    assert_eq!(auth.token().await.unwrap().secret(), "tok-0123456789abcdef");
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("POST", "http://auth.hospital.invalid/oauth2/token")
    );
}

/// A FHIR server that redirects every request — to another host, and to another path on itself
/// — gets the bearer token once per request and the other host never sees a request; the
/// redirect is reported as an HTTP error, never followed.
#[tokio::test]
async fn a_redirect_is_never_followed_with_the_bearer_token() {
    let elsewhere = Recorder::start(|_| json_answer(200, json!({"resourceType": "Bundle"}))).await;
    let target = format!("{}/fhir/Observation?stolen=1", elsewhere.base);
    for status in [301u16, 302, 303, 307, 308] {
        let t = target.clone();
        let fhir_server = Recorder::start(move |req| {
            let to = if req.target.contains("same") {
                "/fhir/Observation?again=1".to_owned()
            } else {
                t.clone()
            };
            (status, vec![("location", to)], String::new())
        })
        .await;
        let tokens = Recorder::start(|_| token_answer()).await;
        let auth = PasswordGrant::builder(
            format!("{}/token", tokens.base),
            "client",
            "secret",
            "user",
            "password",
        )
        .build()
        .unwrap();
        let fhir = FhirClient::builder(format!("{}/fhir", fhir_server.base))
            .auth(&auth)
            .build()
            .unwrap();
        for path in ["Observation", "same"] {
            let e = fhir.search_page(path, &[]).await.unwrap_err();
            assert!(
                matches!(e, Error::Http { status: s, .. } if s == status),
                "{status}: {e:?}"
            );
        }
        let e = fhir
            .create(&json!({"resourceType": "Observation"}))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Http, "{e:?}");
        let seen = fhir_server.requests();
        assert_eq!(seen.len(), 3, "{status}: one request each, none repeated");
        assert!(seen.iter().all(|r| r.header("authorization").is_some()));
    }
    assert!(
        elsewhere.requests().is_empty(),
        "the other host got nothing"
    );

    // A token endpoint that redirects does not get the credentials sent on either.
    let t = target.clone();
    let tokens =
        Recorder::start(move |_| (307, vec![("location", t.clone())], String::new())).await;
    let auth = PasswordGrant::builder(
        format!("{}/token", tokens.base),
        "client",
        "secret",
        "user",
        "password",
    )
    .build()
    .unwrap();
    let e = auth.token().await.unwrap_err();
    assert!(matches!(e, Error::Http { status: 307, .. }), "{e:?}");
    assert!(elsewhere.requests().is_empty());
}

/// A SMART configuration naming a token endpoint over plain http on another host is refused
/// before any credential is sent; the same document on loopback is used.
#[tokio::test]
async fn discovery_cannot_downgrade_the_token_endpoint_to_plain_http() {
    let key = generate_key(KeyAlgorithm::ES384).unwrap();
    let discovery = Recorder::start(|req| {
        let host = if req.target.contains("remote") {
            "http://ehr.example.org".to_owned()
        } else {
            "http://127.0.0.1:9".to_owned()
        };
        json_answer(200, json!({"token_endpoint": format!("{host}/token")}))
    })
    .await;
    let auth = BackendServices::builder("client", key.private_pem.clone())
        .algorithm(KeyAlgorithm::ES384)
        .fhir_base(format!("{}/remote/fhir", discovery.base))
        .build()
        .unwrap();
    let e = auth.token().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e:?}");
    assert!(e.to_string().contains("ehr.example.org"), "{e}");
    assert_eq!(discovery.requests().len(), 1, "only the discovery document");

    // On loopback the endpoint is accepted (and, being closed, fails as a network error).
    let local = BackendServices::builder("client2", key.private_pem.clone())
        .algorithm(KeyAlgorithm::ES384)
        .fhir_base(format!("{}/local/fhir", discovery.base))
        .build()
        .unwrap();
    assert_eq!(local.token().await.unwrap_err().kind(), ErrorKind::Network);
    // A CIBMTR client cannot be pointed at plain http on another host either.
    let okta = PasswordGrant::builder("https://okta.example.org/token", "c", "s", "u", "p")
        .build()
        .unwrap();
    let e = CibmtrClient::builder("12345", &okta)
        .base_url("http://api.example.org/cibmtr/v1")
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
}

// ---------------------------------------------------------------------------------------------
// The token file
// ---------------------------------------------------------------------------------------------

fn okta(sb: &Sandbox, store: TokenStore) -> Result<PasswordGrant, Error> {
    let o = &sb.credentials.okta;
    PasswordGrant::builder(
        &o.token_url,
        &o.client_id,
        o.client_secret.as_str(),
        &o.username,
        o.password.as_str(),
    )
    .scope(&o.scope)
    .token_store(store)
    .build()
}

/// The file is rewritten on every new token; a reader polling it meanwhile always finds whole
/// JSON (written to a temp file, then renamed), the file stays 0600, and no temp file is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_file_is_replaced_atomically_and_stays_private() {
    let sb = Sandbox::start(SandboxConfig {
        okta_rate_per_second: 10_000,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let auth = okta(&sb, TokenStore::file(&path)).unwrap();
    auth.token().await.unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (path, done) = (path.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let bytes = std::fs::read(&path).expect("the file is always there");
                let v: Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("a torn read ({e}): {} bytes", bytes.len()));
                assert!(v["entries"].is_object());
                reads += 1;
            }
            reads
        })
    };
    for _ in 0..40 {
        auth.invalidate();
        auth.token().await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let reads = reader.join().unwrap();
    assert!(reads > 10, "the reader kept up: {reads} reads");
    assert_eq!(sb.token_requests(&sb.credentials.okta.client_id), 41);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "tokens.json" && n != "tokens.json.lock")
        .collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

/// A token file other users can read or write is refused with an error that says why and what
/// to do, when the flow is built and when a later renewal finds it so; nothing is sent.
#[cfg(unix)]
#[tokio::test]
async fn a_token_file_other_users_can_access_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660, 0o666] {
        let path = dir.path().join(format!("tokens-{mode:o}.json"));
        std::fs::write(&path, "{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = okta(&sb, TokenStore::file(&path)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("{mode:o}")) && msg.contains("chmod 600"),
            "{msg}"
        );
    }
    // Made readable by others after it was created: the next renewal refuses it.
    let path = dir.path().join("tokens.json");
    let auth = okta(&sb, TokenStore::file(&path)).unwrap();
    auth.token().await.unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    auth.invalidate();
    let e = auth.token().await.unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
    assert_eq!(sb.token_requests(&sb.credentials.okta.client_id), 1);
    // 0600 (and stricter) is fine.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    auth.token().await.unwrap();
}

/// A token file another user owns is refused even when it is 0600: that user could have planted
/// the tokens in it, or read them. As root, a file is given to `nobody`; otherwise a root-owned
/// file of the system stands in (only its metadata is read).
#[cfg(unix)]
#[tokio::test]
async fn a_token_file_another_user_owns_is_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let me = std::fs::metadata(dir.path()).unwrap().uid();
    let path = if me == 0 {
        let p = dir.path().join("planted.json");
        std::fs::write(&p, "{}").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        p
    } else {
        std::path::PathBuf::from("/etc/passwd")
    };
    assert_ne!(std::fs::metadata(&path).unwrap().uid(), me);
    let e = okta(&sb, TokenStore::file(&path)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let msg = e.to_string();
    assert!(
        msg.contains("owned by another user") && msg.contains(&format!("uid {me}")),
        "{msg}"
    );
    assert_eq!(sb.token_requests_total(), 0);
}

// ---------------------------------------------------------------------------------------------
// state, PKCE and client assertions
// ---------------------------------------------------------------------------------------------

/// Every login gets its own `state` and S256 challenge; the redirect is accepted once; a
/// redirect without the state, or with another login's, is refused before any request.
#[tokio::test]
async fn state_and_pkce_are_fresh_for_every_login_and_checked() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let c = &sb.credentials.smart;
    let auth = AuthorizationCode::builder(&c.client_id, &c.redirect_uri, &c.scope)
        .client_secret(c.client_secret.as_str())
        .fhir_base(&c.fhir_base)
        .build()
        .unwrap();
    let (mut states, mut challenges) = (HashSet::new(), HashSet::new());
    for _ in 0..25 {
        let url = url::Url::parse(&auth.authorization_url().await.unwrap()).unwrap();
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["response_type"], "code");
        assert!(q["state"].len() >= 16, "{}", q["state"]);
        let ch = &q["code_challenge"];
        assert_eq!(ch.len(), 43, "a base64url SHA-256: {ch}");
        assert!(URL_SAFE_NO_PAD.decode(ch).is_ok());
        assert!(states.insert(q["state"].clone()) && challenges.insert(ch.clone()));
    }
    // The latest login is the one in progress: its redirect works, once.
    let url = auth.authorization_url().await.unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = client.get(&url).send().await.unwrap().headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    let token_requests = || sb.token_requests(&c.client_id);
    let before = token_requests();
    let no_state = redirect
        .split('&')
        .filter(|p| !p.starts_with("state="))
        .collect::<Vec<_>>()
        .join("&");
    for bad in [no_state, redirect.replace("state=", "state=x")] {
        let e = auth.complete(&bad).await.unwrap_err();
        assert!(
            matches!(&e, Error::Auth { error, .. } if error == "state_mismatch"),
            "{e:?}"
        );
    }
    assert_eq!(token_requests(), before, "refused before any request");
    auth.complete(&redirect).await.unwrap();
    let e = auth.complete(&redirect).await.unwrap_err();
    assert!(matches!(&e, Error::Auth { error, .. } if error == "state_mismatch"));
    assert_eq!(token_requests(), before + 1, "the code was exchanged once");
}

fn b64_json(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Each token request carries a newly signed assertion: its own `jti`, `iss` = `sub` = the
/// client, `aud` = the token URL, `exp` at most 5 minutes after `iat`, `kid` and `alg` in the
/// header.
#[tokio::test]
async fn every_client_assertion_has_its_own_jti_and_expires_within_five_minutes() {
    let tokens = Recorder::start(|_| token_answer()).await;
    let token_url = format!("{}/auth/token", tokens.base);
    for alg in [KeyAlgorithm::ES384, KeyAlgorithm::RS384] {
        let key = generate_key(alg).unwrap();
        let auth = BackendServices::builder("backend-client", key.private_pem.clone())
            .algorithm(alg)
            .token_url(&token_url)
            .build()
            .unwrap();
        for _ in 0..10 {
            auth.invalidate();
            auth.token().await.unwrap();
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut jtis = HashSet::new();
        let seen = tokens.requests();
        let mine: Vec<&Request> = seen.iter().rev().take(10).collect();
        for req in mine {
            let form = req.form();
            let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            assert_eq!(get("grant_type"), Some("client_credentials"));
            assert_eq!(
                get("client_assertion_type"),
                Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            );
            assert!(
                req.header("authorization").is_none(),
                "no secret besides the JWT"
            );
            let jwt: Vec<&str> = get("client_assertion").unwrap().split('.').collect();
            assert_eq!(jwt.len(), 3);
            let (header, claims) = (b64_json(jwt[0]), b64_json(jwt[1]));
            assert_eq!(header["alg"], alg.as_str());
            assert_eq!(header["kid"], key.key_id.as_str());
            assert_eq!(claims["iss"], "backend-client");
            assert_eq!(claims["sub"], "backend-client");
            assert_eq!(claims["aud"], token_url.as_str());
            let (iat, exp) = (
                claims["iat"].as_u64().unwrap(),
                claims["exp"].as_u64().unwrap(),
            );
            assert!(exp > now && exp - iat <= 300 && iat <= now + 5, "{claims}");
            let jti = claims["jti"].as_str().unwrap().to_owned();
            assert!(jti.len() >= 16, "{jti}");
            assert!(jtis.insert(jti), "a jti used twice");
        }
        assert_eq!(jtis.len(), 10);
    }
}

// ---------------------------------------------------------------------------------------------
// The Patient on the wire
// ---------------------------------------------------------------------------------------------

/// Every demographic field filled in for the CRID registration; the Patient POSTed afterwards
/// carries none of it: only the CRID identifier, the centre's security label and an empty
/// narrative. Seen on the wire, before any server-side redaction.
#[tokio::test]
async fn the_patient_on_the_wire_carries_only_the_crid_and_the_centre() {
    let crid = 9_007_199_254_740_993i64;
    let api = Recorder::start(
        move |req| match (req.method.as_str(), req.target.as_str()) {
            (_, t) if t.ends_with("/token") => token_answer(),
            ("PUT", _) => json_answer(
                200,
                json!({"perfectMatch": [{"matchType": "Perfect1", "crid": crid}]}),
            ),
            ("GET", _) => json_answer(200, json!({"resourceType": "Bundle", "type": "searchset"})),
            ("POST", _) => (
                201,
                vec![
                    ("content-type", "application/fhir+json".to_owned()),
                    ("location", "Patient/p-1/_history/1".to_owned()),
                ],
                String::new(),
            ),
            _ => json_answer(404, json!({})),
        },
    )
    .await;
    let auth = PasswordGrant::builder(format!("{}/token", api.base), "c", "s", "u", "p")
        .build()
        .unwrap();
    let client = CibmtrClient::builder("12345", &auth)
        .base_url(format!("{}/cibmtr/v1", api.base))
        .build()
        .unwrap();
    let d = Demographics {
        ssn: Some("123-45-6789".into()),
        mothers_maiden_name: Some("Quillfeather".into()),
        race: vec!["2106-3".into()],
        ethnicity: Some("2186-5".into()),
        nmdp_rid: Some(4_242_424),
        ebmt_cic: Some("EBMTCIC77".into()),
        ebmt_id: Some("EBMTID88".into()),
        cibmtr_team: Some(5151),
        cibmtr_iubmid: Some("IUBMID99".into()),
        ..Demographics::new("Zebediah", "Vanderhoosen", "1969-07-20", "M")
    };
    assert_eq!(client.register_crid(&d).await.unwrap(), crid);
    assert_eq!(client.ensure_patient(crid).await.unwrap(), "p-1");
    let seen = api.requests();
    let put = seen.iter().find(|r| r.method == "PUT").unwrap();
    let sent_to_crid = String::from_utf8_lossy(&put.body).into_owned();
    let posts: Vec<&Request> = seen
        .iter()
        .filter(|r| r.method == "POST" && r.target.contains("Patient"))
        .collect();
    assert_eq!(posts.len(), 1);
    let body = String::from_utf8_lossy(&posts[0].body).into_owned();
    let patient: Value = serde_json::from_str(&body).unwrap();
    for k in patient.as_object().unwrap().keys() {
        assert!(
            ["resourceType", "meta", "text", "identifier"].contains(&k.as_str()),
            "the Patient carries {k}"
        );
    }
    let ids = patient["identifier"].as_array().unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0]["value"], crid.to_string());
    for pii in [
        "Zebediah",
        "Vanderhoosen",
        "1969-07-20",
        "123-45-6789",
        "123456789",
        "Quillfeather",
        "2106-3",
        "2186-5",
        "4242424",
        "EBMTCIC77",
        "EBMTID88",
        "5151",
        "IUBMID99",
    ] {
        assert!(
            sent_to_crid.contains(pii) || pii == "123456789",
            "{pii} went to the CRID service"
        );
        assert!(!body.contains(pii), "{pii} is in the Patient: {body}");
    }
    assert!(!body.to_lowercase().contains("\"m\""), "no gender: {body}");
    // The searches that looked for the Patient carried no demographics either.
    for r in seen.iter().filter(|r| r.method == "GET") {
        for pii in ["Zebediah", "Vanderhoosen", "1969", "6789"] {
            assert!(!r.target.contains(pii), "{}", r.target);
        }
    }
    let _ = Duration::ZERO;
}
