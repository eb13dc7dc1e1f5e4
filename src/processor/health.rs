//! Is the job store reachable? One WARN when an outage starts, one INFO
//! when it ends, DEBUG in between: a database that goes away does not flood
//! the log, and its return is visible.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use curfew_store::StoreError;

/// Pauses between retries of an unreachable store: 100 ms, doubling, at
/// most 5 s.
pub(super) struct RetryPause(Duration);

impl RetryPause {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(super) fn new() -> RetryPause {
        RetryPause(RetryPause::MIN)
    }

    /// The pause to take now (the next one is twice as long).
    pub(super) fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (now * 2).min(RetryPause::MAX);
        now
    }

    /// The pause [`RetryPause::next`] would give.
    pub(super) fn peek(&self) -> Duration {
        self.0
    }

    /// The store answered: start again from the shortest pause.
    pub(super) fn reset(&mut self) {
        self.0 = RetryPause::MIN;
    }
}

pub(super) struct StoreHealth {
    store: String,
    down: AtomicBool,
    epoch: Instant,
    /// When a call last succeeded, in ms since `epoch`.
    last_ok: AtomicU64,
}

impl StoreHealth {
    pub(super) fn new(store: &str) -> StoreHealth {
        StoreHealth {
            store: store.to_owned(),
            down: AtomicBool::new(false),
            epoch: Instant::now(),
            last_ok: AtomicU64::new(0),
        }
    }

    /// A timestamp to take before a store call and give to
    /// [`StoreHealth::failed`].
    pub(super) fn tick(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub(super) fn is_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    /// A call started at `since` failed. Retryable errors
    /// start an outage (WARN once); a call that started before the last
    /// success is a straggler of the outage that already ended (DEBUG).
    /// Other errors are ERRORs every time.
    pub(super) fn failed(&self, what: &str, e: &StoreError, since: u64) {
        if !e.is_retryable() {
            tracing::error!(error = %e, "Job store error while trying to {what}.");
            return;
        }
        if since <= self.last_ok.load(Ordering::Relaxed) {
            tracing::debug!(error = %e, "A job store call from before the store came back failed ({what}).");
            return;
        }
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "Job store unreachable while trying to {what}: retrying with backoff; web traffic is not affected.");
        } else {
            tracing::debug!(error = %e, "Job store still unreachable ({what}).");
        }
    }

    /// A call succeeded.
    pub(super) fn ok(&self) {
        self.last_ok.fetch_max(self.tick(), Ordering::Relaxed);
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(store = %self.store, "Job store reachable again.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> StoreError {
        StoreError::Unavailable {
            store: "x".into(),
            source: sqlx::Error::PoolTimedOut,
        }
    }

    #[test]
    fn pauses_double_up_to_the_cap_and_reset() {
        let mut p = RetryPause::new();
        let taken: Vec<u64> = (0..8).map(|_| p.next().as_millis() as u64).collect();
        assert_eq!(taken, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        p.reset();
        assert_eq!(p.peek(), Duration::from_millis(100));
    }

    #[test]
    fn an_outage_is_one_transition_each_way() {
        let h = StoreHealth::new("x");
        assert!(h.is_up());
        let t = h.tick();
        h.failed("claim", &unavailable(), t);
        assert!(!h.is_up());
        h.failed("claim", &unavailable(), h.tick());
        assert!(!h.is_up());
        h.ok();
        assert!(h.is_up());
        // A call that started during the outage and fails after the
        // recovery does not open a new outage.
        h.failed("rescue", &unavailable(), t);
        assert!(h.is_up());
        // A new call failing does.
        std::thread::sleep(std::time::Duration::from_millis(2));
        h.failed("claim", &unavailable(), h.tick());
        assert!(!h.is_up());
    }

    #[test]
    fn other_errors_do_not_mark_the_store_down() {
        let h = StoreHealth::new("x");
        h.failed("claim", &StoreError::NotFound { id: 1 }, h.tick());
        assert!(h.is_up());
    }
}
