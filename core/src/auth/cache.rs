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

use super::store::{SharedStore, TokenStore, Turn};
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
    /// The store shared with other processes, if any, and this cell's key in it.
    store: Option<(SharedStore, CacheKey)>,
}

impl TokenCell {
    /// The cell for `key` (and store), created on first use.
    pub(crate) fn shared(
        key: CacheKey,
        store: &TokenStore,
        http: HttpClient,
        fetcher: Box<dyn Fetch>,
    ) -> Result<Arc<TokenCell>> {
        let store_id = SharedStore::identity(store);
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
        let store = SharedStore::open(store)?.map(|s| (s, key));
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
            let now = crate::clock::now();
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
                        .filter(|l| !Arc::ptr_eq(l, &entry) && crate::clock::now() < l.advisory_at)
                    {
                        self.counters.cache_hits.fetch_add(1, Relaxed);
                        return Ok(AccessToken(l.clone()));
                    }
                    if self.fatal_error().is_none() {
                        match self.renew(Some(&entry), true).await {
                            Ok(Some(fresh)) => return Ok(fresh),
                            // Another process is refreshing: its token will be in the store.
                            Ok(None) => {}
                            // The retries may have run into the mandatory margin: serve the
                            // old token only while it is still outside it.
                            Err(e) if crate::clock::now() >= entry.mandatory_at => return Err(e),
                            Err(e) => {
                                tracing::warn!(error = %e, "early token refresh failed; still serving the valid token")
                            }
                        }
                    }
                }
                if crate::clock::now() < entry.mandatory_at {
                    self.counters.cache_hits.fetch_add(1, Relaxed);
                    return Ok(AccessToken(entry));
                }
            }
        }
        let _guard = self.refresh_lock.lock().await;
        let previous = self.current.load_full();
        if let Some(entry) = previous
            .as_ref()
            .filter(|e| crate::clock::now() < e.mandatory_at)
        {
            self.counters.cache_hits.fetch_add(1, Relaxed);
            return Ok(AccessToken(entry.clone()));
        }
        if let Some(err) = self.fatal_error() {
            return Err(err);
        }
        // A mandatory renewal waits for its turn, so it always ends with a token or an error.
        self.renew(previous.as_deref(), false)
            .await?
            .ok_or_else(|| Error::config("the token store gave no token"))
    }

    /// The current token if it is fresh (before the advisory margin, the test `token()` starts
    /// with), counted as a cache hit; otherwise `None`. Never waits, refreshes or sends anything.
    pub(crate) fn fresh(&self) -> Option<AccessToken> {
        let entry = self.current.load_full()?;
        if crate::clock::now() < entry.advisory_at {
            self.counters.cache_hits.fetch_add(1, Relaxed);
            return Some(AccessToken(entry));
        }
        None
    }

    /// Obtains a new token (from the shared store if another process already did, else from the
    /// server). Called with `refresh_lock` held. `Ok(None)` only for an `advisory` renewal that
    /// found another process refreshing.
    async fn renew(&self, previous: Option<&Entry>, advisory: bool) -> Result<Option<AccessToken>> {
        let result = match &self.store {
            None => self.fetch(previous).await.map(Some),
            Some((store, key)) => self.renew_via_store(store, key, previous, advisory).await,
        };
        match result {
            Ok(None) => Ok(None),
            Ok(Some(entry)) => {
                if previous.is_some() {
                    self.counters.refreshes.fetch_add(1, Relaxed);
                }
                let entry = Arc::new(entry);
                self.current.store(Some(entry.clone()));
                Ok(Some(AccessToken(entry)))
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

    /// The cross-process single flight: take the entry's lock, adopt the stored token if another
    /// process refreshed it meanwhile, else fetch and store one. An early (advisory) renewal never
    /// waits for another process; a store that cannot be reached leaves this process on its own.
    async fn renew_via_store(
        &self,
        store: &SharedStore,
        key: &CacheKey,
        previous: Option<&Entry>,
        advisory: bool,
    ) -> Result<Option<Entry>> {
        let mut turn = match store.turn(key, !advisory).await? {
            Turn::Mine(turn) => turn,
            Turn::Busy if advisory => return Ok(None),
            Turn::Busy | Turn::Offline => return self.fetch(previous).await.map(Some),
        };
        let stored = turn.load().await;
        let revoked = self
            .revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(stored) = &stored {
            let is_revoked = revoked.as_ref() == Some(&stored.access_token);
            let is_ours = previous.is_some_and(|p| p.token.access_token == stored.access_token);
            let candidate = Entry::new(stored.clone());
            let usable = if advisory {
                crate::clock::now() < candidate.advisory_at
            } else {
                crate::clock::now() < candidate.mandatory_at
            };
            if !is_revoked && !is_ours && usable {
                turn.release().await;
                return Ok(Some(candidate));
            }
        }
        // A refresh-token flow needs the newest refresh token, which may be in the store.
        let base = stored.map(Entry::new);
        let prev = match (&base, previous) {
            (Some(b), Some(p)) if b.token.issued_at > p.token.issued_at => Some(b),
            (Some(b), None) => Some(b),
            (_, p) => p,
        };
        let entry = self.fetch(prev).await?;
        turn.save(&entry.token).await?;
        turn.release().await;
        Ok(Some(entry))
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
    /// exchange) and writes it to the shared store, if any.
    pub(crate) fn install(&self, token: Token) -> Result<()> {
        if let Some((store, key)) = &self.store {
            store.put_blocking(key, &token)?;
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
    /// The cached token if it is fresh, at once: `None` when there is none yet or a refresh is
    /// due, and then [`token`](Self::token) is the call to make. For callers to whom an `await`
    /// costs more than the answer (a binding's blocking call); counted as a cache hit.
    pub fn fresh_token(&self) -> Option<AccessToken> {
        self.0.fresh()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A flow that never gets a token from a server: the tests install theirs.
    struct Offline;
    impl Fetch for Offline {
        fn fetch<'a>(
            &'a self,
            _: &'a HttpClient,
            _: Option<&'a Token>,
            _: &'a dyn RequestCounter,
        ) -> BoxFuture<'a, Result<Token>> {
            Box::pin(async { Err(Error::config("offline")) })
        }
    }

    fn provider(name: &str) -> TokenProvider {
        let key = CacheKey {
            flow: "test",
            token_url: format!("https://auth.example.org/{name}"),
            client_id: "client".into(),
            user: String::new(),
            scopes: String::new(),
            secret_material: Secret::new("secret"),
        };
        let cell = TokenCell::shared(
            key,
            &TokenStore::Memory,
            HttpClient::shared(),
            Box::new(Offline),
        );
        TokenProvider(cell.unwrap())
    }

    /// A token issued `age` ago that lives `lifetime` in all.
    fn token(value: &str, age: Duration, lifetime: Duration) -> Token {
        let issued_at = crate::clock::now() - age;
        Token {
            access_token: Secret::new(value),
            issued_at,
            expires_at: issued_at + lifetime,
            refresh_token: None,
            scope: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn a_fresh_token_is_answered_at_once_and_only_before_the_advisory_margin() {
        let p = provider("fresh");
        assert!(p.fresh_token().is_none(), "no token yet");
        let hour = Duration::from_secs(3600);
        p.0.install(token("a", Duration::ZERO, hour)).unwrap();
        assert_eq!(p.fresh_token().unwrap().secret(), "a");
        assert_eq!(p.stats().cache_hits, 1);
        // A 60 s token is fresh for 50 s (advisory margin 60/6 = 10 s), then due for refresh.
        let minute = Duration::from_secs(60);
        p.0.install(token("b", Duration::from_secs(49), minute))
            .unwrap();
        assert_eq!(p.fresh_token().unwrap().secret(), "b");
        p.0.install(token("c", Duration::from_secs(51), minute))
            .unwrap();
        assert!(p.fresh_token().is_none(), "inside the advisory margin");
        assert_eq!(p.stats().cache_hits, 2, "a miss is not a hit");
        p.0.install(token("d", Duration::ZERO, hour)).unwrap();
        p.invalidate();
        assert!(p.fresh_token().is_none(), "invalidated");
    }
}
