//! The deployment's token-store key: 32 secret bytes every process of a fleet shares. Two keys are
//! derived from it (HMAC-SHA256 with distinct labels), so neither use weakens the other:
//!
//! * the **naming key** makes the entry's name in the shared store, a keyed hash of the cache key
//!   (URL, client, user, scopes and secrets): whoever reads the store's key list learns nothing
//!   and cannot test a guessed password against it;
//! * the **sealing key** encrypts each entry with AES-256-GCM (random 96-bit nonce, the entry's
//!   name as associated data, so an entry copied under another name does not open).
use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::secret::Secret;

/// The environment variable holding the token-store key (32 random bytes, base64).
pub const STORE_KEY_ENV: &str = "CIBMTR_FHIR_STORE_KEY";
/// The environment variable naming a file that holds the token-store key (base64), as a secret
/// manager or a Kubernetes secret volume provides it.
pub const STORE_KEY_FILE_ENV: &str = "CIBMTR_FHIR_STORE_KEY_FILE";

/// Version tag of a sealed entry: `CF1` ‖ nonce (12 bytes) ‖ AES-256-GCM ciphertext and tag.
const SEALED_V1: &[u8; 3] = b"CF1";

/// The key that seals tokens in a shared [`TokenStore`](super::TokenStore) and names their
/// entries. Every process sharing a store must use the same key; a process with another key
/// neither reads nor overwrites their entries (it has entries of its own).
///
/// `Debug` shows only a short key id (a hash), never the key.
#[derive(Clone)]
pub struct StoreKey(Arc<SecretBox<[u8; 32]>>);

impl StoreKey {
    /// A key from its base64 form (standard or URL-safe alphabet, padded or not): exactly 32
    /// bytes once decoded.
    pub fn from_base64(text: &str) -> Result<StoreKey> {
        let t = text.trim();
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        let bytes = engines
            .iter()
            .find_map(|e| e.decode(t).ok())
            .ok_or_else(|| Error::validation("store_key", "must be base64"))?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            Error::validation(
                "store_key",
                format!("must decode to 32 bytes (got {})", bytes.len()),
            )
        })?;
        Ok(StoreKey(Arc::new(SecretBox::new(Box::new(key)))))
    }

    /// A fresh random key.
    pub fn generate() -> StoreKey {
        StoreKey(Arc::new(SecretBox::new(Box::new(rand::random()))))
    }

    /// The key in standard base64, to put in [`STORE_KEY_ENV`] or a secret manager.
    pub fn to_base64(&self) -> Secret {
        Secret::new(base64::engine::general_purpose::STANDARD.encode(self.0.expose_secret()))
    }

    /// The key the deployment supplies: `$CIBMTR_FHIR_STORE_KEY`, else the file named by
    /// `$CIBMTR_FHIR_STORE_KEY_FILE`. A configuration error saying how to make one if neither is
    /// set; the error never shows the value.
    pub fn from_env() -> Result<StoreKey> {
        if let Ok(v) = std::env::var(STORE_KEY_ENV) {
            return StoreKey::from_base64(&v).map_err(|e| {
                Error::config(format!(
                    "${STORE_KEY_ENV} is not a token-store key: {}",
                    rule_of(&e)
                ))
            });
        }
        if let Some(path) = std::env::var_os(STORE_KEY_FILE_ENV) {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::config(format!(
                    "cannot read the token-store key file ${STORE_KEY_FILE_ENV} ({}): {}",
                    std::path::Path::new(&path).display(),
                    e.kind()
                ))
            })?;
            return StoreKey::from_base64(&text).map_err(|e| {
                Error::config(format!(
                    "the file named by ${STORE_KEY_FILE_ENV} does not hold a token-store key: {}",
                    rule_of(&e)
                ))
            });
        }
        Err(Error::config(format!(
            "a shared token store encrypts tokens with a key of the deployment: set \
             ${STORE_KEY_ENV} to 32 random bytes in base64 (`cibmtr-fhir keys store-key` or \
             `openssl rand -base64 32` makes one), or ${STORE_KEY_FILE_ENV} to a file holding it; \
             every process sharing the store needs the same key"
        )))
    }

    /// A short public id of the key (8 hex digits of a keyed hash), for logs and `Debug`.
    pub fn id(&self) -> String {
        super::super::cache::hex(&self.derive("cibmtr-fhir/token-store/key-id/v1")[..4])
    }

    fn derive(&self, label: &str) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose_secret()).expect("any key length");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The key that names entries (see the module documentation).
    pub(crate) fn naming_key(&self) -> [u8; 32] {
        self.derive("cibmtr-fhir/token-store/entry-name/v1")
    }

    pub(crate) fn sealer(&self) -> Sealer {
        let k = self.derive("cibmtr-fhir/token-store/aes-256-gcm/v1");
        Sealer(Aes256Gcm::new_from_slice(&k).expect("32-byte key"))
    }
}

fn rule_of(e: &Error) -> String {
    match e {
        Error::Validation { rule, .. } => rule.clone(),
        other => other.to_string(),
    }
}

impl PartialEq for StoreKey {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.expose_secret(), other.0.expose_secret());
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}
impl Eq for StoreKey {}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey(id {})", self.id())
    }
}

/// AES-256-GCM under the derived sealing key.
pub(crate) struct Sealer(Aes256Gcm);

impl Sealer {
    /// `CF1` ‖ nonce ‖ ciphertext, bound to `name` (the entry's name) as associated data.
    pub(crate) fn seal(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; 12] = rand::random();
        let ct = self
            .0
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: name.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a small message cannot fail");
        let mut out = Vec::with_capacity(SEALED_V1.len() + nonce.len() + ct.len());
        out.extend_from_slice(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// The plaintext, or `None` if `sealed` was not sealed under this key for `name` (another
    /// key, another entry, tampered, or not ours at all).
    pub(crate) fn open(
        &self,
        name: &str,
        sealed: &[u8],
    ) -> Option<secrecy::zeroize::Zeroizing<Vec<u8>>> {
        let rest = sealed.strip_prefix(SEALED_V1.as_slice())?;
        if rest.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = rest.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        self.0
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: name.as_bytes(),
                },
            )
            .ok()
            .map(secrecy::zeroize::Zeroizing::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_forms_and_length() {
        let k = StoreKey::generate();
        let b = k.to_base64();
        assert_eq!(StoreKey::from_base64(b.expose()).unwrap(), k);
        let url = b.expose().replace('+', "-").replace('/', "_");
        assert_eq!(StoreKey::from_base64(url.trim_end_matches('=')).unwrap(), k);
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let e = StoreKey::from_base64(&short).unwrap_err();
        assert!(e.to_string().contains("32 bytes"), "{e}");
        assert!(StoreKey::from_base64("not base64 at all!").is_err());
    }

    #[test]
    fn sealed_entries_open_only_under_the_same_key_and_name() {
        let k = StoreKey::generate();
        let s = k.sealer();
        let sealed = s.seal("entry-a", b"the access token");
        assert!(!sealed.windows(6).any(|w| w == b"access"));
        assert_eq!(
            &s.open("entry-a", &sealed).unwrap()[..],
            b"the access token"
        );
        assert!(s.open("entry-b", &sealed).is_none(), "bound to its name");
        assert!(
            StoreKey::generate()
                .sealer()
                .open("entry-a", &sealed)
                .is_none()
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(s.open("entry-a", &tampered).is_none());
        assert!(s.open("entry-a", b"CF1").is_none());
        // Two seals of the same text differ (fresh nonce).
        assert_ne!(s.seal("entry-a", b"x"), s.seal("entry-a", b"x"));
    }

    #[test]
    fn debug_shows_an_id_not_the_key() {
        let k = StoreKey::generate();
        let shown = format!("{k:?}");
        assert!(!shown.contains(k.to_base64().expose()));
        assert!(shown.contains(&k.id()));
        assert_ne!(
            k.naming_key(),
            k.derive("cibmtr-fhir/token-store/aes-256-gcm/v1")
        );
    }
}
