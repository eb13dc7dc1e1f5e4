//! Worker health: request timeouts and hung workers.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::*;

/// A sync worker (concurrency 1) stuck in a busy loop: the client gets 504 at
/// `timeout`, the worker is aborted (SIGABRT, then SIGKILL) and replaced, the
/// event is one ERROR line naming the request, and other requests are
/// unaffected.
#[test]
fn hung_sync_worker_is_aborted_and_replaced() {
    let mut c = Curfew::start(Opts::testworker(
        &["-w", "2", "--timeout", "1s", "--abort-timeout", "500ms"],
        &[],
    ));
    let load = Load::start(c.port, &["/"], 2, 3000);
    load.wait_flowing();
    let t0 = Instant::now();
    let r = get(c.port, "/spin");
    let took = t0.elapsed();
    assert_eq!(r.status, 504);
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(1800),
        "504 after {took:?}"
    );
    let line = c.wait_log(WORKER_ABORTED, Duration::from_secs(5));
    assert!(
        line.contains(" ERROR ") && line.contains("GET /spin") && line.contains("exceeded timeout"),
        "{line}"
    );
    c.wait_log_count(WORKER_READY, 3, Duration::from_secs(5));
    let res = load.finish();
    assert_eq!(res.n("failed"), 0, "{}", res.json);
    assert_eq!(res.other_statuses("200"), 0, "{}", res.json);
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    assert_no_survivors(&c);
}

/// With several requests per worker, a slow request gets 504 but the worker
/// is not aborted (a liveness probe decides that).
#[test]
fn timeout_on_concurrent_worker_does_not_abort_it() {
    let c = Curfew::start(Opts::testworker(
        &["-w", "1", "--worker-concurrency", "4", "--timeout", "500ms"],
        &[],
    ));
    assert_eq!(get(c.port, "/sleep?ms=2000").status, 504);
    assert_eq!(get(c.port, "/").status, 200);
    assert_eq!(c.count_log(WORKER_ABORTED), 0);
    assert_eq!(c.count_log(WORKER_READY), 1);
}

/// A Python worker stuck in an endless loop: 504 at timeout, and the log holds
/// the Python traceback of the loop (faulthandler on SIGABRT).
#[test]
fn python_hang_logs_its_traceback() {
    let uvicorn = venv_bin("uvicorn");
    let mut opts = Opts::command(
        // One request at a time: a request past `timeout` marks a sync
        // worker hung (uvicorn would default to 32, where only the
        // liveness probe does).
        &[
            "-w",
            "2",
            "--worker-concurrency",
            "1",
            "--timeout",
            "1s",
            "--ready-path",
            "/health",
        ],
        &[
            uvicorn.to_str().expect("utf-8 path"),
            "app:app",
            "--fd",
            "3",
        ],
    );
    opts.cwd = Some(examples_dir("fastapi_app"));
    let mut c = Curfew::start(opts);
    assert_eq!(get(c.port, "/spin").status, 504);
    let line = c.wait_log(WORKER_ABORTED, Duration::from_secs(10));
    assert!(
        line.contains("app.py") && line.contains("spin"),
        "no traceback in: {line}"
    );
    c.wait_log_count(WORKER_READY, 3, Duration::from_secs(15));
    assert_eq!(get(c.port, "/plain").status, 200);
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(20)), 0, "{}", c.log_text());
    assert_no_survivors(&c);
}

/// A worker serving several requests at once whose event loop is blocked:
/// the liveness probe fails, the worker is aborted (with its traceback) and
/// replaced; the request stuck on it fails with 502.
#[test]
fn liveness_probe_aborts_a_blocked_async_worker() {
    let uvicorn = venv_bin("uvicorn");
    let mut opts = Opts::command(
        &[
            "-w",
            "2",
            "--worker-concurrency",
            "4",
            "--timeout",
            "0",
            "--ready-path",
            "/health",
            "--liveness-path",
            "/health",
            "--liveness-interval",
            "300ms",
            "--liveness-timeout",
            "300ms",
            "--liveness-failures",
            "2",
        ],
        &[
            uvicorn.to_str().expect("utf-8 path"),
            "app:app",
            "--fd",
            "3",
        ],
    );
    opts.cwd = Some(examples_dir("fastapi_app"));
    let mut c = Curfew::start(opts);
    let t0 = Instant::now();
    let r = get(c.port, "/spin");
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t0.elapsed()
    );
    let line = c.wait_log(WORKER_ABORTED, Duration::from_secs(10));
    assert!(
        line.contains("liveness probe failed 2 times") && line.contains("spin"),
        "{line}"
    );
    c.wait_log_count(WORKER_READY, 3, Duration::from_secs(15));
    assert_eq!(get(c.port, "/plain").status, 200);
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(20)), 0, "{}", c.log_text());
    assert_no_survivors(&c);
}
