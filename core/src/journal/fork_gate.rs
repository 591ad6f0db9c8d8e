//! SQLite and `fork()`: SQLite keeps process-wide mutexes (its allocator's, its table of open
//! files, ...) that it does not reset in a forked child. A child forked while another thread of the
//! parent was inside SQLite inherits such a mutex locked, and its first SQLite call hangs for
//! ever (Python's `multiprocessing` forks by default on Linux).
//!
//! So every SQLite call of the journal runs inside [`enter`] (shared), and a `pthread_atfork`
//! handler, registered with the first journal, takes the gate exclusively before `fork()`:
//! the fork then waits for the SQLite calls in progress, and none starts until both sides are
//! running again. Calls inside the gate never wait for anything outside SQLite, and never enter
//! it twice, so the handler cannot deadlock.
use std::cell::RefCell;
use std::sync::{Once, RwLock, RwLockReadGuard, RwLockWriteGuard};

static GATE: RwLock<()> = RwLock::new(());

thread_local! {
    /// The forking thread's exclusive hold, from `prepare` to `parent` or `child`.
    static HELD: RefCell<Option<RwLockWriteGuard<'static, ()>>> = const { RefCell::new(None) };
}

/// Holds off `fork()` while a journal thread is inside SQLite. Must not be nested.
pub(crate) fn enter() -> RwLockReadGuard<'static, ()> {
    register();
    GATE.read().unwrap_or_else(|p| p.into_inner())
}

fn register() {
    static ONCE: Once = Once::new();
    #[cfg(unix)]
    ONCE.call_once(|| {
        extern "C" fn prepare() {
            let held = GATE.write().unwrap_or_else(|p| p.into_inner());
            HELD.with(|h| *h.borrow_mut() = Some(held));
        }
        extern "C" fn release() {
            HELD.with(|h| drop(h.borrow_mut().take()));
        }
        // SAFETY: an FFI call with valid `extern "C"` handlers that take no arguments; they
        // only lock and unlock `GATE`, on the thread that forks.
        #[allow(unsafe_code)]
        unsafe {
            libc::pthread_atfork(Some(prepare), Some(release), Some(release));
        }
    });
    #[cfg(not(unix))]
    ONCE.call_once(|| {});
}
