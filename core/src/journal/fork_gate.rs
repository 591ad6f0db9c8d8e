//! SQLite and `fork()`: SQLite keeps process-wide mutexes (its allocator's, its table of open
//! files, ...) that it does not reset in a forked child. A child forked while another thread of the
//! parent was inside SQLite inherits such a mutex locked, and its first SQLite call hangs for
//! ever (Python's `multiprocessing` forks by default on Linux).
//!
//! So every SQLite call of the journal runs inside [`enter`] (shared), and a `pthread_atfork`
//! handler, registered with the first journal, takes the gate exclusively before `fork()`:
//! the fork then waits for the SQLite calls in progress, and none starts until both sides are
//! running again. Calls inside the gate never wait for anything outside SQLite, so the handler
//! cannot deadlock. A thread already inside does not take the gate again (dropping a journal
//! while opening one, say): a second shared hold would wait behind a pending `fork()` that waits
//! for the first.
use std::cell::{Cell, RefCell};
use std::sync::{Once, RwLock, RwLockReadGuard, RwLockWriteGuard};

static GATE: RwLock<()> = RwLock::new(());

thread_local! {
    /// The forking thread's exclusive hold, from `prepare` to `parent` or `child`.
    static HELD: RefCell<Option<RwLockWriteGuard<'static, ()>>> = const { RefCell::new(None) };
    /// How many [`Inside`] this thread holds; only the outermost holds the gate.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// This thread is inside SQLite until it is dropped.
pub(crate) struct Inside {
    /// The shared hold, released on drop (the outermost entry only).
    _gate: Option<RwLockReadGuard<'static, ()>>,
}

impl Drop for Inside {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Holds off `fork()` while this thread is inside SQLite.
pub(crate) fn enter() -> Inside {
    register();
    let outermost = DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get() == 1
    });
    Inside {
        _gate: outermost.then(|| GATE.read().unwrap_or_else(|p| p.into_inner())),
    }
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
