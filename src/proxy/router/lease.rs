//! A [`Lease`]: one request's hold on one worker slot, taken by
//! [`Router::acquire`] and freed on drop (or by [`Lease::unused`]); freeing it
//! counts the request and recycles a worker at its `max_requests`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::super::upstream::Pool;
use super::{RecycleHandler, RequestInfo, Router, State};

/// One request's hold on a worker slot; freed on drop.
pub struct Lease {
    pub(super) router: Arc<Router>,
    pub(super) req: u64,
    pub uid: u64,
    pub worker_id: usize,
    /// The worker's process id (for logs).
    pub pid: u32,
    pub pool: Arc<Pool>,
    pub(super) armed: bool,
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

impl Router {
    pub(super) fn assign(
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

    /// Set what to do when a worker reaches `max_requests`.
    pub fn on_recycle(&self, f: RecycleHandler) {
        let _ = self.on_recycle.set(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{get, worker};
    use super::super::*;

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
