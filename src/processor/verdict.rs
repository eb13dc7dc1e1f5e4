//! What a delivery's result means for the job: done, slow down (no attempt
//! spent), or a failed attempt. Pure, so every rule is unit-tested.

use std::time::{Duration, SystemTime};

/// Back-pressure without a usable `Retry-After`: wait this long.
pub const DEFAULT_SNOOZE: Duration = Duration::from_secs(10);
/// No snooze is longer than this, whatever `Retry-After` says.
pub const MAX_SNOOZE: Duration = Duration::from_secs(3600);
/// Nor shorter: a snooze spends no attempt, so `Retry-After: 0` (or a date
/// in the past) would otherwise deliver the job again as fast as the claim
/// loop turns, for ever.
pub const MIN_SNOOZE: Duration = Duration::from_secs(1);
/// Exit code of a command that asks to be retried later without spending an
/// attempt (`EX_TEMPFAIL` from sysexits.h).
pub const EXIT_TEMPFAIL: i32 = 75;
/// Longest part of a response body or stderr kept as the job's error.
pub const MAX_ERROR_SNIPPET: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Succeeded.
    Done,
    /// Back-pressure: run again after this long; the attempt is given back.
    Snooze { after: Duration, why: String },
    /// A failed attempt (retried with backoff, or dead after max_attempts).
    Fail { error: String },
    /// Cut off by curfew itself (its worker was replaced or removed before
    /// the job finished): handed back, the attempt not counted.
    Interrupted { why: String },
    /// Stopped because an operator cancelled it: `cancelled`, never retried.
    Cancelled,
}

/// The verdict on an HTTP answer: 2xx done; 429, or 503 with
/// `Retry-After`, snooze; anything else a failure carrying the status and
/// the start of the body.
pub fn of_http(status: u16, retry_after: Option<&str>, body: &[u8], now: SystemTime) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Done;
    }
    let after = retry_after.and_then(|v| parse_retry_after(v, now));
    match (status, after) {
        (429, after) | (503, after @ Some(_)) => Verdict::Snooze {
            after: after
                .unwrap_or(DEFAULT_SNOOZE)
                .clamp(MIN_SNOOZE, MAX_SNOOZE),
            why: format!("HTTP {status}"),
        },
        _ => Verdict::Fail {
            error: with_snippet(format!("HTTP {status}"), body),
        },
    }
}

/// The verdict on a command's exit: 0 done, 75 (EX_TEMPFAIL) snooze,
/// anything else a failure with the last stderr line.
pub fn of_exit(code: Option<i32>, described: &str, last_stderr: Option<&str>) -> Verdict {
    match code {
        Some(0) => Verdict::Done,
        Some(EXIT_TEMPFAIL) => Verdict::Snooze {
            after: DEFAULT_SNOOZE,
            why: "exit code 75 (EX_TEMPFAIL)".to_owned(),
        },
        _ => Verdict::Fail {
            error: match last_stderr {
                Some(line) => with_snippet(described.to_owned(), line.as_bytes()),
                None => described.to_owned(),
            },
        },
    }
}

/// How many hand-backs a job may have had before an interruption by
/// curfew stopping its worker counts as a failed attempt.
/// Deploys hand jobs back too: high enough that a long job cut by a few of
/// them keeps its attempts.
pub const HANDBACKS_BEFORE_FAILING: i32 = 10;

/// An interruption (its worker stopped by curfew: reload, recycle, scale
/// down) hands the job back without spending an attempt — unless it has
/// been handed back [`HANDBACKS_BEFORE_FAILING`] times already: a job that
/// itself drives its worker past `max_memory` and outlasts the recycle's
/// drain would otherwise be handed back and re-run for ever, never spending
/// an attempt nor going `dead`. From then on each interruption is a failed
/// attempt (retried with backoff, `dead` after `max_attempts`).
pub fn interrupted(why: String, releases: i32) -> Verdict {
    if releases >= HANDBACKS_BEFORE_FAILING {
        Verdict::Fail {
            error: format!(
                "{why}; handed back {releases} times already, so this counts as a failed attempt"
            ),
        }
    } else {
        Verdict::Interrupted { why }
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn with_snippet(mut head: String, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_SNIPPET)]);
    let text = text.trim();
    if !text.is_empty() {
        head.push_str(": ");
        head.push_str(text);
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn success_is_any_2xx() {
        assert_eq!(of_http(200, None, b"", now()), Verdict::Done);
        assert_eq!(of_http(204, None, b"", now()), Verdict::Done);
        assert!(matches!(
            of_http(302, None, b"", now()),
            Verdict::Fail { .. }
        ));
    }

    #[test]
    fn back_pressure_snoozes_without_failing() {
        assert_eq!(
            of_http(429, Some("7"), b"", now()),
            Verdict::Snooze {
                after: Duration::from_secs(7),
                why: "HTTP 429".into()
            }
        );
        assert_eq!(
            of_http(429, None, b"", now()),
            Verdict::Snooze {
                after: DEFAULT_SNOOZE,
                why: "HTTP 429".into()
            }
        );
        let date = httpdate::fmt_http_date(now() + Duration::from_secs(120));
        assert_eq!(
            of_http(503, Some(&date), b"", now()),
            Verdict::Snooze {
                after: Duration::from_secs(120),
                why: "HTTP 503".into()
            }
        );
        assert_eq!(
            of_http(503, Some("999999"), b"", now()),
            Verdict::Snooze {
                after: MAX_SNOOZE,
                why: "HTTP 503".into()
            }
        );
    }

    #[test]
    fn a_503_without_retry_after_is_a_failure() {
        assert_eq!(
            of_http(503, None, b"down\n", now()),
            Verdict::Fail {
                error: "HTTP 503: down".into()
            }
        );
        assert_eq!(
            of_http(503, Some("soon"), b"", now()),
            Verdict::Fail {
                error: "HTTP 503".into()
            }
        );
    }

    #[test]
    fn failures_carry_the_start_of_the_body() {
        let body = vec![b'x'; 5000];
        let Verdict::Fail { error } = of_http(500, None, &body, now()) else {
            panic!("a failure")
        };
        assert_eq!(error.len(), "HTTP 500: ".len() + MAX_ERROR_SNIPPET);
        let Verdict::Fail { error } = of_http(500, None, &[0xff, b'a'], now()) else {
            panic!("a failure")
        };
        assert!(error.starts_with("HTTP 500: "), "{error}");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(of_exit(Some(0), "exit code 0", None), Verdict::Done);
        assert!(matches!(
            of_exit(Some(75), "exit code 75", None),
            Verdict::Snooze { .. }
        ));
        assert_eq!(
            of_exit(Some(2), "exit code 2", Some("KeyError: 'to'")),
            Verdict::Fail {
                error: "exit code 2: KeyError: 'to'".into()
            }
        );
        assert_eq!(
            of_exit(None, "killed by SIGSEGV", None),
            Verdict::Fail {
                error: "killed by SIGSEGV".into()
            }
        );
    }

    #[test]
    fn retry_after_in_the_past_is_now() {
        let date = httpdate::fmt_http_date(now() - Duration::from_secs(60));
        assert_eq!(parse_retry_after(&date, now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(" 3 ", now()),
            Some(Duration::from_secs(3))
        );
        assert_eq!(parse_retry_after("-1", now()), None);
    }

    #[test]
    fn a_snooze_lasts_at_least_a_second() {
        for (status, header) in [
            (429, "0"),
            (503, "0"),
            (429, "Tue, 14 Nov 2023 22:00:00 GMT"),
        ] {
            assert_eq!(
                of_http(status, Some(header), b"", now()),
                Verdict::Snooze {
                    after: MIN_SNOOZE,
                    why: format!("HTTP {status}"),
                },
                "{status} {header}"
            );
        }
    }

    #[test]
    fn interruptions_count_once_a_job_was_handed_back_often() {
        let why = || "its worker 1 was stopped by curfew".to_owned();
        assert_eq!(interrupted(why(), 0), Verdict::Interrupted { why: why() });
        assert_eq!(
            interrupted(why(), HANDBACKS_BEFORE_FAILING - 1),
            Verdict::Interrupted { why: why() }
        );
        match interrupted(why(), HANDBACKS_BEFORE_FAILING) {
            Verdict::Fail { error } => {
                assert!(
                    error.starts_with(&why()) && error.contains("10 times"),
                    "{error}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
