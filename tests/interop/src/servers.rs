//! Starting the independent authorization servers on 127.0.0.1 (port 0), and the small pieces a
//! test needs around them: a loopback JWKS host for `jwks_uri` clients and a browser (cookie
//! jar, manual redirects) that submits oidc-provider's development login and consent forms.
//!
//! * [`OidcProvider`]: `tests/interop/node/oidc-server.mjs` (npm `oidc-provider`).
//! * [`PasswordServer`]: `tests/interop/authlib/password_server.py` (PyPI `authlib` + Flask).
//!
//! Each server is a child process that prints one JSON line when it listens and exits when its
//! stdin closes; [`Peer`]'s `Drop` closes stdin and then kills it, so a server never outlives
//! its test (nor the test process, which holds the only write end of that pipe). A server that
//! cannot start is a failure that names the server and quotes its stderr, never a skip.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a server may take to print its ready line (node + oidc-provider take about half a
/// second on an idle machine; this one is shared).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server process and the JSON line it printed when it was ready.
pub struct Peer {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    ready: Value,
    stderr: std::fs::File,
}

impl Peer {
    /// Starts `cmd` and waits for its first stdout line, a JSON object. Errors name the server
    /// and quote what it wrote to stderr.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Peer, String> {
        let stderr = tempfile::tempfile().map_err(|e| format!("{name}: no temp file: {e}"))?;
        let err_handle = stderr
            .try_clone()
            .map_err(|e| format!("{name}: cannot share the stderr file: {e}"))?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err_handle))
            .spawn()
            .map_err(|e| format!("{name} could not be started ({cmd:?}): {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep draining, so a chatty server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut peer = Peer {
            name: name.to_owned(),
            child,
            stdin,
            ready: Value::Null,
            stderr,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(Ok(line))) => break line,
                Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = peer.child.wait().ok();
                    return Err(format!(
                        "{name} exited before it was ready ({status:?}); stderr:\n{}",
                        peer.stderr()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = peer.child.try_wait() {
                        return Err(format!(
                            "{name} exited before it was ready ({status}); stderr:\n{}",
                            peer.stderr()
                        ));
                    }
                    if Instant::now() > deadline {
                        return Err(format!(
                            "{name} printed no ready line within {START_TIMEOUT:?}; stderr:\n{}",
                            peer.stderr()
                        ));
                    }
                }
            }
        };
        peer.ready = serde_json::from_str(&line).map_err(|e| {
            format!(
                "{name}: the ready line is not JSON ({e}): {line}; stderr:\n{}",
                peer.stderr()
            )
        })?;
        Ok(peer)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The JSON line the server printed when it was ready.
    pub fn ready(&self) -> &Value {
        &self.ready
    }

    /// A string member of the ready line (panics naming the server if it is missing).
    pub fn field(&self, key: &str) -> String {
        self.ready
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{}: the ready line has no {key}: {}", self.name, self.ready))
            .to_owned()
    }

    /// What the server wrote to stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        let mut f = match self.stderr.try_clone() {
            Ok(f) => f,
            Err(e) => return format!("(stderr unreadable: {e})"),
        };
        let mut s = String::new();
        let _ = f.rewind();
        let _ = f.read_to_string(&mut s);
        s
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Closing stdin asks the server to exit; a server that does not is killed.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// oidc-provider (npm, a certified OpenID Connect server) as `tests/interop/node/oidc-server.mjs`
/// configures it: client credentials, `private_key_jwt` (RS256, RS384, ES384), authorization
/// code with PKCE and rotating refresh tokens, dynamic registration, introspection.
pub struct OidcProvider {
    pub peer: Peer,
    pub issuer: String,
    pub token_endpoint: String,
    pub authorization_endpoint: String,
    pub registration_endpoint: String,
    pub introspection_endpoint: String,
    pub userinfo_endpoint: String,
    /// A confidential client (`client_secret_basic`) the test uses to ask the server whether a
    /// token is live (RFC 7662 introspection).
    introspector: (String, String),
}

/// The resource-server client every [`OidcProvider`] registers for introspection.
const INTROSPECTOR_ID: &str = "interop-resource-server";

impl OidcProvider {
    /// Starts oidc-provider with `clients` (oidc-provider client metadata) registered. `ttl`
    /// overrides token lifetimes (`{"AccessToken": 5}`), or `Value::Null`.
    pub fn start(clients: Vec<Value>, ttl: Value) -> OidcProvider {
        let introspector_secret = format!("rs-{}", random_hex(16));
        let mut all = clients;
        all.push(serde_json::json!({
            "client_id": INTROSPECTOR_ID,
            "client_secret": introspector_secret,
            "grant_types": ["client_credentials"],
            "redirect_uris": [],
            "response_types": [],
            "token_endpoint_auth_method": "client_secret_basic",
        }));
        let mut config = serde_json::json!({ "clients": all });
        if !ttl.is_null() {
            config["ttl"] = ttl;
        }
        let dir = crate::node_dir();
        let mut cmd = Command::new("node");
        cmd.current_dir(&dir)
            .arg(dir.join("oidc-server.mjs"))
            .arg(config.to_string());
        let peer = Peer::spawn("oidc-provider", cmd).unwrap_or_else(|e| panic!("{e}"));
        OidcProvider {
            issuer: peer.field("issuer"),
            token_endpoint: peer.field("token_endpoint"),
            authorization_endpoint: peer.field("authorization_endpoint"),
            registration_endpoint: peer.field("registration_endpoint"),
            introspection_endpoint: peer.field("introspection_endpoint"),
            userinfo_endpoint: peer.field("userinfo_endpoint"),
            introspector: (INTROSPECTOR_ID.to_owned(), introspector_secret),
            peer,
        }
    }

    /// The server's RFC 7662 answer for `token` (`{"active": true, "client_id", "scope", ...}`
    /// or `{"active": false}`).
    pub async fn introspect(&self, token: &str) -> Value {
        let resp = reqwest::Client::new()
            .post(&self.introspection_endpoint)
            .basic_auth(&self.introspector.0, Some(&self.introspector.1))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap_or_else(|e| panic!("oidc-provider introspection unreachable: {e}"));
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "oidc-provider introspection answered {status}: {body}; stderr:\n{}",
            self.peer.stderr()
        );
        body
    }

    /// Whether the server still considers `token` live.
    pub async fn is_active(&self, token: &str) -> bool {
        self.introspect(token).await["active"] == Value::Bool(true)
    }

    /// Sends a raw token request (form body, optional raw `Authorization` header) and returns
    /// the status and JSON body, for the checks the SDK must not be able to make.
    pub async fn raw_token_request(
        &self,
        form: &[(&str, &str)],
        authorization: Option<&str>,
    ) -> (u16, Value) {
        raw_post(&self.token_endpoint, form, authorization).await
    }
}

/// The Okta-like password server of `tests/interop/authlib/password_server.py` (authlib +
/// Flask): HTTP Basic client authentication only, `grant_type=password`, short Bearer tokens,
/// a protected resource, and counters of what it saw.
pub struct PasswordServer {
    pub peer: Peer,
    pub token_endpoint: String,
    pub protected_url: String,
    pub stats_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    pub password: String,
    pub scope: String,
}

impl PasswordServer {
    /// Starts the server with tokens of `lifetime` seconds and fresh random credentials; the
    /// client secret carries `%`, `:`, `+` and a space, which HTTP Basic must form-encode (authlib
    /// percent-decodes Basic credentials without turning `+` into a space, so the SDK sends a
    /// space as `%20`).
    pub fn start(lifetime: u64) -> PasswordServer {
        let client_id = format!("okta-like-{}", random_hex(4));
        let client_secret = format!("s%3A: {}+/=", random_hex(12));
        let username = "recipient.coordinator@center.example".to_owned();
        let password = format!("pw:{}%+", random_hex(8));
        let scope = "cibmtr_fhir".to_owned();
        let config = serde_json::json!({
            "client_id": client_id,
            "client_secret": client_secret,
            "username": username,
            "password": password,
            "lifetime": lifetime,
            "scope": scope,
        });
        let python = crate::python();
        let mut cmd = Command::new(&python);
        cmd.arg(crate::interop_dir().join("authlib/password_server.py"))
            .arg(config.to_string());
        let peer = Peer::spawn("authlib password server", cmd).unwrap_or_else(|e| {
            panic!(
                "{e}\n(interpreter {}; scripts/test-interop.sh installs authlib there)",
                python.display()
            )
        });
        PasswordServer {
            token_endpoint: peer.field("token_endpoint"),
            protected_url: peer.field("protected_url"),
            stats_url: peer.field("stats_url"),
            peer,
            client_id,
            client_secret,
            username,
            password,
            scope,
        }
    }

    /// What the server counted: `token_requests`, `tokens_issued`, `auth_methods`, `errors`,
    /// `protected_ok`, `protected_refused`.
    pub async fn stats(&self) -> Value {
        reqwest::get(&self.stats_url)
            .await
            .unwrap_or_else(|e| panic!("authlib password server /stats unreachable: {e}"))
            .json()
            .await
            .expect("authlib /stats is JSON")
    }

    /// Token requests the server received.
    pub async fn token_requests(&self) -> u64 {
        self.stats().await["token_requests"].as_u64().unwrap_or(0)
    }

    /// The protected resource's status for `Bearer token`.
    pub async fn protected_status(&self, token: &str) -> u16 {
        reqwest::Client::new()
            .get(&self.protected_url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("authlib protected resource unreachable: {e}"))
            .status()
            .as_u16()
    }

    pub async fn raw_token_request(
        &self,
        form: &[(&str, &str)],
        authorization: Option<&str>,
    ) -> (u16, Value) {
        raw_post(&self.token_endpoint, form, authorization).await
    }
}

async fn raw_post(url: &str, form: &[(&str, &str)], authorization: Option<&str>) -> (u16, Value) {
    let mut rb = reqwest::Client::new().post(url).form(form);
    if let Some(a) = authorization {
        rb = rb.header(reqwest::header::AUTHORIZATION, a);
    }
    let resp = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("token endpoint {url} unreachable: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A loopback HTTP host for a client's JWKS (`jwks_uri`), counting the fetches. Lives on the
/// test's runtime and stops with it (or when dropped).
pub struct JwksServer {
    pub url: String,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(jwks: Value) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the JWKS");
        let url = format!(
            "http://{}/jwks.json",
            listener.local_addr().expect("local address")
        );
        let body = Arc::new(jwks.to_string());
        let fetches = Arc::new(AtomicUsize::new(0));
        let count = fetches.clone();
        let task = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let body = body.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                        body.len(),
                        body
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        JwksServer { url, fetches, task }
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Plays the user's browser against oidc-provider's development interactions: follows redirects
/// by hand with a cookie jar, signs in with any login (`prompt=login`), consents
/// (`prompt=consent`), and stops at the redirect to the app's `redirect_uri`.
pub struct Browser {
    client: reqwest::Client,
    /// (name, path) -> value
    jar: BTreeMap<(String, String), String>,
    /// Every URL visited, for failure messages.
    pub trail: Vec<String>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("reqwest client"),
            jar: BTreeMap::new(),
            trail: Vec::new(),
        }
    }

    /// Opens `authorization_url` and goes through login and consent as `login`; returns the URL
    /// the server finally redirects to (under `redirect_uri`: code, state and iss).
    pub async fn authorize(
        &mut self,
        authorization_url: &str,
        redirect_uri: &str,
        login: &str,
    ) -> Result<String, String> {
        let mut next = Request::Get(authorization_url.to_owned());
        for _ in 0..16 {
            let (url, resp) = self.send(next).await?;
            let status = resp.status().as_u16();
            if (300..400).contains(&status) {
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("{status} without Location at {url}"))?;
                let target = url
                    .join(location)
                    .map_err(|e| format!("bad Location {location}: {e}"))?
                    .to_string();
                if target.starts_with(redirect_uri) {
                    self.trail.push(redirect_uri.to_owned());
                    return Ok(target);
                }
                next = Request::Get(target);
                continue;
            }
            let body = resp.text().await.unwrap_or_default();
            if status != 200 {
                return Err(format!(
                    "{status} at {url}: {}",
                    body.chars().take(300).collect::<String>()
                ));
            }
            // A development interaction page: one form, whose hidden `prompt` says which.
            let action = attribute_after(&body, "<form", "action")
                .ok_or_else(|| format!("no form at {url}"))?;
            let prompt = attribute_after(&body, "name=\"prompt\"", "value")
                .ok_or_else(|| format!("no prompt in the form at {url}"))?;
            let target = url
                .join(&html_unescape(&action))
                .map_err(|e| format!("bad form action {action}: {e}"))?
                .to_string();
            let form = match prompt.as_str() {
                "login" => vec![
                    ("prompt".to_owned(), "login".to_owned()),
                    ("login".to_owned(), login.to_owned()),
                    ("password".to_owned(), "any password".to_owned()),
                ],
                "consent" => vec![("prompt".to_owned(), "consent".to_owned())],
                other => return Err(format!("unexpected prompt {other} at {url}")),
            };
            next = Request::Post(target, form);
        }
        Err("more than 16 steps without reaching the redirect_uri".into())
    }

    async fn send(&mut self, req: Request) -> Result<(url::Url, reqwest::Response), String> {
        let (url, rb) = match req {
            Request::Get(u) => {
                let url = url::Url::parse(&u).map_err(|e| format!("bad URL {u}: {e}"))?;
                (url.clone(), self.client.get(url))
            }
            Request::Post(u, form) => {
                let url = url::Url::parse(&u).map_err(|e| format!("bad URL {u}: {e}"))?;
                (url.clone(), self.client.post(url).form(&form))
            }
        };
        self.trail.push(url.path().to_owned());
        let cookies = self.cookie_header(url.path());
        let rb = if cookies.is_empty() {
            rb
        } else {
            rb.header(reqwest::header::COOKIE, cookies)
        };
        let resp = rb.send().await.map_err(|e| format!("{url}: {e}"))?;
        for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            if let Ok(s) = v.to_str() {
                self.store_cookie(s, url.path());
            }
        }
        Ok((url, resp))
    }

    fn store_cookie(&mut self, header: &str, request_path: &str) {
        let mut parts = header.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
            return;
        };
        let mut path = match request_path.rfind('/') {
            Some(0) | None => "/".to_owned(),
            Some(i) => request_path[..i].to_owned(),
        };
        let mut expired = value.is_empty();
        for attr in parts {
            let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
            match k.to_ascii_lowercase().as_str() {
                "path" if v.starts_with('/') => path = v.to_owned(),
                "max-age" if v.trim() == "0" || v.trim().starts_with('-') => expired = true,
                "expires" if v.contains("1970") => expired = true,
                _ => {}
            }
        }
        let key = (name.to_owned(), path);
        if expired {
            self.jar.remove(&key);
        } else {
            self.jar.insert(key, value.to_owned());
        }
    }

    fn cookie_header(&self, request_path: &str) -> String {
        self.jar
            .iter()
            .filter(|((_, path), _)| {
                request_path == path
                    || (request_path.starts_with(path.as_str())
                        && (path.ends_with('/')
                            || request_path.as_bytes().get(path.len()) == Some(&b'/')))
            })
            .map(|((name, _), value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

enum Request {
    Get(String),
    Post(String, Vec<(String, String)>),
}

/// The value of `attr="..."` after the first `anchor` in `html`.
fn attribute_after(html: &str, anchor: &str, attr: &str) -> Option<String> {
    let rest = &html[html.find(anchor)?..];
    let needle = format!("{attr}=\"");
    let start = rest.find(&needle)? + needle.len();
    let end = rest[start..].find('"')?;
    Some(rest[start..start + end].to_owned())
}

fn html_unescape(s: &str) -> String {
    s.replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// `n` random bytes as hex, from the OS (for per-test client ids and secrets).
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
