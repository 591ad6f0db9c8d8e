//! SMART App Launch emulation: dynamic client registration (RFC 7591), an auto-approving
//! authorization endpoint (PKCE S256 required), and the `authorization_code` / `refresh_token`
//! grants of the shared token endpoint, with strict refresh-token rotation (a replayed rotated
//! refresh token revokes the whole grant, as oidc-provider does).
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    Inner, Route, apply_fault, basic_auth, invalid_client, json_response, oauth_error,
    random_string,
};

pub(crate) const AUTHORIZE_PATH: &str = "/auth/authorize";
pub(crate) const REGISTER_PATH: &str = "/auth/register";
/// Lifetime of an authorization code.
const CODE_TTL: Duration = Duration::from_secs(60);

/// The pre-registered confidential SMART App Launch client.
#[derive(Clone, serde::Serialize)]
pub struct SmartAppCredentials {
    pub fhir_base: String,
    pub authorize_url: String,
    pub token_url: String,
    pub registration_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub scope: String,
    /// Patient the sandbox's user launches with.
    pub patient: String,
}

impl fmt::Debug for SmartAppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmartAppCredentials")
            .field("fhir_base", &self.fhir_base)
            .field("authorize_url", &self.authorize_url)
            .field("token_url", &self.token_url)
            .field("registration_url", &self.registration_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("redirect_uri", &self.redirect_uri)
            .field("scope", &self.scope)
            .field("patient", &self.patient)
            .finish()
    }
}

pub(crate) struct AppClient {
    secret: Option<String>,
    redirect_uris: Vec<String>,
}

struct Code {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: String,
    created: Instant,
}

struct Refresh {
    client_id: String,
    scope: String,
    grant: u64,
    active: bool,
}

#[derive(Default)]
pub(crate) struct AppState {
    clients: HashMap<String, AppClient>,
    codes: HashMap<String, Code>,
    refresh: HashMap<String, Refresh>,
    /// Access tokens issued per grant, so revoking a grant kills them too.
    grant_tokens: HashMap<u64, Vec<String>>,
    next_grant: u64,
}

impl AppState {
    pub(crate) fn with_client(client_id: &str, secret: &str, redirect_uri: &str) -> AppState {
        let mut s = AppState::default();
        s.clients.insert(
            client_id.into(),
            AppClient {
                secret: Some(secret.into()),
                redirect_uris: vec![redirect_uri.into()],
            },
        );
        s
    }
}

pub(crate) async fn register(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                &e.to_string(),
            );
        }
    };
    let redirect_uris: Vec<String> = req
        .get("redirect_uris")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if redirect_uris.is_empty() || redirect_uris.iter().any(|u| url::Url::parse(u).is_err()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            "redirect_uris must be a non-empty array of URLs",
        );
    }
    let public = req
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
        == Some("none");
    let client_id = format!("app-{}", random_string(16));
    let secret = (!public).then(|| random_string(40));
    inner.app.lock().unwrap().clients.insert(
        client_id.clone(),
        AppClient {
            secret: secret.clone(),
            redirect_uris: redirect_uris.clone(),
        },
    );
    let mut out = json!({
        "client_id": client_id,
        "client_secret_expires_at": 0,
        "client_name": req.get("client_name").cloned().unwrap_or(Value::Null),
        "redirect_uris": redirect_uris,
        "scope": req.get("scope").cloned().unwrap_or(Value::Null),
        "token_endpoint_auth_method": if public { "none" } else { "client_secret_basic" },
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    });
    if let Some(s) = secret {
        out["client_secret"] = Value::String(s);
    }
    json_response(StatusCode::CREATED, out)
}

fn redirect(to: &str, params: &[(&str, &str)]) -> Response {
    let mut url = match url::Url::parse(to) {
        Ok(u) => u,
        Err(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "bad redirect_uri",
            );
        }
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}

pub(crate) async fn authorize(
    State(inner): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let client_id = get("client_id");
    let redirect_uri = get("redirect_uri");
    {
        let app = inner.app.lock().unwrap();
        let Some(client) = app.clients.get(client_id) else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "unknown client_id",
            );
        };
        if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "redirect_uri is not registered for this client",
            );
        }
    }
    let state = get("state");
    let err = |e: &str, d: &str| {
        let mut p = vec![("error", e), ("error_description", d)];
        if !state.is_empty() {
            p.push(("state", state));
        }
        redirect(redirect_uri, &p)
    };
    if get("response_type") != "code" {
        return err("unsupported_response_type", "response_type must be code");
    }
    if get("code_challenge_method") != "S256" || get("code_challenge").is_empty() {
        return err(
            "invalid_request",
            "PKCE is required: code_challenge with code_challenge_method=S256",
        );
    }
    if get("aud").trim_end_matches('/') != format!("{}/fhir", inner.base) {
        return err("invalid_request", "aud must be the FHIR base URL");
    }
    if inner.config.deny_authorization {
        return err("access_denied", "The user denied the request");
    }
    let code = random_string(32);
    inner.app.lock().unwrap().codes.insert(
        code.clone(),
        Code {
            client_id: client_id.into(),
            redirect_uri: redirect_uri.into(),
            challenge: get("code_challenge").into(),
            scope: get("scope").into(),
            created: Instant::now(),
        },
    );
    let mut p = vec![("code", code.as_str())];
    if !state.is_empty() {
        p.push(("state", state));
    }
    redirect(redirect_uri, &p)
}

fn invalid_grant(d: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", d)
}

fn fake_id_token(inner: &Inner, client_id: &str) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(json!({
        "iss": inner.base, "sub": "sandbox-user", "aud": client_id, "iat": crate::epoch_secs(),
        "exp": crate::epoch_secs() + 3600, "fhirUser": format!("{}/fhir/Practitioner/sandbox-user", inner.base),
    }).to_string());
    format!("{h}.{p}.")
}

/// The `authorization_code` and `refresh_token` grants of `POST /auth/token`.
pub(crate) async fn token(
    inner: Arc<Inner>,
    headers: HeaderMap,
    params: HashMap<String, String>,
) -> Response {
    let basic = basic_auth(&headers);
    let counted = match &basic {
        Some(Ok((id, _))) => id.clone(),
        _ => params
            .get("client_id")
            .cloned()
            .unwrap_or_else(|| "unknown".into()),
    };
    inner.count(&counted);
    if let Some(resp) = apply_fault(&inner, Route::SmartToken).await {
        return resp;
    }
    let mut app = inner.app.lock().unwrap();
    // Client authentication.
    let client_id = match basic {
        Some(Ok((id, secret))) => match app.clients.get(&id) {
            Some(AppClient {
                secret: Some(s), ..
            }) if *s == secret => id,
            _ => return invalid_client("Client authentication failed."),
        },
        Some(Err(())) => return invalid_client("Malformed Basic authorization."),
        None => {
            let id = params.get("client_id").cloned().unwrap_or_default();
            match app.clients.get(&id) {
                Some(AppClient { secret: None, .. }) => id,
                Some(_) => {
                    return invalid_client(
                        "Confidential clients must authenticate with HTTP Basic.",
                    );
                }
                None => return invalid_client("Client authentication failed."),
            }
        }
    };
    let p = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    let (scope, grant, new_refresh) = match p("grant_type") {
        "authorization_code" => {
            let Some(code) = app.codes.remove(p("code")) else {
                return invalid_grant("authorization code is invalid or already used");
            };
            if code.client_id != client_id {
                return invalid_grant("code was issued to another client");
            }
            if code.created.elapsed() > CODE_TTL {
                return invalid_grant("authorization code has expired");
            }
            if code.redirect_uri != p("redirect_uri") {
                return invalid_grant("redirect_uri does not match");
            }
            let verifier = p("code_verifier");
            if verifier.is_empty()
                || URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != code.challenge
            {
                return invalid_grant("PKCE verification failed");
            }
            app.next_grant += 1;
            let grant = app.next_grant;
            let rt = code
                .scope
                .split_whitespace()
                .any(|s| s == "offline_access" || s == "online_access")
                .then(|| random_string(48));
            (code.scope, grant, rt)
        }
        "refresh_token" => {
            let presented = p("refresh_token").to_string();
            let Some(r) = app.refresh.get(&presented) else {
                return invalid_grant("refresh token is invalid");
            };
            if r.client_id != client_id {
                return invalid_grant("refresh token was issued to another client");
            }
            let grant = r.grant;
            if !r.active {
                // Replay of a rotated token: revoke the whole grant.
                for r in app.refresh.values_mut().filter(|r| r.grant == grant) {
                    r.active = false;
                }
                let dead = app.grant_tokens.remove(&grant).unwrap_or_default();
                drop(app);
                let mut tokens = inner.tokens.lock().unwrap();
                for t in dead {
                    tokens.remove(&t);
                }
                return invalid_grant("refresh token was already used; the grant is revoked");
            }
            let scope = r.scope.clone();
            if inner.config.rotate_refresh_tokens {
                app.refresh.get_mut(&presented).expect("present").active = false;
                (scope, grant, Some(random_string(48)))
            } else {
                (scope, grant, None)
            }
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type is not supported",
            );
        }
    };
    if let Some(rt) = &new_refresh {
        app.refresh.insert(
            rt.clone(),
            Refresh {
                client_id: client_id.clone(),
                scope: scope.clone(),
                grant,
                active: true,
            },
        );
    }
    let ttl = inner.config.smart_token_ttl;
    let access = inner.issue(&client_id, &scope, ttl);
    app.grant_tokens
        .entry(grant)
        .or_default()
        .push(access.clone());
    drop(app);
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
        "scope": scope,
        "patient": inner.creds.smart.patient,
        "encounter": "smart-enc-1",
        "need_patient_banner": true,
        "smart_style_url": format!("{}/smart-style.json", inner.base),
    });
    if let Some(rt) = new_refresh {
        body["refresh_token"] = Value::String(rt);
    }
    if scope.split_whitespace().any(|s| s == "openid") {
        body["id_token"] = Value::String(fake_id_token(&inner, &client_id));
    }
    json_response(StatusCode::OK, body)
}
