//! One path from a piece of work to a worker, for client requests and job
//! deliveries alike: take a worker slot from the router (waiting in its
//! queue while none is free), take a pooled connection or open one, send,
//! and classify what went wrong. Both go through here, so "a job takes a
//! worker slot like a request" holds by construction: the same slots, the
//! same retries, the same judgement of a worker that refused, broke or hung.
//! The callers only map the outcome: [`super::forward`] to a status code,
//! the job deliverer to a verdict.
//!
//! Retries: work is sent again only when it provably never reached a
//! worker: the connect was refused or failed, or a pooled connection turned
//! out closed before the request was written (hyper hands the request back).
//! A worker that refused is most likely dead (the supervisor is removing
//! it): the work goes back to the router's queue, keeping its place, and
//! waits for another worker (one booting, one coming back from a
//! suspension, one freed) within the deadline. Once any byte may have been
//! written, a failure is final for this piece of work.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::UpstreamBody;
use super::request_body::{BodyProgress, ClientBodyError};
use super::router::{Lease, Rejected, Router};
use super::upstream::{ConnectError, Upstream};

/// Called with (worker uid, reason, work) when a sync worker hangs.
pub type HungHandler = Box<dyn Fn(u64, String, String) + Send + Sync>;

/// How long a worker whose connection broke or refused gets no new work.
const SUSPEND_AFTER_FAILURE: Duration = Duration::from_millis(250);

/// The wait before another connect when curfew itself is out of
/// descriptors.
const LOCAL_SHORTAGE_BACKOFF: Duration = Duration::from_millis(50);

/// A hung worker stays out of routing until the supervisor has replaced it.
const HUNG_SUSPENSION: Duration = Duration::from_secs(3600);

/// Sends work to the app's workers; shared by the front and the job runner.
pub struct Dispatcher {
    pub router: Arc<Router>,
    /// 1: a worker busy past the deadline is hung (it takes no other work).
    worker_concurrency: usize,
    on_hung: OnceLock<HungHandler>,
}

/// One piece of work, as the dispatcher names it in logs and notes.
pub struct Work<'a> {
    pub method: &'a Method,
    /// The path as logged (a long one already cut).
    pub path: &'a str,
    /// When it arrived: its place in the queue, and its age in notes.
    pub started: Instant,
    /// The limit for a worker slot, the connect and the response headers;
    /// `None`: no limit.
    pub timeout: Option<Duration>,
    /// The job it delivers, if it is one.
    pub job: Option<i64>,
    /// How the client's streamed body is being sent (its end, and the
    /// time spent waiting for the client): the worker's `timeout` counts
    /// from the body's end, and before it only the time the worker held it
    /// up; `None`: nothing is still to come from a client.
    pub body_done: Option<Arc<BodyProgress>>,
}

impl Work<'_> {
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.timeout
            .map(|t| tokio::time::Instant::from_std(self.started) + t)
    }

    /// "GET /x (age 12 ms)" / "POST /jobs/x (job 4, age 12 ms)".
    pub fn describe(&self) -> String {
        let age = self.started.elapsed().as_millis();
        match self.job {
            Some(id) => format!("{} {} (job {id}, age {age} ms)", self.method, self.path),
            None => format!("{} {} (age {age} ms)", self.method, self.path),
        }
    }

    fn hung_reason(&self) -> String {
        let timeout = self.timeout.unwrap_or_default();
        match self.job {
            Some(_) => format!("job exceeded its timeout ({timeout:?})"),
            None => format!("request exceeded timeout ({timeout:?})"),
        }
    }
}

/// Told when work has to wait for a worker and when it got one (the job
/// runner records both in the store). `false` from either: give up.
pub trait Observer {
    fn waiting(&mut self) -> impl Future<Output = bool> + Send;
    fn started(&mut self) -> impl Future<Output = bool> + Send;
}

/// For work nobody needs to hear about (client requests).
pub struct Unobserved;

impl Observer for Unobserved {
    async fn waiting(&mut self) -> bool {
        true
    }
    async fn started(&mut self) -> bool {
        true
    }
}

/// The worker's response headers, with what the rest of the exchange needs:
/// the lease (the worker slot, freed on drop) and the connection (back to
/// its pool once the body has been read to the end).
pub struct Dispatched {
    pub lease: Lease,
    pub upstream: Upstream,
    pub response: Response<Incoming>,
    /// Time from the dispatch to the worker slot it was sent on (retries
    /// included).
    pub queued: Duration,
    /// Time from that slot to the worker's response headers.
    pub upstream_time: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("no worker became free in time")]
    NoWorkerInTime,
    #[error("every worker is busy and the queue is full")]
    QueueFull,
    #[error("no worker accepted the connection")]
    Unavailable,
    #[error("connecting to worker {worker} took longer than the deadline")]
    ConnectTimeout { worker: usize },
    /// No answer in time; `hung`: the worker was declared hung and is
    /// being aborted.
    #[error("worker {worker} did not answer in time")]
    Timeout { worker: usize, hung: bool },
    /// The worker closed the connection or died mid-exchange.
    /// `stopped_by_curfew`: curfew itself was stopping that worker (reload,
    /// recycle, scale down): not the worker's fault.
    #[error("worker {worker} failed mid-exchange (it closed the connection or died): {source}")]
    Broke {
        worker: usize,
        pid: u32,
        stopped_by_curfew: bool,
        source: hyper::Error,
    },
    /// The observer gave up.
    #[error("abandoned by its owner")]
    Abandoned,
    /// The client's streamed body failed (too large, too slow, malformed):
    /// the client's fault, not the worker's.
    #[error("{reason}")]
    ClientBody { status: StatusCode, reason: String },
    /// The deadline passed while the client was still sending its body.
    /// (No longer produced for requests: a streamed body's wait for the
    /// client moves the worker's deadline instead, bounded by
    /// `client_body_timeout` per wait.)
    #[error("the client was still sending its body at the deadline")]
    ClientSlow,
}

impl Dispatcher {
    pub fn new(router: Arc<Router>, worker_concurrency: usize) -> Dispatcher {
        Dispatcher {
            router,
            worker_concurrency,
            on_hung: OnceLock::new(),
        }
    }

    /// Set what to do with a hung worker (the supervisor aborts it).
    /// Workers take one request at a time (`worker_concurrency = 1`).
    pub fn one_at_a_time(&self) -> bool {
        self.worker_concurrency == 1
    }

    pub fn on_hung(&self, f: HungHandler) {
        let _ = self.on_hung.set(f);
    }

    /// Send `req` to a worker and wait for its response headers.
    pub async fn dispatch<O: Observer>(
        &self,
        mut req: Request<UpstreamBody>,
        work: &Work<'_>,
        observer: &mut O,
    ) -> Result<Dispatched, DispatchError> {
        let deadline = work.deadline();
        let mut excluded: Vec<u64> = Vec::new();
        let dispatched = Instant::now();
        loop {
            let lease = self.lease(work, &excluded, observer).await?;
            let leased = Instant::now();
            let (connected, ours) =
                tokio::join!(self.connection(&lease, deadline), observer.started());
            if !ours {
                return Err(DispatchError::Abandoned);
            }
            let (mut up, reused) = match connected {
                Ok(c) => c,
                Err(ConnectError::Deadline) => {
                    return Err(DispatchError::ConnectTimeout {
                        worker: lease.worker_id,
                    });
                }
                Err(e) if e.out_of_resources() => {
                    // curfew's own shortage (at the open-file limit): not
                    // the worker's fault. Wait a moment and try again,
                    // this worker included, within the deadline.
                    tracing::debug!(worker = lease.worker_id, error = %e, "No descriptor for a worker connection; waiting for one.");
                    lease.unused();
                    if until(deadline, tokio::time::sleep(LOCAL_SHORTAGE_BACKOFF))
                        .await
                        .is_none()
                    {
                        return Err(DispatchError::NoWorkerInTime);
                    }
                    continue;
                }
                Err(e) => {
                    tracing::debug!(worker = lease.worker_id, pid = lease.pid, error = %e, "Worker refused the connection; the work waits for another.");
                    self.worker_refused(lease.uid);
                    excluded.push(lease.uid);
                    // Never reached the worker: not served work.
                    lease.unused();
                    continue;
                }
            };
            if reused && up.tx.ready().await.is_err() {
                lease.unused();
                continue; // closed while idle; the request was not sent
            }
            let answer = up.tx.try_send_request(req);
            let sent = match (&work.body_done, deadline, work.timeout) {
                (Some(progress), Some(first), Some(timeout)) => {
                    match until_worker_deadline(first, timeout, progress, answer).await {
                        Streamed::Answer(sent) => Some(sent),
                        Streamed::Worker => None,
                        // The client's fault: no mark on the worker.
                        Streamed::Client => return Err(DispatchError::ClientSlow),
                    }
                }
                _ => until(deadline, answer).await,
            };
            let Some(sent) = sent else {
                return Err(self.timed_out(&lease, work));
            };
            match sent {
                Ok(response) => {
                    up.note_response(response.version(), response.headers());
                    return Ok(Dispatched {
                        lease,
                        upstream: up,
                        response,
                        queued: leased - dispatched,
                        upstream_time: leased.elapsed(),
                    });
                }
                Err(mut e) => match e.take_message() {
                    Some(back) => {
                        // Never written: safe to send again, on a fresh connection.
                        req = back;
                        if !reused {
                            excluded.push(lease.uid);
                        }
                        lease.unused();
                    }
                    None => return Err(self.broke(&lease, work, e.into_error())),
                },
            }
        }
    }

    /// A worker slot, waiting in the router's queue (the observer told
    /// first) while none is free.
    async fn lease<O: Observer>(
        &self,
        work: &Work<'_>,
        excluded: &[u64],
        observer: &mut O,
    ) -> Result<Lease, DispatchError> {
        let acquire = self
            .router
            .acquire(work.method, work.path, work.started, excluded);
        tokio::pin!(acquire);
        // Free now (the common case): no wait to tell about.
        let now = tokio::select! {
            biased;
            r = &mut acquire => Some(r),
            _ = std::future::ready(()) => None,
        };
        let acquired = match now {
            Some(r) => r,
            None => {
                if !observer.waiting().await {
                    return Err(DispatchError::Abandoned);
                }
                until(work.deadline(), acquire)
                    .await
                    .ok_or(DispatchError::NoWorkerInTime)?
            }
        };
        acquired.map_err(|r| match r {
            Rejected::QueueFull => DispatchError::QueueFull,
            Rejected::Unavailable => DispatchError::Unavailable,
        })
    }

    /// A pooled connection (`true`), or a new one.
    async fn connection(
        &self,
        lease: &Lease,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(Upstream, bool), ConnectError> {
        if let Some(up) = lease.pool.take_idle() {
            return Ok((up, true));
        }
        let up = until(deadline, lease.pool.connect())
            .await
            .unwrap_or(Err(ConnectError::Deadline))?;
        Ok((up, false))
    }

    /// The worker did not answer `work` by its deadline (for a streamed
    /// body: `timeout` of its own time, the client's waits not counted —
    /// a worker that does not read its body is not waiting for the
    /// client). A sync worker still busy with it is hung: it would take no
    /// other work, so it is kept out of routing and the supervisor aborts
    /// it (stack dump).
    pub fn timed_out(&self, lease: &Lease, work: &Work<'_>) -> DispatchError {
        let hung = self.worker_concurrency == 1;
        if hung {
            self.worker_hung(lease.uid, work.hung_reason(), work.describe());
        }
        DispatchError::Timeout {
            worker: lease.worker_id,
            hung,
        }
    }

    /// The exchange broke off after the request may have been written.
    fn broke(&self, lease: &Lease, work: &Work<'_>, source: hyper::Error) -> DispatchError {
        if let Some(client) = ClientBodyError::find(&source) {
            return DispatchError::ClientBody {
                status: client.status(),
                reason: client.to_string(),
            };
        }
        let stopped_by_curfew = self.router.stopped_by_curfew(lease.uid);
        if !stopped_by_curfew {
            // No new work for it for a moment, and the work is remembered
            // so the supervisor can name it if the worker died.
            self.router.suspend(lease.uid, SUSPEND_AFTER_FAILURE);
            self.router.note_broken(lease.uid, work.describe());
        }
        DispatchError::Broke {
            worker: lease.worker_id,
            pid: lease.pid,
            stopped_by_curfew,
            source,
        }
    }

    /// Worker `uid` refused a connection: no new work for it for a moment
    /// (time for the supervisor to learn whether it died).
    fn worker_refused(&self, uid: u64) {
        self.router.suspend(uid, SUSPEND_AFTER_FAILURE);
    }

    /// A sync worker is hung in `work`: out of routing until it is
    /// replaced, and the supervisor aborts it (stack dump).
    fn worker_hung(&self, uid: u64, reason: String, work: String) {
        self.router.suspend(uid, HUNG_SUSPENSION);
        if let Some(f) = self.on_hung.get() {
            f(uid, reason, work);
        }
    }
}

/// What waiting for a worker's answer to a streamed body came to.
enum Streamed<T> {
    Answer(T),
    /// The worker's own time ran out.
    Worker,
    /// The client sent nothing for a whole `timeout` while the worker
    /// waited on its body: the client's fault.
    Client,
}

/// Wait for a worker's answer to work whose client is streaming its body:
/// the deadline `first` moves by the time spent waiting for the client's
/// bytes, and once the body is all sent it is `timeout` after that
/// ([`BodyProgress`]). A client that then sends nothing for `timeout` in
/// one wait is cut (with `client_body_timeout` off, or longer than
/// `timeout`, nothing else would: the deadline would move for ever and
/// the worker's slot be held until a drain).
async fn until_worker_deadline<F: Future>(
    first: tokio::time::Instant,
    timeout: Duration,
    progress: &BodyProgress,
    f: F,
) -> Streamed<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut at = first;
    loop {
        if let Ok(out) = tokio::time::timeout_at(at, f.as_mut()).await {
            return Streamed::Answer(out);
        }
        let next =
            tokio::time::Instant::from_std(progress.worker_deadline(first.into_std(), timeout));
        let now = tokio::time::Instant::now();
        if next <= now {
            return Streamed::Worker;
        }
        if progress.is_done() {
            at = next;
            continue;
        }
        let stalled = progress.stalled();
        if stalled >= timeout {
            return Streamed::Client;
        }
        at = next.min(now + (timeout - stalled));
    }
}

/// Run `f` until `deadline` (`None` when it passed first).
pub async fn until<F: Future>(deadline: Option<tokio::time::Instant>, f: F) -> Option<F::Output> {
    let Some(d) = deadline else {
        return Some(f.await);
    };
    // Work that is done at once (a pooled connection, a connect to a Unix
    // socket) needs no timer; `timeout_at` would also poll it first.
    let mut f = std::pin::pin!(f);
    match first_poll(f.as_mut()).await {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => tokio::time::timeout_at(d, f).await.ok(),
    }
}

/// Poll `f` once, in the calling task (its waker stays registered).
pub async fn first_poll<F: Future>(mut f: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx))).await
}
