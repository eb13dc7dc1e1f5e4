//! The HTTP front: curfew owns the client connections, routes each request
//! to the least-loaded ready worker ([`router`]), forwards it ([`forward`],
//! through the [`dispatch`] path it shares with job deliveries) and
//! streams the answer back; and because it sees every request, it can
//! drain exactly ([`Front::stop_accepting`], [`Front::drain`]).
//!
//! It knows nothing of processes: the supervisor tells it which workers are
//! ready through the [`crate::supervisor::Backends`] trait.

pub mod access_log;
pub mod body;
pub mod conn;
pub mod dispatch;
pub mod forward;
pub mod headers;
pub mod listener;
pub mod request_body;
pub mod response_body;
pub mod router;
pub mod threads;
mod tunnel;
pub mod upstream;
mod wake_filter;

use std::net::IpAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ForwardedAllow};
use crate::metrics::Metrics;
use crate::supervisor::{Backends, BoxFuture, ReadyWorker, WorkerAddr};
use conn::ConnState;
use dispatch::Dispatcher;
use request_body::BodyLimits;

/// Most header fields in one request (hyper's default, made explicit).
const MAX_HEADERS: usize = 100;
/// Streams one HTTP/2 client may have open at once (each can hold a worker
/// slot; the router's queue bounds the rest).
const H2_MAX_STREAMS: u32 = 100;
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
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
    /// Time a client has to send a request head; `None`: no limit.
    pub header_timeout: Option<Duration>,
    /// Largest request head, in bytes.
    pub max_header_size: usize,
    /// Read request bodies whole before dispatch.
    pub request_buffering: bool,
    /// What a client's body is held to.
    pub limits: BodyLimits,
    /// Spool worker responses (see `response_body`).
    pub response_buffering: bool,
    /// A client reading nothing of its response this long is cut.
    pub send_timeout: Option<Duration>,
    /// An upgraded connection idle both ways this long is closed.
    pub tunnel_idle_timeout: Option<Duration>,
    /// Client connections open at once.
    pub max_connections: usize,
    /// Retry a bodiless GET/HEAD/OPTIONS once when its worker died.
    pub retry_idempotent: bool,
    /// Keep request header fields with a `_` in their names.
    pub keep_underscore_headers: bool,
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
            header_timeout: cfg.header_timeout,
            max_header_size: cfg.max_header_size,
            request_buffering: cfg.request_buffering,
            limits: BodyLimits {
                max: cfg.max_request_body,
                idle: cfg.client_body_timeout,
            },
            response_buffering: cfg.response_buffering,
            send_timeout: cfg.send_timeout,
            tunnel_idle_timeout: cfg.tunnel_idle_timeout,
            max_connections: cfg.max_connections,
            retry_idempotent: cfg.retry_idempotent,
            keep_underscore_headers: cfg.keep_underscore_headers,
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
    /// Time from the first byte of an HTTP/1 request head to its end;
    /// `None` = no limit.
    pub header_timeout: Option<Duration>,
    /// Request counts and durations (recorded in `forward`).
    pub metrics: Arc<Metrics>,
    ready_path: Option<String>,
    /// Read request bodies whole before dispatch.
    pub request_buffering: bool,
    /// What a client's body is held to.
    pub limits: BodyLimits,
    /// Where a large buffered body is spilled (as an unnamed file).
    pub spill_dir: std::path::PathBuf,
    /// Spool worker responses (see `response_body`).
    pub response_buffering: bool,
    /// A client reading nothing of its response this long is cut.
    pub send_timeout: Option<Duration>,
    /// An upgraded connection idle both ways this long is closed.
    pub tunnel_idle_timeout: Option<Duration>,
    /// Retry a bodiless GET/HEAD/OPTIONS once when its worker died.
    pub retry_idempotent: bool,
    /// Keep request header fields with a `_` in their names.
    pub keep_underscore_headers: bool,
    /// curfew's access log, when on (set once, before serving).
    access_log: std::sync::OnceLock<Arc<access_log::AccessLog>>,
    /// One permit per open client connection (`max_connections`).
    connections: Arc<tokio::sync::Semaphore>,
    max_connections: usize,
    /// Cancelled when the drain starts: responses get `Connection: close`,
    /// idle connections close.
    pub draining: CancellationToken,
    /// Cancelled at the graceful deadline: every connection is cut.
    pub abort: CancellationToken,
    /// Connection and tunnel tasks; the drain waits for them.
    pub tasks: TaskTracker,
    stop_accepting: CancellationToken,
    /// Set by [`Front::close_listeners_now`]: the accept loops close their
    /// listeners without accepting what waits in the kernel's queue.
    closing_now: std::sync::atomic::AtomicBool,
    accept_loops: std::sync::Mutex<Vec<JoinHandle<()>>>,
    builder: auto::Builder<TokioExecutor>,
    /// Where client connections are served (none started: on the caller's
    /// runtime).
    threads: std::sync::Mutex<Vec<threads::ProxyThread>>,
}

impl Front {
    pub fn new(cfg: FrontConfig, metrics: Arc<Metrics>) -> Arc<Front> {
        let builder = connection_builder(&cfg);
        let router = Router::new(cfg.worker_concurrency, cfg.backlog);
        Arc::new(Front {
            dispatcher: Arc::new(Dispatcher::new(router.clone(), cfg.worker_concurrency)),
            router,
            forwarded_allow: cfg.forwarded_allow,
            backlog: cfg.backlog,
            timeout: cfg.timeout,
            keepalive_timeout: cfg.keepalive_timeout,
            header_timeout: cfg.header_timeout,
            metrics,
            ready_path: cfg.ready_path,
            request_buffering: cfg.request_buffering,
            limits: cfg.limits,
            spill_dir: std::env::temp_dir(),
            response_buffering: cfg.response_buffering,
            send_timeout: cfg.send_timeout,
            tunnel_idle_timeout: cfg.tunnel_idle_timeout,
            retry_idempotent: cfg.retry_idempotent,
            keep_underscore_headers: cfg.keep_underscore_headers,
            access_log: std::sync::OnceLock::new(),
            connections: Arc::new(tokio::sync::Semaphore::new(cfg.max_connections)),
            max_connections: cfg.max_connections,
            draining: CancellationToken::new(),
            abort: CancellationToken::new(),
            tasks: TaskTracker::new(),
            stop_accepting: CancellationToken::new(),
            closing_now: std::sync::atomic::AtomicBool::new(false),
            accept_loops: std::sync::Mutex::new(Vec::new()),
            builder,
            threads: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Log every request of the public addresses to `log` (before
    /// [`Front::serve`]).
    pub fn set_access_log(&self, log: Arc<access_log::AccessLog>) {
        let _ = self.access_log.set(log);
    }

    /// The access log, when on.
    pub fn access_log(&self) -> Option<&Arc<access_log::AccessLog>> {
        self.access_log.get()
    }

    /// Start `n` proxy threads ([`threads`]) for [`Front::serve`] to serve
    /// client connections on (before it; at most once).
    pub fn start_threads(self: &Arc<Self>, n: usize) -> std::io::Result<()> {
        let front = Arc::downgrade(self);
        let started = threads::start(n, move |l| {
            let front = front.clone();
            tokio::spawn(async move {
                // The front outlives its accept loops (`stop_accepting`
                // awaits them); gone, there is nothing to accept for.
                if let Some(front) = front.upgrade() {
                    front.accept_loop(l).await;
                }
            })
        })?;
        *self.threads.lock().unwrap_or_else(|e| e.into_inner()) = started;
        Ok(())
    }

    /// Start accepting on `listeners`: on every proxy thread (each with its
    /// own descriptor of each listener), or on the caller's runtime when
    /// no thread was started. A listener the first thread cannot take
    /// (it has stopped) is served on the caller's runtime instead.
    pub fn serve(self: &Arc<Self>, listeners: Vec<Listener>) {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let mut loops = self.accept_loops.lock().unwrap_or_else(|e| e.into_inner());
        for l in listeners {
            let name = l.describe();
            let here = if threads.is_empty() {
                Ok(Some(l))
            } else {
                self.serve_on_threads(&threads, l, &mut loops)
            };
            match here {
                Ok(None) => {}
                Ok(Some(l)) => {
                    let front = self.clone();
                    loops.push(tokio::spawn(async move { front.accept_loop(l).await }));
                }
                Err(e) => {
                    tracing::error!(listener = %name, error = %e, "Cannot serve this listener.");
                }
            }
        }
    }

    /// Serve one listener on every proxy thread: copies to all but the
    /// first, the original last. `Some(listener)` back, attached to the
    /// caller's runtime, when not even the first thread took it.
    fn serve_on_threads(
        &self,
        threads: &[threads::ProxyThread],
        listener: Listener,
        loops: &mut Vec<JoinHandle<()>>,
    ) -> std::io::Result<Option<Listener>> {
        let listener = listener.into_detached()?;
        for (i, t) in threads.iter().enumerate().skip(1) {
            let copy = match listener.try_clone() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(thread = i, error = %e, "Cannot copy a listener for a proxy thread; it accepts on the others.");
                    continue;
                }
            };
            match t.serve(vec![copy]) {
                Ok(h) => loops.extend(h),
                Err(r) => {
                    tracing::warn!(thread = i, error = %r.error, "A proxy thread cannot accept; the others do.");
                }
            }
        }
        // The original (which removes a Unix socket's file at close) last,
        // so a failure above cannot lose it.
        match threads[0].serve(vec![listener]) {
            Ok(h) => {
                loops.extend(h);
                Ok(None)
            }
            Err(mut r) => {
                tracing::warn!(error = %r.error, "The first proxy thread cannot accept; serving the listener on the main runtime.");
                r.back.pop().map(listener::Detached::attach).transpose()
            }
        }
    }

    async fn accept_loop(self: Arc<Self>, listener: Listener) {
        let mut failures = AcceptFailures::default();
        let mut last_cap_log: Option<std::time::Instant> = None;
        loop {
            // A connection slot first: at max_connections, new connections
            // wait in the kernel's queue rather than being accepted.
            let permit = match self.connections.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    if last_cap_log.is_none_or(|t| t.elapsed() >= ACCEPT_LOG_EVERY) {
                        tracing::warn!(listener = %listener.describe(), max_connections = self.max_connections, "At max_connections: new connections wait in the kernel's queue until one closes.");
                        last_cap_log = Some(std::time::Instant::now());
                    }
                    tokio::select! {
                        biased;
                        _ = self.stop_accepting.cancelled() => break,
                        p = self.connections.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => break, // the semaphore is never closed
                        },
                    }
                }
            };
            tokio::select! {
                biased;
                _ = self.stop_accepting.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(a) => {
                        failures.recovered(&listener);
                        self.spawn_conn(a, Some(permit));
                    }
                    Err(e) => {
                        // EMFILE and friends: the connection waits in the
                        // kernel's queue; back off instead of spinning.
                        failures.failed(&listener, &e);
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        let name = listener.describe();
        if self.closing_now.load(std::sync::atomic::Ordering::Acquire) {
            // An immediate stop: what waits in the queue would only be
            // accepted and cut. Closed now, a bound socket refuses new
            // connections; an inherited one's queue stays with its owner.
            listener.close();
            tracing::info!(listener = %name, "Stopped accepting connections (immediate stop).");
            return;
        }
        let queued = listener.drain_and_close();
        let n = queued.len();
        for a in queued {
            // Never reset a waiting client: served even past the cap.
            let permit = self.connections.clone().try_acquire_owned().ok();
            self.spawn_conn(a, permit);
        }
        tracing::info!(listener = %name, queued_connections_accepted = n, "Stopped accepting connections.");
    }

    /// Serve an accepted connection; `permit` (its `max_connections`
    /// slot) is held until it ends — an upgraded one's when its tunnel
    /// does ([`ConnState`] keeps it).
    fn spawn_conn(self: &Arc<Self>, accepted: Accepted, permit: Option<OwnedSemaphorePermit>) {
        let front = self.clone();
        match accepted {
            Accepted::Tcp(s, peer) => {
                // The Host of an HTTP/1.0 request that sent none.
                let local = s
                    .local_addr()
                    .ok()
                    .and_then(|a| HeaderValue::from_str(&a.to_string()).ok());
                self.tasks
                    .spawn(async move { front.serve_conn(s, Some(peer.ip()), local, permit).await })
            }
            Accepted::Unix(s) => {
                let local = Some(HeaderValue::from_static("localhost"));
                self.tasks
                    .spawn(async move { front.serve_conn(s, None, local, permit).await })
            }
        };
    }

    async fn serve_conn<I>(
        self: Arc<Self>,
        io: I,
        peer: Option<IpAddr>,
        local: Option<HeaderValue>,
        permit: Option<OwnedSemaphorePermit>,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let state = ConnState::new(local, peer, permit);
        let svc = {
            let front = self.clone();
            let state = state.clone();
            service_fn(move |req| forward::handle(req, front.clone(), state.clone(), peer))
        };
        let io = conn::HeadWatch::new(io, state.clone());
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc);
        tokio::pin!(conn);
        // Serving: until the drain starts, or the client leaves it idle for
        // keepalive_timeout (which also ends connections that never send a
        // complete request). The futures live across requests: nothing is
        // registered or re-armed per request, and they sit behind a
        // `WakeFilter`, so the task's wake-ups for each request poll hyper
        // alone. The idle timer, when it fires, looks at the connection and
        // sets itself again if it was busy or used since. The head timer
        // (header_timeout) likewise looks every header_timeout whether a
        // request head is being received, and if so waits for its end.
        let filter = wake_filter::WakeFilter::new();
        let abort = self.abort.cancelled();
        let cut = state.cut.cancelled();
        let draining = self.draining.cancelled();
        let idle = tokio::time::sleep(self.keepalive_timeout.unwrap_or(Duration::MAX));
        // A new connection's first head counts from now (the accept).
        let head = tokio::time::sleep(self.header_timeout.unwrap_or(Duration::MAX));
        // send_timeout for unbuffered responses (a spooled one's pump times
        // its own client): looked at every send_timeout, then the exact
        // deadline of a frame the client has not taken.
        let send_limit = self.send_timeout.filter(|_| !self.response_buffering);
        let send = tokio::time::sleep(send_limit.unwrap_or(Duration::MAX));
        tokio::pin!(abort, cut, draining, idle, head, send);
        let rare = std::future::poll_fn(|cx| {
            filter.poll(cx, |cx| {
                // Cut: a client that stopped reading its response (send_timeout).
                if abort.as_mut().poll(cx).is_ready() || cut.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(ConnEvent::Close);
                }
                if draining.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(ConnEvent::Drain);
                }
                if let Some(limit) = self.header_timeout {
                    while head.as_mut().poll(cx).is_ready() {
                        let now = tokio::time::Instant::now();
                        match state.head_left(limit) {
                            Some(left) if left.is_zero() => {
                                return Poll::Ready(ConnEvent::HeadTimeout);
                            }
                            Some(left) => head.as_mut().reset(now + left),
                            // No head being received: look again later.
                            None => head.as_mut().reset(now + limit),
                        }
                    }
                }
                if let Some(limit) = send_limit {
                    while send.as_mut().poll(cx).is_ready() {
                        let now = tokio::time::Instant::now();
                        match state.send_left(limit) {
                            Some(left) if left.is_zero() => {
                                return Poll::Ready(ConnEvent::SendTimeout);
                            }
                            Some(left) => send.as_mut().reset(now + left),
                            None => send.as_mut().reset(now + limit),
                        }
                    }
                }
                let Some(ka) = self.keepalive_timeout else {
                    return Poll::Pending;
                };
                while idle.as_mut().poll(cx).is_ready() {
                    let now = tokio::time::Instant::now();
                    match state.idle_left(ka) {
                        Some(left) if left.is_zero() => return Poll::Ready(ConnEvent::Idle(ka)),
                        // Used since the timer was set: the rest of its idle time.
                        Some(left) => idle.as_mut().reset(now + left),
                        // A request in flight: look again later.
                        None => idle.as_mut().reset(now + ka),
                    }
                }
                Poll::Pending
            })
        });
        let event = tokio::select! {
            biased;
            _ = conn.as_mut() => return,
            event = rare => event,
        };
        match event {
            ConnEvent::Close => return,
            ConnEvent::SendTimeout => {
                // The client's fault: the worker's answer goes with it.
                tracing::debug!(
                    timeout_ms = send_limit.map_or(0, |t| t.as_millis() as u64),
                    "Client read nothing of its response for send_timeout: closing its connection."
                );
                return;
            }
            ConnEvent::HeadTimeout => {
                // A client's fault (slowloris): dropped, costing no worker.
                tracing::debug!(
                    header_timeout_ms = self.header_timeout.map_or(0, |t| t.as_millis() as u64),
                    "Client did not send its request head within header_timeout: closing its connection."
                );
                return;
            }
            ConnEvent::Drain => {}
            ConnEvent::Idle(ka) => {
                conn.as_mut().graceful_shutdown();
                // A connection stuck in the middle of a request head (a slow
                // or stalled client) does not close by itself: it gets one
                // more keepalive_timeout, then is dropped.
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = self.abort.cancelled() => {}
                    _ = tokio::time::sleep(ka) => {}
                }
                return;
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

    /// An immediate stop: the accept loops end at once and close their
    /// listeners without accepting what waits in the kernel's queue (it
    /// could only be cut). [`Front::stop_accepting`] waits for them.
    pub fn close_listeners_now(&self) {
        self.closing_now
            .store(true, std::sync::atomic::Ordering::Release);
        self.stop_accepting.cancel();
    }

    /// Close the listeners, after accepting what waits in their queues
    /// (unless [`Front::close_listeners_now`] came first).
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

/// What ends a client connection's serving, besides the connection itself.
enum ConnEvent {
    /// Every connection is cut ([`Front::abort_all`]), or this one (its
    /// client stopped reading: `send_timeout`).
    Close,
    /// The drain started.
    Drain,
    /// Idle for `keepalive_timeout` (given).
    Idle(Duration),
    /// An HTTP/1 client took nothing of an unbuffered response it was
    /// sent for `send_timeout`.
    SendTimeout,
    /// An HTTP/1 request head not received within `header_timeout` of its
    /// first byte (or of the accept, for a new connection's first).
    HeadTimeout,
}

/// How long the accept loop waits after a failed accept (EMFILE, ENFILE,
/// ENOBUFS): the connection stays in the kernel's queue meanwhile.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per listener this often while accepts fail.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Failed accepts, logged once per [`ACCEPT_LOG_EVERY`] with a count
/// rather than once each (a flood at EMFILE would otherwise write hundreds
/// of lines a second), and their end once.
#[derive(Default)]
struct AcceptFailures {
    since_log: u64,
    last_log: Option<std::time::Instant>,
    failing: bool,
}

impl AcceptFailures {
    fn failed(&mut self, listener: &Listener, e: &std::io::Error) {
        self.since_log += 1;
        self.failing = true;
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= ACCEPT_LOG_EVERY)
        {
            tracing::warn!(listener = %listener.describe(), error = %e, failed_accepts = self.since_log, "Accepting connections fails (at the open-file limit?); new connections wait in the kernel's queue.");
            self.since_log = 0;
            self.last_log = Some(std::time::Instant::now());
        }
    }

    fn recovered(&mut self, listener: &Listener) {
        if self.failing {
            self.failing = false;
            tracing::info!(listener = %listener.describe(), failed_accepts = self.since_log, "Accepting connections again.");
            self.since_log = 0;
        }
    }
}

/// How client connections are served: hyper's own limits and timers set
/// deliberately rather than left at their defaults.
fn connection_builder(cfg: &FrontConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        // header_timeout is curfew's own (from a head's first byte, see
        // `serve_conn`): hyper's timer starts as soon as a keep-alive
        // connection goes idle, so at header_timeout it would close idle
        // connections kept for keepalive_timeout. It stays as a backstop
        // no shorter than either (a head left partial behind a request in
        // flight, which curfew's own timer does not see begin); `None`
        // when either is unlimited (hyper's default would be 30 s).
        .header_read_timeout(match (cfg.header_timeout, cfg.keepalive_timeout) {
            (Some(h), Some(ka)) => Some(h.max(ka)),
            _ => None,
        })
        // The read buffer holds the request head: past it, hyper answers 431.
        .max_buf_size(cfg.max_header_size)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_size).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_STREAMS)
        // Pings find a dead peer of an idle HTTP/2 connection.
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
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
