//! The wall clock that token lifetimes, client assertions and rate-limit resets are read
//! against, with one seam: a test can make the whole process see the clock jump forward (a laptop
//! waking from sleep, an NTP step) without waiting for it. Nothing in the SDK moves it.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// How far this process's clock has been moved forward, in milliseconds.
static JUMPED_MS: AtomicU64 = AtomicU64::new(0);

/// The current wall-clock time, as the SDK sees it.
pub(crate) fn now() -> SystemTime {
    SystemTime::now() + Duration::from_millis(JUMPED_MS.load(Ordering::Relaxed))
}

/// Makes the SDK in this process see the wall clock `by` later than it is, from now on (jumps
/// add up). For tests of what happens to cached tokens when the clock jumps; process-wide, so a
/// test using it belongs in a test binary of its own.
#[doc(hidden)]
pub fn jump_forward(by: Duration) {
    let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
    JUMPED_MS.fetch_add(ms, Ordering::Relaxed);
}

/// Undoes every [`jump_forward`].
#[doc(hidden)]
pub fn reset() {
    JUMPED_MS.store(0, Ordering::Relaxed);
}
