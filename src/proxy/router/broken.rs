//! Workers whose connections broke or were refused: suspended from routing
//! until the supervisor learns whether they died, and the requests that
//! failed on them, kept a few seconds so the supervisor can name them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Router;

impl Router {
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::{get, worker};
    use super::super::*;

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
}
