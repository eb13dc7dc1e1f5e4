//! Upgraded connections (WebSocket, …): bytes both ways until either side
//! closes, the drain's deadline cuts it, or it carries nothing either way
//! for `tunnel_idle_timeout`. A tunnel holds a worker slot for its whole
//! life, so an abandoned one must not hold it forever.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::RequestGuard;
use super::router::Lease;
use super::upstream::Upstream;

/// When a tunnel last carried a byte, in milliseconds since it opened.
#[derive(Clone)]
struct Activity {
    opened: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// How long nothing has moved.
    fn idle_for(&self) -> Duration {
        self.opened
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    /// Resolves once nothing has moved for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let idle = self.idle_for();
            if idle >= timeout {
                return;
            }
            tokio::time::sleep(timeout - idle).await;
        }
    }
}

/// A stream that records each read that returned bytes (every byte written
/// to one side was read from the other, so reads are all the activity).
struct Watched<T> {
    inner: T,
    activity: Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Relay an upgraded connection. `hold` (the worker slot, its connection,
/// the client request) lives as long as the tunnel.
pub(super) async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    hold: (Lease, Upstream, RequestGuard),
    abort: tokio_util::sync::CancellationToken,
    idle_timeout: Option<Duration>,
) {
    let worker = hold.0.worker_id;
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(worker, error = %e, "Protocol upgrade did not complete.");
            return;
        }
    };
    let activity = Activity::new();
    let mut client = Watched {
        inner: TokioIo::new(client),
        activity: activity.clone(),
    };
    let mut upstream = Watched {
        inner: TokioIo::new(upstream),
        activity: activity.clone(),
    };
    let idle = async {
        match idle_timeout {
            Some(t) => activity.idle(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = r {
                tracing::debug!(worker, error = %e, "Upgraded connection ended with an error.");
            }
        }
        _ = idle => {
            tracing::debug!(
                worker,
                idle_ms = activity.idle_for().as_millis() as u64,
                "Upgraded connection idle for tunnel_idle_timeout: closing it."
            );
        }
        _ = abort.cancelled() => {}
    }
    drop(hold);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_a_quiet_stretch_not_for_the_first_byte() {
        let a = Activity::new();
        let t = Duration::from_secs(10);
        tokio::time::advance(Duration::from_secs(6)).await;
        a.touch();
        let started = tokio::time::Instant::now();
        a.idle(t).await;
        // Ten quiet seconds counted from the touch, not from the opening.
        assert!(
            started.elapsed() >= Duration::from_secs(9),
            "{:?}",
            started.elapsed()
        );
    }
}
