//! A worker's response on its way to the client, decoupled from the
//! client's pace (nginx's proxy buffering): a pump task reads the worker's
//! body as fast as the worker writes it into a [`Spool`] (memory up to
//! [`MEMORY_LIMIT`], then an unnamed temporary file up to [`FILE_LIMIT`]),
//! and the worker slot and its connection are given back the moment the
//! worker has finished — not when a slow client has read it all. The client
//! reads from the spool; one that reads nothing for `send_timeout` while
//! data waits for it has its connection closed.
//!
//! Streaming still streams: every frame is handed to the client as soon as
//! it arrives (SSE, long polls). Past [`FILE_LIMIT`] unread, the pump waits
//! for the client (the worker is held, like nginx past
//! `proxy_max_temp_file_size`).
//!
//! A response whose whole body is already in hand when its head arrives
//! (the common small answer) skips the pump: it is sent from memory and
//! its slot freed at once.
//!
//! Hand-written: no crate of the field spools an HTTP body to a file.

use std::collections::VecDeque;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::body::BoxError;
use super::conn::RequestGuard;
use super::router::Lease;
use super::upstream::Upstream;

/// Unread bytes kept in memory per response before it spills to a file.
pub const MEMORY_LIMIT: usize = 256 * 1024;
/// Unread bytes kept in the file per response; past it the worker waits.
pub const FILE_LIMIT: u64 = 64 * 1024 * 1024;
/// Largest chunk read back from the file at once.
const FILE_CHUNK: u64 = 64 * 1024;

/// The end of the worker's body, as the client will see it.
enum End {
    Done(Option<http::HeaderMap>),
    Broken(String),
}

/// Bytes spilled to an unnamed file: written at `written`, read at `read`.
struct Spill {
    file: Arc<std::fs::File>,
    written: u64,
    read: u64,
}

#[derive(Default)]
struct State {
    /// Frames in arrival order; once a spill exists, new data goes there
    /// (after what is here) until the client has read all of it.
    memory: VecDeque<Bytes>,
    memory_bytes: usize,
    spill: Option<Spill>,
    end: Option<End>,
    /// The client side, waiting for data.
    reader: Option<Waker>,
    /// The client went away: the pump stops.
    client_gone: bool,
}

impl State {
    fn unread(&self) -> u64 {
        self.memory_bytes as u64 + self.spill.as_ref().map_or(0, |s| s.written - s.read)
    }
}

/// What the pump and the client side share.
pub struct Spool {
    state: Mutex<State>,
    /// The client read something (or left).
    progress: Notify,
    spill_dir: std::path::PathBuf,
}

impl Spool {
    fn new(spill_dir: std::path::PathBuf) -> Arc<Spool> {
        Arc::new(Spool {
            state: Mutex::new(State::default()),
            progress: Notify::new(),
            spill_dir,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_reader(st: &mut State) {
        if let Some(w) = st.reader.take() {
            w.wake();
        }
    }

    /// Add data the worker wrote. `Err`: the client is gone, or there is
    /// no room (the caller waits for progress and tries again).
    fn push(&self, data: Bytes) -> Result<Pushed, std::io::Error> {
        let mut st = self.lock();
        if st.client_gone {
            return Ok(Pushed::ClientGone);
        }
        let spilling = st.spill.is_some();
        if !spilling && st.memory_bytes + data.len() <= MEMORY_LIMIT {
            st.memory_bytes += data.len();
            st.memory.push_back(data);
            Self::wake_reader(&mut st);
            return Ok(Pushed::Kept);
        }
        if st.unread() + data.len() as u64 > FILE_LIMIT + MEMORY_LIMIT as u64 {
            return Ok(Pushed::Full(data));
        }
        if st.spill.is_none() {
            st.spill = Some(Spill {
                file: Arc::new(tempfile::tempfile_in(&self.spill_dir)?),
                written: 0,
                read: 0,
            });
        }
        if let Some(spill) = st.spill.as_mut() {
            // A write to the page cache of a local file; the lock is held so
            // the reader never sees a half-written chunk as written.
            spill.file.write_all_at(&data, spill.written)?;
            spill.written += data.len() as u64;
        }
        Self::wake_reader(&mut st);
        Ok(Pushed::Kept)
    }

    fn finish(&self, end: End) {
        let mut st = self.lock();
        st.end = Some(end);
        Self::wake_reader(&mut st);
    }

    /// Everything written has been read (or the client left).
    fn drained(&self) -> bool {
        let st = self.lock();
        st.client_gone || st.unread() == 0
    }
}

enum Pushed {
    Kept,
    Full(Bytes),
    ClientGone,
}

/// What the pump gives back when the worker has finished: the slot, and
/// the connection (pooled only after a complete body).
pub struct Held {
    pub lease: Lease,
    pub upstream: Upstream,
}

/// What of a worker's body was already here when its head arrived.
pub enum Ready {
    /// All of it (small answers): the common one data frame is kept
    /// without a `Vec`.
    Whole(Bytes),
    /// The frames read so far; the rest is still to come (the pump reads it).
    Partial(Vec<Bytes>),
    /// The frames read so far, then the body failed (the worker closed or
    /// wrote a malformed body): it must reach the client as a failure,
    /// never as a complete answer. The body is not polled again (hyper
    /// reports an error once, then the end).
    Broken(Vec<Bytes>, String),
}

/// Read what of `body` is already here without waiting.
pub fn try_whole(body: &mut Incoming) -> Ready {
    let mut cx = Context::from_waker(Waker::noop());
    let mut first: Option<Bytes> = None;
    let mut more: Vec<Bytes> = Vec::new();
    let so_far = |first: Option<Bytes>, more: Vec<Bytes>| first.into_iter().chain(more).collect();
    let mut size = 0usize;
    loop {
        if size > MEMORY_LIMIT {
            return Ready::Partial(so_far(first, more));
        }
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Ready(None) => {
                return Ready::Whole(match first {
                    None => Bytes::new(),
                    Some(one) if more.is_empty() => one,
                    Some(one) => {
                        more.insert(0, one);
                        Bytes::from(more.concat())
                    }
                });
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(d) => {
                    size += d.len();
                    match first {
                        None => first = Some(d),
                        Some(_) => more.push(d),
                    }
                }
                // Trailers: the pump keeps them.
                Err(_) => return Ready::Partial(so_far(first, more)),
            },
            Poll::Ready(Some(Err(e))) => return Ready::Broken(so_far(first, more), e.to_string()),
            Poll::Pending => return Ready::Partial(so_far(first, more)),
        }
    }
}

/// The client's side of a worker's body that already failed
/// ([`Ready::Broken`]): what came before the failure, then the failure
/// (hyper cuts the client's connection, or resets its HTTP/2 stream). No
/// pump: the worker is already done.
pub fn broken(first: Vec<Bytes>, error: String, request: RequestGuard) -> SpooledBody {
    let spool = Spool::new(std::path::PathBuf::new());
    {
        let mut st = spool.lock();
        for d in first {
            st.memory_bytes += d.len();
            st.memory.push_back(d);
        }
        st.end = Some(End::Broken(error));
    }
    SpooledBody {
        spool,
        reading: None,
        _request: request,
    }
}

/// How a pump runs.
pub struct PumpOptions {
    /// A client reading nothing this long while data waits is cut.
    pub send_timeout: Option<Duration>,
    /// Cancelled to drop the client's connection.
    pub cut_client: CancellationToken,
    /// Curfew's immediate stop: the pump ends.
    pub abort: CancellationToken,
    pub spill_dir: std::path::PathBuf,
}

/// Start the pump: the worker's `body` (after the `first` frames already
/// read) into a spool, `held` given back when it ends. Returns the body
/// the client reads.
pub fn pump(
    first: Vec<Bytes>,
    body: Incoming,
    held: Held,
    request: RequestGuard,
    options: PumpOptions,
    tasks: &tokio_util::task::TaskTracker,
) -> SpooledBody {
    let PumpOptions {
        send_timeout,
        cut_client,
        abort,
        spill_dir,
    } = options;
    let spool = Spool::new(spill_dir);
    {
        let mut st = spool.lock();
        for d in first {
            st.memory_bytes += d.len();
            st.memory.push_back(d);
        }
    }
    let task_spool = spool.clone();
    tasks.spawn(async move {
        tokio::select! {
            _ = run_pump(&task_spool, body, held, send_timeout, &cut_client) => {}
            _ = abort.cancelled() => {}
        }
    });
    SpooledBody {
        spool,
        reading: None,
        _request: request,
    }
}

async fn run_pump(
    spool: &Spool,
    mut body: Incoming,
    held: Held,
    send_timeout: Option<Duration>,
    cut_client: &CancellationToken,
) {
    use http_body_util::BodyExt;
    let end = loop {
        let frame = match body.frame().await {
            None => break End::Done(None),
            Some(Err(e)) => break End::Broken(e.to_string()),
            Some(Ok(f)) => f,
        };
        let data = match frame.into_data() {
            Ok(d) => d,
            Err(frame) => match frame.into_trailers() {
                Ok(t) => break End::Done(Some(t)),
                Err(_) => continue,
            },
        };
        if !push_waiting(spool, data, send_timeout, cut_client).await {
            // The client left or was cut: the worker's answer is dropped
            // with its connection.
            return;
        }
    };
    match &end {
        End::Done(_) => held.lease.pool.put(held.upstream),
        End::Broken(e) => {
            tracing::warn!(worker = held.lease.worker_id, pid = held.lease.pid, error = %e, "Worker's response body failed before its end: the client's response is cut off.");
        }
    }
    spool.finish(end);
    drop(held.lease);
    // The worker is free. Until the client has read the rest, it must keep
    // reading: one that stalls for send_timeout is cut.
    loop {
        // Registered before the check, so a read in between is not missed.
        let progress = spool.progress.notified();
        if spool.drained() {
            return;
        }
        match send_timeout {
            Some(t) => {
                if tokio::time::timeout(t, progress).await.is_err() && !spool.drained() {
                    tracing::debug!(
                        timeout_ms = t.as_millis() as u64,
                        "Client read nothing of its response for send_timeout: closing its connection."
                    );
                    cut_client.cancel();
                    return;
                }
            }
            None => progress.await,
        }
    }
}

/// Push `data`, waiting for the client while the spool is full; `false`
/// when the client left or stalled past `send_timeout` (then cut).
async fn push_waiting(
    spool: &Spool,
    mut data: Bytes,
    send_timeout: Option<Duration>,
    cut_client: &CancellationToken,
) -> bool {
    loop {
        let progress = spool.progress.notified();
        match spool.push(data) {
            Ok(Pushed::Kept) => return true,
            Ok(Pushed::ClientGone) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "Could not spool a response to a temporary file: closing the client's connection.");
                cut_client.cancel();
                return false;
            }
            Ok(Pushed::Full(back)) => {
                data = back;
                let waited = match send_timeout {
                    Some(t) => tokio::time::timeout(t, progress).await.is_ok(),
                    None => {
                        progress.await;
                        true
                    }
                };
                if !waited {
                    tracing::debug!(
                        "Client read nothing of its response for send_timeout: closing its connection."
                    );
                    cut_client.cancel();
                    return false;
                }
            }
        }
    }
}

/// The client's side of a spool.
pub struct SpooledBody {
    spool: Arc<Spool>,
    reading: Option<tokio::task::JoinHandle<std::io::Result<Bytes>>>,
    /// The client connection counts this request until its body is sent.
    _request: RequestGuard,
}

impl Drop for SpooledBody {
    fn drop(&mut self) {
        let mut st = self.spool.lock();
        st.client_gone = true;
        drop(st);
        self.spool.progress.notify_waiters();
    }
}

impl SpooledBody {
    /// Read the next spilled chunk (at most `FILE_CHUNK` of the `left`
    /// bytes from `at`) in the blocking pool.
    fn start_read(&mut self, file: Arc<std::fs::File>, at: u64, left: u64) {
        let len = left.min(FILE_CHUNK) as usize;
        self.reading = Some(tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, at)?;
            Ok(Bytes::from(buf))
        }));
    }
}

impl Body for SpooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(reading) = this.reading.as_mut() {
            let read = match Pin::new(reading).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r.map_err(std::io::Error::other).and_then(|r| r),
            };
            this.reading = None;
            return match read {
                Ok(data) => {
                    let mut st = this.spool.lock();
                    if let Some(spill) = st.spill.as_mut() {
                        spill.read += data.len() as u64;
                        if spill.read == spill.written {
                            // All read: later data goes to memory again.
                            st.spill = None;
                        }
                    }
                    drop(st);
                    this.spool.progress.notify_waiters();
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
            };
        }
        let mut st = this.spool.lock();
        if let Some(data) = st.memory.pop_front() {
            st.memory_bytes -= data.len();
            drop(st);
            this.spool.progress.notify_waiters();
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(spill) = st.spill.as_ref()
            && spill.read < spill.written
        {
            let (file, at, left) = (spill.file.clone(), spill.read, spill.written - spill.read);
            drop(st);
            this.start_read(file, at, left);
            return Pin::new(this).poll_frame(cx);
        }
        match st.end.take() {
            Some(End::Done(None)) => Poll::Ready(None),
            Some(End::Done(Some(trailers))) => {
                st.end = Some(End::Done(None));
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Some(End::Broken(e)) => Poll::Ready(Some(Err(e.into()))),
            None => {
                st.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
