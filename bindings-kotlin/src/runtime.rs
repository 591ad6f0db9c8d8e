//! The binding's one tokio runtime (multi-thread, one worker per core) and the two ways a call
//! reaches it: `run` for the `suspend` functions and `block` for their `…Blocking` twins.
//!
//! Every exported async function hands its core future to `run`, which polls it once on the
//! calling thread (inside the runtime's context) and, unless that already finished it, spawns it
//! onto this runtime and awaits the `JoinHandle`. So a cached token comes back without a thread
//! hop, and everything that waits on the network runs on the runtime's workers: a thousand
//! coroutines waiting on the SDK are a thousand tokio tasks, not a queue behind one helper
//! thread. Cancelling the coroutine drops the handle, which aborts the task. `block` likewise
//! polls once before it parks the thread in `block_on`, so a blocking call answered at once (a
//! fresh cached token, a refused argument) never enters the runtime's blocking machinery.
//!
//! Creating the runtime is also where diagnostic logging starts: `CIBMTR_FHIR_LOG` (`error`,
//! `warn`, `info`, `debug`, `trace`; unset or `off`: nothing) is read once and the SDK's events go
//! to the process's standard error (file descriptor 2, not `System.err`). Every call that can
//! emit an event (anything that reaches the network or starts a sandbox) creates it first.
use std::future::Future;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

use crate::error::CibmtrFhirError;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    cibmtr_fhir::logging::init_from_env();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cibmtr-fhir")
        .build()
        .expect("cannot start the cibmtr-fhir tokio runtime")
});

/// Aborts the spawned task when the caller stops waiting (a cancelled coroutine).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `fut` on the binding's runtime and maps the core error.
pub(crate) async fn run<T, F>(fut: F) -> Result<T, CibmtrFhirError>
where
    T: Send + 'static,
    F: Future<Output = cibmtr_fhir::Result<T>> + Send + 'static,
{
    let mut fut = Box::pin(fut);
    {
        // The first poll, here: a future that needs no I/O (a fresh cached token) is done now.
        // One that is not has registered this no-op waker, which its next poll, on a worker,
        // replaces (every future must wake the waker of its latest poll).
        let _context = RUNTIME.enter();
        if let Poll::Ready(result) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            return result.map_err(CibmtrFhirError::from);
        }
    }
    let mut task = AbortOnDrop(RUNTIME.spawn(fut));
    match (&mut task.0).await {
        Ok(result) => result.map_err(CibmtrFhirError::from),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(CibmtrFhirError::config("the SDK runtime is shutting down")),
    }
}

/// Blocks the calling (Java) thread until `fut`, one of the binding's own `run` futures, is done.
pub(crate) fn block<T>(
    fut: impl Future<Output = Result<T, CibmtrFhirError>>,
) -> Result<T, CibmtrFhirError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        // Only a callback of the SDK (a progress listener) runs on a runtime thread; blocking
        // there would starve the runtime that has to finish the call.
        return Err(CibmtrFhirError::config(
            "a …Blocking function was called from inside an SDK callback; use the suspend function",
        ));
    }
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(result) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        return result;
    }
    RUNTIME.block_on(fut)
}

/// Runs a synchronous setup step that needs the runtime's context (the sandbox binds its
/// listener and spawns its server tasks on the current runtime).
pub(crate) fn block_in_runtime<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, CibmtrFhirError> {
    block(async move {
        let mut task = AbortOnDrop(RUNTIME.spawn(fut));
        (&mut task.0)
            .await
            .map_err(|_| CibmtrFhirError::config("the SDK runtime is shutting down"))
    })
}
