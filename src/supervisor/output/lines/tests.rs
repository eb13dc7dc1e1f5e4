//! The classifier on real output captured from uvicorn 0.54, gunicorn 27,
//! Django 5.2, Python 3.11 and Node 20 (`fixtures/`, pasted as they ran).

use super::*;

fn events(text: &str) -> Vec<Event> {
    let mut l = Lines::default();
    let mut out = Vec::new();
    for line in text.lines() {
        l.push(line, &mut out);
    }
    l.flush(&mut out);
    out
}

fn above_info(ev: &[Event]) -> Vec<&Event> {
    ev.iter().filter(|e| e.level > Level::Info).collect()
}

#[test]
fn uvicorn_request_error_is_one_error_with_its_chained_traceback() {
    let ev = events(include_str!("../fixtures/uvicorn_request_error.txt"));
    let loud = above_info(&ev);
    assert_eq!(loud.len(), 2, "{loud:#?}");
    let tb = loud[0];
    assert_eq!((tb.level, tb.kind), (Level::Error, Kind::Traceback));
    assert_eq!(
        tb.message,
        "ERROR:    Exception in ASGI application (RuntimeError: lookup failed)"
    );
    let block = tb.block.as_deref().expect("block");
    assert!(block.starts_with("Traceback (most recent call last):"));
    assert!(block.contains("KeyError: 'user_id'"), "{block}");
    assert!(block.contains("The above exception was the direct cause"));
    assert!(block.ends_with("RuntimeError: lookup failed"), "{block}");
    assert_eq!(tb.exception(), Some("RuntimeError: lookup failed"));
    // logging's default format, from the app.
    assert_eq!(loud[1].level, Level::Warn);
    assert_eq!(loud[1].message, "WARNING:root:disk almost full");
    // The private worker port is DEBUG; the rest INFO.
    let running: Vec<_> = ev
        .iter()
        .filter(|e| e.message.contains("Uvicorn running on"))
        .collect();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].level, Level::Debug);
    assert!(
        ev.iter()
            .any(|e| e.message == "INFO:     Shutting down" && e.level == Level::Info)
    );
}

#[test]
fn gunicorn_request_error_and_its_during_handling_chain() {
    let ev = events(include_str!("../fixtures/gunicorn_request_error.txt"));
    let loud = above_info(&ev);
    assert_eq!(loud.len(), 1, "{loud:#?}");
    assert_eq!(loud[0].kind, Kind::Traceback);
    assert!(
        loud[0]
            .message
            .contains("[ERROR] Error handling request GET /boom")
    );
    assert!(loud[0].message.ends_with("(ValueError: bad input)"));
    let block = loud[0].block.as_deref().expect("block");
    assert!(block.contains("ZeroDivisionError: division by zero"));
    assert!(block.contains("During handling of the above exception"));
    let listening = ev
        .iter()
        .find(|e| e.message.contains("Listening at:"))
        .expect("listening");
    assert_eq!(listening.level, Level::Debug);
    assert_eq!(ev.len(), 9, "{ev:#?}");
}

#[test]
fn gunicorn_import_crash() {
    let ev = events(include_str!("../fixtures/gunicorn_import_crash.txt"));
    let loud = above_info(&ev);
    // The traceback (one event), then gunicorn's own three ERROR lines.
    assert_eq!(loud.len(), 4, "{loud:#?}");
    assert_eq!(
        loud[0].exception(),
        Some("ImportError: no module named settings_local")
    );
    assert!(
        loud[0]
            .message
            .contains("[ERROR] Exception in worker process")
    );
    assert!(
        loud[3]
            .message
            .ends_with("[ERROR] Reason: Worker failed to boot.")
    );
    // gunicorn prints the message again after the traceback: its own line.
    assert!(
        ev.iter()
            .any(|e| e.message == "no module named settings_local" && e.level == Level::Info)
    );
}

#[test]
fn uvicorn_import_crash_is_one_event_without_header() {
    let ev = events(include_str!("../fixtures/uvicorn_import_crash.txt"));
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(ev[0].level, Level::Error);
    assert_eq!(ev[0].message, "ImportError: no module named settings_local");
    assert_eq!(
        ev[0].block.as_deref().map(|b| b.lines().count()),
        Some(
            include_str!("../fixtures/uvicorn_import_crash.txt")
                .lines()
                .count()
        )
    );
}

#[test]
fn django_logging_default_format() {
    let ev = events(include_str!("../fixtures/django_gunicorn.txt"));
    let loud = above_info(&ev);
    assert_eq!(loud.len(), 2, "{loud:#?}");
    assert_eq!(loud[0].level, Level::Error);
    assert_eq!(
        loud[0].message,
        "ERROR:django.request:Internal Server Error: /boom (KeyError: 'missing')"
    );
    assert_eq!(loud[1].level, Level::Warn);
    assert_eq!(loud[1].message, "WARNING:django.request:Not Found: /nope");
}

#[test]
fn django_runserver_header_without_level_is_an_error() {
    let ev = events(include_str!("../fixtures/django_runserver_debug.txt"));
    assert_eq!(ev.len(), 2, "{ev:#?}");
    assert_eq!(ev[0].level, Level::Error);
    assert_eq!(
        ev[0].message,
        "Internal Server Error: /boom (KeyError: 'missing')"
    );
    assert_eq!(ev[1].level, Level::Info);
}

#[test]
fn node_caught_and_uncaught_errors() {
    let ev = events(include_str!("../fixtures/node_stderr.txt"));
    assert_eq!(ev.len(), 3, "{ev:#?}");
    assert_eq!((ev[0].level, ev[0].kind), (Level::Error, Kind::NodeStack));
    assert_eq!(
        ev[0].message,
        "TypeError: Cannot read properties of undefined (reading 'id')"
    );
    assert_eq!(ev[0].block.as_deref().map(|b| b.lines().count()), Some(9));
    // An error line without a stack: ERROR by its name alone? No: a line.
    assert_eq!(ev[1].message, "Error: plain message without stack");
    // The uncaught one: preamble, error, frames and the version line.
    assert_eq!(ev[2].kind, Kind::NodeStack);
    assert_eq!(
        ev[2].exception(),
        Some("TypeError: Cannot read properties of null (reading 'x')")
    );
    let block = ev[2].block.as_deref().expect("block");
    assert!(block.starts_with("/tmp/logs-cap/n1.js:5"), "{block}");
    assert!(block.ends_with("Node.js v20.20.2"), "{block}");
}

#[test]
fn json_lines_keep_level_message_and_fields() {
    let ev = events(include_str!("../fixtures/node_stdout.txt"));
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].level, ev[0].kind), (Level::Warn, Kind::Json));
    assert_eq!(ev[0].message, "slow query");
    assert_eq!(ev[0].fields.as_deref(), Some(r#"{"ms":812}"#));

    let ev = events(include_str!("../fixtures/python_json.txt"));
    let got: Vec<(Level, &str)> = ev.iter().map(|e| (e.level, e.message.as_str())).collect();
    assert_eq!(
        got,
        [
            (Level::Warn, "payment declined"),
            (Level::Error, "db down"),
            (Level::Info, "ready")
        ]
    );
    assert!(
        ev[0]
            .fields
            .as_deref()
            .is_some_and(|f| f.contains("\"order\":42"))
    );
    // pino's numbers.
    let ev = events(r#"{"level":50,"time":1,"msg":"boom"}"#);
    assert_eq!(ev[0].level, Level::Error);
    // Not JSON after all: a line.
    let ev = events("{not json");
    assert_eq!((ev[0].kind, ev[0].level), (Kind::Line, Level::Info));
}

#[test]
fn prefixes() {
    for (line, level) in [
        ("CRITICAL:root:out of memory", Some(Level::Error)),
        (
            "ERROR:    Exception in ASGI application",
            Some(Level::Error),
        ),
        (
            "WARNING:  Invalid HTTP request received.",
            Some(Level::Warn),
        ),
        ("INFO:     Started server process [1]", Some(Level::Info)),
        (
            "DEBUG:asyncio:Using selector: EpollSelector",
            Some(Level::Debug),
        ),
        (
            "[2024-01-01 00:00:00 +0000] [123] [CRITICAL] WORKER TIMEOUT (pid:9)",
            Some(Level::Error),
        ),
        (
            "[2024-01-01 00:00:00 +0000] [123] [WARNING] Worker with pid 9 was terminated",
            Some(Level::Warn),
        ),
        (
            "time=2024-01-01T00:00:00Z level=error msg=\"db\"",
            Some(Level::Error),
        ),
        ("level=warn msg=slow", Some(Level::Warn)),
        ("Note: ERROR: is not at the start", None),
        ("mylevel=error", None),
        ("URL: http://x", None),
    ] {
        assert_eq!(level_of(line), level, "{line}");
    }
}

#[test]
fn a_traceback_ends_at_the_next_unindented_line_or_the_flush() {
    let mut l = Lines::default();
    let mut out = Vec::new();
    for line in [
        "Traceback (most recent call last):",
        "  File \"x.py\", line 1, in <module>",
        "ValueError: x",
    ] {
        l.push(line, &mut out);
    }
    assert!(out.is_empty() && l.holding());
    // A blank line: a chain may still come.
    l.push("", &mut out);
    assert!(out.is_empty());
    l.push("next line", &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].block.as_deref().map(|b| b.lines().count()), Some(3));
    // "next line" is held until the flush.
    l.flush(&mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].message, "next line");
    assert!(!l.holding());
    // A traceback cut off mid-frames is flushed as it is.
    l.push("Traceback (most recent call last):", &mut out);
    l.push("  File \"x.py\", line 1, in <module>", &mut out);
    l.flush(&mut out);
    assert_eq!(out[2].level, Level::Error);
}

#[test]
fn a_huge_traceback_is_bounded() {
    let mut text = String::from("Traceback (most recent call last):\n");
    for i in 0..5000 {
        text.push_str(&format!("  File \"x.py\", line {i}, in f\n"));
    }
    text.push_str("RecursionError: maximum recursion depth exceeded\n");
    let ev = events(&text);
    assert_eq!(ev.len(), 1);
    assert!(ev[0].block.as_deref().expect("block").lines().count() <= MAX_BLOCK_LINES);
}
