//! The admin HTTP endpoint (off unless `admin_bind` is set; loopback is the
//! recommended address): `/healthz` (alive: 200 until curfew exits),
//! `/readyz` (ready for traffic: 200 only while serving with at least one
//! ready worker; 503 from the moment a stop is requested, so load balancers
//! and Kubernetes readiness probes deregister curfew during `drain_delay`),
//! `/status` (the JSON status report, as `curfew status --json`) and
//! `/metrics` (Prometheus metrics in the OpenMetrics text format; see
//! [`crate::metrics`]).
//!
//! With a `[jobs]` section it is also the application's job API
//! ([`jobs`]): `POST /jobs` to enqueue, `GET /jobs/<id>` to read one job,
//! `GET /jobs?queue=&state=&limit=&after=` to list.
//!
//! `/ui` is the status page for a browser ([`ui`]), with its own login
//! (a session cookie in place of the Bearer header) and CSRF checks.

pub mod auth;
mod jobs;
pub mod ui;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use crate::config::BindAddr;
use crate::lifecycle::Phase;
use crate::protocol::status::Status;
use crate::proxy::listener::{Accepted, BindError, Listener};

/// The running curfew as the admin endpoint sees it (the orchestrator's
/// status source implements it).
pub trait StatusView: Send + Sync + 'static {
    fn phase(&self) -> Phase;
    /// Ready for traffic: serving with at least one ready worker.
    fn ready(&self) -> bool;
    /// The whole status report, the job queues' counts included.
    fn report(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Status> + Send + '_>>;
}

/// What the admin endpoint reports from.
#[derive(Clone)]
pub struct AdminState {
    pub status: Arc<dyn StatusView>,
    /// Who may use which path.
    pub auth: Arc<auth::AdminAuth>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub jobs: Option<crate::processor::Processor>,
}

impl AdminState {
    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let phase = self.status.phase();
        let path = req.uri().path();
        if ui::owns(path) {
            // Its own access rule: a browser has a cookie, not a Bearer header.
            return ui::respond(self, req).await;
        }
        if let Err((status, text)) = self.auth.check(path, req.headers()) {
            let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
            *r.status_mut() = status;
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            return r;
        }
        if path == "/jobs" || path.starts_with("/jobs/") {
            return jobs::respond(self.jobs.as_ref(), req).await;
        }
        if req.uri().path() == "/metrics" {
            let body = self.metrics.encode(&self.status.report().await);
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            return r;
        }
        if req.uri().path() == "/status" {
            let body =
                serde_json::to_string_pretty(&self.status.report().await).unwrap_or_default();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            return r;
        }
        let (status, body) = match req.uri().path() {
            "/healthz" => (StatusCode::OK, format!("ok {phase}\n")),
            "/readyz" if self.status.ready() => (StatusCode::OK, format!("ready {phase}\n")),
            "/readyz" => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready {phase}\n"),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "not found: try /healthz, /readyz, /status, /metrics, /jobs or /ui\n".to_string(),
            ),
        };
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        r
    }
}

/// Bind the admin address (errors are reported like any bind error).
pub fn bind(addr: &BindAddr) -> Result<Listener, BindError> {
    Listener::bind(addr)
}

/// Admin connections served at once; more wait in the kernel's queue.
const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request head.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest life of one admin connection (its requests are short).
const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(120);

/// Serve the admin endpoint until `stop` is cancelled.
pub async fn serve(listener: Listener, state: AdminState, stop: CancellationToken) {
    serve_until(listener, state, stop.clone(), stop).await;
}

/// [`serve`], accepting only until `stop_accepting` (an upgrade's successor
/// took the socket over; connections already accepted go on until `stop`,
/// those still queued are left to the successor) or `stop`. Ends by closing
/// the listener (at `stop`, after its queue; its Unix socket file removed
/// when curfew made it and did not hand it over).
pub async fn serve_until(
    listener: Listener,
    state: AdminState,
    stop_accepting: CancellationToken,
    stop: CancellationToken,
) {
    if let Some(warning) = state.auth.warning() {
        tracing::warn!(admin = %listener.describe(), "{warning}");
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = stop_accepting.cancelled() => break,
            _ = stop.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        let accepted = tokio::select! {
            _ = stop_accepting.cancelled() => break,
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let Ok(accepted) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let st = state.clone();
        let stop = stop.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let st = st.clone();
            async move { Ok::<_, Infallible>(st.respond(req).await) }
        });
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let life = tokio::time::sleep(CONNECTION_LIFETIME);
            match accepted {
                Accepted::Tcp(s, _) => {
                    let conn = builder.serve_connection(TokioIo::new(s), svc);
                    tokio::select! { _ = conn => {}, _ = stop.cancelled() => {}, _ = life => {} }
                }
                Accepted::Unix(s) => {
                    let conn = builder.serve_connection(TokioIo::new(s), svc);
                    tokio::select! { _ = conn => {}, _ = stop.cancelled() => {}, _ = life => {} }
                }
            }
        });
    }
    if stop_accepting.is_cancelled() && !stop.is_cancelled() {
        // Handed over: the connections waiting in the shared socket's queue
        // are the new curfew's (it accepts them once it took over). Closed
        // without accepting, and the socket file is left to it.
        drop(listener);
    } else {
        for _ in listener.drain_and_close() {}
    }
}
