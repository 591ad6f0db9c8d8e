//! The binding's one tokio runtime per process, and the two ways Python waits for the core:
//! blocking with the GIL released ([`wait`], never touching asyncio, so it works inside
//! Jupyter's running loop and from many threads) and as an asyncio awaitable ([`awaitable`]).
//!
//! A forked child inherits the parent's runtime as dead memory (its worker threads do not cross
//! `fork()`), so the child builds its own on first use. `os.register_at_fork` tells us about the
//! fork (a per-call `getpid()` would cost more than a cached token); the old runtime is leaked on
//! purpose, since dropping it would wait for threads that no longer exist. The core's HTTP
//! client rebuilds its connection pool in a new process, so auth flows and clients built before
//! the fork keep working in the child; only objects tied to the parent's runtime itself (a running
//! `Sandbox`, a search iterator in mid-stream) refuse there ([`Born`]).
use std::cell::Cell;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use cibmtr_fhir::http::{HttpClient, HttpConfig};
use pyo3::prelude::*;
use pyo3_async_runtimes::TaskLocals;
use pyo3_async_runtimes::generic::{self, ContextExt};
use tokio::runtime::Runtime;

use crate::error::OrRaise;

/// Forks this process descends from (bumped in the child by `os.register_at_fork`).
static FORKS: AtomicU64 = AtomicU64::new(0);

/// Called in the child after `os.fork()`.
#[pyfunction]
fn _after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::SeqCst);
    IN_PYTHON.store(0, Ordering::SeqCst);
}

/// Registers the fork hook (Unix only; there is no fork elsewhere) and the exit hook.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let os = py.import("os")?;
    if os.hasattr("register_at_fork")? {
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("after_in_child", wrap_pyfunction!(_after_fork_in_child, m)?)?;
        os.call_method("register_at_fork", (), Some(&kwargs))?;
    }
    py.import("atexit")?
        .call_method1("register", (wrap_pyfunction!(_before_exit, m)?,))?;
    Ok(())
}

// Runtime threads enter Python (to complete an awaitable, call a progress callback, log, look
// for Ctrl-C) only through `with_python`. Until Python 3.14, a thread that needs the GIL back
// once the interpreter is finalizing is ended on the spot (`pthread_exit`), and the unwinding
// then drops Python objects without the GIL: a crash at exit. So `atexit` closes the door and
// waits for the threads already inside.
static EXITING: AtomicBool = AtomicBool::new(false);
static IN_PYTHON: AtomicUsize = AtomicUsize::new(0);

/// The longest the exit hook waits for runtime threads to leave Python.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Runs `f` with the GIL from any thread, unless the interpreter is exiting.
pub fn with_python<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    IN_PYTHON.fetch_add(1, Ordering::SeqCst);
    let out = if EXITING.load(Ordering::SeqCst) {
        None
    } else {
        Python::try_attach(f)
    };
    IN_PYTHON.fetch_sub(1, Ordering::SeqCst);
    out
}

#[pyfunction]
fn _before_exit(py: Python<'_>) {
    EXITING.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = std::time::Instant::now() + EXIT_WAIT;
        while IN_PYTHON.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

struct Process {
    forks: u64,
    runtime: Runtime,
    http: HttpClient,
}

static CURRENT: Mutex<Option<&'static Process>> = Mutex::new(None);

thread_local! {
    static LOCAL: Cell<Option<&'static Process>> = const { Cell::new(None) };
}

fn process() -> &'static Process {
    let forks = FORKS.load(Ordering::Relaxed);
    if let Some(p) = LOCAL.get().filter(|p| p.forks == forks) {
        return p;
    }
    let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    let p = match *current {
        Some(p) if p.forks == forks => p,
        _ => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("cibmtr-fhir")
                .build()
                .expect("cannot start the tokio runtime");
            let http = HttpClient::new(HttpConfig::default()).expect("default HTTP client");
            let p: &'static Process = Box::leak(Box::new(Process {
                forks,
                runtime,
                http,
            }));
            *current = Some(p);
            p
        }
    };
    LOCAL.set(Some(p));
    p
}

/// The process an object was built in, for objects tied to that process's runtime (a running
/// `Sandbox`, a search iterator in mid-stream): in a forked child they say so at once instead of
/// hanging.
pub struct Born(u64);

impl Born {
    pub fn now() -> Born {
        Born(FORKS.load(Ordering::Relaxed))
    }

    pub fn check(&self) -> PyResult<()> {
        if self.0 == FORKS.load(Ordering::Relaxed) {
            return Ok(());
        }
        Err(cibmtr_fhir::Error::Config {
            message: "this object was created before fork() and its connections belong to the parent process; create a new one in the child (or use multiprocessing's \"spawn\" or \"forkserver\" start method)".into(),
        })
        .or_raise()
    }
}

/// This process's runtime.
pub fn runtime() -> &'static Runtime {
    &process().runtime
}

/// This process's default HTTP client, given to every core object built without `http=`.
pub fn http() -> HttpClient {
    process().http.clone()
}

/// How often a blocked call looks for Ctrl-C (Python runs signal handlers only between
/// bytecodes, so a long `submit_labs` would otherwise ignore it).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Runs a core future to completion with the GIL released. Ctrl-C (in the main thread) cancels
/// it and raises `KeyboardInterrupt`.
pub fn wait<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = cibmtr_fhir::Result<T>> + Send,
    T: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        // On one of the runtime's own threads (a progress callback or a logging handler calling
        // back into the SDK): blocking here would stall the runtime.
        return Err(cibmtr_fhir::Error::Config {
            message: "a blocking SDK call was made from an SDK callback (progress or logging); use the a-prefixed method or call it after the submission".into(),
        })
        .or_raise();
    }
    py.detach(|| runtime().block_on(interruptible(fut)))?
        .or_raise()
}

/// [`wait`] for calls that are usually answered at once (a cached token): the future is polled
/// once while the GIL is still held, and only if it is not ready does the call release the GIL
/// and block. The same future goes on, so nothing is started twice.
pub fn wait_ready_first<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = cibmtr_fhir::Result<T>> + Send,
    T: Send,
{
    let mut fut = pin!(fut);
    {
        let _context = runtime().enter();
        if let Poll::Ready(out) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            return out.or_raise();
        }
    }
    wait(py, fut)
}

async fn interruptible<F: Future>(fut: F) -> PyResult<F::Output> {
    let mut fut = pin!(fut);
    loop {
        tokio::select! {
            biased;
            out = &mut fut => return Ok(out),
            _ = tokio::time::sleep(SIGNAL_CHECK) => {
                with_python(|py| py.check_signals()).transpose()?;
            }
        }
    }
}

/// A core future as an asyncio awaitable on the running loop. Cancelling the asyncio task drops
/// the future.
pub fn awaitable<'py, T, F>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = cibmtr_fhir::Result<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    generic::future_into_py::<ProcessRuntime, _, T>(py, async move { fut.await.or_raise() })
}

/// [`awaitable`] for calls that are usually answered at once (a cached token): polled once first,
/// and if ready, the answer is an already completed asyncio future (no trip through the runtime
/// and back into the event loop). Otherwise the same future goes on as [`awaitable`].
pub fn awaitable_ready_first<'py, T, F>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = cibmtr_fhir::Result<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let mut fut = Box::pin(fut);
    {
        let _context = runtime().enter();
        if let Poll::Ready(out) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            let done = pyo3_async_runtimes::get_running_loop(py)?.call_method0("create_future")?;
            match out.or_raise() {
                Ok(v) => done.call_method1("set_result", (v,))?,
                Err(e) => done.call_method1("set_exception", (e.into_value(py),))?,
            };
            return Ok(done);
        }
    }
    awaitable(py, fut)
}

/// [`awaitable`] for futures that produce a Python value themselves.
pub fn awaitable_py<'py, T, F>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    generic::future_into_py::<ProcessRuntime, _, T>(py, fut)
}

/// pyo3-async-runtimes over this process's runtime (its own tokio runtime is a process-wide
/// `OnceLock` that a forked child could not replace).
struct ProcessRuntime;

tokio::task_local! {
    static TASK_LOCALS: std::cell::OnceCell<TaskLocals>;
}

impl generic::Runtime for ProcessRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle = tokio::task::JoinHandle<()>;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        runtime().spawn(fut)
    }

    /// pyo3-async-runtimes completes the asyncio future from here (it takes the GIL).
    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        runtime().spawn_blocking(move || {
            IN_PYTHON.fetch_add(1, Ordering::SeqCst);
            if !EXITING.load(Ordering::SeqCst) {
                f();
            }
            IN_PYTHON.fetch_sub(1, Ordering::SeqCst);
        })
    }
}

impl ContextExt for ProcessRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = std::cell::OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS
            .try_with(|c| c.get().cloned())
            .unwrap_or_default()
    }
}
