//! Durations as the platforms write them: systemd time spans (`45`, `45s`,
//! `1min 30s`, `500ms`, `infinity`), Go/compose/Nomad durations (`1m30s`,
//! `10s`), or a bare number of seconds.

use std::time::Duration;

/// `None` for `infinity` (no limit); an error names what is wrong.
pub fn parse(text: &str) -> Result<Option<Duration>, String> {
    let t = text.trim().trim_matches('"');
    if t.eq_ignore_ascii_case("infinity") {
        return Ok(None);
    }
    if t.is_empty() {
        return Err("empty duration".to_owned());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return finite(secs).map(Some);
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("{text:?} is not a duration (a number was expected)"))?;
        let after = after.trim_start();
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = match unit {
            "us" | "usec" | "µs" => 1e-6,
            "ms" | "msec" => 1e-3,
            "" | "s" | "sec" | "second" | "seconds" => 1.0,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            other => return Err(format!("{text:?}: unknown time unit {other:?}")),
        };
        total += value * scale;
        rest = next;
    }
    finite(total).map(Some)
}

fn finite(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{secs} s: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        let s = |t: &str| parse(t).expect("valid").expect("finite");
        assert_eq!(s("45"), Duration::from_secs(45));
        assert_eq!(s("45s"), Duration::from_secs(45));
        assert_eq!(s("1min 30s"), Duration::from_secs(90));
        assert_eq!(s("1m30s"), Duration::from_secs(90));
        assert_eq!(s("500ms"), Duration::from_millis(500));
        assert_eq!(s("\"2m\""), Duration::from_secs(120));
        assert_eq!(parse("infinity").expect("valid"), None);
        assert!(parse("45 # comment").is_err());
        assert!(parse("10 parsecs").is_err());
        assert!(parse("").is_err());
    }
}
