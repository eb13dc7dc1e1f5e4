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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::Method;
use tokio::sync::oneshot;

use super::upstream::Pool;
use crate::supervisor::{ReadyWorker, WorkerAddr};

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

struct Waiter {
    req: u64,
    /// When the request arrived (the queue's order).
    started: Instant,
    /// Worker instances that refused it.
    exclude: Vec<u64>,
    tx: oneshot::Sender<Lease>,
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

/// One request's hold on a worker slot; freed on drop.
pub struct Lease {
    router: Arc<Router>,
    req: u64,
    pub uid: u64,
    pub worker_id: usize,
    /// The worker's process id (for logs).
    pub pid: u32,
    pub pool: Arc<Pool>,
    armed: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            self.router.release(self.req, self.uid, true);
        }
    }
}

impl Lease {
    /// Give the slot back without counting a request: the request never
    /// reached the worker (refused connect, closed pooled connection) and is
    /// about to be retried.
    pub fn unused(mut self) {
        self.armed = false;
        self.router.release(self.req, self.uid, false);
    }
}

/// Removes a queued request's bookkeeping if its future is dropped.
struct QueuedGuard<'a> {
    router: &'a Router,
    req: u64,
    assigned: bool,
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        if !self.assigned {
            let mut st = self.router.lock();
            st.waiters.retain(|w| w.req != self.req);
            st.requests.remove(&self.req);
        }
    }
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

    /// Get a worker slot for a request, waiting in the queue while no worker
    /// can take it. `exclude` lists worker instances that already refused
    /// it: it waits for another one.
    pub async fn acquire(
        self: &Arc<Self>,
        method: &Method,
        path: &str,
        started: Instant,
        exclude: &[u64],
    ) -> Result<Lease, Rejected> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let info = RequestInfo {
            method: method.clone(),
            path: path.to_string(),
            started,
            worker: None,
            uid: None,
        };
        let rx = {
            let mut st = self.lock();
            // Those waiting ahead of it first (a worker back from a
            // suspension may not have been handed out yet); what is left
            // free now is of no use to any of them.
            if !st.waiters.is_empty() {
                self.dispatch(&mut st);
            }
            if let Some(i) = self.pick(&st, exclude) {
                return Ok(self.assign(&mut st, i, req, info));
            }
            st.waiters.retain(|w| !w.tx.is_closed());
            if st.waiters.len() >= self.backlog {
                return Err(Rejected::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            // By arrival: a retried request keeps its place.
            let at = st
                .waiters
                .iter()
                .rposition(|w| w.started <= started)
                .map_or(0, |p| p + 1);
            st.waiters.insert(
                at,
                Waiter {
                    req,
                    started,
                    exclude: exclude.to_vec(),
                    tx,
                },
            );
            st.requests.insert(req, info);
            rx
        };
        let mut guard = QueuedGuard {
            router: self,
            req,
            assigned: false,
        };
        match rx.await {
            Ok(lease) => {
                guard.assigned = true;
                Ok(lease)
            }
            Err(_) => Err(Rejected::Unavailable),
        }
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

    fn assign(
        self: &Arc<Self>,
        st: &mut State,
        i: usize,
        req: u64,
        mut info: RequestInfo,
    ) -> Lease {
        st.cursor = (i + 1) % st.backends.len().max(1);
        let b = &mut st.backends[i];
        b.in_flight += 1;
        info.worker = Some(b.worker.id);
        info.uid = Some(b.worker.uid);
        let lease = Lease {
            router: self.clone(),
            req,
            uid: b.worker.uid,
            worker_id: b.worker.id,
            pid: b.worker.pid,
            pool: b.pool.clone(),
            armed: true,
        };
        st.requests.insert(req, info);
        lease
    }

    /// Free a slot; `counted`: the request was sent (it counts as served).
    fn release(self: &Arc<Self>, req: u64, uid: u64, counted: bool) {
        let mut recycle = None;
        {
            let mut st = self.lock();
            if let Some(b) = st.backends.iter_mut().find(|b| b.worker.uid == uid) {
                b.in_flight = b.in_flight.saturating_sub(1);
                if counted {
                    b.served += 1;
                    if b.worker.max_requests == Some(b.served) {
                        recycle = Some(b.served);
                    }
                }
            } else if let Some(n) = st.retiring.get_mut(&uid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.retiring.remove(&uid);
                }
            }
            st.requests.remove(&req);
            if counted {
                self.completed.fetch_add(1, Ordering::Relaxed);
            }
            self.dispatch(&mut st);
        }
        self.released.notify_waiters();
        if let (Some(n), Some(f)) = (recycle, self.on_recycle.get()) {
            f(uid, format!("recycled after {n} requests (max_requests)"));
        }
    }

    /// Remember that `request` failed because worker `uid` broke.
    pub fn note_broken(&self, uid: u64, request: String) {
        let mut b = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        b.retain(|(_, _, at)| at.elapsed() < Duration::from_secs(10));
        if b.len() >= 64 {
            b.pop_front();
        }
        b.push_back((uid, request, Instant::now()));
    }

    /// Requests of worker `uid`: in flight now, or failed in the last
    /// seconds because it broke ("GET /x (age 120 ms)").
    pub fn requests_on(&self, uid: u64) -> Vec<String> {
        let mut out: Vec<String> = self
            .broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(u, _, at)| *u == uid && at.elapsed() < Duration::from_secs(10))
            .map(|(_, r, _)| r.clone())
            .collect();
        out.extend(
            self.requests()
                .into_iter()
                .filter(|r| r.uid == Some(uid))
                .map(|r| format!("{} {} (age {} ms)", r.method, r.path, r.age().as_millis())),
        );
        out
    }

    /// Set what to do when a worker reaches `max_requests`.
    pub fn on_recycle(&self, f: RecycleHandler) {
        let _ = self.on_recycle.set(f);
    }

    fn in_flight_of(&self, uid: u64) -> usize {
        let st = self.lock();
        st.backends
            .iter()
            .find(|b| b.worker.uid == uid)
            .map(|b| b.in_flight)
            .or_else(|| st.retiring.get(&uid).copied())
            .unwrap_or(0)
    }

    /// Wait until worker `uid` has no request in flight; `false` after
    /// `timeout`. Called by the supervisor right before it stops a worker it
    /// is replacing or removing: after a `false`, the worker is marked as
    /// stopped by curfew with work in flight ([`Router::stopped_by_curfew`]).
    pub async fn drained(&self, uid: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.in_flight_of(uid) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                let done = self.in_flight_of(uid) == 0;
                if !done {
                    self.cut_by_curfew
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(uid);
                }
                return done;
            }
        }
    }

    /// Whether curfew is stopping worker `uid` (a reload, recycle or scale
    /// down whose drain ran out) while work was still on it: a connection to
    /// it that breaks now was cut by curfew, not by the app.
    pub fn stopped_by_curfew(&self, uid: u64) -> bool {
        self.cut_by_curfew
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&uid)
    }

    /// Hand free slots to waiting requests, oldest first; a request that
    /// refused-by-every-free-worker leaves its turn to the next one.
    fn dispatch(self: &Arc<Self>, st: &mut State) {
        let mut k = 0;
        while k < st.waiters.len() {
            if st.waiters[k].tx.is_closed() {
                if let Some(w) = st.waiters.remove(k) {
                    st.requests.remove(&w.req);
                }
                continue;
            }
            let Some(i) = self.pick(st, &st.waiters[k].exclude) else {
                if st.waiters[k].exclude.is_empty() {
                    break; // no worker can take anything now
                }
                k += 1;
                continue;
            };
            let Some(w) = st.waiters.remove(k) else {
                break;
            };
            let info = st.requests.remove(&w.req).unwrap_or_else(|| RequestInfo {
                method: Method::GET,
                path: String::new(),
                started: w.started,
                worker: None,
                uid: None,
            });
            let lease = self.assign(st, i, w.req, info);
            if let Err(mut lease) = w.tx.send(lease) {
                // The waiter went away between the check and the send: undo
                // by hand (dropping the lease would re-lock the state).
                lease.armed = false;
                st.backends[i].in_flight -= 1;
                st.requests.remove(&lease.req);
            }
        }
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

    /// Route nothing new to a worker for `d`. Called when a connection to it
    /// broke or was refused: the worker most likely just died, and the
    /// supervisor learns that a moment later (from SIGCHLD) and removes it;
    /// until then, requests must not be sent into the dead process.
    pub fn suspend(self: &Arc<Self>, uid: u64, d: Duration) {
        {
            let mut st = self.lock();
            let Some(b) = st.backends.iter_mut().find(|b| b.worker.uid == uid) else {
                return;
            };
            b.suspended_until = Some(Instant::now() + d);
        }
        let router = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            let mut st = router.lock();
            router.dispatch(&mut st);
        });
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

    fn worker(uid: u64, id: usize) -> ReadyWorker {
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

    async fn get(r: &Arc<Router>) -> Result<Lease, Rejected> {
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

    #[tokio::test]
    async fn queue_is_fifo_and_bounded() {
        let r = Router::new(1, 2);
        r.add(worker(1, 0));
        let first = get(&r).await.expect("slot");
        let r2 = r.clone();
        let w1 = tokio::spawn(async move { get(&r2).await.map(|l| l.req) });
        tokio::task::yield_now().await;
        let r3 = r.clone();
        let w2 = tokio::spawn(async move { get(&r3).await.map(|l| l.req) });
        while r.queue_len() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(get(&r).await.err(), Some(Rejected::QueueFull));
        drop(first);
        let a = w1.await.expect("join").expect("slot");
        let b = w2.await.expect("join").expect("slot");
        assert!(a < b, "oldest waiter first");
        assert_eq!(r.queue_len(), 0);
    }

    #[tokio::test]
    async fn waiting_request_gets_a_worker_that_becomes_ready() {
        let r = Router::new(1, 5);
        let r2 = r.clone();
        let w = tokio::spawn(async move { get(&r2).await.map(|l| l.worker_id) });
        while r.queue_len() < 1 {
            tokio::task::yield_now().await;
        }
        r.add(worker(7, 3));
        assert_eq!(w.await.expect("join"), Ok(3));
    }

    #[tokio::test]
    async fn abandoned_waiter_frees_its_place() {
        let r = Router::new(1, 1);
        r.add(worker(1, 0));
        let held = get(&r).await.expect("slot");
        let r2 = r.clone();
        let w = tokio::spawn(async move { get(&r2).await.is_ok() });
        while r.queue_len() < 1 {
            tokio::task::yield_now().await;
        }
        w.abort();
        let _ = w.await;
        assert_eq!(r.queue_len(), 0);
        assert_eq!(r.requests().len(), 1);
        drop(held);
        assert!(get(&r).await.is_ok());
    }

    #[tokio::test]
    async fn a_refused_request_avoids_the_worker_that_refused_it() {
        let r = Router::new(1, 5);
        r.add(worker(1, 0));
        r.add(worker(2, 1));
        let l = r
            .acquire(&Method::GET, "/", Instant::now(), &[1])
            .await
            .expect("slot");
        assert_eq!(l.uid, 2);
    }

    /// Issue 15: every worker refused the request (they died). It is not
    /// failed: it waits in the queue for the next worker that is ready.
    #[tokio::test]
    async fn refused_everywhere_waits_for_the_next_worker() {
        let r = Router::new(1, 5);
        r.add(worker(1, 0));
        r.add(worker(2, 1));
        let r2 = r.clone();
        let w = tokio::spawn(async move {
            r2.acquire(&Method::GET, "/", Instant::now(), &[1, 2])
                .await
                .map(|l| l.uid)
        });
        while r.queue_len() < 1 {
            tokio::task::yield_now().await;
        }
        // A free worker it refused does not take it.
        assert_eq!(get(&r).await.expect("slot").uid, 1);
        assert_eq!(r.queue_len(), 1);
        r.remove(1);
        r.remove(2);
        r.add(worker(3, 0));
        assert_eq!(w.await.expect("join"), Ok(3));
    }

    /// A request that waits for another worker does not hold up those
    /// behind it that can use the free one, and a retried request keeps its
    /// place (by arrival) in the queue.
    #[tokio::test]
    async fn waiting_for_another_worker_blocks_nobody() {
        let r = Router::new(1, 5);
        r.add(worker(1, 0));
        let held = get(&r).await.expect("slot");
        let t0 = Instant::now();
        // Queued first: a request that arrived later.
        let r2 = r.clone();
        let later = tokio::spawn(async move {
            r2.acquire(&Method::GET, "/later", t0 + Duration::from_millis(5), &[])
                .await
                .map(|l| l.uid)
        });
        while r.queue_len() < 1 {
            tokio::task::yield_now().await;
        }
        // Then a retried one that arrived earlier and refuses worker 1.
        let r3 = r.clone();
        let retried = tokio::spawn(async move {
            r3.acquire(&Method::GET, "/retried", t0, &[1])
                .await
                .map(|l| l.uid)
        });
        while r.queue_len() < 2 {
            tokio::task::yield_now().await;
        }
        let order: Vec<String> = r
            .requests()
            .into_iter()
            .filter(|q| q.worker.is_none())
            .map(|q| q.path)
            .collect();
        assert_eq!(order, ["/retried", "/later"]);
        drop(held);
        assert_eq!(
            later.await.expect("join"),
            Ok(1),
            "passes the one that refused worker 1"
        );
        r.add(worker(2, 1));
        assert_eq!(retried.await.expect("join"), Ok(2));
    }

    #[tokio::test]
    async fn an_unused_lease_counts_nothing() {
        let r = Router::new(1, 5);
        let mut w = worker(1, 0);
        w.max_requests = Some(1);
        let recycled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = recycled.clone();
        r.on_recycle(Box::new(move |_, _| flag.store(true, Ordering::SeqCst)));
        r.add(w);
        get(&r).await.expect("slot").unused();
        assert_eq!(r.completed(), 0);
        assert_eq!(r.workers()[0].served, 0);
        assert_eq!(r.workers()[0].in_flight, 0);
        assert!(!recycled.load(Ordering::SeqCst));
        assert!(r.requests().is_empty());
    }

    #[tokio::test]
    async fn suspended_worker_gets_nothing_until_it_is_back() {
        let r = Router::new(1, 5);
        r.add(worker(1, 0));
        r.add(worker(2, 1));
        r.suspend(1, Duration::from_millis(100));
        for _ in 0..4 {
            assert_eq!(get(&r).await.expect("slot").uid, 2);
        }
        // A queued request is served by the suspended worker once it is back.
        let held = get(&r).await.expect("slot");
        assert_eq!(held.uid, 2);
        let r2 = r.clone();
        let w = tokio::spawn(async move { get(&r2).await.map(|l| l.uid) });
        assert_eq!(w.await.expect("join"), Ok(1));
    }

    #[tokio::test]
    async fn drained_waits_for_in_flight_of_a_removed_worker() {
        let r = Router::new(2, 5);
        r.add(worker(1, 0));
        let a = get(&r).await.expect("slot");
        let b = get(&r).await.expect("slot");
        r.remove(1);
        assert!(!r.drained(1, Duration::from_millis(50)).await);
        drop(a);
        let r2 = r.clone();
        let w = tokio::spawn(async move { r2.drained(1, Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        drop(b);
        assert!(w.await.expect("join"));
        assert!(
            r.drained(99, Duration::ZERO).await,
            "unknown worker is drained"
        );
    }

    #[tokio::test]
    async fn max_requests_triggers_recycle_once() {
        let r = Router::new(1, 5);
        let hits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = hits.clone();
        r.on_recycle(Box::new(move |uid, why| {
            h.lock().expect("lock").push((uid, why))
        }));
        let mut w = worker(1, 0);
        w.max_requests = Some(3);
        r.add(w);
        for _ in 0..5 {
            drop(get(&r).await.expect("slot"));
        }
        let hits = hits.lock().expect("lock").clone();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].0, 1);
        assert!(hits[0].1.contains("after 3 requests"));
    }

    #[tokio::test]
    async fn removed_worker_leases_release_cleanly() {
        let r = Router::new(1, 5);
        r.add(worker(1, 0));
        let l = get(&r).await.expect("slot");
        r.remove(1);
        drop(l);
        assert_eq!(r.ready_workers(), 0);
        assert!(r.requests().is_empty());
        assert_eq!(r.completed(), 1);
    }
}
