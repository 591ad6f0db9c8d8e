//! A string that never shows itself: `Debug` and `Display` print `[REDACTED]`.
use std::fmt;
use std::sync::Arc;

/// A secret string (client secret, password, token). Cheap to clone; zeroised on drop through
/// `secrecy`; shown only through [`Secret::expose`].
#[derive(Clone)]
pub struct Secret(Arc<secrecy::SecretString>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Arc::new(secrecy::SecretString::from(value.into())))
    }
    /// The secret value. Call it only where the value goes on the wire.
    pub fn expose(&self) -> &str {
        use secrecy::ExposeSecret;
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}
impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}
impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}
impl PartialEq for Secret {
    fn eq(&self, o: &Self) -> bool {
        self.expose() == o.expose()
    }
}
impl Eq for Secret {}
