//! An access log record and its two line formats (pure; unit-tested).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use http::{Method, Version};

/// One answered request, as the request task hands it to the writer.
#[derive(Debug, Clone)]
pub struct Record {
    /// When the request arrived.
    pub at: SystemTime,
    /// The client as trusted (`X-Forwarded-For` from trusted proxies).
    pub client: String,
    pub method: Method,
    /// The path, with the query when `access_log_query` is on (cut).
    pub path: String,
    pub version: Version,
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// The body failed before its end (the worker's broke off): the
    /// client got a cut-off response, not a complete one.
    pub broken: bool,
    /// From the request's arrival to the end of its response.
    pub total: Duration,
    /// Time it waited for a worker slot; `None`: it never got one.
    pub queued: Option<Duration>,
    /// From the worker slot to the worker's response headers.
    pub upstream: Option<Duration>,
    pub worker: Option<usize>,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
}

/// The time text of the last second formatted (`strftime` parses its
/// format on every call; a busy log writes many lines per second).
#[derive(Default)]
pub struct Clock {
    second: Option<i64>,
    combined: String,
    iso: String,
}

impl Clock {
    /// `30/Nov/2026:23:50:44 +0000` and `2026-11-30T23:50:44` for `at`,
    /// with its milliseconds.
    fn at(&mut self, at: SystemTime) -> (&str, &str, u32) {
        let ts = jiff::Timestamp::try_from(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let second = ts.as_second();
        if self.second != Some(second) {
            self.second = Some(second);
            self.combined.clear();
            self.iso.clear();
            let _ = write!(self.combined, "{}", ts.strftime("%d/%b/%Y:%H:%M:%S +0000"));
            let _ = write!(self.iso, "{}", ts.strftime("%Y-%m-%dT%H:%M:%S"));
        }
        let ms = (ts.subsec_nanosecond() / 1_000_000) as u32;
        (&self.combined, &self.iso, ms)
    }
}

fn version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Apache/nginx "combined", then curfew's own fields as `key=value`:
/// `rt` total seconds, `qt` queued, `ut` upstream (to response headers),
/// `w` worker (`-` where there was none), and `broken=1` only for a
/// response whose body failed before its end (the client got it cut off):
///
/// `127.0.0.1 - - [30/Nov/2026:23:50:44 +0000] "GET /x HTTP/1.1" 200 2 "-" "curl/8.5" rt=0.004 qt=0.000 ut=0.003 w=1`
pub fn combined(r: &Record, clock: &mut Clock, out: &mut String) {
    let (time, _, _) = clock.at(r.at);
    // One field: a trusted proxy's X-Forwarded-For entry is the client's
    // text, whose spaces or quotes could forge the fields after it.
    token(&r.client, out);
    let _ = write!(out, " - - [{time}] \"{} ", r.method);
    escaped(&r.path, out);
    let _ = write!(out, " {}\" {} ", version(r.version), r.status);
    if r.bytes == 0 {
        out.push('-');
    } else {
        let _ = write!(out, "{}", r.bytes);
    }
    out.push_str(" \"");
    escaped(r.referer.as_deref().unwrap_or("-"), out);
    out.push_str("\" \"");
    escaped(r.user_agent.as_deref().unwrap_or("-"), out);
    let _ = write!(out, "\" rt={:.3}", secs(r.total));
    match r.queued {
        Some(d) => {
            let _ = write!(out, " qt={:.3}", secs(d));
        }
        None => out.push_str(" qt=-"),
    }
    match r.upstream {
        Some(d) => {
            let _ = write!(out, " ut={:.3}", secs(d));
        }
        None => out.push_str(" ut=-"),
    }
    match r.worker {
        Some(w) => {
            let _ = write!(out, " w={w}");
        }
        None => out.push_str(" w=-"),
    }
    if r.broken {
        out.push_str(" broken=1");
    }
    out.push('\n');
}

/// A quoted field's text: `"`, `\` and control bytes written as `\xHH`
/// (nginx's escaping), so a line is always one parseable line.
fn escaped(s: &str, out: &mut String) {
    for c in s.chars() {
        if c == '"' || c == '\\' || c.is_control() {
            let mut b = [0; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                let _ = write!(out, "\\x{byte:02X}");
            }
        } else {
            out.push(c);
        }
    }
}

/// An unquoted field's text: as [`escaped`], and spaces too.
fn token(s: &str, out: &mut String) {
    for c in s.chars() {
        if c == '"' || c == '\\' || c.is_control() || c.is_whitespace() {
            let mut b = [0; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                let _ = write!(out, "\\x{byte:02X}");
            }
        } else {
            out.push(c);
        }
    }
}

#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: String,
    client: &'a str,
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    status: u16,
    bytes: u64,
    broken: bool,
    duration_ms: f64,
    queue_ms: Option<f64>,
    upstream_ms: Option<f64>,
    worker: Option<usize>,
    referer: Option<&'a str>,
    user_agent: Option<&'a str>,
}

fn ms(d: Duration) -> f64 {
    // Microsecond precision is plenty, and keeps the numbers short.
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// One JSON object: `time` (RFC 3339, UTC, ms), `client`, `method`,
/// `path`, `protocol`, `status`, `bytes`, `broken`, `duration_ms`, `queue_ms`,
/// `upstream_ms`, `worker`, `referer`, `user_agent` (`null` where unknown).
pub fn json(r: &Record, clock: &mut Clock, out: &mut String) {
    let (_, iso, millis) = clock.at(r.at);
    let line = JsonLine {
        time: format!("{iso}.{millis:03}Z"),
        client: &r.client,
        method: r.method.as_str(),
        path: &r.path,
        protocol: version(r.version),
        status: r.status,
        bytes: r.bytes,
        broken: r.broken,
        duration_ms: ms(r.total),
        queue_ms: r.queued.map(ms),
        upstream_ms: r.upstream.map(ms),
        worker: r.worker,
        referer: r.referer.as_deref(),
        user_agent: r.user_agent.as_deref(),
    };
    // Serializing plain strings and numbers cannot fail.
    if let Ok(s) = serde_json::to_string(&line) {
        out.push_str(&s);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_546_644_123),
            client: "203.0.113.7".into(),
            method: Method::GET,
            path: "/items/\"x\"".into(),
            version: Version::HTTP_11,
            status: 200,
            bytes: 512,
            broken: false,
            total: Duration::from_micros(4_250),
            queued: Some(Duration::from_micros(120)),
            upstream: Some(Duration::from_micros(3_900)),
            worker: Some(2),
            referer: None,
            user_agent: Some("curl/8.5.0".into()),
        }
    }

    #[test]
    fn combined_line() {
        let mut s = String::new();
        combined(&record(), &mut Clock::default(), &mut s);
        assert_eq!(
            s,
            "203.0.113.7 - - [30/Nov/2025:23:50:44 +0000] \"GET /items/\\x22x\\x22 HTTP/1.1\" 200 512 \"-\" \"curl/8.5.0\" rt=0.004 qt=0.000 ut=0.004 w=2\n"
        );
        let mut r = record();
        r.bytes = 0;
        r.queued = None;
        r.upstream = None;
        r.worker = None;
        r.status = 503;
        r.broken = true;
        r.user_agent = Some("evil\n\"agent".into());
        let mut s = String::new();
        combined(&r, &mut Clock::default(), &mut s);
        assert!(
            s.ends_with(" 503 - \"-\" \"evil\\x0A\\x22agent\" rt=0.004 qt=- ut=- w=- broken=1\n"),
            "{s}"
        );
        assert_eq!(s.lines().count(), 1);
        // A client named by a trusted proxy's X-Forwarded-For stays one field.
        let mut r = record();
        r.client = "6.6.6.6 - - [01/Jan/2030:00:00:00 +0000] \"GET /admin".into();
        let mut s = String::new();
        combined(&r, &mut Clock::default(), &mut s);
        assert!(
            s.starts_with(
                "6.6.6.6\\x20-\\x20-\\x20[01/Jan/2030:00:00:00\\x20+0000]\\x20\\x22GET\\x20/admin - - [30/Nov/2025"
            ),
            "{s}"
        );
    }

    #[test]
    fn json_line() {
        let mut s = String::new();
        let mut clock = Clock::default();
        json(&record(), &mut clock, &mut s);
        // The same second again, from the cache.
        let mut again = String::new();
        json(&record(), &mut clock, &mut again);
        assert_eq!(s, again);
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        assert_eq!(v["time"], "2025-11-30T23:50:44.123Z");
        assert_eq!(v["client"], "203.0.113.7");
        assert_eq!(v["path"], "/items/\"x\"");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 512);
        assert_eq!(v["broken"], false);
        assert_eq!(v["duration_ms"], 4.25);
        assert_eq!(v["queue_ms"], 0.12);
        assert_eq!(v["upstream_ms"], 3.9);
        assert_eq!(v["worker"], 2);
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["user_agent"], "curl/8.5.0");
        assert!(s.ends_with("}\n"));
    }
}
