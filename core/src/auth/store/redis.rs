//! The token store on Redis (or Valkey), shared by any number of processes on any number of hosts.
//!
//! One entry per cache key, `{prefix}:token:v1:{name}`, where `name` is a keyed hash of the cache
//! key under the deployment's [`StoreKey`]; its value is the token sealed with AES-256-GCM, and it
//! expires with the token (`PX`). A process that needs a new token takes the entry's lock,
//! `{prefix}:lock:v1:{name}`, with `SET NX PX` and a random value of its own, reads the entry
//! (another process may just have refreshed it), asks the token endpoint only if it must, writes
//! the entry and deletes the lock only if the value is still its own (a Lua script), so it never
//! releases a lock that expired and was taken by another. While it waits for the token endpoint a
//! watchdog extends the lock every third of the lock timeout; if the process dies, the lock
//! expires within one lock timeout and another process takes over.
//!
//! Redis unreachable, timing out or refusing: the store says so once in the log, the cache works
//! on alone in this process (its own in-process single flight still holds), and the store is
//! tried again after a pause that grows from 1 s to 30 s; the first success says so once too.
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, Script};

use super::key::{Sealer, StoreKey};
use super::{Token, Turn};
use crate::auth::cache::CacheKey;
use crate::error::{Error, Result};
use crate::secret::Secret;

/// How long another process may hold an entry's lock without extending it (default).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a Redis connection attempt or command may take before the store counts as
/// unreachable (default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a process waits for another's refresh before it asks the token endpoint itself.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// How long a kept refresh token stays in the store when the server gave it no lifetime.
const REFRESH_TOKEN_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where a Redis token store is and how it is used. Built from a `redis://`, `rediss://` (TLS),
/// `redis+unix://` or `valkey…` URL; three query parameters of the URL are the store's own and
/// are not sent to Redis:
///
/// * `lock_timeout_ms`: how long a crashed refresher can hold others up (default 5000);
/// * `timeout_ms`: connection and command timeout (default 2000);
/// * `prefix`: the first part of every key name (default `cibmtr-fhir`), for ACLs such as
///   `~cibmtr-fhir:*`;
/// * `ca_file`: with `rediss://`, a PEM file of the certificate authorities that may sign the
///   server's certificate (a private CA), instead of the system's trust store.
///
/// The URL may carry a Redis user and password; `Debug` and every message show neither.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisStore {
    url: Secret,
    shown: String,
    key: StoreKey,
    prefix: String,
    lock_timeout: Duration,
    timeout: Duration,
    /// PEM of the `ca_file` query parameter.
    ca_pem: Option<Vec<u8>>,
}

impl RedisStore {
    /// A store at `url` whose entries are sealed with `key`.
    pub fn new(url: &str, key: StoreKey) -> Result<RedisStore> {
        let bad = |rule: &str| Error::validation("token_store", rule);
        let mut parsed = url::Url::parse(url.trim()).map_err(|_| {
            bad("is not a valid redis:// URL (the URL is not shown: it may hold a password)")
        })?;
        if !is_redis_scheme(parsed.scheme()) {
            return Err(bad(
                "must use redis://, rediss://, redis+unix://, valkey:// or valkeys://",
            ));
        }
        let mut store = RedisStore {
            url: Secret::new(String::new()),
            shown: String::new(),
            key,
            prefix: "cibmtr-fhir".into(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            ca_pem: None,
        };
        let mut passed: Vec<(String, String)> = Vec::new();
        for (k, v) in parsed.query_pairs() {
            let ms = |field: &str| {
                v.parse::<u64>()
                    .ok()
                    .filter(|ms| (1..=3_600_000).contains(ms))
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        Error::validation(
                            field,
                            "must be a whole number of milliseconds between 1 and 3600000",
                        )
                    })
            };
            match k.as_ref() {
                "lock_timeout_ms" => store.lock_timeout = ms("lock_timeout_ms")?,
                "timeout_ms" => store.timeout = ms("timeout_ms")?,
                "prefix" if valid_prefix(&v) => store.prefix = v.into_owned(),
                "prefix" => {
                    return Err(Error::validation(
                        "prefix",
                        "must be 1 to 64 letters, digits, '-', '_', '.' or ':'",
                    ));
                }
                "ca_file" => store.ca_pem = Some(read_ca_file(&v, parsed.scheme())?),
                _ => passed.push((k.into_owned(), v.into_owned())),
            }
        }
        if passed.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(passed);
        }
        redis::IntoConnectionInfo::into_connection_info(parsed.as_str()).map_err(|_| {
            bad("is not a Redis URL the client accepts (the URL is not shown: it may hold a password)")
        })?;
        store.shown = shown(&parsed);
        store.url = Secret::new(String::from(parsed));
        Ok(store)
    }

    /// A store at `url` sealed with the key of `$CIBMTR_FHIR_STORE_KEY` (or the file named by
    /// `$CIBMTR_FHIR_STORE_KEY_FILE`).
    pub fn from_env(url: &str) -> Result<RedisStore> {
        let store = RedisStore::new(url, StoreKey::from_env()?)?;
        Ok(store)
    }

    /// How long a lock may go unextended before another process takes over (a crashed
    /// refresher holds the others up at most this long).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout.max(Duration::from_millis(100));
        self
    }

    /// Connection and command timeout, after which Redis counts as unreachable.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// The first part of every key name (default `cibmtr-fhir`).
    pub fn prefix(mut self, prefix: &str) -> Result<Self> {
        if !valid_prefix(prefix) {
            return Err(Error::validation(
                "prefix",
                "must be 1 to 64 letters, digits, '-', '_', '.' or ':'",
            ));
        }
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// The store's location without credentials, e.g. `redis://cache.internal:6379/0`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The name of the entry (and, with `lock`, of its lock) for a cache key.
    fn names(&self, key: &CacheKey) -> (String, String) {
        let name = key.fingerprint(&self.key.naming_key());
        (
            format!("{}:token:v1:{name}", self.prefix),
            format!("{}:lock:v1:{name}", self.prefix),
        )
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shown)
            .field("key", &self.key)
            .field("prefix", &self.prefix)
            .field("lock_timeout", &self.lock_timeout)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The PEM certificates of a `ca_file`, for a TLS (`rediss://`, `valkeys://`) store only.
fn read_ca_file(path: &str, scheme: &str) -> Result<Vec<u8>> {
    let bad = |rule: String| Error::validation("ca_file", rule);
    if !matches!(scheme.to_ascii_lowercase().as_str(), "rediss" | "valkeys") {
        return Err(bad("needs a TLS store URL (rediss://)".into()));
    }
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read {path}: {e}")))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(bad(format!("{path} holds no PEM certificate")));
    }
    Ok(pem)
}

pub(crate) fn is_redis_scheme(scheme: &str) -> bool {
    matches!(
        scheme.to_ascii_lowercase().as_str(),
        "redis" | "rediss" | "redis+unix" | "valkey" | "valkeys" | "valkey+unix"
    )
}

fn valid_prefix(p: &str) -> bool {
    (1..=64).contains(&p.len())
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// `scheme://[REDACTED]@host:port/path`: never the user, password or query.
fn shown(u: &url::Url) -> String {
    let creds = if u.password().is_some()
        || !u.username().is_empty()
        || u.query_pairs().any(|(k, _)| k == "pass" || k == "user")
    {
        "[REDACTED]@"
    } else {
        ""
    };
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{creds}{}{port}{}",
        u.scheme(),
        u.host_str().unwrap_or(""),
        u.path()
    )
}

/// What a failed Redis call says about the store, in words that carry no secret.
fn reason(e: &RedisError) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connection_refusal() {
        "connection refused"
    } else if e.is_connection_dropped() {
        "connection dropped"
    } else if e.is_io_error() {
        "network error"
    } else {
        match e.kind() {
            redis::ErrorKind::AuthenticationFailed => "authentication failed",
            _ => "refused the command",
        }
    }
}

static BACKENDS: LazyLock<Mutex<HashMap<String, Weak<RedisBackend>>>> =
    LazyLock::new(Default::default);

/// One Redis store in this process: its connection (shared by every cache cell using the store)
/// and whether it is reachable.
pub(crate) struct RedisBackend {
    cfg: RedisStore,
    client: redis::Client,
    sealer: Sealer,
    conn: tokio::sync::Mutex<Option<(u32, MultiplexedConnection)>>,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    offline: bool,
    retry_at: Option<Instant>,
    pause: Duration,
}

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    // Idempotent: a retry after a lost reply finds its own value and still holds the lock.
    Script::new(
        "if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end \
         if redis.call('get', KEYS[1]) == ARGV[1] then \
           redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end \
         return 0",
    )
});
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('get', KEYS[1]) == ARGV[1] then \
           return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0",
    )
});
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('get', KEYS[1]) == ARGV[1] then \
           return redis.call('del', KEYS[1]) end return 0",
    )
});

impl RedisBackend {
    /// The backend of `cfg` in this process, created on first use.
    pub(crate) fn shared(cfg: &RedisStore) -> Result<Arc<RedisBackend>> {
        let id = cfg.identity();
        let mut reg = BACKENDS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = reg.get(&id).and_then(Weak::upgrade) {
            return Ok(b);
        }
        reg.retain(|_, w| w.strong_count() > 0);
        let client = match &cfg.ca_pem {
            None => redis::Client::open(cfg.url.expose()),
            Some(pem) => redis::Client::build_with_tls(
                cfg.url.expose(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
        }
        .map_err(|_| {
            Error::validation(
                "token_store",
                "is not a Redis URL the client accepts (the URL is not shown: it may hold a password)",
            )
        })?;
        let b = Arc::new(RedisBackend {
            sealer: cfg.key.sealer(),
            cfg: cfg.clone(),
            client,
            conn: tokio::sync::Mutex::new(None),
            health: Mutex::new(Health::default()),
        });
        reg.insert(id, Arc::downgrade(&b));
        Ok(b)
    }

    /// Whether the store may be tried now (not within the pause after a failure).
    fn may_try(&self) -> bool {
        let h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    fn went_offline(&self, why: &str) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if h.offline {
            h.pause = (h.pause * 2).min(Duration::from_secs(30));
            tracing::debug!(store = %self.cfg.shown, reason = why, "token store still unreachable");
        } else {
            h.offline = true;
            h.pause = Duration::from_secs(1);
            tracing::warn!(
                store = %self.cfg.shown,
                reason = why,
                "shared token store unreachable: this process keeps its own token until the store is back"
            );
        }
        h.retry_at = Some(Instant::now() + h.pause);
    }

    fn came_back(&self) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if h.offline {
            tracing::info!(store = %self.cfg.shown, "shared token store reachable again: sharing tokens");
        }
        *h = Health::default();
    }

    /// A connection of this process (a forked child makes its own), or `None` while the store
    /// is unreachable.
    async fn connection(&self) -> Option<MultiplexedConnection> {
        if !self.may_try() {
            return None;
        }
        let mut slot = self.conn.lock().await;
        // Another caller may have just failed to connect while this one waited for the slot.
        if !self.may_try() {
            return None;
        }
        let pid = std::process::id();
        if let Some((p, c)) = slot.as_ref()
            && *p == pid
        {
            return Some(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.cfg.timeout))
            .set_response_timeout(Some(self.cfg.timeout));
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(c) => {
                *slot = Some((pid, c.clone()));
                Some(c)
            }
            Err(e) => {
                *slot = None;
                self.went_offline(reason(&e));
                None
            }
        }
    }

    /// Runs `op` on the shared connection. A failure on a kept connection (Redis restarted, the
    /// runtime that drove it is gone) is retried once on a new one; a second failure marks the
    /// store unreachable. `None` while it is.
    async fn call<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        for attempt in 0..2 {
            let con = self.connection().await?;
            match op(con).await {
                Ok(v) => {
                    self.came_back();
                    return Some(v);
                }
                Err(e) => {
                    *self.conn.lock().await = None;
                    if attempt == 1 {
                        self.went_offline(reason(&e));
                    }
                }
            }
        }
        None
    }

    /// Takes the lock of `key`'s entry: at once or not at all when `wait` is false, else polling
    /// until the holder releases it or its lock expires.
    pub(crate) async fn turn(self: &Arc<Self>, key: &CacheKey, wait: bool) -> Turn {
        let (entry, lock) = self.cfg.names(key);
        let value = format!(
            "{}-{}",
            std::process::id(),
            crate::auth::cache::hex(&rand::random::<[u8; 12]>())
        );
        let ttl = self.cfg.lock_timeout.as_millis() as u64;
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let got = self
                .call(|mut c| {
                    let (lock, value) = (lock.clone(), value.clone());
                    async move {
                        ACQUIRE
                            .key(lock)
                            .arg(value)
                            .arg(ttl)
                            .invoke_async::<i64>(&mut c)
                            .await
                    }
                })
                .await;
            match got {
                None => return Turn::Offline,
                Some(1) => {
                    return Turn::Mine(super::StoreTurn::Redis(RedisTurn::start(
                        self.clone(),
                        entry,
                        lock,
                        value,
                    )));
                }
                Some(_) if !wait || started.elapsed() > MAX_WAIT => return Turn::Busy,
                Some(_) => {
                    let jitter = Duration::from_micros(rand::random::<u64>() % 5_000);
                    tokio::time::sleep(pause + jitter).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    async fn get(&self, name: &str) -> Option<Token> {
        let bytes: Vec<u8> = self
            .call(|mut c| {
                let name = name.to_owned();
                async move {
                    redis::cmd("GET")
                        .arg(name)
                        .query_async::<Option<Vec<u8>>>(&mut c)
                        .await
                }
            })
            .await??;
        let plain = self.sealer.open(name, &bytes);
        let token = plain.and_then(|p| serde_json::from_slice::<Token>(&p).ok());
        if token.is_none() {
            tracing::warn!(
                store = %self.cfg.shown,
                "a token-store entry does not open with this key; ignoring it"
            );
        }
        token
    }

    async fn put(&self, name: &str, token: &Token) {
        let Some((sealed, ttl_ms)) = self.sealed(name, token) else {
            return;
        };
        self.call(|mut c| {
            let (name, sealed) = (name.to_owned(), sealed.clone());
            async move {
                redis::cmd("SET")
                    .arg(name)
                    .arg(sealed)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(&mut c)
                    .await
            }
        })
        .await;
    }

    /// The sealed entry and how long it lives: as long as the access token, or as the refresh
    /// token if there is one (its `refresh_expires_in`, else 30 days). `None` for a token that
    /// has nothing left to share.
    fn sealed(&self, name: &str, token: &Token) -> Option<(Vec<u8>, u64)> {
        let now = crate::clock::now();
        let access = token.expires_at.duration_since(now).unwrap_or_default();
        let ttl = if token.refresh_token.is_some() {
            let refresh = token
                .extra
                .get("refresh_expires_in")
                .and_then(serde_json::Value::as_u64)
                .map(Duration::from_secs)
                .unwrap_or(REFRESH_TOKEN_KEEP);
            access.max(refresh)
        } else {
            access
        };
        let ttl_ms = ttl.as_millis() as u64;
        if ttl_ms == 0 {
            return None;
        }
        let plain = secrecy::zeroize::Zeroizing::new(serde_json::to_vec(token).ok()?);
        Some((self.sealer.seal(name, &plain), ttl_ms))
    }

    /// Writes `key`'s entry from synchronous code (a session restored by hand), without the lock:
    /// one `SET` replaces the entry whole.
    pub(crate) fn put_blocking(&self, key: &CacheKey, token: &Token) {
        if !self.may_try() {
            return;
        }
        let (name, _) = self.cfg.names(key);
        let Some((sealed, ttl_ms)) = self.sealed(&name, token) else {
            return;
        };
        let result = self
            .client
            .get_connection_with_timeout(self.cfg.timeout)
            .and_then(|mut c| {
                c.set_write_timeout(Some(self.cfg.timeout))?;
                c.set_read_timeout(Some(self.cfg.timeout))?;
                redis::cmd("SET")
                    .arg(&name)
                    .arg(sealed)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query::<()>(&mut c)
            });
        match result {
            Ok(()) => self.came_back(),
            Err(e) => self.went_offline(reason(&e)),
        }
    }
}

impl RedisStore {
    /// What identifies the store in this process's registries: a hash, never the URL.
    pub(crate) fn identity(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.url.expose().as_bytes());
        h.update([0]);
        h.update(self.key.naming_key());
        h.update(self.prefix.as_bytes());
        h.update(format!("{:?}{:?}", self.lock_timeout, self.timeout).as_bytes());
        h.update(self.ca_pem.as_deref().unwrap_or_default());
        format!("redis:{}", crate::auth::cache::hex(&h.finalize()[..16]))
    }
}

/// This process's turn at an entry: the lock is held (and extended by a watchdog) until
/// [`release`](RedisTurn::release) or drop.
pub(crate) struct RedisTurn {
    backend: Arc<RedisBackend>,
    entry: String,
    lock: String,
    value: String,
    watchdog: tokio::task::JoinHandle<()>,
    released: bool,
}

impl RedisTurn {
    fn start(backend: Arc<RedisBackend>, entry: String, lock: String, value: String) -> RedisTurn {
        let every = backend.cfg.lock_timeout / 3;
        let ttl = backend.cfg.lock_timeout.as_millis() as u64;
        let (b, l, v) = (backend.clone(), lock.clone(), value.clone());
        let watchdog = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let held = b
                    .call(|mut c| {
                        let (l, v) = (l.clone(), v.clone());
                        async move {
                            EXTEND
                                .key(l)
                                .arg(v)
                                .arg(ttl)
                                .invoke_async::<i64>(&mut c)
                                .await
                        }
                    })
                    .await;
                if held != Some(1) {
                    return;
                }
            }
        });
        RedisTurn {
            backend,
            entry,
            lock,
            value,
            watchdog,
            released: false,
        }
    }

    pub(crate) async fn load(&self) -> Option<Token> {
        self.backend.get(&self.entry).await
    }

    pub(crate) async fn save(&self, token: &Token) {
        self.backend.put(&self.entry, token).await
    }

    pub(crate) async fn release(mut self) {
        self.watchdog.abort();
        self.released = true;
        release(&self.backend, &self.lock, &self.value).await;
    }
}

async fn release(backend: &RedisBackend, lock: &str, value: &str) {
    backend
        .call(|mut c| {
            let (l, v) = (lock.to_owned(), value.to_owned());
            async move { RELEASE.key(l).arg(v).invoke_async::<i64>(&mut c).await }
        })
        .await;
}

impl Drop for RedisTurn {
    fn drop(&mut self) {
        self.watchdog.abort();
        if self.released {
            return;
        }
        // Dropped mid-refresh (the caller gave up): free the lock now rather than after its
        // timeout, if there is still a runtime to do it on.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (b, l, v) = (
                self.backend.clone(),
                std::mem::take(&mut self.lock),
                std::mem::take(&mut self.value),
            );
            rt.spawn(async move { release(&b, &l, &v).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StoreKey {
        StoreKey::generate()
    }

    #[test]
    fn own_parameters_are_taken_out_and_credentials_never_shown() {
        let s = RedisStore::new(
            "redis://app:s3cr3t-pw@cache.internal:6380/2?lock_timeout_ms=1500&timeout_ms=300&prefix=team-a:cf&protocol=resp3",
            key(),
        )
        .unwrap();
        assert_eq!(s.lock_timeout, Duration::from_millis(1500));
        assert_eq!(s.timeout, Duration::from_millis(300));
        assert_eq!(s.prefix, "team-a:cf");
        assert!(s.url.expose().contains("protocol=resp3"));
        assert!(!s.url.expose().contains("lock_timeout_ms"));
        assert_eq!(s.shown(), "redis://[REDACTED]@cache.internal:6380/2");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("s3cr3t-pw") && !dbg.contains("app:"), "{dbg}");
    }

    #[test]
    fn bad_urls_and_parameters_are_refused_without_echoing_them() {
        for bad in [
            "redis://:pw-123@[::1",
            "http://host:6379",
            "redis://h/?lock_timeout_ms=0",
            "redis://h/?timeout_ms=abc",
            "redis://h/?prefix=has space",
        ] {
            let e = RedisStore::new(bad, key()).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Validation, "{bad}");
            assert!(!e.to_string().contains("pw-123"), "{e}");
        }
    }

    #[test]
    fn entry_names_are_keyed_hashes() {
        let k = key();
        let s = RedisStore::new("redis://127.0.0.1/", k.clone()).unwrap();
        let ck = CacheKey {
            flow: "password",
            token_url: "https://idp.example/token".into(),
            client_id: "client-1".into(),
            user: "svc-user".into(),
            scopes: "a b".into(),
            secret_material: Secret::new("the-password"),
        };
        let (entry, lock) = s.names(&ck);
        assert!(entry.starts_with("cibmtr-fhir:token:v1:"));
        assert!(lock.starts_with("cibmtr-fhir:lock:v1:"));
        for clear in ["idp.example", "client-1", "svc-user", "the-password"] {
            assert!(!entry.contains(clear));
        }
        let other = RedisStore::new("redis://127.0.0.1/", key()).unwrap();
        assert_ne!(other.names(&ck).0, entry, "another key, another name");
        assert_eq!(
            RedisStore::new("redis://127.0.0.1/", k)
                .unwrap()
                .names(&ck)
                .0,
            entry,
            "the same key names the same entry in every process"
        );
    }
}
