//! Parsing user-written durations: `30` (seconds), `2.5`, `"30s"`, `"500ms"`,
//! `"1m 30s"` (jiff's friendly format) or ISO 8601 (`"PT30S"`).
//!
//! Every duration is at most [`MAX`] (10 years): far beyond any timeout
//! that means something, and far enough below the limits of `Instant`
//! arithmetic (`now + d` panics once it passes `i64::MAX` seconds of the
//! clock) that a deadline made from any sum of a few settings cannot
//! overflow.

use std::time::Duration;

use super::raw::RawDuration;

/// The longest duration any setting takes: 10 years of 365 days.
pub const MAX: Duration = Duration::from_secs(10 * 365 * 86_400);

/// `d`, at most [`MAX`]: for deadlines (`Instant::now() + bounded(d)`) made
/// from a duration validation already capped, so the addition cannot
/// overflow even if a value reached it some other way.
pub fn bounded(d: Duration) -> Duration {
    d.min(MAX)
}

/// Parse a duration; the error says what is wrong, without the key (the
/// caller adds it).
pub fn parse(raw: &RawDuration) -> Result<Duration, String> {
    let secs = match raw {
        RawDuration::Int(i) => *i as f64,
        RawDuration::Float(x) => *x,
        RawDuration::Text(s) => return parse_text(s),
    };
    from_secs(secs)
}

/// Refuse what is above [`MAX`].
fn capped(d: Duration) -> Result<Duration, String> {
    if d > MAX {
        return Err(format!(
            "must be at most 10 years (\"87600h\", {} seconds)",
            MAX.as_secs()
        ));
    }
    Ok(d)
}

fn from_secs(secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() {
        return Err("is not a finite number of seconds".into());
    }
    if secs < 0.0 {
        return Err("must not be negative".into());
    }
    if secs > MAX.as_secs_f64() {
        return capped(Duration::MAX);
    }
    let d = Duration::try_from_secs_f64(secs)
        .map_err(|e| e.to_string())
        .and_then(capped)?;
    if d.is_zero() && secs > 0.0 {
        // Not 0 as written; as 0 it would turn a timeout off.
        return Err(
            "is less than a nanosecond, which would count as 0; write 0 if 0 is meant, else a longer duration"
                .into(),
        );
    }
    Ok(d)
}

fn parse_text(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("is empty".into());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return from_secs(secs);
    }
    let signed: jiff::SignedDuration = t.parse().map_err(|_| {
        "is not a duration (write e.g. \"30s\", \"500ms\", \"1m 30s\" or a number of seconds)"
            .to_string()
    })?;
    if signed.is_negative() {
        return Err("must not be negative".into());
    }
    Duration::try_from(signed)
        .map_err(|e| e.to_string())
        .and_then(capped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Result<Duration, String> {
        parse(&RawDuration::Text(s.into()))
    }

    #[test]
    fn accepts_common_forms() {
        assert_eq!(parse(&RawDuration::Int(30)), Ok(Duration::from_secs(30)));
        assert_eq!(
            parse(&RawDuration::Float(2.5)),
            Ok(Duration::from_millis(2500))
        );
        assert_eq!(text("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(text("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(text("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(text("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(text("PT5S"), Ok(Duration::from_secs(5)));
        assert_eq!(text("10"), Ok(Duration::from_secs(10)));
        assert_eq!(text("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_negative_and_garbage() {
        assert_eq!(
            parse(&RawDuration::Int(-1)),
            Err("must not be negative".into())
        );
        assert_eq!(text("-5s"), Err("must not be negative".into()));
        assert!(
            text("soon")
                .expect_err("garbage")
                .contains("not a duration")
        );
        assert!(text("").is_err());
        assert!(parse(&RawDuration::Float(f64::NAN)).is_err());
    }

    /// Nothing above 10 years, in any form: `Instant::now() + d` would
    /// panic for the largest values a float or an i64 can hold.
    #[test]
    fn refuses_more_than_ten_years() {
        assert_eq!(parse(&RawDuration::Int(315_360_000)), Ok(MAX));
        assert_eq!(text("87600h"), Ok(MAX));
        for too_big in [
            parse(&RawDuration::Int(315_360_001)),
            parse(&RawDuration::Int(i64::MAX)),
            parse(&RawDuration::Float(1e19)),
            parse(&RawDuration::Float(f64::MAX)),
            text("9999999999999999999"),
            text("1e19"),
            text("87601h"),
            text("PT1000000000S"),
        ] {
            let e = too_big.expect_err("above the cap");
            assert!(e.contains("at most 10 years"), "{e}");
        }
        assert_eq!(bounded(Duration::MAX), MAX);
    }

    /// A value that is not 0 as written is never read as 0 (which turns
    /// timeouts off).
    #[test]
    fn refuses_what_rounds_to_zero() {
        for tiny in [parse(&RawDuration::Float(1e-10)), text("1e-10")] {
            let e = tiny.expect_err("rounds to 0");
            assert!(e.contains("less than a nanosecond"), "{e}");
        }
        assert_eq!(parse(&RawDuration::Float(0.0)), Ok(Duration::ZERO));
        assert_eq!(text("1ns"), Ok(Duration::from_nanos(1)));
        assert_eq!(bounded(Duration::from_secs(5)), Duration::from_secs(5));
    }
}
