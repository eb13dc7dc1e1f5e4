//! Connections from curfew to workers: a small keep-alive pool per worker
//! process, and the readiness probe.
//!
//! Hand-written rather than hyper-util's legacy `Client` because the proxy
//! needs what that client hides: a refused connect must hand the request back
//! untouched (so it can be retried on another worker whatever its method),
//! and a pooled connection that turns out closed must give the request back
//! too (`try_send_request`). Idle connections are dropped after
//! [`IDLE_TIMEOUT`], shorter than any common server's keep-alive timeout
//! (gunicorn gthread 2 s, uvicorn/Node 5 s), so curfew never reuses a
//! connection the worker is closing at the same moment; and before an idle
//! connection is reused, its socket is peeked (non-blocking `MSG_PEEK`): a
//! worker that died or closed it while it sat in the pool shows EOF there,
//! and the connection is dropped instead of losing a request to it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use nix::sys::socket::{MsgFlags, recv};
use std::os::fd::{AsRawFd, RawFd};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::body::UpstreamBody;
use crate::supervisor::WorkerAddr;

pub const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_IDLE: usize = 64;
/// The most a worker connection's read buffer grows to (hyper's default is
/// ~400 KiB, kept per pooled connection: a large streamed answer on each of
/// 32 connections held curfew's memory 20 MiB up). A worker's response head
/// must fit (nginx's `proxy_buffer_size` is 4–8 KiB).
const UPSTREAM_READ_BUF: usize = 64 * 1024;

/// A TCP or Unix stream to a worker, and the liveness peek's view of its fd.
pub struct Stream {
    inner: Inner,
    probe: Arc<ProbeFd>,
}

enum Inner {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn new(inner: Inner) -> Stream {
        let fd = match &inner {
            Inner::Tcp(t) => t.as_raw_fd(),
            Inner::Unix(u) => u.as_raw_fd(),
        };
        Stream {
            inner,
            probe: Arc::new(ProbeFd(Mutex::new(Some(fd)))),
        }
    }
}

impl Drop for Stream {
    /// The fd is withdrawn from the peek before `inner` closes it.
    fn drop(&mut self) {
        *self.probe.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// A worker connection's fd as the pool's liveness peek sees it: set while
/// its [`Stream`] lives, cleared (under the lock) when the stream is
/// dropped, before the socket is closed, so a peek never reads a descriptor
/// number that was closed and reused meanwhile, from whichever thread.
/// Hand-written because hyper owns the stream once the connection starts;
/// a `dup` of the fd did the same at two syscalls per connection (with
/// sync workers, per request).
struct ProbeFd(Mutex<Option<RawFd>>);

impl ProbeFd {
    /// Still open and idle as far as the kernel knows: no EOF, no error, no
    /// unsolicited bytes waiting.
    fn idle_and_open(&self) -> bool {
        let fd = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(fd) = *fd else { return false };
        let mut buf = [0u8; 1];
        matches!(
            recv(fd, &mut buf, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR)
        ) // Ok(0) = EOF, Ok(n) = stray bytes, other errors = reset
    }

    /// Send the worker our end of the connection (FIN) now. Called once its
    /// response was read to the end on a connection it said it closes:
    /// gunicorn's sync worker, for one, waits (`poll`, up to 2 s) for the
    /// peer to close before it accepts its next connection, and hyper's
    /// connection task would only close when the runtime next polls it —
    /// measured at ~100 µs of a sync worker's idle time per request. A
    /// failure changes nothing (hyper closes the socket anyway).
    fn shutdown_write(&self) {
        let fd = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fd) = *fd {
            // The lock proves the fd is still this connection's (see above).
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Write);
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_flush(cx),
            Inner::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Inner::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Tcp(s) => s.is_write_vectored(),
            Inner::Unix(s) => s.is_write_vectored(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr}: {source}")]
    Io {
        addr: WorkerAddr,
        source: std::io::Error,
    },
    #[error("connect to {addr}: timed out after {CONNECT_TIMEOUT:?}")]
    Timeout { addr: WorkerAddr },
    #[error("HTTP handshake with {addr}: {source}")]
    Handshake {
        addr: WorkerAddr,
        source: hyper::Error,
    },
    /// The request's own deadline passed while connecting.
    #[error("the request's deadline passed while connecting")]
    Deadline,
}

impl ConnectError {
    /// curfew itself is out of descriptors or buffers (EMFILE, ENFILE,
    /// ENOBUFS, ENOMEM): nothing is wrong with the worker.
    pub fn out_of_resources(&self) -> bool {
        matches!(
            self,
            ConnectError::Io { source, .. }
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                )
        )
    }
}

/// A connection to a worker: hyper's request handle, and its socket's fd,
/// used only to peek whether the worker closed it while idle.
pub struct Upstream {
    pub tx: SendRequest<UpstreamBody>,
    probe: Arc<ProbeFd>,
    /// The runtime its connection task runs on ([`super::threads::tag`]):
    /// reused only by work on that runtime.
    home: usize,
    /// The worker's last response said it closes the connection after it
    /// (`Connection: close`, or HTTP/1.0 without keep-alive).
    closing: bool,
}

impl Upstream {
    /// Note from a response's head whether the worker closes the
    /// connection after this response.
    pub fn note_response(&mut self, version: http::Version, headers: &http::HeaderMap) {
        self.closing = worker_closes(version, headers);
    }

    /// Still open and idle as far as the kernel knows: no EOF, no error, no
    /// unsolicited bytes waiting.
    fn looks_alive(&self) -> bool {
        !self.tx.is_closed() && self.probe.idle_and_open()
    }
}

pub async fn open(addr: &WorkerAddr) -> Result<TokioIo<Stream>, ConnectError> {
    let fut = async {
        match addr {
            WorkerAddr::Tcp(a) => {
                let s = TcpStream::connect(a).await?;
                s.set_nodelay(true)?;
                Ok(Stream::new(Inner::Tcp(s)))
            }
            WorkerAddr::Unix(p) => Ok(Stream::new(Inner::Unix(connect_unix(p).await?))),
        }
    };
    // A connect that completes at once needs no timer. One due before every
    // other timer of the runtime wakes the runtime's driver to re-arm (an
    // eventfd write and an extra turn of the event loop) — with sync
    // workers, on every request.
    let mut fut = std::pin::pin!(fut);
    let connected = match super::dispatch::first_poll(fut.as_mut()).await {
        Poll::Ready(r) => Ok(r),
        Poll::Pending => tokio::time::timeout(CONNECT_TIMEOUT, fut).await,
    };
    match connected {
        Ok(Ok(s)) => Ok(TokioIo::new(s)),
        Ok(Err(source)) => Err(ConnectError::Io {
            addr: addr.clone(),
            source,
        }),
        Err(_) => Err(ConnectError::Timeout { addr: addr.clone() }),
    }
}

/// Connect to a worker's Unix socket. On Linux a non-blocking connect to a
/// Unix socket completes (or fails) in the call itself; tokio's
/// `UnixStream::connect` would still wait one turn of the event loop for
/// writability. Only a connect that did not complete takes that path.
async fn connect_unix(path: &std::path::Path) -> std::io::Result<UnixStream> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let sock = Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)?;
    match sock.connect(&SockAddr::unix(path)?) {
        Ok(()) => {
            let std: std::os::unix::net::UnixStream = sock.into();
            UnixStream::from_std(std)
        }
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => UnixStream::connect(path).await,
        Err(e) => Err(e),
    }
}

/// Keep-alive connections to one worker process.
pub struct Pool {
    addr: WorkerAddr,
    idle: Mutex<Vec<(Upstream, Instant)>>,
}

impl Pool {
    pub fn new(addr: WorkerAddr) -> Self {
        Pool {
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn addr(&self) -> &WorkerAddr {
        &self.addr
    }

    /// The most recently used idle connection of the caller's runtime
    /// that is still open and fresh.
    pub fn take_idle(&self) -> Option<Upstream> {
        let here = super::threads::tag();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(i) = idle.iter().rposition(|(up, _)| up.home == here) {
            let (up, since) = idle.remove(i);
            if since.elapsed() < IDLE_TIMEOUT && up.looks_alive() {
                return Some(up);
            }
        }
        None
    }

    /// Return a connection whose last response was read to the end. One
    /// the worker closes is not kept, and the worker gets our FIN at once.
    pub fn put(&self, up: Upstream) {
        if up.closing {
            up.probe.shutdown_write();
            return;
        }
        if up.tx.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(u, since)| !u.tx.is_closed() && since.elapsed() < IDLE_TIMEOUT);
        if idle.len() < MAX_IDLE {
            idle.push((up, Instant::now()));
        }
    }

    /// A new connection.
    pub async fn connect(&self) -> Result<Upstream, ConnectError> {
        let io = open(&self.addr).await?;
        let probe = io.inner().probe.clone();
        let (tx, conn) = http1::Builder::new()
            .max_buf_size(UPSTREAM_READ_BUF)
            .handshake(io)
            .await
            .map_err(|source| ConnectError::Handshake {
                addr: self.addr.clone(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "Upstream connection ended with an error.");
            }
        });
        Ok(Upstream {
            tx,
            probe,
            home: super::threads::tag(),
            closing: false,
        })
    }
}

/// Whether a worker closes its connection after a response with this
/// version and these headers (RFC 9112 §9.3: a `close` option, or HTTP/1.0
/// without `keep-alive`).
fn worker_closes(version: http::Version, headers: &http::HeaderMap) -> bool {
    use super::headers::connection_has;
    connection_has(headers, "close")
        || (version == http::Version::HTTP_10 && !connection_has(headers, "keep-alive"))
}

/// Readiness probe: `GET path` on a fresh connection. Without a configured
/// `ready_path`, any HTTP answer to `/` from a worker counts as ready (the
/// app is up and answering); with one, the answer must be 2xx or 3xx.
pub async fn probe(addr: WorkerAddr, ready_path: Option<String>) -> Result<(), String> {
    probe_with(addr, ready_path, Duration::from_secs(5)).await
}

/// [`probe`] with a given timeout (the liveness probe's).
pub async fn probe_with(
    addr: WorkerAddr,
    ready_path: Option<String>,
    timeout: Duration,
) -> Result<(), String> {
    let attempt = async {
        let io = open(&addr).await.map_err(|e| e.to_string())?;
        let (mut tx, conn) = http1::handshake::<_, Empty<Bytes>>(io)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = ready_path.as_deref().unwrap_or("/");
        let req = http::Request::get(path)
            .header(http::header::HOST, "localhost")
            .header(http::header::USER_AGENT, "curfew-readiness-probe")
            .header(http::header::CONNECTION, "close")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let res = tx
            .send_request(req)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = res.status();
        if ready_path.is_none() || status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(format!("GET {path} answered {status}"))
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_responses_close_the_worker_connection() {
        use http::{HeaderMap, HeaderValue, Version};
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::CONNECTION, HeaderValue::from_static(v));
            h
        };
        assert!(worker_closes(Version::HTTP_11, &with("close")));
        assert!(worker_closes(Version::HTTP_11, &with("Keep-Alive, Close")));
        assert!(!worker_closes(Version::HTTP_11, &HeaderMap::new()));
        assert!(!worker_closes(Version::HTTP_11, &with("keep-alive")));
        assert!(worker_closes(Version::HTTP_10, &HeaderMap::new()));
        assert!(!worker_closes(Version::HTTP_10, &with("keep-alive")));
    }

    #[test]
    fn a_local_shortage_is_not_a_refusal() {
        let addr = WorkerAddr::Tcp("127.0.0.1:9".parse().expect("addr"));
        let io = |errno| ConnectError::Io {
            addr: addr.clone(),
            source: std::io::Error::from_raw_os_error(errno),
        };
        assert!(io(libc::EMFILE).out_of_resources());
        assert!(io(libc::ENFILE).out_of_resources());
        assert!(!io(libc::ECONNREFUSED).out_of_resources());
        assert!(!ConnectError::Deadline.out_of_resources());
    }
}
