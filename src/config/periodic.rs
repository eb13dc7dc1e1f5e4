//! `[jobs.periodic.<name>]`: jobs enqueued on a schedule, validated, and
//! the schedule's arithmetic (the instant at or before a time, the next one
//! after it).
//!
//! ```toml
//! [jobs.periodic.nightly]
//! cron = "0 3 * * *"              # 5 fields, or 6 with seconds first
//! timezone = "Europe/Berlin"      # IANA name; default UTC (cron only)
//! queue = "default"
//! kind = "reindex"
//! payload = { full = true }       # any TOML value, sent as JSON
//! # priority = 0, max_attempts = <the queue's>
//! catch_up = "last"               # or "none"
//!
//! [jobs.periodic.heartbeat]
//! every = "5m"                    # instants are multiples of 5 min since the epoch
//! kind = "ping"
//! ```
//!
//! Cron expressions are parsed and evaluated by `croner` (Vixie cron
//! semantics with the OCPS DST rules: a fixed time that falls into a
//! spring-forward gap runs at the first valid time after it; a fixed time
//! repeated by a fall-back overlap runs once; wildcard minutes/seconds run
//! on the real clock through both).

use std::collections::BTreeMap;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::jobs::JobsConfig;
use super::raw::RawPeriodic;
use super::{ConfigError, Ctx};

/// The shortest `every`.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// What to do with an instant found already past when the scheduler looks
/// (curfew was down, or the store unreachable, when it fell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Enqueue the latest missed instant (once; earlier missed ones are not).
    Last,
    /// Enqueue nothing for it; wait for the next instant.
    None,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Last => "last",
            CatchUp::None => "none",
        }
    }
}

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression in a time zone.
    Cron {
        expr: String,
        /// Boxed: a parsed pattern is large beside `Every`.
        cron: Box<Cron>,
        tz: TimeZone,
        /// The zone as written (`UTC` by default).
        tz_name: String,
    },
    /// Every multiple of this period since 1970-01-01T00:00:00Z.
    Every(Duration),
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Schedule::Cron {
                    expr: a,
                    tz_name: za,
                    ..
                },
                Schedule::Cron {
                    expr: b,
                    tz_name: zb,
                    ..
                },
            ) => a == b && za == zb,
            (Schedule::Every(a), Schedule::Every(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Schedule {}

impl Schedule {
    /// The latest instant at or before `t`, if any.
    pub fn at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Cron { cron, tz, .. } => cron
                .find_previous_occurrence(&t.to_zoned(tz.clone()), true)
                .ok()
                .map(|z| z.timestamp()),
            Schedule::Every(period) => {
                let p = period_ms(*period);
                let ms = t.as_millisecond();
                Timestamp::from_millisecond(ms - ms.rem_euclid(p)).ok()
            }
        }
    }

    /// The first instant strictly after `t`, if any.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Cron { cron, tz, .. } => cron
                .find_next_occurrence(&t.to_zoned(tz.clone()), false)
                .ok()
                .map(|z| z.timestamp()),
            Schedule::Every(period) => {
                let p = period_ms(*period);
                let ms = t.as_millisecond();
                Timestamp::from_millisecond(ms - ms.rem_euclid(p) + p).ok()
            }
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Cron { expr, tz_name, .. } => write!(f, "cron {expr:?} {tz_name}"),
            Schedule::Every(d) => write!(f, "every {}", human(*d)),
        }
    }
}

/// Whole seconds as `1d 2h 3m 4s` (zero parts left out).
fn human(d: Duration) -> String {
    let mut s = d.as_secs();
    let mut parts = Vec::new();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if s >= len {
            parts.push(format!("{}{unit}", s / len));
            s %= len;
        }
    }
    if parts.is_empty() {
        return format!("{d:?}");
    }
    parts.join(" ")
}

/// The period in whole milliseconds (at least 1 s by validation).
fn period_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// One `[jobs.periodic.<name>]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodicConfig {
    pub name: String,
    pub schedule: Schedule,
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub priority: i32,
    /// `None`: the queue's `max_attempts`.
    pub max_attempts: Option<i32>,
    pub catch_up: CatchUp,
}

/// Validates every `[jobs.periodic.<name>]` against the validated `[jobs]`
/// (its queues and payload limit), by name.
pub(crate) fn validate(
    c: &Ctx<'_>,
    raw: Option<BTreeMap<String, RawPeriodic>>,
    jobs: &JobsConfig,
) -> Result<Vec<PeriodicConfig>, ConfigError> {
    let mut out = Vec::new();
    for (name, p) in raw.unwrap_or_default() {
        out.push(one(c, &name, p, jobs)?);
    }
    Ok(out)
}

/// A name of queue, kind or schedule: what the store accepts.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().count() <= curfew_store::MAX_NAME_CHARS
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

fn name_rule() -> String {
    format!(
        "1 to {} characters of A-Z a-z 0-9 _ . : -",
        curfew_store::MAX_NAME_CHARS
    )
}

fn one(
    c: &Ctx<'_>,
    name: &str,
    p: RawPeriodic,
    jobs: &JobsConfig,
) -> Result<PeriodicConfig, ConfigError> {
    let key = |k: &str| format!("jobs.periodic.{name}.{k}");
    if !is_name(name) {
        return Err(c.err(
            "jobs.periodic",
            format!("{name:?}"),
            format!("a schedule's name is {}", name_rule()),
        ));
    }
    let schedule = schedule(c, name, p.cron, p.every, p.timezone)?;
    let queue = p
        .queue
        .unwrap_or_else(|| super::jobs::DEFAULT_QUEUE.to_owned());
    let Some(q) = jobs.queue(&queue) else {
        return Err(c.err(
            key("queue"),
            format!("{queue:?}"),
            format!(
                "no such queue; declare [jobs.queues.{queue}] or use one of: {}",
                jobs.queue_names().join(", ")
            ),
        ));
    };
    let kind = match p.kind {
        None => {
            return Err(c.err(
                key("kind"),
                "(none)",
                "give the job's kind (its handler), e.g. kind = \"reindex\"",
            ));
        }
        Some(k) if !is_name(&k) => {
            return Err(c.err(
                key("kind"),
                format!("{k:?}"),
                format!("a kind is {}", name_rule()),
            ));
        }
        Some(k) => k,
    };
    let payload = p
        .payload
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    let size = serde_json::to_string(&payload).map_or(0, |s| s.len());
    if size > jobs.max_payload {
        return Err(c.err(
            key("payload"),
            format!("({size} bytes as JSON)"),
            format!("larger than jobs.max_payload ({} bytes)", jobs.max_payload),
        ));
    }
    let priority = c.int(
        &key("priority"),
        p.priority,
        0,
        i64::from(i32::MIN),
        i64::from(i32::MAX),
    )? as i32;
    let max_attempts = match p.max_attempts {
        None => None,
        Some(n) => Some(c.int(&key("max_attempts"), Some(n), 0, 1, 10_000)? as i32),
    };
    let catch_up = match c
        .one_of(&key("catch_up"), p.catch_up, "last", &["last", "none"])?
        .as_str()
    {
        "none" => CatchUp::None,
        _ => CatchUp::Last,
    };
    Ok(PeriodicConfig {
        name: name.to_owned(),
        schedule,
        queue: q.name.clone(),
        kind,
        payload,
        priority,
        max_attempts,
        catch_up,
    })
}

fn schedule(
    c: &Ctx<'_>,
    name: &str,
    cron: Option<String>,
    every: Option<super::raw::RawDuration>,
    timezone: Option<String>,
) -> Result<Schedule, ConfigError> {
    let key = |k: &str| format!("jobs.periodic.{name}.{k}");
    match (cron, every) {
        (Some(_), Some(_)) => {
            Err(c.err(key("every"), "…", "give either `cron` or `every`, not both"))
        }
        (None, None) => Err(c.err(
            format!("jobs.periodic.{name}"),
            "{…}",
            "give a schedule: cron = \"0 3 * * *\" (03:00 every day) or every = \"5m\"",
        )),
        (None, Some(every)) => {
            if let Some(tz) = timezone {
                return Err(c.err(
                    key("timezone"),
                    format!("{tz:?}"),
                    "a time zone applies to `cron` only; `every` counts from the Unix epoch",
                ));
            }
            let d = c.duration_at_least(&key("every"), Some(every), MIN_EVERY, MIN_EVERY)?;
            if d.subsec_nanos() != 0 {
                return Err(c.err(
                    key("every"),
                    format!("{d:?}"),
                    "must be whole seconds, e.g. \"30s\" or \"5m\"",
                ));
            }
            let schedule = Schedule::Every(d);
            if schedule.next_after(Timestamp::now()).is_none() {
                return Err(c.err(
                    key("every"),
                    format!("{d:?}"),
                    "is so long that its next instant is past the year 9999; give a shorter period",
                ));
            }
            Ok(schedule)
        }
        (Some(expr), None) => {
            let tz_name = timezone.unwrap_or_else(|| "UTC".to_owned());
            let tz = TimeZone::get(&tz_name).map_err(|e| {
                c.err(
                    key("timezone"),
                    format!("{tz_name:?}"),
                    format!(
                        "unknown time zone ({e}); give an IANA name such as \"Europe/Berlin\" or \"UTC\" (read from the system's time zone database, e.g. /usr/share/zoneinfo: install tzdata if it is missing)"
                    ),
                )
            })?;
            let cron = parser().parse(&expr).map_err(|e| {
                c.err(
                    key("cron"),
                    format!("{expr:?}"),
                    format!(
                        "{e}; a cron expression has 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first, e.g. \"0 3 * * *\" (03:00 every day) or \"*/10 * * * * *\" (every 10 s)"
                    ),
                )
            })?;
            let schedule = Schedule::Cron {
                expr: expr.clone(),
                cron: Box::new(cron),
                tz,
                tz_name,
            };
            if schedule.next_after(Timestamp::now()).is_none() {
                return Err(c.err(
                    key("cron"),
                    format!("{expr:?}"),
                    "never matches a real date (e.g. 30 February); check the day and month fields",
                ));
            }
            Ok(schedule)
        }
    }
}

/// The cron dialect: seconds optional (6 fields = seconds first), no year.
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Origins, validate as validate_config};

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn cron(expr: &str, tz: &str) -> Schedule {
        Schedule::Cron {
            expr: expr.into(),
            cron: Box::new(parser().parse(expr).expect("cron")),
            tz: TimeZone::get(tz).expect("tz"),
            tz_name: tz.into(),
        }
    }

    #[test]
    fn every_is_aligned_to_the_epoch() {
        let s = Schedule::Every(Duration::from_secs(300));
        assert_eq!(
            s.at_or_before(ts("2026-03-01T10:07:30Z")),
            Some(ts("2026-03-01T10:05:00Z"))
        );
        assert_eq!(
            s.at_or_before(ts("2026-03-01T10:05:00Z")),
            Some(ts("2026-03-01T10:05:00Z")),
            "inclusive"
        );
        assert_eq!(
            s.next_after(ts("2026-03-01T10:05:00Z")),
            Some(ts("2026-03-01T10:10:00Z")),
            "exclusive"
        );
    }

    #[test]
    fn cron_next_and_previous_in_a_zone() {
        let s = cron("0 3 * * *", "Europe/Berlin");
        // 03:00 CET = 02:00Z in winter.
        assert_eq!(
            s.next_after(ts("2026-01-10T12:00:00Z")),
            Some(ts("2026-01-11T02:00:00Z"))
        );
        assert_eq!(
            s.at_or_before(ts("2026-01-10T12:00:00Z")),
            Some(ts("2026-01-10T02:00:00Z"))
        );
        // Seconds first with 6 fields.
        let s = cron("*/10 * * * * *", "UTC");
        assert_eq!(
            s.next_after(ts("2026-01-10T12:00:05Z")),
            Some(ts("2026-01-10T12:00:10Z"))
        );
    }

    /// Berlin springs forward on 2026-03-29: 02:00 CET → 03:00 CEST, so
    /// 02:30 does not exist that day. The job runs once, at the first valid
    /// time after the gap (03:00 CEST = 01:00Z), then at 02:30 CEST again.
    #[test]
    fn dst_gap_runs_a_fixed_time_once_after_the_gap() {
        let s = cron("30 2 * * *", "Europe/Berlin");
        let first = s
            .next_after(ts("2026-03-28T12:00:00Z"))
            .expect("an instant");
        assert_eq!(first, ts("2026-03-29T01:00:00Z"));
        let second = s.next_after(first).expect("an instant");
        assert_eq!(second, ts("2026-03-30T00:30:00Z"), "02:30 CEST");
    }

    /// Berlin falls back on 2026-10-25: 03:00 CEST → 02:00 CET, so 02:30
    /// happens twice. A fixed time runs once that day; an hourly wildcard
    /// runs in both hours.
    #[test]
    fn dst_overlap_runs_a_fixed_time_once() {
        let s = cron("30 2 * * *", "Europe/Berlin");
        let first = s
            .next_after(ts("2026-10-24T12:00:00Z"))
            .expect("an instant");
        assert_eq!(first, ts("2026-10-25T00:30:00Z"), "the first 02:30 (CEST)");
        let second = s.next_after(first).expect("an instant");
        assert_eq!(second, ts("2026-10-26T01:30:00Z"), "next day, 02:30 CET");
        let hourly = cron("30 * * * *", "Europe/Berlin");
        let a = hourly
            .next_after(ts("2026-10-25T00:00:00Z"))
            .expect("an instant");
        let b = hourly.next_after(a).expect("an instant");
        assert_eq!(
            (a, b),
            (ts("2026-10-25T00:30:00Z"), ts("2026-10-25T01:30:00Z")),
            "02:30 CEST and 02:30 CET: an hour apart on the real clock"
        );
    }

    fn load(periodic: &str) -> Result<Vec<PeriodicConfig>, ConfigError> {
        let text = format!(
            "command = \"sh -c true\"\n[jobs]\n[jobs.queues.default]\n[jobs.queues.mail]\n{periodic}"
        );
        let raw: crate::config::raw::RawConfig = toml::from_str(&text).expect("toml");
        validate_config(raw, &Origins::new()).map(|c| c.periodic)
    }

    #[test]
    fn a_schedule_is_read_with_its_defaults() {
        let p = load(
            "[jobs.periodic.nightly]\ncron = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\nkind = \"reindex\"\npayload = { full = true, n = 2 }\n[jobs.periodic.beat]\nevery = \"1s\"\nqueue = \"mail\"\nkind = \"ping\"\ncatch_up = \"none\"\npriority = -1\nmax_attempts = 2",
        )
        .expect("valid");
        assert_eq!(p.len(), 2);
        let (beat, nightly) = (&p[0], &p[1]);
        assert_eq!(nightly.name, "nightly");
        assert_eq!(nightly.queue, "default");
        assert_eq!(nightly.payload, serde_json::json!({"full": true, "n": 2}));
        assert_eq!(nightly.catch_up, CatchUp::Last);
        assert_eq!(nightly.max_attempts, None);
        assert_eq!(
            nightly.schedule.to_string(),
            "cron \"0 3 * * *\" Europe/Berlin"
        );
        assert_eq!(beat.schedule, Schedule::Every(Duration::from_secs(1)));
        assert_eq!(
            (
                beat.queue.as_str(),
                beat.catch_up,
                beat.priority,
                beat.max_attempts
            ),
            ("mail", CatchUp::None, -1, Some(2))
        );
    }

    #[test]
    fn bad_schedules_name_their_key_and_the_fix() {
        let cases = [
            (
                "[jobs.periodic.nightly]\ncron = \"0 3 * *\"\nkind = \"k\"",
                "jobs.periodic.nightly.cron",
                "5 fields",
            ),
            (
                "[jobs.periodic.nightly]\ncron = \"0 0 30 2 *\"\nkind = \"k\"",
                "jobs.periodic.nightly.cron",
                "never matches",
            ),
            (
                "[jobs.periodic.nightly]\ncron = \"0 3 * * *\"\ntimezone = \"Europe/Berlinn\"\nkind = \"k\"",
                "jobs.periodic.nightly.timezone",
                "IANA",
            ),
            (
                "[jobs.periodic.nightly]\nevery = \"1m\"\ntimezone = \"UTC\"\nkind = \"k\"",
                "jobs.periodic.nightly.timezone",
                "cron",
            ),
            (
                "[jobs.periodic.nightly]\nevery = \"1m\"\ncron = \"* * * * *\"\nkind = \"k\"",
                "jobs.periodic.nightly.every",
                "not both",
            ),
            // So long it would never fire (next instant past jiff's range).
            (
                "[jobs.periodic.nightly]\nevery = 1e12\nkind = \"k\"",
                "jobs.periodic.nightly.every",
                "at most 10 years",
            ),
            (
                "[jobs.periodic.nightly]\nkind = \"k\"",
                "jobs.periodic.nightly",
                "every = ",
            ),
            (
                "[jobs.periodic.nightly]\nevery = \"500ms\"\nkind = \"k\"",
                "jobs.periodic.nightly.every",
                "at least",
            ),
            (
                "[jobs.periodic.nightly]\nevery = \"1500ms\"\nkind = \"k\"",
                "jobs.periodic.nightly.every",
                "whole seconds",
            ),
            (
                "[jobs.periodic.nightly]\nevery = \"1m\"\nkind = \"k\"\nqueue = \"sms\"",
                "jobs.periodic.nightly.queue",
                "default, mail",
            ),
            (
                "[jobs.periodic.nightly]\nevery = \"1m\"",
                "jobs.periodic.nightly.kind",
                "kind = ",
            ),
            (
                "[jobs.periodic.nightly]\nevery = \"1m\"\nkind = \"a b\"",
                "jobs.periodic.nightly.kind",
                "characters",
            ),
            (
                "[jobs.periodic.nightly]\nevery = \"1m\"\nkind = \"k\"\ncatch_up = \"all\"",
                "jobs.periodic.nightly.catch_up",
                "\"last\" or \"none\"",
            ),
            (
                "[jobs.periodic.nightly]\nevery = \"1m\"\nkind = \"k\"\nmax_attempts = 0",
                "jobs.periodic.nightly.max_attempts",
                "between",
            ),
            (
                "[jobs.periodic.\"a b\"]\nevery = \"1m\"\nkind = \"k\"",
                "jobs.periodic",
                "name",
            ),
        ];
        for (text, want_key, hint) in cases {
            match load(text) {
                Err(e @ ConfigError::Invalid { .. }) => {
                    let ConfigError::Invalid { key, message, .. } = &e else {
                        unreachable!()
                    };
                    assert_eq!(key, want_key, "{text}");
                    assert!(message.contains(hint), "{text}: {e}");
                }
                other => panic!("{text}: expected an invalid key, got {other:?}"),
            }
        }
        assert!(toml::from_str::<RawPeriodic>("cronn = \"x\"").is_err());
    }
}
