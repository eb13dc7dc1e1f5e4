//! Parsing user-written durations: `30` (seconds), `2.5`, `"30s"`, `"500ms"`,
//! `"1m 30s"` (jiff's friendly format) or ISO 8601 (`"PT30S"`).

use std::time::Duration;

use super::raw::RawDuration;

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

fn from_secs(secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() {
        return Err("is not a finite number of seconds".into());
    }
    if secs < 0.0 {
        return Err("must not be negative".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
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
    Duration::try_from(signed).map_err(|e| e.to_string())
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
}
