//! A process that forks while its journal threads are busy: the child's own journal works.
//!
//! SQLite's process-wide mutexes (its table of open files, its allocator, ...) are copied into a
//! `fork()`ed child in whatever state they were; one held by another thread at that instant stays
//! locked in the child for ever, and the child's first SQLite call hangs (seen once in CI: a
//! Python test forking beside a journal's writer thread). The journal holds `fork()` off while it
//! is inside SQLite. Here a thread opens, writes, reads and closes journals without pause while
//! the test forks 60 times; each child opens a journal of its own, records a batch, reads it back
//! and exits. A child that has not finished within 10 s has hung: it is killed, and the test fails.
#![cfg(unix)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cibmtr_fhir::journal::{BatchInfo, Journal};

/// Waits up to `limit` for `pid`: its exit status, or `None` (then it is killed) if it hangs.
fn wait_for(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child, non-blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            });
        }
        if start.elapsed() > limit {
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_child_forked_while_journals_are_busy_opens_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let busy: Vec<_> = (0..2)
        .map(|t| {
            let (dir, stop, rounds) = (dir.path().to_owned(), stop.clone(), rounds.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let j = Journal::open(dir.join(format!("busy-{t}-{}.sqlite3", i % 3))).unwrap();
                    j.start_batch(&BatchInfo::default()).unwrap();
                    assert!(!j.batches().unwrap().is_empty());
                    drop(j);
                    i += 1;
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while rounds.load(Ordering::Relaxed) < 10 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The number of the first child that hung, if one did (the rest would hang as well).
    let mut hung = 0usize;
    for k in 0..60 {
        let path = dir.path().join(format!("child-{k}.sqlite3"));
        // SAFETY: the child only runs the journal's code and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = Journal::open(&path)
                .and_then(|j| {
                    let b = j.start_batch(&BatchInfo::default())?;
                    let found = j.batches()?.iter().any(|s| s.id == b.id());
                    Ok(found)
                })
                .unwrap_or(false);
            // SAFETY: ends the child without running the parent's test harness.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        match wait_for(pid, Duration::from_secs(10)) {
            Some(code) => assert_eq!(code, 0, "child {k} could not use its journal"),
            None => {
                hung = k + 1;
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in busy {
        t.join().unwrap();
    }
    assert_eq!(
        hung,
        0,
        "child {} hung in its first SQLite call",
        hung.saturating_sub(1)
    );
    assert!(
        rounds.load(Ordering::Relaxed) > 60,
        "the journals were busy throughout"
    );
}
