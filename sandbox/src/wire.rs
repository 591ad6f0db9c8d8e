//! What a leak test looks for: every secret and every piece of patient data that crossed the
//! sandbox's wire, recorded as it passes so that a test in any language can scan its own output
//! for it ([`crate::Sandbox::secrets_seen`]).
//!
//! Recorded from requests: HTTP Basic passwords (client secrets), bearer tokens, and the form
//! fields `password`, `client_secret`, `client_assertion`, `code`, `code_verifier` and
//! `refresh_token` on the authorization routes; the demographics of a CRID registration.
//! Recorded from responses: `access_token`, `refresh_token` and `client_secret` in JSON bodies,
//! and the `code` of an authorization redirect. Only the authorization routes and the CRID route
//! are inspected; FHIR traffic passes untouched (and unbuffered).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use url::form_urlencoded;

use crate::{Inner, app_launch, cibmtr, smart};

/// Values shorter than this are not recorded: a gender code or a two-letter scope would match
/// innocent text. Every real secret here is longer.
const MIN_LEN: usize = 6;

/// Largest body inspected (token requests and CRID registrations are small).
const MAX_BODY: usize = 1 << 20;

/// Form fields whose values are secrets.
const SECRET_FIELDS: [&str; 6] = [
    "password",
    "client_secret",
    "client_assertion",
    "code",
    "code_verifier",
    "refresh_token",
];

/// JSON response members whose values are secrets.
const SECRET_MEMBERS: [&str; 3] = ["access_token", "refresh_token", "client_secret"];

/// The recorded values.
#[derive(Default)]
pub(crate) struct Seen(std::sync::Mutex<BTreeSet<String>>);

impl Seen {
    pub(crate) fn add(&self, value: &str) {
        if value.len() >= MIN_LEN {
            self.0.lock().unwrap().insert(value.to_string());
        }
    }

    /// A multi-line secret (a PEM) whole and each of its lines, so that a piece of it is found.
    pub(crate) fn add_with_lines(&self, value: &str) {
        self.add(value);
        for line in value.lines().filter(|l| !l.starts_with("-----")) {
            self.add(line.trim());
        }
    }

    pub(crate) fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().cloned().collect()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Authorization,
    Crid,
}

fn kind_of(path: &str) -> Option<Kind> {
    if [
        crate::OKTA_PATH,
        crate::MSK_PATH,
        smart::TOKEN_PATH,
        app_launch::AUTHORIZE_PATH,
        app_launch::REGISTER_PATH,
        "/protected",
    ]
    .contains(&path)
    {
        return Some(Kind::Authorization);
    }
    let rest = path.strip_prefix(cibmtr::PATH)?;
    let rest = rest.strip_prefix("/r3").unwrap_or(rest);
    (rest.trim_end_matches('/') == "/CRID").then_some(Kind::Crid)
}

/// The middleware: records what passes on the inspected routes, changes nothing.
pub(crate) async fn record(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    let Some(kind) = kind_of(req.uri().path()) else {
        return next.run(req).await;
    };
    let seen = &inner.seen;
    if let Some(auth) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(b) = auth.strip_prefix("Basic ") {
            if let Ok(raw) = STANDARD.decode(b.trim()) {
                let raw = String::from_utf8_lossy(&raw);
                if let Some((_, secret)) = raw.split_once(':') {
                    seen.add(secret);
                    seen.add(&percent_decode(secret));
                }
            }
        } else if let Some(t) = auth.strip_prefix("Bearer ") {
            seen.add(t.trim());
        }
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return axum::http::StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    match kind {
        Kind::Authorization => {
            for (k, v) in form_urlencoded::parse(&body) {
                if SECRET_FIELDS.contains(&k.as_ref()) {
                    seen.add(&v);
                }
            }
            if let Some(q) = parts.uri.query() {
                for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                    if SECRET_FIELDS.contains(&k.as_ref()) {
                        seen.add(&v);
                    }
                }
            }
        }
        Kind::Crid => {
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                record_strings(seen, v.get("patient").unwrap_or(&v));
            }
        }
    }
    let resp = next.run(Request::from_parts(parts, Body::from(body))).await;
    if kind != Kind::Authorization {
        return resp;
    }
    if let Some(loc) = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        && let Some((_, q)) = loc.split_once('?')
    {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            if k == "code" {
                seen.add(&v);
            }
        }
    }
    let (parts, body) = resp.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) {
        for m in SECRET_MEMBERS {
            if let Some(Value::String(s)) = map.get(m) {
                seen.add(s);
            }
        }
    }
    Response::from_parts(parts, Body::from(body))
}

/// Every string in a CRID registration's patient (names, birth date, SSN…), except the gender.
fn record_strings(seen: &Seen, v: &Value) {
    match v {
        Value::String(s) => seen.add(s.trim()),
        Value::Array(a) => a.iter().for_each(|x| record_strings(seen, x)),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| k.as_str() != "gender")
            .for_each(|(_, x)| record_strings(seen, x)),
        _ => {}
    }
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
