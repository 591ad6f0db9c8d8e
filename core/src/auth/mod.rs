//! OAuth flows and the token cache they share.
//!
//! Each flow ([`PasswordGrant`], [`ClientCredentials`]) knows how to ask its token endpoint for a
//! token; the [`cache`] decides when to ask. Every flow object with the same token URL, client,
//! user, scopes *and* secret shares one cached token in the process (the cache key carries a keyed
//! hash of the secret, so a wrong password never receives a token minted with the right one).
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::http::HttpClient;
use crate::secret::Secret;

pub mod authorization_code;
pub mod backend_services;
pub mod cache;
pub mod client_credentials;
pub mod keys;
pub mod password;
pub mod store;

pub use authorization_code::{
    AuthorizationCode, AuthorizationCodeBuilder, RegisteredClient, register_client,
    register_public_client,
};
pub use backend_services::BackendServices;
pub use cache::{AccessToken, CacheStats, TokenProvider};
pub use client_credentials::{ClientAuthMethod, ClientCredentials};
pub use keys::{GeneratedKey, KeyAlgorithm, generate_key, jwk_thumbprint, public_jwks};
pub use password::PasswordGrant;
pub use store::{RedisStore, StoreKey, TokenStore};

/// Lifetime assumed when a token response gives neither `expires_in` nor a JWT `exp`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// The longest lifetime a token response is believed: a year.
const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// A token as the server issued it, with the absolute times the cache works from.
#[derive(Clone, Serialize, Deserialize)]
pub struct Token {
    pub access_token: Secret,
    /// When the token request was sent (lifetimes are measured from here, not from receipt).
    #[serde(with = "epoch_ms")]
    pub issued_at: SystemTime,
    #[serde(with = "epoch_ms")]
    pub expires_at: SystemTime,
    pub refresh_token: Option<Secret>,
    pub scope: Option<String>,
    /// The other top-level members of the token response (SMART launch context such as
    /// `patient`, `encounter`, `id_token`, `need_patient_banner`). Never holds the access or
    /// refresh token.
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl Token {
    pub fn lifetime(&self) -> Duration {
        self.expires_at
            .duration_since(self.issued_at)
            .unwrap_or_default()
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

mod epoch_ms {
    use super::*;
    pub fn serialize<S: serde::Serializer>(
        t: &SystemTime,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u64(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<SystemTime, D::Error> {
        Ok(UNIX_EPOCH + Duration::from_millis(u64::deserialize(d)?))
    }
}

/// What a flow sends to its token endpoint.
pub(crate) struct TokenRequest<'a> {
    pub url: &'a url::Url,
    pub form: Vec<(&'static str, String)>,
    /// HTTP Basic client authentication (id, secret), form-urlencoded first per RFC 6749 §2.3.1.
    pub basic: Option<(&'a str, &'a Secret)>,
}

#[derive(Deserialize)]
struct RawTokenResponse {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: Option<String>,
    error_description: Option<String>,
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
    #[serde(rename = "errorSummary")]
    error_summary: Option<String>,
}

/// The most 429 answers one token request waits out before reporting [`Error::RateLimited`].
const MAX_RATE_LIMITED_TRIES: u32 = 8;

/// Counts token requests as they go on the wire (retries included).
pub(crate) trait RequestCounter: Send + Sync {
    fn sent(&self);
}

/// Sends one token request, waiting out rate limits (within the configured bound) and retrying
/// 5xx answers and network errors a few times with jittered backoff. OAuth errors are final.
pub(crate) async fn exchange(
    http: &HttpClient,
    req: TokenRequest<'_>,
    counter: &dyn RequestCounter,
) -> Result<Token> {
    let cfg = http.config();
    let mut attempt = 0u32;
    let mut waited = Duration::ZERO;
    let mut rate_limited = 0u32;
    'attempts: loop {
        let mut rb = http
            .client(req.url.as_str())?
            .post(req.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&req.form);
        if let Some((id, secret)) = req.basic {
            let pair = format!("{}:{}", form_encode(id), form_encode(secret.expose()));
            let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
            rb = rb.header(reqwest::header::AUTHORIZATION, format!("Basic {b64}"));
        }
        let sent_at = crate::clock::now();
        counter.sent();
        let retryable: Error = match rb.send().await {
            Err(e) => Error::network(&e),
            Ok(resp) => 'answer: {
                let status = resp.status();
                let headers = resp.headers().clone();
                let body = match resp.bytes().await {
                    Ok(b) => b,
                    // Cut off on the way: as if the whole answer had been lost.
                    Err(e) => break 'answer Error::network(&e),
                };
                if status.is_success() {
                    match parse_token(&body, sent_at) {
                        Ok(token) => return Ok(token),
                        // A 200 that is no token response (cut-off JSON, a proxy's page):
                        // nothing usable arrived, so ask again as after a lost answer.
                        Err(e) => break 'answer e,
                    }
                }
                if status.as_u16() == 429 {
                    // A `Retry-After` of 0 or in the past must not become a tight loop: wait at
                    // least a growing floor, and give up after a bounded number of tries.
                    let floor = Duration::from_millis(100 << rate_limited.min(6));
                    let wait = crate::http::retry_after(&headers)
                        .unwrap_or(Duration::from_secs(1))
                        .max(floor);
                    rate_limited += 1;
                    if waited + wait > cfg.max_rate_limit_wait
                        || rate_limited > MAX_RATE_LIMITED_TRIES
                    {
                        return Err(Error::RateLimited {
                            retry_after: Some(wait),
                        });
                    }
                    tracing::warn!(
                        wait_ms = wait.as_millis() as u64,
                        "token endpoint rate limited; waiting"
                    );
                    tokio::time::sleep(wait).await;
                    waited += wait;
                    continue 'attempts;
                }
                if status.is_server_error() {
                    Error::Http {
                        status: status.as_u16(),
                        message: short_message(&body),
                        outcome: None,
                    }
                } else {
                    return Err(oauth_error(status.as_u16(), &body));
                }
            }
        };
        if attempt >= cfg.token_retries {
            return Err(retryable);
        }
        tracing::debug!(attempt, "token request failed ({retryable}); retrying");
        tokio::time::sleep(crate::http::backoff(attempt)).await;
        attempt += 1;
    }
}

/// RFC 6749 §2.3.1 form-urlencoding of a Basic client id or secret, with a space as `%20`
/// rather than `+`: both are form-urlencoded, but some servers decode Basic credentials with a
/// plain percent-decoder (authlib 1.9 refuses a secret with a space sent as `+`), and `%20`
/// means a space to every decoder. A `+` in the input is `%2B`, so every `+` here is a space.
fn form_encode(s: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
    encoded.replace('+', "%20")
}

pub(crate) fn parse_token(body: &[u8], sent_at: SystemTime) -> Result<Token> {
    let raw: RawTokenResponse = serde_json::from_slice(body).map_err(|_| Error::Network {
        message: "token endpoint answered with a body that is not a JSON token response".into(),
    })?;
    let mut extra: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).unwrap_or_default();
    for k in ["access_token", "refresh_token", "expires_in", "token_type"] {
        extra.remove(k);
    }
    let access = raw
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::Network {
            message: "token response has no access_token".into(),
        })?;
    let expires_in = raw.expires_in.as_ref().and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    });
    let expires_at = match expires_in {
        // A lifetime beyond any real token's (`18446744073709551615`) would overflow the clock.
        Some(secs) => sent_at
            .checked_add(Duration::from_secs(secs))
            .unwrap_or(sent_at + MAX_LIFETIME)
            .min(sent_at + MAX_LIFETIME),
        None => jwt_expiry(&access, sent_at).unwrap_or(sent_at + DEFAULT_LIFETIME),
    };
    Ok(Token {
        access_token: Secret::new(access),
        issued_at: sent_at,
        expires_at,
        refresh_token: raw.refresh_token.filter(|t| !t.is_empty()).map(Secret::new),
        scope: raw.scope,
        extra,
    })
}

/// When a JWT access token expires, from its claims, read without verifying (only to schedule a
/// refresh). With `iat` too, the lifetime `exp - iat` is counted from `sent_at`, so a clock that
/// differs from the server's (or has jumped) neither expires the token at once, which would ask
/// for a new one on every call, nor keeps it past its life; with `exp` alone, `exp` is used.
fn jwt_expiry(token: &str, sent_at: SystemTime) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = v.get("exp")?.as_u64()?;
    match v.get("iat").and_then(serde_json::Value::as_u64) {
        Some(iat) if iat < exp => Some(sent_at + Duration::from_secs(exp - iat).min(MAX_LIFETIME)),
        _ => UNIX_EPOCH
            .checked_add(Duration::from_secs(exp))
            .map(|e| e.min(sent_at + MAX_LIFETIME)),
    }
}

pub(crate) fn oauth_error(status: u16, body: &[u8]) -> Error {
    match serde_json::from_slice::<OAuthErrorBody>(body) {
        Ok(OAuthErrorBody {
            error: Some(error),
            error_description,
            ..
        }) => Error::Auth {
            error,
            description: error_description,
            status: Some(status),
        },
        Ok(OAuthErrorBody {
            error_code: Some(code),
            error_summary,
            ..
        }) => Error::Auth {
            error: code,
            description: error_summary,
            status: Some(status),
        },
        _ if status == 401 => Error::Auth {
            error: "invalid_client".into(),
            description: Some(short_message(body)),
            status: Some(status),
        },
        _ => Error::Http {
            status,
            message: short_message(body),
            outcome: None,
        },
    }
}

fn short_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    if t.is_empty() {
        return "empty response".into();
    }
    t.chars().take(200).collect()
}

/// Sorted, de-duplicated scopes, so `"b a"` and `"a  b"` share a cache entry.
pub(crate) fn normalise_scopes(scope: Option<&str>) -> String {
    let mut v: Vec<&str> = scope.unwrap_or("").split_whitespace().collect();
    v.sort_unstable();
    v.dedup();
    v.join(" ")
}

/// The endpoints a SMART server publishes at `{fhir_base}/.well-known/smart-configuration`.
pub(crate) struct SmartConfiguration {
    pub token_endpoint: (String, url::Url),
    pub authorization_endpoint: Option<url::Url>,
}

/// Fetches and checks `{fhir_base}/.well-known/smart-configuration` (both endpoints must pass
/// the transport-security rule, like any URL the caller gives).
pub(crate) async fn smart_configuration(
    http: &HttpClient,
    fhir_base: &url::Url,
) -> Result<SmartConfiguration> {
    let url = format!(
        "{}/.well-known/smart-configuration",
        fhir_base.as_str().trim_end_matches('/')
    );
    let resp = http
        .client(&url)?
        .get(&url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| Error::network(&e))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| Error::network(&e))?;
    if !status.is_success() {
        return Err(Error::Http {
            status: status.as_u16(),
            message: "SMART discovery (.well-known/smart-configuration) failed".into(),
            outcome: None,
        });
    }
    read_smart_configuration(http, &body)
}

/// The endpoints of a `.well-known/smart-configuration` document, each checked against the
/// transport-security rule.
pub(crate) fn read_smart_configuration(
    http: &HttpClient,
    body: &[u8],
) -> Result<SmartConfiguration> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| Error::Network {
        message: "smart-configuration is not JSON".into(),
    })?;
    let te = v
        .get("token_endpoint")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| Error::Network {
            message: "smart-configuration has no token_endpoint".into(),
        })?;
    let token_endpoint = (te.to_owned(), http.secure_url("token_url", te)?);
    let authorization_endpoint = match v
        .get("authorization_endpoint")
        .and_then(serde_json::Value::as_str)
    {
        Some(a) => Some(http.secure_url("authorize_url", a)?),
        None => None,
    };
    Ok(SmartConfiguration {
        token_endpoint,
        authorization_endpoint,
    })
}

#[cfg(test)]
mod tests {
    /// A JWT whose life is known from `iat` and `exp` lives that long from when it was asked
    /// for, whatever this machine's clock says about the server's: two hours ahead, it once
    /// counted as expired on arrival and every call asked for a new token.
    #[test]
    fn a_jwt_lifetime_is_counted_from_the_request_not_the_servers_clock() {
        use base64::Engine;
        use std::time::{Duration, UNIX_EPOCH};
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let server_now = 1_700_000_000u64;
        let jwt = format!(
            "{}.{}.sig",
            b64(serde_json::json!({"alg": "RS256"})),
            b64(serde_json::json!({"iat": server_now, "exp": server_now + 300}))
        );
        let body = serde_json::json!({"access_token": jwt, "token_type": "Bearer"}).to_string();
        let ahead = UNIX_EPOCH + Duration::from_secs(server_now + 7200);
        let t = super::parse_token(body.as_bytes(), ahead).unwrap();
        assert_eq!(t.expires_at, ahead + Duration::from_secs(300));
        // `exp` alone is taken as it is.
        let jwt = format!(
            "{}.{}.sig",
            b64(serde_json::json!({"alg": "RS256"})),
            b64(serde_json::json!({"exp": server_now + 300}))
        );
        let body = serde_json::json!({"access_token": jwt}).to_string();
        let t = super::parse_token(body.as_bytes(), ahead).unwrap();
        assert_eq!(
            t.expires_at,
            UNIX_EPOCH + Duration::from_secs(server_now + 300)
        );
    }

    #[test]
    fn basic_credentials_are_form_encoded_with_spaces_as_percent_20() {
        assert_eq!(super::form_encode("a b+c%d:e/f"), "a%20b%2Bc%25d%3Ae%2Ff");
        assert_eq!(super::form_encode("plain-Secret_1.~"), "plain-Secret_1.%7E");
    }
}
