//! The single-flight expiring cell every flow shares.
//!
//! * **Fresh** (before the advisory margin): returned at once from an `ArcSwap`, no lock taken.
//! * **Advisory window** (`min(5 min, lifetime/6)` before expiry): one caller refreshes while the
//!   others keep using the still-valid token; if that refresh fails the valid token is served.
//! * **Mandatory window** (`min(60 s, lifetime/10)` before expiry) or no token: callers queue on
//!   one async lock, so at most one token request is in flight however many tasks ask.
//! * `invalidate(token)` drops the token only if it is still the current one, so a burst of 401s
//!   re-mints once.
//! * `invalid_grant` / `invalid_client` answers are remembered for [`FATAL_BACKOFF`], so a
//!   locked-out service account is not hammered.
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::store::{FileStore, TokenStore};
use super::{RequestCounter, Token};
use crate::error::{Error, Result};
use crate::http::HttpClient;
use crate::secret::Secret;

/// How long a definitive refusal (`invalid_grant`, `invalid_client`, `unauthorized_client`) is
/// answered from memory instead of asking the server again.
pub const FATAL_BACKOFF: Duration = Duration::from_secs(30);

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a flow obtains a token. `previous` is the current token, if any (refresh-token flows use it).
pub(crate) trait Fetch: Send + Sync {
    fn fetch<'a>(
        &'a self,
        http: &'a HttpClient,
        previous: Option<&'a Token>,
        counter: &'a dyn RequestCounter,
    ) -> BoxFuture<'a, Result<Token>>;
}

/// What identifies a cache entry: the non-secret parts in clear, the secret parts only as a keyed
/// hash.
pub(crate) struct CacheKey {
    pub flow: &'static str,
    pub token_url: String,
    pub client_id: String,
    pub user: String,
    pub scopes: String,
    /// Every secret the flow authenticates with, concatenated.
    pub secret_material: Secret,
}

impl CacheKey {
    fn descriptor(&self) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            self.flow, self.token_url, self.client_id, self.user, self.scopes
        )
    }
    /// HMAC-SHA256 of descriptor and secrets under `key`, hex.
    pub(crate) fn fingerprint(&self, key: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(self.descriptor().as_bytes());
        mac.update(&[0]);
        mac.update(self.secret_material.expose().as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

static PROCESS_KEY: LazyLock<[u8; 32]> = LazyLock::new(rand::random);
static REGISTRY: LazyLock<Mutex<HashMap<String, Weak<TokenCell>>>> =
    LazyLock::new(Default::default);

/// Counters of one cache cell, for tests, benchmarks and dashboards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// HTTP requests sent to the token endpoint, retries included.
    pub token_requests: u64,
    /// `token()` calls answered from the cache.
    pub cache_hits: u64,
    /// New tokens obtained to replace an existing one (early refreshes and re-mints).
    pub refreshes: u64,
    /// Failed attempts to obtain a token (after the exchange's own retries).
    pub failures: u64,
}

#[derive(Default)]
struct Counters {
    token_requests: AtomicU64,
    cache_hits: AtomicU64,
    refreshes: AtomicU64,
    failures: AtomicU64,
}
impl RequestCounter for Counters {
    fn sent(&self) {
        self.token_requests.fetch_add(1, Relaxed);
    }
}

struct Entry {
    token: Token,
    advisory_at: SystemTime,
    mandatory_at: SystemTime,
}

impl Entry {
    fn new(token: Token) -> Entry {
        let life = token.lifetime();
        let advisory = (life / 6).min(Duration::from_secs(300));
        let mandatory = (life / 10).min(Duration::from_secs(60));
        Entry {
            advisory_at: token
                .expires_at
                .checked_sub(advisory)
                .unwrap_or(token.issued_at),
            mandatory_at: token
                .expires_at
                .checked_sub(mandatory)
                .unwrap_or(token.issued_at),
            token,
        }
    }
}

/// A valid access token handed out by the cache. Cheap to clone; `Debug` never shows it.
#[derive(Clone)]
pub struct AccessToken(Arc<Entry>);

impl AccessToken {
    /// The bearer value. Use it only to build the `Authorization` header.
    pub fn secret(&self) -> &str {
        self.0.token.access_token.expose()
    }
    pub fn expires_at(&self) -> SystemTime {
        self.0.token.expires_at
    }
    /// Scopes the server granted, if it said.
    pub fn scope(&self) -> Option<&str> {
        self.0.token.scope.as_deref()
    }
    pub fn token(&self) -> &Token {
        &self.0.token
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[REDACTED]")
            .field("expires_at", &self.0.token.expires_at)
            .finish()
    }
}

/// One cached token and the machinery that keeps it fresh. Shared through a process-wide registry
/// by every flow object with the same [`CacheKey`] and store.
pub(crate) struct TokenCell {
    current: ArcSwapOption<Entry>,
    refresh_lock: tokio::sync::Mutex<()>,
    fatal: Mutex<Option<(Instant, Error)>>,
    /// The access token most recently invalidated: never adopted again from the store.
    revoked: Mutex<Option<Secret>>,
    counters: Counters,
    fetcher: Box<dyn Fetch>,
    http: HttpClient,
    store: Option<(Arc<FileStore>, CacheKey)>,
}

impl TokenCell {
    /// The cell for `key` (and store), created on first use.
    pub(crate) fn shared(
        key: CacheKey,
        store: &TokenStore,
        http: HttpClient,
        fetcher: Box<dyn Fetch>,
    ) -> Result<Arc<TokenCell>> {
        let store_id = match store {
            TokenStore::Memory => String::new(),
            TokenStore::File(p) => p.display().to_string(),
        };
        // Objects configured with different HTTP clients (timeouts, proxy, rate-limit bound) get
        // cells of their own, so each keeps its own settings. The address is stable and unique
        // while the cell lives, because the cell holds a clone of that client.
        let http_id = Arc::as_ptr(&http.config) as usize;
        let id = format!(
            "{}\u{1f}{store_id}\u{1f}{http_id:x}",
            key.fingerprint(&*PROCESS_KEY)
        );
        let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cell) = reg.get(&id).and_then(Weak::upgrade) {
            return Ok(cell);
        }
        reg.retain(|_, w| w.strong_count() > 0);
        let store = match store {
            TokenStore::Memory => None,
            TokenStore::File(p) => Some((Arc::new(FileStore::open(p)?), key)),
        };
        let cell = Arc::new(TokenCell {
            current: ArcSwapOption::empty(),
            refresh_lock: tokio::sync::Mutex::new(()),
            fatal: Mutex::new(None),
            revoked: Mutex::new(None),
            counters: Counters::default(),
            fetcher,
            http,
            store,
        });
        reg.insert(id, Arc::downgrade(&cell));
        Ok(cell)
    }

    /// A valid access token: cached, refreshed ahead of expiry, fetched at most once at a time.
    pub(crate) async fn token(&self) -> Result<AccessToken> {
        if let Some(entry) = self.current.load_full() {
            let now = SystemTime::now();
            if now < entry.advisory_at {
                self.counters.cache_hits.fetch_add(1, Relaxed);
                return Ok(AccessToken(entry));
            }
            if now < entry.mandatory_at {
                // Advisory window: one caller refreshes; everyone else keeps the valid token.
                if let Ok(_guard) = self.refresh_lock.try_lock() {
                    let latest = self.current.load_full();
                    if let Some(l) = latest
                        .as_ref()
                        .filter(|l| !Arc::ptr_eq(l, &entry) && SystemTime::now() < l.advisory_at)
                    {
                        self.counters.cache_hits.fetch_add(1, Relaxed);
                        return Ok(AccessToken(l.clone()));
                    }
                    if self.fatal_error().is_none() {
                        match self.renew(Some(&entry), true).await {
                            Ok(fresh) => return Ok(fresh),
                            // The retries may have run into the mandatory margin: serve the
                            // old token only while it is still outside it.
                            Err(e) if SystemTime::now() >= entry.mandatory_at => return Err(e),
                            Err(e) => {
                                tracing::warn!(error = %e, "early token refresh failed; still serving the valid token")
                            }
                        }
                    }
                }
                if SystemTime::now() < entry.mandatory_at {
                    self.counters.cache_hits.fetch_add(1, Relaxed);
                    return Ok(AccessToken(entry));
                }
            }
        }
        let _guard = self.refresh_lock.lock().await;
        let previous = self.current.load_full();
        if let Some(entry) = previous
            .as_ref()
            .filter(|e| SystemTime::now() < e.mandatory_at)
        {
            self.counters.cache_hits.fetch_add(1, Relaxed);
            return Ok(AccessToken(entry.clone()));
        }
        if let Some(err) = self.fatal_error() {
            return Err(err);
        }
        self.renew(previous.as_deref(), false).await
    }

    /// Obtains a new token (from the shared store if another process already did, else from the
    /// server). Called with `refresh_lock` held.
    async fn renew(&self, previous: Option<&Entry>, advisory: bool) -> Result<AccessToken> {
        let result = match &self.store {
            None => self.fetch(previous).await,
            Some((store, key)) => self.renew_via_store(store, key, previous, advisory).await,
        };
        match result {
            Ok(entry) => {
                if previous.is_some() {
                    self.counters.refreshes.fetch_add(1, Relaxed);
                }
                let entry = Arc::new(entry);
                self.current.store(Some(entry.clone()));
                Ok(AccessToken(entry))
            }
            Err(e) => {
                self.counters.failures.fetch_add(1, Relaxed);
                // A definitive refusal is remembered so a locked-out account is not hammered.
                if let Error::Auth { error, .. } = &e
                    && matches!(
                        error.as_str(),
                        "invalid_grant" | "invalid_client" | "unauthorized_client"
                    )
                {
                    *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), e.clone()));
                }
                Err(e)
            }
        }
    }

    async fn fetch(&self, previous: Option<&Entry>) -> Result<Entry> {
        let token = self
            .fetcher
            .fetch(&self.http, previous.map(|e| &e.token), &self.counters)
            .await?;
        Ok(Entry::new(token))
    }

    async fn renew_via_store(
        &self,
        store: &Arc<FileStore>,
        key: &CacheKey,
        previous: Option<&Entry>,
        advisory: bool,
    ) -> Result<Entry> {
        let lock = if advisory {
            // Never wait for another process during an early refresh: the current token is valid.
            match store.try_lock()? {
                Some(l) => l,
                None => return Err(Error::config("token store busy; early refresh skipped")),
            }
        } else {
            let s = store.clone();
            tokio::task::spawn_blocking(move || s.lock())
                .await
                .map_err(|_| Error::config("token store lock task failed"))??
        };
        let mut file = store.read()?;
        let id = key.fingerprint(&file.salt);
        let revoked = self
            .revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(stored) = file.entries.get(&id) {
            let is_revoked = revoked.as_ref() == Some(&stored.access_token);
            let is_ours = previous.is_some_and(|p| p.token.access_token == stored.access_token);
            let candidate = Entry::new(stored.clone());
            let usable = if advisory {
                SystemTime::now() < candidate.advisory_at
            } else {
                SystemTime::now() < candidate.mandatory_at
            };
            if !is_revoked && !is_ours && usable {
                drop(lock);
                return Ok(candidate);
            }
        }
        // A refresh-token flow needs the newest refresh token, which may be in the store.
        let base = file.entries.get(&id).map(|t| Entry::new(t.clone()));
        let prev = match (&base, previous) {
            (Some(b), Some(p)) if b.token.issued_at > p.token.issued_at => Some(b),
            (Some(b), None) => Some(b),
            (_, p) => p,
        };
        let entry = self.fetch(prev).await?;
        file.entries.insert(id, entry.token.clone());
        file.entries
            .retain(|_, t| t.expires_at > SystemTime::now() || t.refresh_token.is_some());
        store.write(&file)?;
        drop(lock);
        Ok(entry)
    }

    fn fatal_error(&self) -> Option<Error> {
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        match &*f {
            Some((at, e)) if at.elapsed() < FATAL_BACKOFF => Some(e.clone()),
            Some(_) => {
                *f = None;
                None
            }
            None => None,
        }
    }

    pub(crate) fn http_client(&self) -> HttpClient {
        self.http.clone()
    }

    /// The cell's token-request counter, for exchanges made outside `fetch`.
    pub(crate) fn counter(&self) -> &dyn RequestCounter {
        &self.counters
    }

    /// Makes `token` the current entry (obtained outside `fetch`, e.g. an authorization-code
    /// exchange) and writes it to the file store, if any.
    pub(crate) fn install(&self, token: Token) -> Result<()> {
        if let Some((store, key)) = &self.store {
            let lock = store.lock()?;
            let mut file = store.read()?;
            let id = key.fingerprint(&file.salt);
            file.entries.insert(id, token.clone());
            store.write(&file)?;
            drop(lock);
        }
        *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.current.store(Some(Arc::new(Entry::new(token))));
        Ok(())
    }

    /// Drops `token` if it is still the current one (after a 401). Returns whether it did.
    pub(crate) fn invalidate_token(&self, token: &str) -> bool {
        let current = self.current.load();
        match current.as_ref() {
            Some(e) if e.token.access_token.expose() == token => {
                let secret = e.token.access_token.clone();
                let swapped = self.current.compare_and_swap(&*current, None);
                if swapped.as_ref().is_some_and(|s| Arc::ptr_eq(s, e)) {
                    *self.revoked.lock().unwrap_or_else(|p| p.into_inner()) = Some(secret);
                    true
                } else {
                    false
                }
            }
            _ => false,
        }
    }

    /// Drops the current token, whatever it is.
    pub(crate) fn invalidate(&self) {
        if let Some(e) = self.current.swap(None) {
            *self.revoked.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(e.token.access_token.clone());
        }
        *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            token_requests: self.counters.token_requests.load(Relaxed),
            cache_hits: self.counters.cache_hits.load(Relaxed),
            refreshes: self.counters.refreshes.load(Relaxed),
            failures: self.counters.failures.load(Relaxed),
        }
    }
}

/// What every flow offers once built: a valid token on demand, invalidation after a 401, and
/// counters. Each flow derefs to its provider, and a FHIR client or binding can hold one for any
/// flow. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct TokenProvider(pub(crate) Arc<TokenCell>);

impl TokenProvider {
    /// A valid access token, from the cache when possible.
    pub async fn token(&self) -> Result<AccessToken> {
        self.0.token().await
    }
    /// Drops `token` if it is still the current one (call after a 401); returns whether it did.
    pub fn invalidate_token(&self, token: &str) -> bool {
        self.0.invalidate_token(token)
    }
    /// Drops the current token; the next `token()` obtains a new one.
    pub fn invalidate(&self) {
        self.0.invalidate()
    }
    /// Token requests, cache hits, refreshes and failures so far.
    pub fn stats(&self) -> CacheStats {
        self.0.stats()
    }
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider")
            .field("stats", &self.stats())
            .finish()
    }
}
