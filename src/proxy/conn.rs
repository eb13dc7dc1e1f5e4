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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
}

impl ConnState {
    pub fn new(
        local_host: Option<http::HeaderValue>,
        peer: Option<std::net::IpAddr>,
    ) -> Arc<ConnState> {
        Arc::new(ConnState {
            local_host,
            peer_value: peer.map(super::headers::peer_value),
            cut: tokio_util::sync::CancellationToken::new(),
            active: AtomicUsize::new(0),
            last_done: Mutex::new(Instant::now()),
            changed: Notify::new(),
            http2: AtomicBool::new(false),
        })
    }

    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::SeqCst);
        RequestGuard(self.clone())
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

/// One request in flight on a connection.
pub struct RequestGuard(Arc<ConnState>);

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
        let c = ConnState::new(None, None);
        let g = c.begin();
        assert_eq!(c.idle_grace_left(), None);
        drop(g);
        let left = c.idle_grace_left().expect("idle");
        assert!(left > Duration::from_millis(150) && left <= DRAIN_IDLE_GRACE);
        *c.last_done.lock().expect("lock") = Instant::now() - Duration::from_secs(1);
        assert_eq!(c.idle_grace_left(), Some(Duration::ZERO));
    }

    #[tokio::test]
    async fn change_between_check_and_wait_is_not_missed() {
        let c = ConnState::new(None, None);
        let g = c.begin();
        drop(g); // before anyone waits
        tokio::time::timeout(Duration::from_secs(1), c.changed())
            .await
            .expect("permit kept");
    }
}
