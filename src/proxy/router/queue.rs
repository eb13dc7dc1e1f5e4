//! The bounded FIFO queue of requests waiting for a worker slot: a request
//! gets a slot at once or waits (by arrival, at most `backlog`), and a freed
//! slot goes straight to the oldest waiter that can use it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::Method;
use tokio::sync::oneshot;

use super::{Lease, Rejected, RequestInfo, Router, State};

pub(super) struct Waiter {
    req: u64,
    /// When the request arrived (the queue's order).
    started: Instant,
    /// Worker instances that refused it.
    exclude: Vec<u64>,
    tx: oneshot::Sender<Lease>,
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

    /// Hand free slots to waiting requests, oldest first; a request that
    /// refused-by-every-free-worker leaves its turn to the next one.
    pub(super) fn dispatch(self: &Arc<Self>, st: &mut State) {
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::{get, worker};
    use super::super::*;

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
}
