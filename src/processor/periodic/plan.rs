//! The scheduler's decision for one schedule at one moment (pure).
//!
//! An instant after the scheduler's first look (`started`) fell while it
//! ran: each one is enqueued, in order, even when the scheduler comes to it
//! late (a slow store, a busy machine). An instant at or before the first
//! look fell while no curfew ran (a deploy, a crash): it is *missed*, and
//! `catch_up` decides — the latest missed one is enqueued once (`last`) or
//! passed over (`none`). So is anything more than [`ON_TIME`] late (the
//! store was unreachable that long), so an outage does not end in a burst
//! of one job per missed second.

use std::time::Duration;

use jiff::Timestamp;

use crate::config::periodic::{CatchUp, Schedule};

/// An instant later than this (and before now) is treated as missed, even
/// while the scheduler ran.
pub const ON_TIME: Duration = Duration::from_secs(60);

/// What to do about a schedule now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Its next instant has not come yet.
    Wait,
    /// Enqueue the job of this instant (unix ms): it fell while this
    /// scheduler ran.
    Enqueue(i64),
    /// Enqueue the job of this missed instant (`catch_up = "last"`).
    CatchUp(i64),
    /// Record this missed instant without a job (`catch_up = "none"`).
    Pass(i64),
}

/// The step for `schedule` at `now`, given the latest instant known handled
/// (`last`) and the scheduler's first look (`started`), all unix ms.
pub fn decide(
    schedule: &Schedule,
    catch_up: CatchUp,
    last: i64,
    started: i64,
    now: Timestamp,
) -> Step {
    let Some(next) = Timestamp::from_millisecond(last)
        .ok()
        .and_then(|t| schedule.next_after(t))
    else {
        return Step::Wait;
    };
    if next > now {
        return Step::Wait;
    }
    let on_time_from = now.as_millisecond() - ON_TIME.as_millis() as i64;
    let horizon = started.max(on_time_from);
    if next.as_millisecond() > horizon {
        return Step::Enqueue(next.as_millisecond());
    }
    // Missed: the latest instant at or before the horizon (`next` is one).
    let latest = Timestamp::from_millisecond(horizon)
        .ok()
        .and_then(|h| schedule.at_or_before(h))
        .map_or(next.as_millisecond(), |t| t.as_millisecond());
    match catch_up {
        CatchUp::Last => Step::CatchUp(latest),
        CatchUp::None => Step::Pass(latest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn ms(s: &str) -> i64 {
        ts(s).as_millisecond()
    }

    const MIN: Schedule = Schedule::Every(Duration::from_secs(60));
    const SEC: Schedule = Schedule::Every(Duration::from_secs(1));

    #[test]
    fn the_next_instant_waits_for_its_time() {
        let last = ms("2026-05-01T10:00:00Z");
        let started = ms("2026-05-01T09:00:00Z");
        assert_eq!(
            decide(
                &MIN,
                CatchUp::Last,
                last,
                started,
                ts("2026-05-01T10:00:59Z")
            ),
            Step::Wait
        );
        assert_eq!(
            decide(
                &MIN,
                CatchUp::None,
                last,
                started,
                ts("2026-05-01T10:01:00.200Z")
            ),
            Step::Enqueue(ms("2026-05-01T10:01:00Z"))
        );
    }

    /// A scheduler that comes late (a slow pass) still enqueues every
    /// instant that fell while it ran, one by one, in order.
    #[test]
    fn a_late_scheduler_skips_no_instant() {
        let started = ms("2026-05-01T10:00:00Z");
        let now = ts("2026-05-01T10:00:13.500Z");
        let mut last = ms("2026-05-01T10:00:10Z");
        let mut got = Vec::new();
        loop {
            match decide(&SEC, CatchUp::None, last, started, now) {
                Step::Enqueue(i) => {
                    got.push(i);
                    last = i;
                }
                Step::Wait => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            got,
            [11, 12, 13].map(|s| ms(&format!("2026-05-01T10:00:{s}Z")))
        );
    }

    /// Down from 10:00:30 to 10:07:30 (a deploy): "last" enqueues 10:07
    /// once (not 10:01…10:06), "none" passes it over; then 10:08 on time.
    #[test]
    fn after_a_gap_only_the_latest_missed_instant_is_caught_up() {
        let last = ms("2026-05-01T10:00:00Z");
        let started = ms("2026-05-01T10:07:30Z");
        let now = ts("2026-05-01T10:07:30.100Z");
        let latest = ms("2026-05-01T10:07:00Z");
        assert_eq!(
            decide(&MIN, CatchUp::Last, last, started, now),
            Step::CatchUp(latest)
        );
        assert_eq!(
            decide(&MIN, CatchUp::None, last, started, now),
            Step::Pass(latest)
        );
        assert_eq!(
            decide(&MIN, CatchUp::Last, latest, started, now),
            Step::Wait
        );
        assert_eq!(
            decide(
                &MIN,
                CatchUp::Last,
                latest,
                started,
                ts("2026-05-01T10:08:00Z")
            ),
            Step::Enqueue(ms("2026-05-01T10:08:00Z"))
        );
    }

    /// A store away for an hour while curfew ran: the seconds of that hour
    /// are not enqueued one by one; the latest one over a minute old is
    /// caught up, then the last minute's instants each.
    #[test]
    fn a_long_outage_is_caught_up_once_not_in_a_burst() {
        let started = ms("2026-05-01T09:00:00Z");
        let last = ms("2026-05-01T10:00:00Z");
        let now = ts("2026-05-01T11:00:00Z");
        assert_eq!(
            decide(&SEC, CatchUp::Last, last, started, now),
            Step::CatchUp(ms("2026-05-01T10:59:00Z"))
        );
        assert_eq!(
            decide(
                &SEC,
                CatchUp::Last,
                ms("2026-05-01T10:59:00Z"),
                started,
                now
            ),
            Step::Enqueue(ms("2026-05-01T10:59:01Z"))
        );
    }
}
