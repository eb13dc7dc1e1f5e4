//! Retry delay of a failed job: `15 s + attempt⁴ s`, ± up to 10 % jitter,
//! never more than 24 h.
//!
//! The shape of Sidekiq's and Faktory's `count⁴ + 15 + jitter`: attempt 1
//! waits about 16 s, attempt 5 about 11 min, attempt 10 about 2.8 h,
//! attempt 17 reaches the 24 h cap. With the default 20 attempts a job is
//! retried for about 17 days before it is dead. The jitter spreads the
//! retries of jobs that failed together (an outage) so they do not come back
//! as one wave; it is small enough that a later attempt never waits less than
//! an earlier one (for attempts ≥ 1, even in the worst case).
//!
//! [`backoff`] draws the jitter; [`backoff_with_jitter`] is the pure,
//! deterministic core.

use std::time::Duration;

/// The delay before the first retry, without the `attempt⁴` term.
pub const BASE: Duration = Duration::from_secs(15);
/// The longest delay.
pub const CAP: Duration = Duration::from_secs(24 * 3600);
/// The largest jitter, as a fraction of the delay.
pub const JITTER: f64 = 0.10;

/// The delay before retrying a job whose attempt number `attempt` (1 for the
/// first run) just failed. Random jitter; see the module docs.
pub fn backoff(attempt: i32) -> Duration {
    backoff_with_jitter(attempt, random_unit())
}

/// [`backoff`] with the jitter given: `unit` in `-1.0 ..= 1.0` scales the
/// delay by `1 + unit × JITTER` (clamped into that range; NaN counts as 0).
/// Attempts below 0 count as 0.
pub fn backoff_with_jitter(attempt: i32, unit: f64) -> Duration {
    // 1000⁴ s is far beyond the cap already; clamping keeps the power finite.
    let n = f64::from(attempt.clamp(0, 1000));
    let unit = if unit.is_nan() {
        0.0
    } else {
        unit.clamp(-1.0, 1.0)
    };
    let secs = (BASE.as_secs_f64() + n.powi(4)) * (1.0 + JITTER * unit);
    Duration::from_secs_f64(secs.min(CAP.as_secs_f64()))
}

/// When to retry a job whose attempt `attempt` failed at `now_ms`: the
/// `retry_at` argument of `Store::fail`.
pub fn retry_at(attempt: i32, now_ms: i64) -> i64 {
    let delay = i64::try_from(backoff(attempt).as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_add(delay)
}

/// [`retry_at`] with the delay multiplied by `scale` (a queue's
/// `retry_backoff` divided by [`BASE`]), still at most [`CAP`]. A scale that
/// is not a positive finite number counts as 1.
pub fn retry_at_scaled(attempt: i32, now_ms: i64, scale: f64) -> i64 {
    let scale = if scale.is_finite() && scale > 0.0 {
        scale
    } else {
        1.0
    };
    let delay = (backoff(attempt).as_secs_f64() * scale).min(CAP.as_secs_f64());
    now_ms.saturating_add((delay * 1000.0) as i64)
}

/// A uniformly distributed value in `[-1, 1)`, from the operating system's
/// randomness (through `uuid`, already a dependency; no `rand` needed).
fn random_unit() -> f64 {
    let bits = (uuid::Uuid::new_v4().as_u128() >> 75) as u64; // 53 random bits
    let unit = bits as f64 / (1u64 << 53) as f64; // [0, 1)
    unit * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[test]
    fn scaled_retries_keep_the_shape() {
        // 100 ms instead of 15 s: attempt 1 ≈ 107 ms, attempt 3 ≈ 640 ms.
        let scale = 0.1 / 15.0;
        let d1 = retry_at_scaled(1, 0, scale);
        let d3 = retry_at_scaled(3, 0, scale);
        assert!((96..=118).contains(&d1), "{d1}");
        assert!((576..=704).contains(&d3), "{d3}");
        assert_eq!(retry_at_scaled(1000, 0, 1e9), CAP.as_millis() as i64);
        let d = retry_at_scaled(1, 0, f64::NAN);
        assert!((14_400..=17_600).contains(&d), "{d}");
    }

    #[test]
    fn the_first_retry_comes_after_tens_of_seconds() {
        assert_eq!(backoff_with_jitter(1, 0.0), Duration::from_secs(16));
        for _ in 0..100 {
            let d = secs(backoff(1));
            assert!((14.4..=17.6).contains(&d), "{d}");
        }
    }

    #[test]
    fn grows_even_against_the_worst_jitter_until_the_cap() {
        for n in 1..40 {
            let latest_now = backoff_with_jitter(n, 1.0);
            let earliest_next = backoff_with_jitter(n + 1, -1.0);
            assert!(
                latest_now <= earliest_next,
                "attempt {n}: {latest_now:?} > {earliest_next:?}"
            );
        }
    }

    #[test]
    fn grows_on_average() {
        let mean = |n: i32| (0..200).map(|_| secs(backoff(n))).sum::<f64>() / 200.0;
        let means: Vec<f64> = (1..=16).map(mean).collect();
        assert!(means.windows(2).all(|w| w[0] < w[1]), "{means:?}");
    }

    #[test]
    fn is_capped_at_a_day() {
        for n in [17, 18, 25, 100, 1000, i32::MAX] {
            assert!(backoff(n) <= CAP, "attempt {n}");
            assert!(backoff_with_jitter(n, 1.0) <= CAP, "attempt {n}");
        }
        assert_eq!(backoff_with_jitter(i32::MAX, 0.0), CAP);
        // Jitter still spreads jobs at the cap downwards.
        assert!(backoff_with_jitter(17, -1.0) < CAP);
    }

    #[test]
    fn odd_inputs_are_tamed() {
        assert_eq!(backoff_with_jitter(-5, 0.0), BASE);
        assert_eq!(backoff_with_jitter(1, f64::NAN), Duration::from_secs(16));
        assert_eq!(backoff_with_jitter(1, 7.0), backoff_with_jitter(1, 1.0));
    }

    #[test]
    fn retry_at_is_in_the_future() {
        let now = 1_700_000_000_000;
        let at = retry_at(3, now);
        assert!(at >= now + 86_400 && at <= now + 106_000, "{}", at - now);
    }
}
