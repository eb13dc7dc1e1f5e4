//! The response body curfew sends to clients: either a short body curfew
//! wrote itself (502, 503) or a worker's body streamed through. The guard it
//! carries does the accounting when the body ends: the worker slot is freed,
//! the upstream connection goes back to its pool (only if the body was read
//! to the end), and the client connection learns its request is done.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::access_log::{AccessLog, Note};
use super::conn::RequestGuard;
use super::request_body::{Buffered, FileBody, Limited};
use super::response_body::SpooledBody;
use super::router::Lease;
use super::upstream::Upstream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body curfew sends to a worker: a client's streamed through (held to
/// the client limits), one read whole before dispatch (in memory or
/// spilled to a file), or one curfew made itself (a job's payload). One
/// type, so requests and jobs share the worker connections and the
/// dispatch path.
pub enum UpstreamBody {
    Client(Limited),
    Bytes(Option<Bytes>),
    File(FileBody),
}

impl UpstreamBody {
    pub fn bytes(data: impl Into<Bytes>) -> Self {
        UpstreamBody::Bytes(Some(data.into()))
    }

    /// A body read whole before dispatch.
    pub fn buffered(b: Buffered) -> Self {
        match b {
            Buffered::Memory(data) => UpstreamBody::bytes(data),
            Buffered::File(file, len) => UpstreamBody::File(FileBody::new(file, len)),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Client(inner) => Pin::new(inner)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
            UpstreamBody::File(inner) => Pin::new(inner)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
            UpstreamBody::Bytes(data) => Poll::Ready(
                data.take()
                    .filter(|d| !d.is_empty())
                    .map(|d| Ok(Frame::data(d))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client(inner) => inner.is_end_stream(),
            UpstreamBody::File(inner) => inner.is_end_stream(),
            UpstreamBody::Bytes(data) => data.as_ref().is_none_or(|d| d.is_empty()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client(inner) => inner.size_hint(),
            UpstreamBody::File(inner) => inner.size_hint(),
            UpstreamBody::Bytes(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// Accounting that ends with the response.
pub struct Guard {
    pub lease: Option<Lease>,
    pub upstream: Option<Upstream>,
    pub request: Option<RequestGuard>,
    finished: AtomicBool,
}

impl Guard {
    pub fn new(
        lease: Option<Lease>,
        upstream: Option<Upstream>,
        request: Option<RequestGuard>,
    ) -> Self {
        Guard {
            lease,
            upstream,
            request,
            finished: AtomicBool::new(false),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.lease.is_some()
            && let Some(r) = &self.request
        {
            // An unbuffered response gone: nothing waits on the client.
            r.conn().send_waiting(false);
        }
        if self.finished.load(Ordering::Relaxed)
            && let (Some(lease), Some(tx)) = (&self.lease, self.upstream.take())
        {
            lease.pool.put(tx);
        }
        // The lease and the request guard drop after this, freeing the slot
        // (and waking a queued request) and marking the client connection idle.
    }
}

pub enum ProxyBody {
    Full {
        data: Option<Bytes>,
        guard: Option<Arc<Guard>>,
    },
    Stream {
        inner: Incoming,
        guard: Option<Guard>,
    },
    /// Read from a spool the worker was drained into (`response_body`).
    Spooled(SpooledBody),
    /// Any of the above, counted for the access log.
    Logged(Box<Logged>),
}

/// A response body whose end (or drop: the client went away) writes the
/// request's access log record with the bytes sent.
pub struct Logged {
    inner: ProxyBody,
    note: Option<Note>,
    status: u16,
    bytes: u64,
    /// The body failed (the worker's broke off): the client's response
    /// was cut off, not complete.
    broken: bool,
    log: Arc<AccessLog>,
}

impl Logged {
    fn done(&mut self) {
        if let Some(note) = self.note.take() {
            self.log
                .send(note.finish(self.status, self.bytes, self.broken));
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.done();
    }
}

impl ProxyBody {
    pub fn full(data: impl Into<Bytes>, request: Option<RequestGuard>) -> Self {
        let guard = request.map(|r| Arc::new(Guard::new(None, None, Some(r))));
        ProxyBody::Full {
            data: Some(data.into()),
            guard,
        }
    }

    pub fn empty(request: Option<RequestGuard>) -> Self {
        let guard = request.map(|r| Arc::new(Guard::new(None, None, Some(r))));
        ProxyBody::Full { data: None, guard }
    }

    pub fn stream(inner: Incoming, guard: Guard) -> Self {
        ProxyBody::Stream {
            inner,
            guard: Some(guard),
        }
    }

    /// This body, logged to `log` when it ends.
    pub fn logged(self, note: Note, status: u16, log: Arc<AccessLog>) -> Self {
        ProxyBody::Logged(Box::new(Logged {
            inner: self,
            note: Some(note),
            status,
            bytes: 0,
            broken: false,
            log,
        }))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full { data, guard } => {
                let out = data
                    .take()
                    .filter(|d| !d.is_empty())
                    .map(|d| Ok(Frame::data(d)));
                if out.is_none() {
                    guard.take();
                }
                Poll::Ready(out)
            }
            ProxyBody::Spooled(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Logged(l) => {
                let polled = Pin::new(&mut l.inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            l.bytes += d.len() as u64;
                        }
                    }
                    Poll::Ready(Some(Err(_))) => l.broken = true,
                    Poll::Ready(None) => l.done(),
                    _ => {}
                }
                polled
            }
            ProxyBody::Stream { inner, guard } => {
                // hyper asks for more: the client took what it was handed
                // (`send_timeout`, timed by the connection task).
                let conn = guard
                    .as_ref()
                    .and_then(|g| g.request.as_ref())
                    .map(|r| r.conn());
                if let Some(c) = conn {
                    c.send_waiting(false);
                }
                match Pin::new(inner).poll_frame(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(None) => {
                        if let Some(g) = guard.take() {
                            g.finished.store(true, Ordering::Relaxed);
                        }
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(c) = conn {
                            c.send_waiting(true);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // The worker's body broke off: do not pool that connection.
                        if let Some(lease) = guard.as_ref().and_then(|g| g.lease.as_ref()) {
                            tracing::warn!(worker = lease.worker_id, pid = lease.pid, error = %e, "Worker's response body failed before its end: the client's response is cut off.");
                        }
                        guard.take();
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full { data, .. } => data.as_ref().is_none_or(|d| d.is_empty()),
            ProxyBody::Spooled(body) => body.is_end_stream(),
            ProxyBody::Logged(l) => l.inner.is_end_stream(),
            ProxyBody::Stream { inner, guard } => {
                let end = inner.is_end_stream();
                if end && let Some(g) = guard {
                    g.finished.store(true, Ordering::Relaxed);
                }
                end
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Stream { inner, .. } => inner.size_hint(),
            ProxyBody::Spooled(body) => body.size_hint(),
            ProxyBody::Logged(l) => l.inner.size_hint(),
        }
    }
}
