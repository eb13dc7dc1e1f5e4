//! What an operator sees: worker output classified (a traceback is one
//! ERROR event, said once for a crash at every boot) and curfew's access
//! log (fields, probes left out, reopened on SIGUSR1), with real uvicorn
//! workers.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::*;

/// An ASGI app that raises a chained exception on `/boom`, and on `/die`
/// leaves a flag that makes every later import fail, then exits.
const APP: &str = r#"
import os

if os.path.exists("broken.flag"):
    raise RuntimeError("config missing: DATABASE_URL")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/boom":
        try:
            {}["user_id"]
        except KeyError as e:
            raise ValueError("lookup failed") from e
    if scope["path"] == "/die":
        open("broken.flag", "w").close()
        os._exit(3)
    body = b"hello"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": body})
"#;

fn app_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("app.py"), APP).expect("write app");
    dir
}

fn uvicorn(dir: &Path, extra: &[&str]) -> Opts {
    let uvicorn = venv_bin("uvicorn");
    let mut opts = Opts::command(
        extra,
        &[
            uvicorn.to_str().expect("utf-8 path"),
            "app:app",
            "--fd",
            "3",
        ],
    );
    opts.cwd = Some(dir.to_path_buf());
    opts
}

/// A worker raises in a request: exactly one ERROR event, carrying the
/// whole chained traceback in one field of one line; nothing else above
/// INFO, and no traceback line relayed on its own. uvicorn's "running on"
/// line (curfew's private worker port) is not at INFO.
#[test]
fn a_traceback_in_a_request_is_one_error_event() {
    let dir = app_dir();
    let mut c = Curfew::start(uvicorn(dir.path(), &["-w", "1"]));
    assert_eq!(get(c.port, "/boom").status, 500);
    let line = c.wait_log(" ERROR ", Duration::from_secs(10));
    assert!(
        line.contains("Exception in ASGI application (ValueError: lookup failed)"),
        "{line}"
    );
    assert!(line.contains("stream=\"stderr\""), "{line}");
    let tb = field_quoted(&line, "traceback").expect("traceback field");
    assert!(tb.starts_with("Traceback (most recent call last):"), "{tb}");
    assert!(tb.contains("KeyError: 'user_id'"), "{tb}");
    assert!(
        tb.contains("The above exception was the direct cause"),
        "{tb}"
    );
    assert!(tb.ends_with("ValueError: lookup failed"), "{tb}");
    assert_eq!(get(c.port, "/").status, 200);
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(20)), 0, "{}", c.log_text());
    assert_eq!(c.faults(), vec![line], "{}", c.log_text());
    let logs = c.logs();
    assert!(
        !logs
            .iter()
            .any(|l| l.starts_with("Traceback") || l.starts_with("  File ")),
        "a traceback line escaped its event:\n{}",
        c.log_text()
    );
    assert!(
        !logs.iter().any(|l| l.contains("Uvicorn running on")),
        "{}",
        c.log_text()
    );
    assert_no_survivors(&c);
}

/// A worker that crashes at import at every boot (restarted with backoff):
/// its traceback is logged once; each failed boot is one WARN line naming
/// the exception.
#[test]
fn a_crash_at_import_logs_its_traceback_once() {
    let dir = app_dir();
    let mut c = Curfew::start(uvicorn(dir.path(), &["-w", "2"]));
    assert_eq!(get(c.port, "/die").status, 502);
    c.wait_log_count("Worker failed to boot", 3, Duration::from_secs(20));
    let tracebacks: Vec<String> = c
        .logs()
        .into_iter()
        .filter(|l| l.contains("traceback="))
        .collect();
    assert_eq!(tracebacks.len(), 1, "{}", c.log_text());
    assert!(
        tracebacks[0].contains(" ERROR RuntimeError: config missing: DATABASE_URL"),
        "{}",
        tracebacks[0]
    );
    let failed = c.wait_log("Worker failed to boot", Duration::from_secs(1));
    assert!(
        failed.contains(
            "stderr=RuntimeError: config missing: DATABASE_URL (its traceback is logged above)"
        ),
        "{failed}"
    );
    // The other worker still serves.
    assert_eq!(get(c.port, "/").status, 200);
    c.signal(Signal::SIGTERM);
    c.wait_exit(Duration::from_secs(20));
    assert_no_survivors(&c);
}

/// The value of `key="..."` (Debug-escaped) in a text log line, unescaped.
fn field_quoted(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!(" {key}=\""))? + key.len() + 3;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    wait_until(
        &format!("{n} lines in {}", path.display()),
        Duration::from_secs(10),
        || {
            lines = std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect();
            lines.len() >= n
        },
    );
    lines
}

/// The combined access log: one line per request of the public address,
/// with client (as trusted), request, status, bytes, referer, user agent,
/// timings and worker; the query left out by default; curfew's own
/// readiness probes and the admin address's probes not logged; reopened on
/// SIGUSR1 after logrotate moved the file away.
#[test]
fn access_log_combined_probes_left_out_and_reopened_on_usr1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let admin = free_port();
    let admin_addr = format!("127.0.0.1:{admin}");
    let mut c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "2",
            "--admin-bind",
            &admin_addr,
            "--access-log",
            log.to_str().expect("utf-8"),
        ],
        &[],
    ));
    assert_eq!(get(admin, "/healthz").status, 200);
    assert_eq!(get(admin, "/readyz").status, 200);
    let r = http(
        c.port,
        "GET",
        "/status?code=201&token=secret",
        &[
            ("User-Agent", "probe-test/1.0"),
            ("Referer", "http://example.test/from"),
            // From a trusted peer (127.0.0.1): believed.
            ("X-Forwarded-For", "203.0.113.9"),
        ],
        b"",
    )
    .expect("request");
    assert_eq!(r.status, 201);
    let lines = wait_lines(&log, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert!(l.starts_with("203.0.113.9 - - ["), "{l}");
    assert!(
        l.contains(&format!(
            "] \"GET /status HTTP/1.1\" 201 {} \"http://example.test/from\" \"probe-test/1.0\" rt=",
            r.body.len()
        )),
        "{l}"
    );
    assert!(!l.contains("secret"), "{l}");
    let w = field(l, "w").expect("worker");
    assert!(w == "0" || w == "1", "{l}");
    for key in ["rt", "qt", "ut"] {
        let v: f64 = field(l, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {l}"));
        assert!((0.0..10.0).contains(&v), "{l}");
    }

    // logrotate: move the file away, then SIGUSR1.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    c.signal(Signal::SIGUSR1);
    c.wait_log("Access log reopened.", Duration::from_secs(10));
    assert_eq!(get(c.port, "/sleep?ms=1").status, 200);
    let lines = wait_lines(&log, 1);
    assert!(
        lines[0].contains("\"GET /sleep HTTP/1.1\" 200 "),
        "{lines:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&rotated)
            .expect("rotated")
            .lines()
            .count(),
        1
    );
    // The status report of SIGUSR1 is still there.
    c.wait_log("Status.", Duration::from_secs(5));

    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(20)), 0, "{}", c.log_text());
    // Nothing else was logged: not the admin probes, not curfew's own
    // readiness probes of its workers.
    assert_eq!(wait_lines(&log, 1).len(), 1);
    assert!(c.faults().is_empty(), "{:?}", c.faults());
    assert_no_survivors(&c);
}

/// The JSON access log: one object per line with every field, the query
/// kept when asked for, written to stdout with `-`; a 503 that never got a
/// worker has no worker and no upstream time.
#[test]
fn access_log_json_to_stdout() {
    let mut c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "1",
            "--access-log",
            "-",
            "--access-log-format",
            "json",
            "--access-log-query",
            "true",
            "--backlog",
            "0",
            "--worker-concurrency",
            "1",
        ],
        &[],
    ));
    assert_eq!(get(c.port, "/status?code=202").status, 202);
    let line = c.wait_log("\"path\":\"/status?code=202\"", Duration::from_secs(10));
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["status"], 202);
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["worker"], 0);
    assert!(v["bytes"].as_u64().is_some_and(|b| b > 0), "{v}");
    for key in ["duration_ms", "queue_ms", "upstream_ms"] {
        assert!(v[key].as_f64().is_some_and(|t| t >= 0.0), "{key}: {v}");
    }
    assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");

    // The only worker busy, no backlog: 503 from curfew, no worker.
    // (Whichever of the two requests comes second gets it.)
    let port = c.port;
    let slow = std::thread::spawn(move || get(port, "/sleep?ms=1500").status);
    wait_until(
        "a 503 while the slow request runs",
        Duration::from_secs(5),
        || c.count_log("\"status\":503") > 0 || get(port, "/status?code=200").status == 503,
    );
    let line = c.wait_log("\"status\":503", Duration::from_secs(10));
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["worker"], serde_json::Value::Null, "{v}");
    assert_eq!(v["upstream_ms"], serde_json::Value::Null, "{v}");
    assert!(matches!(slow.join().expect("slow"), 200 | 503));
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(20)), 0, "{}", c.log_text());
}

/// A worker that floods its output: past the burst, lines are dropped and
/// one WARN says how many; the worker itself is unaffected.
#[test]
fn worker_output_is_rate_limited_with_a_count() {
    let script = format!("yes flood | head -n 6000 >&2; exec {TESTWORKER}");
    let mut c = Curfew::start(Opts::command(&["-w", "1"], &["sh", "-c", &script]));
    // Every line is either relayed or counted in a WARN, once the bucket
    // has refilled (no later line is needed for the count to be said).
    let counts = || {
        let logs = c.logs();
        let relayed = logs.iter().filter(|l| l.contains(" INFO flood ")).count() as u64;
        let dropped: u64 = logs
            .iter()
            .filter(|l| l.contains("were not relayed"))
            .filter_map(|l| field(l, "dropped").and_then(|d| d.parse::<u64>().ok()))
            .sum();
        (relayed, dropped)
    };
    wait_until(
        "6000 lines relayed or counted",
        Duration::from_secs(20),
        || {
            let (r, d) = counts();
            r + d == 6000
        },
    );
    let (relayed, dropped) = counts();
    assert!(
        relayed >= 2000 && dropped > 0,
        "relayed {relayed}, dropped {dropped}"
    );
    assert_eq!(get(c.port, "/").status, 200);
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(20)), 0, "{}", c.log_text());
}

/// `worker_log_level = "warn"`: the worker's warnings are relayed, its
/// INFO chatter is not.
#[test]
fn worker_log_level_keeps_only_what_is_at_or_above_it() {
    let script =
        format!("echo 'WARNING:  careful' >&2; echo 'INFO:     chatter' >&2; exec {TESTWORKER}");
    let mut c = Curfew::start(Opts::command(
        &["-w", "1", "--worker-log-level", "warn"],
        &["sh", "-c", &script],
    ));
    // (The command line, logged at start, names both.)
    let line = c.wait_log(" WARN WARNING:  careful", Duration::from_secs(10));
    assert!(line.contains("careful worker=0 "), "{line}");
    assert_eq!(get(c.port, "/").status, 200);
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(20)), 0, "{}", c.log_text());
    assert_eq!(c.count_log("chatter worker="), 0, "{}", c.log_text());
    assert_eq!(c.count_log("testworker ready"), 0, "{}", c.log_text());
}
