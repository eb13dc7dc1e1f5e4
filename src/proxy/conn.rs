//! One client connection: serving it, and closing it safely when draining.
//!
//! Closing a keep-alive connection races with a client that is sending its
//! next request at that moment: the request is lost (the classic keep-alive
//! race). So on drain a connection is not closed while it is busy or has just
//! finished a response; instead:
//! - a response written during the drain carries `Connection: close`
//!   (HTTP/1.x), after which hyper closes the connection;
//! - an HTTP/1 connection with nothing in flight is closed once it has been
//!   idle for [`DRAIN_IDLE_GRACE`] (at once if it already was), which covers
//!   a request already on its way;
//! - an HTTP/2 connection gets GOAWAY at once (in-flight streams finish; the
//!   protocol makes that race-free).
//!
//! Each connection counts its requests in flight through [`RequestGuard`]s,
//! which the response body holds until it has been sent.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long an idle keep-alive connection is kept open during a drain, from
/// the end of its last response (or from when it was accepted).
pub const DRAIN_IDLE_GRACE: Duration = Duration::from_millis(200);

pub struct ConnState {
    active: AtomicUsize,
    last_done: Mutex<Instant>,
    changed: Notify,
    pub http2: AtomicBool,
    /// The address the client connected to, as a `Host` value (for an
    /// HTTP/1.0 request without one).
    pub local_host: Option<http::HeaderValue>,
    /// The TCP client's address as text (`X-Forwarded-For`), made once.
    pub peer_value: Option<http::HeaderValue>,
    /// Cancelled to drop the connection at once (a client that stopped
    /// reading its response).
    pub cut: tokio_util::sync::CancellationToken,
    /// When the connection was accepted (the origin of `head_since`).
    epoch: Instant,
    /// When the request head being received began, as nanoseconds since
    /// `epoch` plus one; 0: none is being received. Set by the first byte
    /// read while no request is in flight ([`HeadWatch`]), cleared when a
    /// request begins; a new connection's first head counts from its
    /// accept (1).
    head_since: AtomicU64,
    /// When an unbuffered response body (`response_buffering = false`)
    /// last handed hyper a frame that hyper has not asked past since — the
    /// client is not taking what it was sent (nanoseconds since `epoch` +
    /// 1); 0: none is waiting on the client.
    send_stalled: AtomicU64,
    /// The connection's `max_connections` slot: held as long as anything
    /// of it is (an upgraded connection's tunnel holds a request guard,
    /// so a WebSocket counts until it closes).
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl ConnState {
    pub fn new(
        local_host: Option<http::HeaderValue>,
        peer: Option<std::net::IpAddr>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Arc<ConnState> {
        Arc::new(ConnState {
            local_host,
            peer_value: peer.map(super::headers::peer_value),
            cut: tokio_util::sync::CancellationToken::new(),
            active: AtomicUsize::new(0),
            last_done: Mutex::new(Instant::now()),
            changed: Notify::new(),
            http2: AtomicBool::new(false),
            epoch: Instant::now(),
            head_since: AtomicU64::new(1),
            send_stalled: AtomicU64::new(0),
            _permit: permit,
        })
    }

    fn stamp(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// An unbuffered response body handed hyper a frame (`true`) or was
    /// asked for the next one or ended (`false`).
    pub fn send_waiting(&self, waiting: bool) {
        let v = if waiting { self.stamp() } else { 0 };
        self.send_stalled.store(v, Ordering::Relaxed);
    }

    /// How long the client of an HTTP/1 connection has left of `limit`
    /// (`send_timeout`) to take the unbuffered response frame it was
    /// handed (zero: its time is up); `None` when nothing waits on it, and
    /// on HTTP/2 (whose streams share the connection).
    pub fn send_left(&self, limit: Duration) -> Option<Duration> {
        if self.http2.load(Ordering::Relaxed) {
            return None;
        }
        let since = self.send_stalled.load(Ordering::Relaxed).checked_sub(1)?;
        let began = self.epoch + Duration::from_nanos(since);
        Some(limit.saturating_sub(began.elapsed()))
    }

    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.head_since.store(0, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// Bytes arrived from the client: with no request in flight and no
    /// head already begun, they begin the next request's head.
    fn note_read(&self) {
        if self.head_since.load(Ordering::Relaxed) == 0 && self.active.load(Ordering::Relaxed) == 0
        {
            self.head_since.store(self.stamp(), Ordering::Relaxed);
        }
    }

    /// How long the HTTP/1 request head being received has left of
    /// `limit` (`header_timeout`; zero: its time is up); `None` while no
    /// head is being received (idle, or a request in flight) and on
    /// HTTP/2 (where bytes between requests are frames, not heads).
    pub fn head_left(&self, limit: Duration) -> Option<Duration> {
        if self.http2.load(Ordering::Relaxed) || self.active.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = self.head_since.load(Ordering::Relaxed).checked_sub(1)?;
        let began = self.epoch + Duration::from_nanos(since);
        Some(limit.saturating_sub(began.elapsed()))
    }

    /// `None` while a request is in flight; otherwise how much longer the
    /// connection should be kept open (zero: close it now).
    pub fn idle_grace_left(&self) -> Option<Duration> {
        self.idle_left(DRAIN_IDLE_GRACE)
    }

    /// `None` while a request is in flight; otherwise how long until the
    /// connection has been idle for `limit` (zero: it has).
    pub fn idle_left(&self, limit: Duration) -> Option<Duration> {
        if self.active.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let last = *self.last_done.lock().unwrap_or_else(|e| e.into_inner());
        Some(limit.saturating_sub(last.elapsed()))
    }

    /// Resolves after a request ends (a permit is kept if nobody waits, so a
    /// change between a check and the wait is never missed).
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

/// A client connection's socket, telling its [`ConnState`] when bytes
/// arrive (the start of a request head, for `header_timeout`). hyper's own
/// header timer cannot serve: it starts when a keep-alive connection goes
/// idle, not at the head's first byte, so it would also close idle
/// connections (capping `keepalive_timeout` at `header_timeout`).
pub struct HeadWatch<I> {
    io: I,
    state: Arc<ConnState>,
}

impl<I> HeadWatch<I> {
    pub fn new(io: I, state: Arc<ConnState>) -> HeadWatch<I> {
        HeadWatch { io, state }
    }
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for HeadWatch<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.state.note_read();
        }
        polled
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for HeadWatch<I> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// One request in flight on a connection.
pub struct RequestGuard(Arc<ConnState>);

impl RequestGuard {
    /// The connection it is on.
    pub fn conn(&self) -> &ConnState {
        &self.0
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        *self.0.last_done.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_counts_from_the_last_response() {
        let c = ConnState::new(None, None, None);
        let g = c.begin();
        assert_eq!(c.idle_grace_left(), None);
        drop(g);
        let left = c.idle_grace_left().expect("idle");
        assert!(left > Duration::from_millis(150) && left <= DRAIN_IDLE_GRACE);
        *c.last_done.lock().expect("lock") = Instant::now() - Duration::from_secs(1);
        assert_eq!(c.idle_grace_left(), Some(Duration::ZERO));
    }

    #[test]
    fn a_head_is_timed_from_its_first_byte_not_from_idleness() {
        let limit = Duration::from_secs(1);
        let c = ConnState::new(None, None, None);
        // A new connection's first head counts from the accept.
        assert!(c.head_left(limit).is_some_and(|l| l <= limit));
        let g = c.begin();
        assert_eq!(c.head_left(limit), None, "a request in flight");
        drop(g);
        assert_eq!(c.head_left(limit), None, "idle: no head begun");
        c.note_read();
        assert!(c.head_left(limit).is_some_and(|l| l > Duration::ZERO));
        let g = c.begin();
        drop(g);
        assert_eq!(c.head_left(limit), None, "the head became a request");
        c.http2.store(true, Ordering::Relaxed);
        c.note_read();
        assert_eq!(c.head_left(limit), None, "HTTP/2 frames are not heads");
    }

    #[tokio::test]
    async fn change_between_check_and_wait_is_not_missed() {
        let c = ConnState::new(None, None, None);
        let g = c.begin();
        drop(g); // before anyone waits
        tokio::time::timeout(Duration::from_secs(1), c.changed())
            .await
            .expect("permit kept");
    }
}
