//! Injected faults and the connection layer that can honour them.
//!
//! A [`Fault`] on a [`Route`] can answer with another status, slow the answer down, or close
//! the TCP connection without any HTTP response. `axum::serve` cannot do the last, so the
//! sandbox runs its own accept loop: every connection gets a kill switch that a handler can
//! pull (through a task-local), and the connection task then drops the connection future,
//! which closes the socket.
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

use crate::Inner;

/// A route that can carry an injected [`Fault`]; each also has a request counter
/// ([`Sandbox::requests`](crate::Sandbox::requests)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// The Okta token endpoint.
    OktaToken,
    /// The MSK token endpoint.
    MskToken,
    /// The protected resource.
    Protected,
    /// The SMART token endpoint (Backend Services and App Launch grants).
    SmartToken,
    /// CIBMTR `PUT /CRID`.
    Crid,
    /// CIBMTR `POST /Patient`.
    PatientCreate,
    /// CIBMTR `GET /Patient` search and `GET /Patient/{id}` read.
    PatientSearch,
    /// CIBMTR `POST /Observation`, and `POST` of a transaction Bundle to the FHIR root.
    ObservationCreate,
    /// CIBMTR `GET /Observation` search (next pages included) and `GET /Observation/{id}`.
    ObservationSearch,
    /// Any request to the MSK-like FHIR store.
    MskFhir,
    /// Any request to the Aidbox-like FHIR store.
    AidboxFhir,
}

impl Route {
    /// Every route, in a stable order.
    pub const ALL: [Route; 11] = [
        Route::OktaToken,
        Route::MskToken,
        Route::Protected,
        Route::SmartToken,
        Route::Crid,
        Route::PatientCreate,
        Route::PatientSearch,
        Route::ObservationCreate,
        Route::ObservationSearch,
        Route::MskFhir,
        Route::AidboxFhir,
    ];

    /// The snake_case name used by the admin API (`okta_token`, `observation_create`, …).
    pub fn name(self) -> &'static str {
        match self {
            Route::OktaToken => "okta_token",
            Route::MskToken => "msk_token",
            Route::Protected => "protected",
            Route::SmartToken => "smart_token",
            Route::Crid => "crid",
            Route::PatientCreate => "patient_create",
            Route::PatientSearch => "patient_search",
            Route::ObservationCreate => "observation_create",
            Route::ObservationSearch => "observation_search",
            Route::MskFhir => "msk_fhir",
            Route::AidboxFhir => "aidbox_fhir",
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Route {
    type Err = String;

    /// Parses the snake_case [`Route::name`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Route::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("unknown route {s:?}"))
    }
}

/// When a dropped connection happens relative to the request's effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropMode {
    /// Close the connection before the request has any effect.
    BeforeProcessing,
    /// Process the request completely (e.g. store the resource), then close the connection
    /// instead of sending the response.
    AfterProcessing,
}

impl FromStr for DropMode {
    type Err = String;

    /// Parses `before` or `after`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "before" => Ok(DropMode::BeforeProcessing),
            "after" => Ok(DropMode::AfterProcessing),
            other => Err(format!(
                "drop_connection must be \"before\" or \"after\", not {other:?}"
            )),
        }
    }
}

/// An injected failure or delay on a route.
///
/// A request the fault hits first sleeps for `delay`; then, if `drop_connection` is set, the
/// connection is closed (before or after processing) and `status` is ignored; otherwise a
/// non-zero `status` answers with `status`, `headers` and `body`, and status 0 answers normally.
#[derive(Clone, Debug, Default)]
pub struct Fault {
    /// Status to answer instead of the real answer (0 = only delay, then answer normally).
    pub status: u16,
    /// Headers of the faulted answer.
    pub headers: Vec<(String, String)>,
    /// Body of the faulted answer.
    pub body: String,
    /// Sleep before answering.
    pub delay: Duration,
    /// Number of requests the fault hits before it clears itself; 0 = until cleared.
    pub times: u32,
    /// Close the TCP connection without any HTTP response.
    pub drop_connection: Option<DropMode>,
    /// Fraction of the route's requests the fault hits, chosen at random; 0.0 (the default)
    /// or anything ≥ 1.0 means every request. Only hit requests count towards `times`. The
    /// language packages refuse a share outside 0–1 ([`Fault::check`]).
    pub share: f64,
}

impl Fault {
    /// Checks the values a language package passed on from its caller: `status` 0 or an HTTP
    /// status, `share` a fraction. On a bad value, the field and the rule it broke (a `share`
    /// of 50 meant as 50% would otherwise hit every request, a status of 1000 answer nothing).
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.status != 0 && !(100..=599).contains(&self.status) {
            return Err((
                "status",
                "must be 0 (answer normally) or an HTTP status from 100 to 599",
            ));
        }
        if !(0.0..=1.0).contains(&self.share) {
            return Err((
                "share",
                "must be a fraction from 0 to 1 (0 or 1: every request)",
            ));
        }
        Ok(())
    }

    /// Whether this request is one the fault hits.
    fn hits(&self) -> bool {
        if self.share > 0.0 && self.share < 1.0 {
            rand::thread_rng().gen_bool(self.share)
        } else {
            true
        }
    }
}

/// Faults by route and the per-route request counters.
///
/// A route may carry several faults (see [`Sandbox::add_fault`](crate::Sandbox::add_fault)):
/// each request is offered to them in the order they were added and the first that hits
/// answers, so shares add up to a mix (1% of 503s, 1% of dropped connections, ...).
#[derive(Default)]
pub(crate) struct FaultTable {
    faults: std::sync::Mutex<HashMap<Route, Vec<Fault>>>,
    requests: std::sync::Mutex<HashMap<Route, u64>>,
    /// Requests a fault hit, by route.
    hits: std::sync::Mutex<HashMap<Route, u64>>,
    /// Share of a route's requests that first revoke every access token issued so far.
    revocations: std::sync::Mutex<HashMap<Route, f64>>,
}

impl FaultTable {
    pub(crate) fn set(&self, route: Route, fault: Fault) {
        self.faults.lock().unwrap().insert(route, vec![fault]);
    }

    pub(crate) fn add(&self, route: Route, fault: Fault) {
        self.faults
            .lock()
            .unwrap()
            .entry(route)
            .or_default()
            .push(fault);
    }

    pub(crate) fn set_revocation(&self, route: Route, share: f64) {
        let mut r = self.revocations.lock().unwrap();
        if share > 0.0 {
            r.insert(route, share);
        } else {
            r.remove(&route);
        }
    }

    pub(crate) fn clear(&self) {
        self.faults.lock().unwrap().clear();
        self.revocations.lock().unwrap().clear();
    }

    pub(crate) fn requests(&self, route: Route) -> u64 {
        self.requests
            .lock()
            .unwrap()
            .get(&route)
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn hits(&self, route: Route) -> u64 {
        self.hits.lock().unwrap().get(&route).copied().unwrap_or(0)
    }

    /// Whether this request on `route` revokes every token first (a random share of them).
    fn revokes(&self, route: Route) -> bool {
        let share = self.revocations.lock().unwrap().get(&route).copied();
        share.is_some_and(|s| s >= 1.0 || rand::thread_rng().gen_bool(s))
    }

    /// Counts a request on `route` and returns the fault if one hits this request.
    fn take(&self, route: Route) -> Option<Fault> {
        *self.requests.lock().unwrap().entry(route).or_default() += 1;
        let mut faults = self.faults.lock().unwrap();
        let list = faults.get_mut(&route)?;
        let i = list.iter().position(Fault::hits)?;
        let out = list[i].clone();
        if list[i].times > 0 {
            list[i].times -= 1;
            if list[i].times == 0 {
                list.remove(i);
                if list.is_empty() {
                    faults.remove(&route);
                }
            }
        }
        drop(faults);
        *self.hits.lock().unwrap().entry(route).or_default() += 1;
        Some(out)
    }
}

/// Counts a request on `route` and applies its fault, if any hits. Returns the response that
/// replaces the real answer; `None` means "answer normally". Each handler calls this exactly
/// once, before doing anything with the request.
pub(crate) async fn apply_fault(inner: &Inner, route: Route) -> Option<Response> {
    let fault = inner.faults.take(route);
    if inner.faults.revokes(route) {
        // The token this request carries (and every other) is now invalid: a 401 follows.
        inner.generation.fetch_add(1, Ordering::SeqCst);
    }
    let fault = fault?;
    if !fault.delay.is_zero() {
        tokio::time::sleep(fault.delay).await;
    }
    match fault.drop_connection {
        Some(DropMode::BeforeProcessing) => return Some(sever_now().await),
        Some(DropMode::AfterProcessing) => {
            if CONNECTION
                .try_with(|c| c.drop_after.store(true, Ordering::SeqCst))
                .is_err()
            {
                return Some(no_kill_switch());
            }
            return None;
        }
        None => {}
    }
    if fault.status == 0 {
        return None;
    }
    let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, fault.body).into_response();
    let mut given: Vec<HeaderName> = Vec::new();
    for (k, v) in fault.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            // The fault's first value of a header replaces the default (a `Content-Type:
            // text/html` must not sit behind the `text/plain` of a string body); later values of
            // the same header are added to it.
            if given.contains(&k) {
                resp.headers_mut().append(k, v);
            } else {
                resp.headers_mut().insert(k.clone(), v);
                given.push(k);
            }
        }
    }
    Some(resp)
}

/// Pulls the connection's kill switch. The answer returned is never sent: the request's service
/// future sees the switch pulled and waits for the connection task to drop it with the
/// connection.
async fn sever_now() -> Response {
    let pulled = CONNECTION.try_with(|c| {
        c.killed.store(true, Ordering::SeqCst);
        c.kill.notify_one();
    });
    if pulled.is_err() {
        return no_kill_switch();
    }
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

fn no_kill_switch() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "sandbox: drop_connection needs the sandbox's own connection loop",
    )
        .into_response()
}

/// Per-request handle on the connection that carries it.
struct RequestCtl {
    kill: Arc<Notify>,
    /// The connection is being closed without an answer (set with `kill`).
    killed: AtomicBool,
    drop_after: AtomicBool,
}

tokio::task_local! {
    static CONNECTION: Arc<RequestCtl>;
}

/// Serves `router` on `listener` until `shutdown` changes or its sender is dropped. HTTP/1.1
/// with keep-alive; on shutdown the listener is closed at once and every connection is told to
/// finish its current request (at most one second) and close. While `detached` is set, each
/// request is handled in a task of its own, which finishes (a slow request is processed, its
/// resource stored) even if the client hangs up first, as most servers do; otherwise a request
/// whose client hangs up is abandoned where it stands.
pub(crate) fn spawn_server(
    listener: TcpListener,
    router: Router,
    shutdown: watch::Receiver<()>,
    detached: Arc<AtomicBool>,
) {
    tokio::spawn(async move {
        let mut stop = shutdown.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_connection(
                            stream,
                            router.clone(),
                            shutdown.clone(),
                            detached.clone(),
                        ));
                    }
                    // Out of file descriptors and the like: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                },
                _ = stop.changed() => break,
            }
        }
    });
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    mut shutdown: watch::Receiver<()>,
    detached: Arc<AtomicBool>,
) {
    let kill = Arc::new(Notify::new());
    let service = {
        let kill = kill.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let ctl = Arc::new(RequestCtl {
                kill: kill.clone(),
                killed: AtomicBool::new(false),
                drop_after: AtomicBool::new(false),
            });
            let router = router.clone();
            let detached = detached.load(Ordering::SeqCst);
            async move {
                let handle = CONNECTION.scope(ctl.clone(), async move {
                    match router.oneshot(req.map(Body::new)).await {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    }
                });
                let resp = if detached {
                    match tokio::spawn(handle).await {
                        Ok(resp) => resp,
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                } else {
                    handle.await
                };
                if ctl.killed.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                if ctl.drop_after.load(Ordering::SeqCst) {
                    ctl.kill.notify_one();
                    std::future::pending::<()>().await;
                }
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        // Returning drops `conn` and with it the socket: the client gets no response at all.
        _ = kill.notified() => {}
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_values_are_checked() {
        let ok = |f: Fault| f.check().is_ok();
        assert!(ok(Fault::default()));
        assert!(ok(Fault {
            status: 503,
            share: 0.25,
            ..Default::default()
        }));
        assert!(ok(Fault {
            status: 100,
            share: 1.0,
            ..Default::default()
        }));
        let field = |f: Fault| f.check().unwrap_err().0;
        assert_eq!(
            field(Fault {
                status: 99,
                ..Default::default()
            }),
            "status"
        );
        assert_eq!(
            field(Fault {
                status: 600,
                ..Default::default()
            }),
            "status"
        );
        assert_eq!(
            field(Fault {
                share: 50.0,
                ..Default::default()
            }),
            "share"
        );
        assert_eq!(
            field(Fault {
                share: -0.1,
                ..Default::default()
            }),
            "share"
        );
        assert_eq!(
            field(Fault {
                share: f64::NAN,
                ..Default::default()
            }),
            "share"
        );
    }
}
