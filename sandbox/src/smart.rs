//! SMART Backend Services emulation: discovery, `private_key_jwt` token endpoint, client
//! registration, and the sandbox's own ES384 client key.
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    Inner, Route, apply_fault, epoch_secs, form, invalid_client, json_response, oauth_error,
};

pub(crate) const TOKEN_PATH: &str = "/auth/token";
pub(crate) const DISCOVERY_PATH: &str = "/fhir/.well-known/smart-configuration";
pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Longest assertion lifetime accepted (SMART: 5 minutes), plus clock skew.
const MAX_ASSERTION_LIFETIME: u64 = 300;
const SKEW: u64 = 5;

/// Credentials of the pre-registered SMART Backend Services client.
#[derive(Clone, serde::Serialize)]
pub struct BackendCredentials {
    /// Token endpoint URL (also the required `aud` of assertions).
    pub token_url: String,
    /// FHIR base URL (discovery at `{fhir_base}/.well-known/smart-configuration`).
    pub fhir_base: String,
    /// Registered client id.
    pub client_id: String,
    /// The client's ES384 private key, PKCS#8 PEM.
    pub private_key_pem: String,
    /// `kid` of the registered public key (RFC 7638 thumbprint).
    pub key_id: String,
    /// Scope to request.
    pub scope: String,
}

impl fmt::Debug for BackendCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendCredentials")
            .field("token_url", &self.token_url)
            .field("fhir_base", &self.fhir_base)
            .field("client_id", &self.client_id)
            .field("private_key_pem", &"[REDACTED]")
            .field("key_id", &self.key_id)
            .field("scope", &self.scope)
            .finish()
    }
}

/// State of the SMART server.
#[derive(Default)]
pub(crate) struct SmartState {
    pub(crate) clients: HashMap<String, Value>,
    pub(crate) jtis: HashSet<String>,
}

/// Generates an ES384 key: (PKCS#8 PEM, public JWKS, kid).
pub(crate) fn generate_es384() -> (String, Value, String) {
    use p384::elliptic_curve::sec1::ToEncodedPoint;
    use p384::pkcs8::{EncodePrivateKey, LineEnding};
    let key = p384::SecretKey::random(&mut rand::rngs::OsRng);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .expect("PKCS#8 encoding")
        .to_string();
    let point = key.public_key().to_encoded_point(false);
    let x = URL_SAFE_NO_PAD.encode(point.x().expect("uncompressed"));
    let y = URL_SAFE_NO_PAD.encode(point.y().expect("uncompressed"));
    let canonical = format!(r#"{{"crv":"P-384","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
    let jwks = json!({"keys": [{"kty": "EC", "kid": kid, "alg": "ES384", "use": "sig", "crv": "P-384", "x": x, "y": y}]});
    (pem, jwks, kid)
}

pub(crate) fn validate_jwks(jwks: &Value) -> Result<(), String> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("jwks must be an object with a \"keys\" array")?;
    if keys.is_empty() {
        return Err("jwks has no keys".into());
    }
    Ok(())
}

pub(crate) async fn discovery(State(inner): State<Arc<Inner>>) -> Response {
    let base = &inner.base;
    json_response(
        StatusCode::OK,
        json!({
            "token_endpoint": format!("{base}{TOKEN_PATH}"),
            "authorization_endpoint": format!("{base}{}", crate::app_launch::AUTHORIZE_PATH),
            "registration_endpoint": format!("{base}{}", crate::app_launch::REGISTER_PATH),
            "code_challenge_methods_supported": ["S256"],
            "response_types_supported": ["code"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384", "RS256"],
            "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
            "scopes_supported": ["system/*.read", "launch/patient", "patient/*.read", "offline_access", "openid", "fhirUser"],
            "capabilities": ["client-confidential-asymmetric", "launch-standalone", "client-public", "client-confidential-symmetric",
                             "context-standalone-patient", "permission-offline", "permission-patient", "sso-openid-connect"],
        }),
    )
}

pub(crate) async fn admin_register(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    };
    let Some(client_id) = req
        .get("client_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id is required",
        );
    };
    let Some(jwks) = req.get("jwks") else {
        let msg = if req.get("jwks_uri").is_some() {
            "jwks_uri is not supported by the sandbox; send the key set inline as \"jwks\""
        } else {
            "jwks is required"
        };
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", msg);
    };
    if let Err(e) = validate_jwks(jwks) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e);
    }
    inner
        .smart
        .lock()
        .unwrap()
        .clients
        .insert(client_id.to_string(), jwks.clone());
    json_response(StatusCode::CREATED, json!({"client_id": client_id}))
}

/// `iss` of a JWT read without verification (only for counting).
fn unverified_iss(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

fn decoding_key(
    jwk: &Value,
    alg: jsonwebtoken::Algorithm,
) -> Result<jsonwebtoken::DecodingKey, &'static str> {
    use jsonwebtoken::Algorithm::*;
    let s = |k: &str| {
        jwk.get(k)
            .and_then(Value::as_str)
            .ok_or("registered key is incomplete")
    };
    match (jwk.get("kty").and_then(Value::as_str), alg) {
        (Some("RSA"), RS384 | RS256) => {
            jsonwebtoken::DecodingKey::from_rsa_components(s("n")?, s("e")?)
                .map_err(|_| "registered RSA key is invalid")
        }
        (Some("EC"), ES384) => {
            if jwk.get("crv").and_then(Value::as_str) != Some("P-384") {
                return Err("registered EC key is not P-384");
            }
            jsonwebtoken::DecodingKey::from_ec_components(s("x")?, s("y")?)
                .map_err(|_| "registered EC key is invalid")
        }
        _ => Err("key type does not fit the algorithm"),
    }
}

pub(crate) async fn token(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = form(&body);
    if matches!(
        params.get("grant_type").map(String::as_str),
        Some("authorization_code" | "refresh_token")
    ) {
        return crate::app_launch::token(inner, headers, params).await;
    }
    let assertion = params.get("client_assertion").cloned().unwrap_or_default();
    let counted = unverified_iss(&assertion).unwrap_or_else(|| "unknown".to_string());
    inner.count(&counted);
    if let Some(resp) = apply_fault(&inner, Route::SmartToken).await {
        return resp;
    }
    if params.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    if params.get("client_assertion_type").map(String::as_str) != Some(ASSERTION_TYPE) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        );
    }
    if assertion.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_assertion is required",
        );
    }
    let header = match jsonwebtoken::decode_header(&assertion) {
        Ok(h) => h,
        Err(_) => return invalid_client("client_assertion is not a valid JWT"),
    };
    use jsonwebtoken::Algorithm::*;
    if !matches!(header.alg, RS384 | ES384 | RS256) {
        return invalid_client("unsupported signing algorithm (use RS384, ES384 or RS256)");
    }
    let Some(kid) = header.kid.clone() else {
        return invalid_client("JWT header has no kid");
    };
    let Some(client_id) = unverified_iss(&assertion) else {
        return invalid_client("JWT has no iss");
    };
    let jwk = {
        let smart = inner.smart.lock().unwrap();
        let Some(jwks) = smart.clients.get(&client_id) else {
            return invalid_client("unknown client");
        };
        let found = jwks
            .get("keys")
            .and_then(Value::as_array)
            .and_then(|keys| {
                keys.iter()
                    .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid.as_str()))
            })
            .cloned();
        match found {
            Some(k) => k,
            None => return invalid_client("no registered key matches the kid"),
        }
    };
    let key = match decoding_key(&jwk, header.alg) {
        Ok(k) => k,
        Err(e) => return invalid_client(e),
    };
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::new();
    let claims: Value = match jsonwebtoken::decode::<Value>(&assertion, &key, &validation) {
        Ok(d) => d.claims,
        Err(_) => return invalid_client("client_assertion signature is invalid"),
    };
    let str_claim = |k: &str| claims.get(k).and_then(Value::as_str);
    if str_claim("iss") != Some(client_id.as_str()) || str_claim("sub") != Some(client_id.as_str())
    {
        return invalid_client("iss and sub must both equal the client_id");
    }
    let token_url = format!("{}{TOKEN_PATH}", inner.base);
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => *a == token_url,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(token_url.as_str())),
        _ => false,
    };
    if !aud_ok {
        return invalid_client("aud must be the token endpoint URL");
    }
    let now = epoch_secs();
    let Some(exp) = claims.get("exp").and_then(Value::as_u64) else {
        return invalid_client("exp is required");
    };
    if exp + SKEW <= now {
        return invalid_client("client_assertion has expired");
    }
    if exp > now + MAX_ASSERTION_LIFETIME + SKEW {
        return invalid_client("exp is more than 5 minutes in the future");
    }
    let Some(jti) = str_claim("jti").filter(|j| !j.is_empty()) else {
        return invalid_client("jti is required");
    };
    if !inner.smart.lock().unwrap().jtis.insert(jti.to_string()) {
        return invalid_client("jti replayed");
    }
    let scope = params.get("scope").cloned().unwrap_or_default();
    if scope.split_whitespace().next().is_none()
        || !scope.split_whitespace().all(|s| s.starts_with("system/"))
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope must be one or more system/ scopes",
        );
    }
    let ttl = inner.config.backend_token_ttl;
    let token = inner.issue(&client_id, &scope, ttl);
    json_response(
        StatusCode::OK,
        json!({"access_token": token, "token_type": "bearer", "expires_in": ttl.as_secs(), "scope": scope}),
    )
    .into_response()
}
