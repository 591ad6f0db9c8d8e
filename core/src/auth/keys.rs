//! Asymmetric keys for SMART Backend Services (`private_key_jwt`): generation, loading
//! (PKCS#8, PKCS#1, SEC1 PEM or a private JWK) and the public JWKS with RFC 7638 key ids.
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::secret::Secret;

/// JWS algorithm of the client assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyAlgorithm {
    #[default]
    RS384,
    ES384,
    RS256,
}

impl KeyAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::RS384 => "RS384",
            KeyAlgorithm::ES384 => "ES384",
            KeyAlgorithm::RS256 => "RS256",
        }
    }
    fn is_rsa(self) -> bool {
        !matches!(self, KeyAlgorithm::ES384)
    }
    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            KeyAlgorithm::RS384 => jsonwebtoken::Algorithm::RS384,
            KeyAlgorithm::ES384 => jsonwebtoken::Algorithm::ES384,
            KeyAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "RS384" => Ok(KeyAlgorithm::RS384),
            "ES384" => Ok(KeyAlgorithm::ES384),
            "RS256" => Ok(KeyAlgorithm::RS256),
            _ => Err(Error::validation(
                "algorithm",
                "must be \"RS384\", \"ES384\" or \"RS256\"",
            )),
        }
    }
}

/// A freshly generated key pair: the private key as PKCS#8 PEM and the public JWKS to register.
#[derive(Clone)]
pub struct GeneratedKey {
    pub private_pem: Secret,
    pub key_id: String,
    pub algorithm: KeyAlgorithm,
    pub jwks: Value,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("private_pem", &"[REDACTED]")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .field("jwks", &self.jwks)
            .finish()
    }
}

/// A loaded private key.
pub(crate) enum PrivateKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    Ec(p384::SecretKey),
}

fn bad_key(rule: &str) -> Error {
    Error::validation("private_key", rule)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn jwk_field(v: &Value, name: &str) -> Result<Vec<u8>> {
    let s = v
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| bad_key("JWK is missing a required member"))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| bad_key("JWK member is not base64url"))
}

impl PrivateKey {
    /// Parses PKCS#8, PKCS#1 (`RSA PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) PEM or a private JWK.
    pub(crate) fn parse(input: &str) -> Result<PrivateKey> {
        use p384::pkcs8::DecodePrivateKey as _;
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        let t = input.trim();
        if t.starts_with('{') {
            let v: Value = serde_json::from_str(t)
                .map_err(|_| bad_key("is neither PEM nor a JSON Web Key"))?;
            return match v.get("kty").and_then(Value::as_str) {
                Some("RSA") => {
                    let n = rsa::BigUint::from_bytes_be(&jwk_field(&v, "n")?);
                    let e = rsa::BigUint::from_bytes_be(&jwk_field(&v, "e")?);
                    let d = rsa::BigUint::from_bytes_be(&jwk_field(&v, "d")?);
                    let mut primes = Vec::new();
                    if v.get("p").is_some() && v.get("q").is_some() {
                        primes.push(rsa::BigUint::from_bytes_be(&jwk_field(&v, "p")?));
                        primes.push(rsa::BigUint::from_bytes_be(&jwk_field(&v, "q")?));
                    }
                    // rsa 0.9 panics (an unsigned underflow while recovering the primes) on a
                    // zero `d` or `n`: such a JWK is refused here first.
                    let one = rsa::BigUint::from(1u8);
                    if [&n, &e, &d].into_iter().chain(&primes).any(|x| *x <= one) {
                        return Err(bad_key("is not a valid RSA JWK"));
                    }
                    let mut k = rsa::RsaPrivateKey::from_components(n, e, d, primes)
                        .map_err(|_| bad_key("is not a valid RSA JWK"))?;
                    k.precompute()
                        .map_err(|_| bad_key("is not a valid RSA JWK"))?;
                    Ok(PrivateKey::Rsa(Box::new(k)))
                }
                Some("EC") => {
                    if v.get("crv").and_then(Value::as_str) != Some("P-384") {
                        return Err(bad_key("EC JWK must use crv P-384"));
                    }
                    let d = jwk_field(&v, "d")?;
                    p384::SecretKey::from_slice(&d)
                        .map(PrivateKey::Ec)
                        .map_err(|_| bad_key("is not a valid EC JWK"))
                }
                _ => Err(bad_key("JWK kty must be RSA or EC")),
            };
        }
        if t.contains("-----BEGIN RSA PRIVATE KEY-----") {
            return rsa::RsaPrivateKey::from_pkcs1_pem(t)
                .map(|k| PrivateKey::Rsa(Box::new(k)))
                .map_err(|_| bad_key("is not a valid PKCS#1 RSA key"));
        }
        if t.contains("-----BEGIN EC PRIVATE KEY-----") {
            return p384::SecretKey::from_sec1_pem(t)
                .map(PrivateKey::Ec)
                .map_err(|_| bad_key("is not a valid SEC1 P-384 key"));
        }
        if t.contains("-----BEGIN PRIVATE KEY-----") {
            if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(t) {
                return Ok(PrivateKey::Rsa(Box::new(k)));
            }
            if let Ok(k) = p384::SecretKey::from_pkcs8_pem(t) {
                return Ok(PrivateKey::Ec(k));
            }
            return Err(bad_key("PKCS#8 key is neither RSA nor EC P-384"));
        }
        Err(bad_key(
            "must be a PEM private key (PKCS#8, PKCS#1, SEC1) or a private JWK",
        ))
    }

    pub(crate) fn check_alg(&self, alg: KeyAlgorithm) -> Result<()> {
        match (self, alg.is_rsa()) {
            (PrivateKey::Rsa(_), true) | (PrivateKey::Ec(_), false) => Ok(()),
            (PrivateKey::Rsa(_), false) => Err(Error::validation(
                "algorithm",
                "ES384 needs an EC P-384 key, but the key is RSA",
            )),
            (PrivateKey::Ec(_), true) => Err(Error::validation(
                "algorithm",
                format!("{alg} needs an RSA key, but the key is EC P-384"),
            )),
        }
    }

    /// The public JWK's required members (RFC 7638), unordered.
    fn public_members(&self) -> Vec<(&'static str, String)> {
        match self {
            PrivateKey::Rsa(k) => vec![
                ("e", b64(&k.e().to_bytes_be())),
                ("kty", "RSA".into()),
                ("n", b64(&k.n().to_bytes_be())),
            ],
            PrivateKey::Ec(k) => {
                use p384::elliptic_curve::sec1::ToEncodedPoint as _;
                let p = k.public_key().to_encoded_point(false);
                vec![
                    ("crv", "P-384".into()),
                    ("kty", "EC".into()),
                    ("x", b64(p.x().expect("uncompressed point"))),
                    ("y", b64(p.y().expect("uncompressed point"))),
                ]
            }
        }
    }

    pub(crate) fn thumbprint(&self) -> String {
        let mut members = self.public_members();
        members.sort_by_key(|(k, _)| *k);
        thumbprint_of(&members)
    }

    pub(crate) fn encoding_key(&self) -> Result<jsonwebtoken::EncodingKey> {
        match self {
            PrivateKey::Rsa(k) => {
                use rsa::pkcs1::EncodeRsaPrivateKey as _;
                let der = k.to_pkcs1_der().map_err(|_| bad_key("cannot be encoded"))?;
                Ok(jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()))
            }
            PrivateKey::Ec(k) => {
                use p384::pkcs8::EncodePrivateKey as _;
                let der = k.to_pkcs8_der().map_err(|_| bad_key("cannot be encoded"))?;
                Ok(jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()))
            }
        }
    }

    fn jwks(&self, alg: KeyAlgorithm, kid: &str) -> Value {
        let mut jwk = serde_json::Map::new();
        for (k, v) in self.public_members() {
            jwk.insert(k.into(), Value::String(v));
        }
        jwk.insert("kid".into(), json!(kid));
        jwk.insert("alg".into(), json!(alg.as_str()));
        jwk.insert("use".into(), json!("sig"));
        json!({ "keys": [Value::Object(jwk)] })
    }
}

fn thumbprint_of(sorted: &[(&str, String)]) -> String {
    let body: Vec<String> = sorted
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::from(*k), Value::from(v.as_str())))
        .collect();
    let canonical = format!("{{{}}}", body.join(","));
    b64(&Sha256::digest(canonical.as_bytes()))
}

/// The RFC 7638 SHA-256 thumbprint of a public (or private) JWK, base64url without padding.
pub fn jwk_thumbprint(jwk: &Value) -> Result<String> {
    let names: &[&str] = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => &["e", "kty", "n"],
        Some("EC") => &["crv", "kty", "x", "y"],
        _ => return Err(Error::validation("jwk", "kty must be RSA or EC")),
    };
    let mut members = Vec::new();
    for n in names {
        let v = jwk
            .get(*n)
            .and_then(Value::as_str)
            .ok_or_else(|| Error::validation("jwk", format!("missing member {n}")))?;
        members.push((*n, v.to_owned()));
    }
    Ok(thumbprint_of(&members))
}

/// The public JWKS (`{"keys":[{kty,kid,alg,use,n,e | crv,x,y}]}`) of a private key given as PEM
/// or private JWK; `kid` is the RFC 7638 thumbprint.
pub fn public_jwks(private_pem_or_jwk: &str, alg: KeyAlgorithm) -> Result<Value> {
    let key = PrivateKey::parse(private_pem_or_jwk)?;
    key.check_alg(alg)?;
    Ok(key.jwks(alg, &key.thumbprint()))
}

/// Generates a key pair: RSA 2048 for `RS384`/`RS256`, P-384 for `ES384`; PKCS#8 PEM.
pub fn generate_key(alg: KeyAlgorithm) -> Result<GeneratedKey> {
    use p384::pkcs8::{EncodePrivateKey as _, LineEnding};
    let mut rng = rand::rngs::OsRng;
    let (key, pem) = if alg.is_rsa() {
        let k = rsa::RsaPrivateKey::new(&mut rng, 2048)
            .map_err(|e| Error::config(format!("RSA key generation failed: {e}")))?;
        let pem = rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&k, LineEnding::LF)
            .map_err(|_| Error::config("cannot encode the RSA key"))?;
        (PrivateKey::Rsa(Box::new(k)), pem.to_string())
    } else {
        let k = p384::SecretKey::random(&mut rng);
        let pem = k
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| Error::config("cannot encode the EC key"))?;
        (PrivateKey::Ec(k), pem.to_string())
    };
    let key_id = key.thumbprint();
    let jwks = key.jwks(alg, &key_id);
    Ok(GeneratedKey {
        private_pem: Secret::new(pem),
        key_id,
        algorithm: alg,
        jwks,
    })
}
