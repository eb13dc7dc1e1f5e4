//! A token bucket: at most `burst` events at once, refilled at `rate` per
//! second; what it refuses is counted until someone reports it.

use std::time::Instant;

pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
    dropped: u64,
}

impl Bucket {
    pub fn new(rate: u32, burst: u32) -> Bucket {
        Bucket {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: Instant::now(),
            dropped: 0,
        }
    }

    /// Take one token now; `false` (and counted) when there is none.
    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// Whether a token is there now (none taken).
    pub fn has_token(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens >= 1.0
    }

    /// Refused events not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Refused events since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate_and_the_count_of_the_rest() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 5);
        b.at = t0;
        let took = (0..8).filter(|_| b.take_at(t0)).count();
        assert_eq!(took, 5);
        assert_eq!(b.take_dropped(), 3);
        assert_eq!(b.take_dropped(), 0);
        // 0.25 s later: 2.5 tokens.
        let t1 = t0 + Duration::from_millis(250);
        let took = (0..5).filter(|_| b.take_at(t1)).count();
        assert_eq!(took, 2);
        // Never more than the burst, however long it was idle.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take_at(t2)).count(), 5);
    }
}
