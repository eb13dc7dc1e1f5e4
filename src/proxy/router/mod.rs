//! Request routing: which worker serves a request, and the bounded queue of
//! requests waiting for a free worker.
//!
//! - A request goes to the ready worker with the fewest requests in flight,
//!   never above `worker_concurrency` (1 = a sync worker gets one request at
//!   a time).
//! - When no worker can take it (every worker is full, suspended, booting,
//!   or there is none), the request waits in a FIFO queue (by arrival) of at
//!   most `backlog` entries for the next one that can; a full queue is
//!   refused (the caller answers 503). The caller bounds the wait (`timeout`).
//! - A request retried because a worker refused it (it provably never reached
//!   one) names the instances that refused it: it never goes back to them,
//!   and waits, keeping its place in the queue, for another worker. A
//!   refused connect is a reason to wait, not to fail.
//! - A [`Lease`] is one request's hold on one worker slot. Dropping it frees
//!   the slot and hands it straight to the oldest waiter.
//!
//! The router also keeps what is in flight (method, path, age, worker) so a
//! shutdown that hits its deadline can name every request it cuts off.

mod broken;
mod drain;
mod lease;
mod queue;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::Method;

use super::upstream::Pool;
use crate::supervisor::{ReadyWorker, WorkerAddr};
pub use lease::Lease;
use queue::Waiter;

/// What is known about one request for logs.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub method: Method,
    pub path: String,
    pub started: Instant,
    /// The worker slot it runs on; `None` while queued.
    pub worker: Option<usize>,
    /// The worker process instance it runs on.
    pub uid: Option<u64>,
}

impl RequestInfo {
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }
}

/// A routed worker as seen by the router (for status reports).
#[derive(Debug, Clone)]
pub struct WorkerStatus {
    pub uid: u64,
    pub id: usize,
    pub pid: u32,
    pub generation: u64,
    pub restarts: u32,
    pub in_flight: usize,
    pub served: u64,
    /// When it started taking traffic.
    pub since: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("every worker is busy and the queue is full")]
    QueueFull,
    /// The router went away while the request waited (not while curfew
    /// runs: a waiting request is only ever answered with a slot).
    #[error("no worker can take the request")]
    Unavailable,
}

struct Backend {
    worker: ReadyWorker,
    pool: Arc<Pool>,
    in_flight: usize,
    /// Requests completed.
    served: u64,
    since: Instant,
    /// No new request until then (see [`Router::suspend`]).
    suspended_until: Option<Instant>,
}

#[derive(Default)]
struct State {
    backends: Vec<Backend>,
    /// Removed workers that still have requests in flight: uid → count.
    retiring: HashMap<u64, usize>,
    waiters: VecDeque<Waiter>,
    requests: HashMap<u64, RequestInfo>,
    cursor: usize,
}

pub type RecycleHandler = Box<dyn Fn(u64, String) + Send + Sync>;

pub struct Router {
    state: Mutex<State>,
    /// Notified whenever a request ends (for [`Router::drained`]).
    released: tokio::sync::Notify,
    /// Requests that just failed because their worker broke (newest last):
    /// the supervisor names them when it learns the worker died.
    broken: Mutex<VecDeque<(u64, String, Instant)>>,
    /// Called once when a worker reaches its `max_requests`.
    on_recycle: std::sync::OnceLock<RecycleHandler>,
    /// Workers curfew stopped with work still in flight (uids are never
    /// reused; only drains that ran out add one).
    cut_by_curfew: Mutex<std::collections::HashSet<u64>>,
    concurrency: usize,
    backlog: usize,
    next_req: AtomicU64,
    completed: AtomicU64,
}

impl Router {
    pub fn new(concurrency: usize, backlog: usize) -> Arc<Router> {
        Arc::new(Router {
            state: Mutex::new(State::default()),
            released: tokio::sync::Notify::new(),
            broken: Mutex::new(VecDeque::new()),
            on_recycle: std::sync::OnceLock::new(),
            cut_by_curfew: Mutex::new(std::collections::HashSet::new()),
            concurrency: concurrency.max(1),
            backlog,
            next_req: AtomicU64::new(1),
            completed: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Least in flight with room, scanning from a rotating start so ties are
    /// spread over the workers.
    fn pick(&self, st: &State, exclude: &[u64]) -> Option<usize> {
        let n = st.backends.len();
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = (st.cursor + k) % n;
            let b = &st.backends[i];
            if b.in_flight >= self.concurrency
                || exclude.contains(&b.worker.uid)
                || b.suspended_until.is_some_and(|t| Instant::now() < t)
            {
                continue;
            }
            if best.is_none_or(|j| b.in_flight < st.backends[j].in_flight) {
                best = Some(i);
                if b.in_flight == 0 {
                    break;
                }
            }
        }
        best
    }

    /// Start routing to a ready worker.
    pub fn add(self: &Arc<Self>, worker: ReadyWorker) {
        let mut st = self.lock();
        let pool = Arc::new(Pool::new(worker.addr.clone()));
        st.backends.push(Backend {
            worker,
            pool,
            in_flight: 0,
            served: 0,
            since: Instant::now(),
            suspended_until: None,
        });
        self.dispatch(&mut st);
    }

    /// Stop routing to a worker instance; its in-flight requests finish.
    pub fn remove(&self, uid: u64) {
        let mut st = self.lock();
        if let Some(i) = st.backends.iter().position(|b| b.worker.uid == uid) {
            let b = st.backends.remove(i);
            if b.in_flight > 0 {
                st.retiring.insert(uid, b.in_flight);
            }
        }
        if st.cursor >= st.backends.len() {
            st.cursor = 0;
        }
    }

    /// Requests in flight or queued, oldest first.
    pub fn requests(&self) -> Vec<RequestInfo> {
        let mut v: Vec<RequestInfo> = self.lock().requests.values().cloned().collect();
        v.sort_by_key(|r| r.started);
        v
    }

    /// The routed workers, by slot id.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        let mut v: Vec<WorkerStatus> = self
            .lock()
            .backends
            .iter()
            .map(|b| WorkerStatus {
                uid: b.worker.uid,
                id: b.worker.id,
                pid: b.worker.pid,
                generation: b.worker.generation,
                restarts: b.worker.restarts,
                in_flight: b.in_flight,
                served: b.served,
                since: b.since,
            })
            .collect();
        v.sort_by_key(|w| (w.id, w.uid));
        v
    }

    pub fn queue_len(&self) -> usize {
        self.lock().waiters.len()
    }

    pub fn ready_workers(&self) -> usize {
        self.lock().backends.len()
    }

    /// Requests completed since start (slots released).
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    pub fn worker_addrs(&self) -> Vec<WorkerAddr> {
        self.lock()
            .backends
            .iter()
            .map(|b| b.worker.addr.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn worker(uid: u64, id: usize) -> ReadyWorker {
        ReadyWorker {
            uid,
            id,
            pid: 1000 + uid as u32,
            addr: WorkerAddr::Tcp(format!("127.0.0.1:{}", 9000 + uid).parse().expect("addr")),
            generation: 1,
            restarts: 0,
            max_requests: None,
        }
    }

    pub(super) async fn get(r: &Arc<Router>) -> Result<Lease, Rejected> {
        r.acquire(&Method::GET, "/", Instant::now(), &[]).await
    }

    #[tokio::test]
    async fn least_loaded_with_concurrency_cap() {
        let r = Router::new(2, 10);
        r.add(worker(1, 0));
        r.add(worker(2, 1));
        let a = get(&r).await.expect("slot");
        let b = get(&r).await.expect("slot");
        assert_ne!(a.uid, b.uid, "second request goes to the idle worker");
        let c = get(&r).await.expect("slot");
        let d = get(&r).await.expect("slot");
        let mut uids = vec![a.uid, b.uid, c.uid, d.uid];
        uids.sort();
        assert_eq!(uids, vec![1, 1, 2, 2]);
        assert_eq!(r.requests().len(), 4);
    }
}
