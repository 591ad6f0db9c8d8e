//! Keys for Backend Services: generation and the public JWKS to register with a server.
use crate::error::Result;
use cibmtr_fhir::Secret;

/// A key pair: the private key (PKCS#8 PEM, redacted in `toString()`), its `kid` (RFC 7638
/// thumbprint), the algorithm, and the public JWK Set (JSON) to register with the server.
#[derive(Debug, Clone, uniffi::Record)]
pub struct GeneratedKey {
    pub private_pem: Secret,
    pub key_id: String,
    pub algorithm: String,
    pub jwks: String,
}

/// Generates a key pair: RSA 2048 for `RS384`/`RS256`, P-384 for `ES384`.
#[uniffi::export(default(algorithm = "RS384"))]
pub fn generate_key(algorithm: String) -> Result<GeneratedKey> {
    let k = cibmtr_fhir::auth::generate_key(algorithm.parse()?)?;
    Ok(GeneratedKey {
        private_pem: k.private_pem,
        key_id: k.key_id,
        algorithm: k.algorithm.as_str().to_owned(),
        jwks: k.jwks.to_string(),
    })
}

/// The public JWK Set (JSON) of a private key given as PEM or private JWK; `kid` is the RFC 7638
/// thumbprint.
#[uniffi::export(default(algorithm = "RS384"))]
pub fn public_jwks(private_key: String, algorithm: String) -> Result<String> {
    Ok(cibmtr_fhir::auth::public_jwks(&private_key, algorithm.parse()?)?.to_string())
}
