//! The HTTP front: curfew owns the client connections, routes each request
//! to the least-loaded ready worker ([`router`]), forwards it ([`forward`],
//! through the [`dispatch`] path it shares with job deliveries) and
//! streams the answer back; and because it sees every request, it can
//! drain exactly ([`Front::stop_accepting`], [`Front::drain`]).
//!
//! It knows nothing of processes: the supervisor tells it which workers are
//! ready through the [`crate::supervisor::Backends`] trait.

pub mod body;
pub mod conn;
pub mod dispatch;
pub mod forward;
pub mod headers;
pub mod listener;
pub mod router;
pub mod upstream;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ForwardedAllow};
use crate::metrics::Metrics;
use crate::supervisor::{Backends, BoxFuture, ReadyWorker, WorkerAddr};
use conn::ConnState;
use dispatch::Dispatcher;
use listener::{Accepted, Listener};
use router::Router;

/// What the front is made from (the `Config`'s front settings).
#[derive(Clone, Debug)]
pub struct FrontConfig {
    pub forwarded_allow: ForwardedAllow,
    /// Requests that may wait for a worker.
    pub backlog: usize,
    /// Time to response headers; `None` = unbounded.
    pub timeout: Option<Duration>,
    /// Idle client connections are closed after this; `None` = never.
    pub keepalive_timeout: Option<Duration>,
    pub worker_concurrency: usize,
    /// The readiness probe's path.
    pub ready_path: Option<String>,
}

impl From<&Config> for FrontConfig {
    fn from(cfg: &Config) -> FrontConfig {
        FrontConfig {
            forwarded_allow: cfg.forwarded_allow.clone(),
            backlog: cfg.backlog,
            timeout: cfg.timeout,
            keepalive_timeout: cfg.keepalive_timeout,
            worker_concurrency: cfg.worker_concurrency,
            ready_path: cfg.ready_path.clone(),
        }
    }
}

/// Shared state of the front.
pub struct Front {
    pub router: Arc<Router>,
    /// The path to the workers, shared with the job runner.
    pub dispatcher: Arc<Dispatcher>,
    pub forwarded_allow: ForwardedAllow,
    pub backlog: usize,
    /// Time to response headers; `None` = unbounded.
    pub timeout: Option<Duration>,
    /// Idle client connections are closed after this; `None` = never.
    pub keepalive_timeout: Option<Duration>,
    /// Request counts and durations (recorded in `forward`).
    pub metrics: Arc<Metrics>,
    ready_path: Option<String>,
    /// Cancelled when the drain starts: responses get `Connection: close`,
    /// idle connections close.
    pub draining: CancellationToken,
    /// Cancelled at the graceful deadline: every connection is cut.
    pub abort: CancellationToken,
    /// Connection and tunnel tasks; the drain waits for them.
    pub tasks: TaskTracker,
    stop_accepting: CancellationToken,
    accept_loops: std::sync::Mutex<Vec<JoinHandle<()>>>,
    builder: auto::Builder<TokioExecutor>,
}

impl Front {
    pub fn new(cfg: FrontConfig, metrics: Arc<Metrics>) -> Arc<Front> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().keep_alive(true);
        let router = Router::new(cfg.worker_concurrency, cfg.backlog);
        Arc::new(Front {
            dispatcher: Arc::new(Dispatcher::new(router.clone(), cfg.worker_concurrency)),
            router,
            forwarded_allow: cfg.forwarded_allow,
            backlog: cfg.backlog,
            timeout: cfg.timeout,
            keepalive_timeout: cfg.keepalive_timeout,
            metrics,
            ready_path: cfg.ready_path,
            draining: CancellationToken::new(),
            abort: CancellationToken::new(),
            tasks: TaskTracker::new(),
            stop_accepting: CancellationToken::new(),
            accept_loops: std::sync::Mutex::new(Vec::new()),
            builder,
        })
    }

    /// Start accepting on `listeners`.
    pub fn serve(self: &Arc<Self>, listeners: Vec<Listener>) {
        let mut loops = self.accept_loops.lock().unwrap_or_else(|e| e.into_inner());
        for l in listeners {
            let front = self.clone();
            loops.push(tokio::spawn(async move { front.accept_loop(l).await }));
        }
    }

    async fn accept_loop(self: Arc<Self>, listener: Listener) {
        loop {
            tokio::select! {
                biased;
                _ = self.stop_accepting.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(a) => self.spawn_conn(a),
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(listener = %listener.describe(), error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            }
        }
        let name = listener.describe();
        let queued = listener.drain_and_close();
        let n = queued.len();
        for a in queued {
            self.spawn_conn(a);
        }
        tracing::info!(listener = %name, queued_connections_accepted = n, "Stopped accepting connections.");
    }

    fn spawn_conn(self: &Arc<Self>, accepted: Accepted) {
        let front = self.clone();
        match accepted {
            Accepted::Tcp(s, peer) => self.tasks.spawn(front.serve_conn(s, Some(peer.ip()))),
            Accepted::Unix(s) => self.tasks.spawn(front.serve_conn(s, None)),
        };
    }

    async fn serve_conn<I>(self: Arc<Self>, io: I, peer: Option<IpAddr>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let state = ConnState::new();
        let svc = {
            let front = self.clone();
            let state = state.clone();
            service_fn(move |req| forward::handle(req, front.clone(), state.clone(), peer))
        };
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc);
        tokio::pin!(conn);
        // Serving: until the drain starts, or the client leaves it idle for
        // keepalive_timeout (which also ends connections that never send a
        // complete request).
        loop {
            let idle = self.keepalive_timeout.and_then(|ka| state.idle_left(ka));
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = self.abort.cancelled() => return,
                _ = self.draining.cancelled() => break,
                _ = tokio::time::sleep(idle.unwrap_or_default()), if idle.is_some() => {
                    if let Some(ka) = self.keepalive_timeout
                        && state.idle_left(ka) == Some(Duration::ZERO)
                    {
                        conn.as_mut().graceful_shutdown();
                        // A connection stuck in the middle of a request head
                        // (a slow or stalled client) does not close by itself:
                        // it gets one more keepalive_timeout, then is dropped.
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = self.abort.cancelled() => {}
                            _ = tokio::time::sleep(ka) => {}
                        }
                        return;
                    }
                }
                _ = state.changed() => {}
            }
        }
        // Draining: close as soon as it is safe (see conn.rs).
        loop {
            if state.http2.load(std::sync::atomic::Ordering::Relaxed) {
                conn.as_mut().graceful_shutdown();
                break;
            }
            match state.idle_grace_left() {
                Some(left) if left.is_zero() => {
                    conn.as_mut().graceful_shutdown();
                    break;
                }
                Some(left) => tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = self.abort.cancelled() => return,
                    _ = tokio::time::sleep(left) => {}
                    _ = state.changed() => {}
                },
                None => tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = self.abort.cancelled() => return,
                    _ = state.changed() => {}
                },
            }
        }
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = self.abort.cancelled() => {}
        }
    }

    /// Close the listeners, after accepting what waits in their queues.
    pub async fn stop_accepting(&self) {
        self.stop_accepting.cancel();
        let loops: Vec<_> = self
            .accept_loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for l in loops {
            let _ = l.await;
        }
    }

    /// Start the drain and wait until every connection is closed, or until
    /// `deadline`. Returns `true` if drained, `false` at the deadline (the
    /// caller logs what was cut off, then calls [`Front::abort_all`]).
    pub async fn drain(&self, deadline: tokio::time::Instant) -> bool {
        self.draining.cancel();
        self.tasks.close();
        tokio::select! {
            _ = self.tasks.wait() => true,
            _ = tokio::time::sleep_until(deadline) => false,
        }
    }

    /// Cut every remaining connection and tunnel, and wait for their tasks.
    pub async fn abort_all(&self) {
        self.abort.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }
}

impl Backends for Front {
    fn probe(&self, addr: WorkerAddr) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(upstream::probe(addr, self.ready_path.clone()))
    }

    fn liveness(
        &self,
        addr: WorkerAddr,
        path: String,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(upstream::probe_with(addr, Some(path), timeout))
    }

    fn add(&self, worker: ReadyWorker) {
        self.router.add(worker);
    }

    fn remove(&self, uid: u64) {
        self.router.remove(uid);
    }

    fn requests_on(&self, uid: u64) -> Vec<String> {
        self.router.requests_on(uid)
    }

    fn drained(&self, uid: u64, timeout: Duration) -> BoxFuture<'static, bool> {
        let router = self.router.clone();
        Box::pin(async move { router.drained(uid, timeout).await })
    }
}
