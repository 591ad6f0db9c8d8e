//! Where cached tokens live: in memory (default), in a file shared by the processes of one host
//! and by notebook restarts, or in Redis shared by a fleet of hosts.
//!
//! Both shared stores follow one protocol, driven by the cache ([`super::cache`]): take the
//! entry's cross-process lock, read the entry (another process may have just refreshed it), ask
//! the token endpoint only if it must, write the entry, release the lock. So any number of
//! processes sharing a store make one token request per token lifetime between them.
//!
//! * **File**: written atomically (temp file + rename) with mode 0600; a sibling `.lock` file held
//!   with an OS lock makes processes take turns (the OS frees it when a holder dies). Entries are
//!   keyed by a keyed hash (with a salt kept in the file) of the flow, URL, client, user, scopes
//!   and secrets.
//! * **Redis** ([`RedisStore`]): see [`redis`] — entries named by a keyed hash under
//!   the deployment's [`StoreKey`], sealed with AES-256-GCM, expiring with the token; a lock with
//!   a timeout; falls back to the in-process cache while Redis is unreachable.
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Token;
use super::cache::CacheKey;
use crate::error::{Error, Result};

pub mod key;
pub mod redis;

pub use self::key::{STORE_KEY_ENV, STORE_KEY_FILE_ENV, StoreKey};
pub use self::redis::RedisStore;
use self::redis::{RedisBackend, RedisTurn};

/// Where a flow keeps its token.
///
/// Every language binding and the CLI take a *location* string and hand it to
/// [`TokenStore::parse`]: a `redis://` (or `rediss://`, `redis+unix://`, `valkey://`) URL is a
/// [`RedisStore`], anything else a file path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenStore {
    /// In this process only.
    #[default]
    Memory,
    /// In this JSON file (mode 0600), shared by every process of this host that names it.
    File(PathBuf),
    /// In Redis, shared by every process on every host that names it with the same key.
    Redis(RedisStore),
}

impl TokenStore {
    pub fn file(path: impl Into<PathBuf>) -> Self {
        TokenStore::File(path.into())
    }

    /// A Redis store at `url`, sealed with the key of `$CIBMTR_FHIR_STORE_KEY` (or of the file
    /// named by `$CIBMTR_FHIR_STORE_KEY_FILE`).
    pub fn redis(url: &str) -> Result<Self> {
        RedisStore::from_env(url).map(TokenStore::Redis)
    }

    /// The store a location string names: `redis://`, `rediss://`, `redis+unix://`, `valkey://`,
    /// `valkeys://` or `valkey+unix://` URLs are Redis stores (see [`RedisStore`] for the query
    /// parameters and [`StoreKey::from_env`] for the key); a `file://` URL or anything else is a
    /// file path. A URL of another scheme (`http://...`) or an empty location is a validation
    /// error naming `token_store`; a Redis URL without a key in the environment is a
    /// configuration error saying how to make one.
    pub fn parse(location: impl AsRef<OsStr>) -> Result<Self> {
        let os = location.as_ref();
        let Some(text) = os.to_str() else {
            // Not UTF-8: only a path can be.
            return Ok(TokenStore::File(PathBuf::from(os)));
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(Error::validation(
                "token_store",
                "must be a file path or a redis:// URL",
            ));
        }
        match url_scheme(t) {
            Some(s) if self::redis::is_redis_scheme(s) => Self::redis(t),
            Some(s) if s.eq_ignore_ascii_case("file") => url::Url::parse(t)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .map(TokenStore::File)
                .ok_or_else(|| {
                    Error::validation("token_store", "is a file:// URL without a usable path")
                }),
            Some(s) => Err(Error::validation(
                "token_store",
                format!(
                    "has the unsupported scheme {s:?}: use a file path or a redis://, rediss:// \
                     or valkey:// URL"
                ),
            )),
            None => Ok(TokenStore::File(PathBuf::from(text))),
        }
    }
}

impl std::str::FromStr for TokenStore {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TokenStore::parse(s)
    }
}

/// `scheme` of `scheme://...`, if `s` starts like a URL (a Windows path such as `C:\x` does not).
fn url_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    let mut chars = scheme.chars();
    (chars.next()?.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

/// A store shared with other processes, as the cache uses it.
#[derive(Clone)]
pub(crate) enum SharedStore {
    File(Arc<FileStore>),
    Redis(Arc<RedisBackend>),
}

/// The outcome of asking for an entry's cross-process lock.
pub(crate) enum Turn {
    /// This process holds the lock until the turn is released or dropped.
    Mine(StoreTurn),
    /// Another process holds it (only when asked not to wait, or after waiting very long).
    Busy,
    /// The store cannot be reached: the cache works alone in this process.
    Offline,
}

/// An entry this process holds the lock of.
pub(crate) enum StoreTurn {
    File {
        store: Arc<FileStore>,
        _lock: File,
        file: Box<StoreFile>,
        id: String,
    },
    Redis(RedisTurn),
}

impl SharedStore {
    /// The shared store `store` names, or `None` for the in-memory one.
    pub(crate) fn open(store: &TokenStore) -> Result<Option<SharedStore>> {
        Ok(match store {
            TokenStore::Memory => None,
            TokenStore::File(p) => Some(SharedStore::File(Arc::new(FileStore::open(p)?))),
            TokenStore::Redis(r) => Some(SharedStore::Redis(RedisBackend::shared(r)?)),
        })
    }

    /// What tells this store apart from others in the process's registry of cache cells (no
    /// secret in it).
    pub(crate) fn identity(store: &TokenStore) -> String {
        match store {
            TokenStore::Memory => String::new(),
            TokenStore::File(p) => format!("file:{}", p.display()),
            TokenStore::Redis(r) => r.identity(),
        }
    }

    /// Takes `key`'s lock: waiting for another holder when `wait`, else at once or not at all.
    pub(crate) async fn turn(&self, key: &CacheKey, wait: bool) -> Result<Turn> {
        match self {
            SharedStore::Redis(b) => Ok(b.turn(key, wait).await),
            SharedStore::File(store) => {
                let lock = if wait {
                    let s = store.clone();
                    tokio::task::spawn_blocking(move || s.lock())
                        .await
                        .map_err(|_| Error::config("token store lock task failed"))??
                } else {
                    match store.try_lock()? {
                        Some(l) => l,
                        None => return Ok(Turn::Busy),
                    }
                };
                let file = store.read()?;
                Ok(Turn::Mine(StoreTurn::File {
                    id: key.fingerprint(&file.salt),
                    store: store.clone(),
                    _lock: lock,
                    file: Box::new(file),
                }))
            }
        }
    }

    /// Writes `key`'s entry from synchronous code (a token obtained outside the cache's own
    /// refresh, e.g. an authorization-code exchange or a restored session).
    pub(crate) fn put_blocking(&self, key: &CacheKey, token: &Token) -> Result<()> {
        match self {
            SharedStore::Redis(b) => {
                b.put_blocking(key, token);
                Ok(())
            }
            SharedStore::File(store) => {
                let lock = store.lock()?;
                let mut file = store.read()?;
                let id = key.fingerprint(&file.salt);
                file.entries.insert(id, token.clone());
                store.write(&file)?;
                drop(lock);
                Ok(())
            }
        }
    }
}

impl StoreTurn {
    /// The stored token, if any (a Redis store that cannot be read has none).
    pub(crate) async fn load(&self) -> Option<Token> {
        match self {
            StoreTurn::File { file, id, .. } => file.entries.get(id).cloned(),
            StoreTurn::Redis(t) => t.load().await,
        }
    }

    /// Stores `token` as the entry (a Redis store that cannot be written is left as it is: the
    /// token still serves this process).
    pub(crate) async fn save(&mut self, token: &Token) -> Result<()> {
        match self {
            StoreTurn::File {
                store, file, id, ..
            } => {
                file.entries.insert(id.clone(), token.clone());
                let now = crate::clock::now();
                file.entries
                    .retain(|_, t| t.expires_at > now || t.refresh_token.is_some());
                store.write(file)
            }
            StoreTurn::Redis(t) => {
                t.save(token).await;
                Ok(())
            }
        }
    }

    /// Gives the lock back (dropping the turn does too, a Redis lock in the background).
    pub(crate) async fn release(self) {
        match self {
            StoreTurn::File { .. } => {}
            StoreTurn::Redis(t) => t.release().await,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct StoreFile {
    pub version: u32,
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
    pub entries: HashMap<String, Token>,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::super::cache::hex(b))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        (0..s.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(s.get(i..i + 2).unwrap_or("x"), 16)
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

pub(crate) struct FileStore {
    path: PathBuf,
    lock_path: PathBuf,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::config(format!(
        "token store {}: cannot {what}: {e}",
        path.display()
    ))
}

fn open_private(path: &Path, truncate: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(truncate);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// Refuses a token file that another user owns, or that other users may read or write (the
/// SDK creates it 0600): its tokens may already have been read, and another user could plant one.
#[cfg(unix)]
fn refuse_shared(path: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = rustix::process::geteuid().as_raw();
    match std::fs::metadata(path) {
        Ok(m) if m.uid() != me => Err(Error::config(format!(
            "token store {}: refusing a file owned by another user (uid {}, this process runs as \
             uid {me}); it holds access tokens, so it must be your own: use a path of yours",
            path.display(),
            m.uid()
        ))),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => Err(Error::config(format!(
            "token store {}: refusing a file other users can access (mode {:o}); it holds access \
             tokens, so it must be private to you: `chmod 600` it, or delete it and let the SDK \
             create it",
            path.display(),
            m.permissions().mode() & 0o777
        ))),
        _ => Ok(()),
    }
}

#[cfg(not(unix))]
fn refuse_shared(_path: &Path) -> Result<()> {
    Ok(())
}

impl FileStore {
    pub(crate) fn open(path: &Path) -> Result<FileStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io_err(path, "create its folder", e))?;
        }
        refuse_shared(path)?;
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        Ok(FileStore {
            path: path.to_owned(),
            lock_path: lock_path.into(),
        })
    }

    /// Blocks until this process holds the store's lock; released when the file is dropped.
    pub(crate) fn lock(&self) -> Result<File> {
        let f = open_private(&self.lock_path, false)
            .map_err(|e| io_err(&self.path, "open the lock file", e))?;
        f.lock().map_err(|e| io_err(&self.path, "lock", e))?;
        Ok(f)
    }

    pub(crate) fn try_lock(&self) -> Result<Option<File>> {
        let f = open_private(&self.lock_path, false)
            .map_err(|e| io_err(&self.path, "open the lock file", e))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io_err(&self.path, "lock", e)),
        }
    }

    /// The store's content; a missing or unreadable file is an empty store with a new salt.
    pub(crate) fn read(&self) -> Result<StoreFile> {
        refuse_shared(&self.path)?;
        match std::fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice::<StoreFile>(&bytes) {
                Ok(f) if f.version == 1 && !f.salt.is_empty() => Ok(f),
                _ => {
                    tracing::warn!(path = %self.path.display(), "token store is not readable; starting it afresh");
                    Ok(Self::empty())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::empty()),
            Err(e) => Err(io_err(&self.path, "read", e)),
        }
    }

    fn empty() -> StoreFile {
        StoreFile {
            version: 1,
            salt: rand::random::<[u8; 32]>().to_vec(),
            entries: HashMap::new(),
        }
    }

    /// Writes atomically: a private temp file in the same folder, fsync, rename.
    pub(crate) fn write(&self, file: &StoreFile) -> Result<()> {
        let bytes =
            serde_json::to_vec(file).map_err(|e| Error::config(format!("token store: {e}")))?;
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        // A leftover temp file keeps its own mode when reopened: start from a new one, 0600.
        let _ = std::fs::remove_file(&tmp);
        let mut f = open_private(&tmp, true).map_err(|e| io_err(&self.path, "write", e))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| io_err(&self.path, "write", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io_err(&self.path, "replace", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_string_names_its_store() {
        assert_eq!(
            TokenStore::parse("/var/lib/app/tokens.json").unwrap(),
            TokenStore::File("/var/lib/app/tokens.json".into())
        );
        assert_eq!(
            TokenStore::parse("tokens.json").unwrap(),
            TokenStore::file("tokens.json")
        );
        assert_eq!(
            TokenStore::parse(r"C:\tokens\t.json").unwrap(),
            TokenStore::file(r"C:\tokens\t.json")
        );
        assert_eq!(
            TokenStore::parse("file:///tmp/t.json").unwrap(),
            TokenStore::file("/tmp/t.json")
        );
        assert_eq!(
            "tokens.json".parse::<TokenStore>().unwrap(),
            TokenStore::file("tokens.json")
        );
        for bad in ["", "   ", "http://cache:6379", "memcached://x"] {
            let e = TokenStore::parse(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Validation, "{bad:?}");
            assert!(e.to_string().contains("token_store"), "{e}");
        }
        // A Redis URL is a Redis store, or (no key in this environment) a configuration error
        // that says where the key goes, never a file named "redis:".
        for url in [
            "redis://127.0.0.1:6379/0",
            "REDISS://:pw@cache:6380",
            "valkey://v/1",
        ] {
            match TokenStore::parse(url) {
                Ok(TokenStore::Redis(r)) => assert!(!format!("{r:?}").contains("pw")),
                Ok(other) => panic!("{url} parsed as {other:?}"),
                Err(e) => {
                    assert_eq!(e.kind(), crate::ErrorKind::Config, "{e}");
                    assert!(e.to_string().contains(STORE_KEY_ENV), "{e}");
                    assert!(!e.to_string().contains("pw"), "{e}");
                }
            }
        }
    }
}
