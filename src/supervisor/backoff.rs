//! Restart backoff for crashing workers: exponential from 100 ms, capped at
//! 10 s, reset once a worker has stayed up for a while. A worker that crashes
//! in a loop cannot turn curfew into a fork bomb; one that crashes once after
//! hours of service is back almost at once.

use std::time::Duration;

pub const BASE: Duration = Duration::from_millis(100);
pub const MAX: Duration = Duration::from_secs(10);
/// A worker that ran at least this long counts as healthy: its next crash
/// starts the backoff from the beginning.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Clone)]
pub struct Backoff {
    consecutive: u32,
}

impl Backoff {
    /// Record an exit after `uptime`; returns how long to wait before the
    /// next start.
    pub fn next_delay(&mut self, uptime: Duration) -> Duration {
        if uptime >= HEALTHY_AFTER {
            self.consecutive = 0;
        }
        let exp = self.consecutive.min(16);
        self.consecutive = self.consecutive.saturating_add(1);
        BASE.saturating_mul(1u32 << exp).min(MAX)
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_to_the_cap() {
        let mut b = Backoff::default();
        let delays: Vec<_> = (0..10).map(|_| b.next_delay(Duration::ZERO)).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[2], Duration::from_millis(400));
        assert_eq!(delays[9], MAX);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn resets_after_a_healthy_run() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.next_delay(Duration::ZERO);
        }
        assert_eq!(b.next_delay(HEALTHY_AFTER), BASE);
        assert_eq!(b.consecutive_failures(), 1);
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::default();
        for _ in 0..1000 {
            assert!(b.next_delay(Duration::ZERO) <= MAX);
        }
    }
}
