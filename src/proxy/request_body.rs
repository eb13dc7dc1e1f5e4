//! A client's request body on its way to a worker, bounded in size and in
//! time: read whole before the request takes a worker slot
//! (`request_buffering`: in memory up to [`MEMORY_LIMIT`], then in an
//! unlinked temporary file), or streamed through a [`Limited`] body that
//! enforces the same limits while the worker reads it. Either way a client
//! that sends too much (413), too slowly (408) or a malformed body (400) is
//! answered as the client's fault and never charged to a worker.
//!
//! Hand-written rather than `http_body_util::Limited` + a timeout layer:
//! those give no typed cause to tell a client's fault from a worker's, and
//! spilling to a file is not in any body crate of the field.

use std::future::Future;
use std::io::{Seek, SeekFrom, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Bytes kept in memory before a buffered body moves to a temporary file.
pub const MEMORY_LIMIT: usize = 1024 * 1024;

/// Chunk size when a spilled body is read back.
const FILE_CHUNK: usize = 64 * 1024;

/// The limits a client's body is held to.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body (`max_request_body`); `None`: no limit.
    pub max: Option<u64>,
    /// Longest wait for the next bytes (`client_body_timeout`); `None`: none.
    pub idle: Option<Duration>,
}

/// Why a client's body was refused: the client's fault, answered to it.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("the request body is larger than max_request_body ({limit} bytes)")]
    TooLarge { limit: u64 },
    #[error("the client sent nothing of its body for client_body_timeout ({after:?})")]
    Timeout { after: Duration },
    #[error("the request body is malformed or was cut off: {0}")]
    Broken(#[source] hyper::Error),
    #[error("could not keep the request body in a temporary file: {0}")]
    Spill(#[source] std::io::Error),
}

impl ClientBodyError {
    /// The status the client gets (a failed spill is curfew's own 500).
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            ClientBodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ClientBodyError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ClientBodyError::Broken(_) => StatusCode::BAD_REQUEST,
            ClientBodyError::Spill(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The client's body error inside a hyper client error, if that is
    /// what ended an exchange with a worker.
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a ClientBodyError> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(found) = err.downcast_ref::<ClientBodyError>() {
                return Some(found);
            }
            cur = err.source();
        }
        None
    }
}

/// A whole body, read before dispatch.
pub enum Buffered {
    Memory(Bytes),
    /// Spilled: an unlinked file (gone when closed) and its length.
    File(std::fs::File, u64),
}

impl Buffered {
    /// Its length in bytes (the worker's `Content-Length`).
    pub fn content_length(&self) -> u64 {
        match self {
            Buffered::Memory(b) => b.len() as u64,
            Buffered::File(_, n) => *n,
        }
    }
}

/// Read `body` whole within `limits`; trailers are dropped.
pub async fn buffer(
    mut body: Incoming,
    limits: BodyLimits,
    spill_dir: &std::path::Path,
) -> Result<Buffered, ClientBodyError> {
    let mut memory: Vec<u8> = Vec::new();
    let mut file: Option<(std::fs::File, u64)> = None;
    loop {
        let frame = next_frame(&mut body, limits.idle).await?;
        let Some(frame) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let total = file.as_ref().map_or(memory.len() as u64, |(_, n)| *n) + data.len() as u64;
        if let Some(limit) = limits.max
            && total > limit
        {
            return Err(ClientBodyError::TooLarge { limit });
        }
        match &mut file {
            Some((f, n)) => {
                // Small synchronous writes to a local temp file: the page
                // cache takes them; not worth a blocking-pool round trip.
                f.write_all(&data).map_err(ClientBodyError::Spill)?;
                *n = total;
            }
            None if memory.len() + data.len() > MEMORY_LIMIT => {
                let mut f = tempfile::tempfile_in(spill_dir).map_err(ClientBodyError::Spill)?;
                f.write_all(&memory).map_err(ClientBodyError::Spill)?;
                f.write_all(&data).map_err(ClientBodyError::Spill)?;
                memory = Vec::new();
                file = Some((f, total));
            }
            None => memory.extend_from_slice(&data),
        }
    }
    Ok(match file {
        Some((mut f, n)) => {
            f.seek(SeekFrom::Start(0)).map_err(ClientBodyError::Spill)?;
            Buffered::File(f, n)
        }
        None => Buffered::Memory(Bytes::from(memory)),
    })
}

/// The next frame within `idle`.
async fn next_frame(
    body: &mut Incoming,
    idle: Option<Duration>,
) -> Result<Option<Frame<Bytes>>, ClientBodyError> {
    let next = body.frame();
    let frame = match idle {
        Some(after) => tokio::time::timeout(after, next)
            .await
            .map_err(|_| ClientBodyError::Timeout { after })?,
        None => next.await,
    };
    frame.transpose().map_err(ClientBodyError::Broken)
}

/// How a streamed body's sending goes, as the dispatcher judges a late
/// answer: the worker's `timeout` counts from the end of the client's body,
/// and before that only the time the worker itself held the body up (not
/// reading it) counts; the time spent waiting for the client's bytes is the
/// client's (bounded by `client_body_timeout` per wait).
#[derive(Debug)]
pub struct BodyProgress {
    epoch: Instant,
    /// When the client had sent it all: nanoseconds since `epoch` + 1; 0:
    /// not yet.
    done_at: AtomicU64,
    /// Since when the body has been waiting for the client's next bytes
    /// (nanoseconds since `epoch` + 1); 0: not waiting.
    waiting_since: AtomicU64,
    /// Nanoseconds spent waiting for the client, ended waits only.
    client_wait: AtomicU64,
}

impl BodyProgress {
    fn new(done: bool) -> BodyProgress {
        BodyProgress {
            epoch: Instant::now(),
            done_at: AtomicU64::new(u64::from(done)),
            waiting_since: AtomicU64::new(0),
            client_wait: AtomicU64::new(0),
        }
    }

    fn stamp(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn at(&self, stamp: u64) -> Instant {
        self.epoch + Duration::from_nanos(stamp.saturating_sub(1))
    }

    /// The client has sent the whole body.
    pub fn is_done(&self) -> bool {
        self.done_at.load(Ordering::Acquire) != 0
    }

    /// How long the body has been waiting for the client's next bytes
    /// (zero when it is not waiting).
    pub fn stalled(&self) -> Duration {
        match self.waiting_since.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => Duration::from_nanos(self.stamp().saturating_sub(since)),
        }
    }

    fn waiting(&self) {
        if self.waiting_since.load(Ordering::Relaxed) == 0 {
            self.waiting_since.store(self.stamp(), Ordering::Relaxed);
        }
    }

    fn received(&self) {
        let since = self.waiting_since.swap(0, Ordering::Relaxed);
        if since != 0 {
            let waited = self.stamp().saturating_sub(since);
            self.client_wait.fetch_add(waited, Ordering::Relaxed);
        }
    }

    fn done(&self) {
        self.received();
        if self.done_at.load(Ordering::Relaxed) == 0 {
            self.done_at.store(self.stamp(), Ordering::Release);
        }
    }

    /// When the worker's `timeout` runs out for work that arrived at
    /// `started` (its first deadline, `started + timeout`): once the body
    /// is all sent, `timeout` after that (never before the first
    /// deadline); before, the first deadline moved by every moment spent
    /// waiting for the client so far (the wait going on included).
    pub fn worker_deadline(&self, first: Instant, timeout: Duration) -> Instant {
        let done = self.done_at.load(Ordering::Acquire);
        if done != 0 {
            return first.max(self.at(done) + timeout);
        }
        let mut waited = self.client_wait.load(Ordering::Relaxed);
        let since = self.waiting_since.load(Ordering::Relaxed);
        if since != 0 {
            waited = waited.saturating_add(self.stamp().saturating_sub(since));
        }
        first + Duration::from_nanos(waited)
    }
}

/// A client's body streamed to a worker, held to the same limits while it
/// flows; `progress` tells the dispatcher whose time a slow answer is.
pub struct Limited {
    inner: Incoming,
    limits: BodyLimits,
    seen: u64,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    pub progress: Arc<BodyProgress>,
}

impl Limited {
    pub fn new(inner: Incoming, limits: BodyLimits) -> Limited {
        let progress = Arc::new(BodyProgress::new(inner.is_end_stream()));
        Limited {
            inner,
            limits,
            seen: 0,
            idle: None,
            progress,
        }
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let Poll::Ready(frame) = polled else {
            // The worker asks for more and the client has none yet.
            self.progress.waiting();
            if let Some(after) = self.limits.idle {
                let sleep = self
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(ClientBodyError::Timeout { after })));
                }
            }
            return Poll::Pending;
        };
        self.idle = None;
        self.progress.received();
        match frame {
            None => {
                self.progress.done();
                Poll::Ready(None)
            }
            Some(Err(e)) => Poll::Ready(Some(Err(ClientBodyError::Broken(e)))),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    self.seen += data.len() as u64;
                    if let Some(limit) = self.limits.max
                        && self.seen > limit
                    {
                        return Poll::Ready(Some(Err(ClientBodyError::TooLarge { limit })));
                    }
                }
                if self.inner.is_end_stream() {
                    self.progress.done();
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }
}

impl Body for Limited {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        self.get_mut().poll_next(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A spilled body read back in chunks.
pub struct FileBody {
    file: tokio::fs::File,
    left: u64,
}

impl FileBody {
    /// `file` positioned at the start of the body.
    pub fn new(file: std::fs::File, len: u64) -> FileBody {
        FileBody {
            file: tokio::fs::File::from_std(file),
            left: len,
        }
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        // At most FILE_CHUNK, which fits in usize.
        let mut chunk = vec![0u8; this.left.min(FILE_CHUNK as u64) as usize];
        let mut buf = tokio::io::ReadBuf::new(&mut chunk);
        match tokio::io::AsyncRead::poll_read(Pin::new(&mut this.file), cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                if n == 0 {
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the spilled request body ended early",
                    ))));
                }
                chunk.truncate(n);
                this.left -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
