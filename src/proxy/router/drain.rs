//! Draining a worker that left routing: waiting until its requests are
//! done, and remembering which workers curfew stopped with work still on
//! them.

use std::time::Duration;

use super::Router;

impl Router {
    /// Whether curfew is stopping worker `uid` (a reload, recycle or scale
    /// down whose drain ran out) while work was still on it: a connection to
    /// it that breaks now was cut by curfew, not by the app.
    pub fn stopped_by_curfew(&self, uid: u64) -> bool {
        self.cut_by_curfew
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&uid)
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::{get, worker};
    use super::super::*;

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
}
