//! The same guarantees with real Python servers as workers: uvicorn serving
//! the FastAPI example, gunicorn serving the Flask example, and Django.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::*;

fn sigterm_under_load(mut opts: Opts, app: &str, slow_path: &str) {
    opts.cwd = Some(examples_dir(app));
    let mut c = Curfew::start(opts);
    let load = Load::start(
        c.port,
        &["/:20", "/plain:20", &format!("{slow_path}:1")],
        6,
        4000,
    );
    load.wait_flowing();
    std::thread::sleep(Duration::from_millis(1500));
    c.signal(Signal::SIGTERM);
    let code = c.wait_exit(Duration::from_secs(30));
    let r = load.finish();
    assert_eq!(code, 0, "{}", c.log_text());
    assert_eq!(
        r.n("failed"),
        0,
        "failed requests: {}\n{}",
        r.json,
        c.log_text()
    );
    assert_eq!(r.other_statuses("200"), 0, "non-200 answers: {}", r.json);
    assert!(r.n("ok") > 100, "load too light: {}", r.json);
    assert!(
        c.faults().is_empty(),
        "a normal shutdown logged faults: {:?}",
        c.faults()
    );
    assert_no_survivors(&c);
}

#[test]
fn uvicorn_fastapi_sigterm_under_load() {
    let uvicorn = venv_bin("uvicorn");
    let opts = Opts::command(
        &[
            "-w",
            "2",
            "--worker-concurrency",
            "8",
            "--ready-path",
            "/health",
        ],
        &[
            uvicorn.to_str().expect("utf-8 path"),
            "app:app",
            "--fd",
            "3",
            "--no-access-log",
        ],
    );
    sigterm_under_load(opts, "fastapi_app", "/sleep?ms=1200");
}

#[test]
fn gunicorn_flask_sigterm_under_load() {
    let gunicorn = venv_bin("gunicorn");
    let opts = Opts::command(
        &[
            "-w",
            "2",
            "--worker-concurrency",
            "2",
            "--ready-path",
            "/health",
        ],
        &[
            gunicorn.to_str().expect("utf-8 path"),
            "--workers",
            "2",
            "--no-control-socket",
            "app:app",
        ],
    );
    sigterm_under_load(opts, "flask_app", "/sleep?ms=1200");
}

/// Django behind curfew sees the client's scheme and host from the trusted
/// proxy headers.
#[test]
fn django_sees_forwarded_scheme_and_host() {
    let gunicorn = venv_bin("gunicorn");
    let mut opts = Opts::command(
        &["-w", "1", "--ready-path", "/health"],
        &[
            gunicorn.to_str().expect("utf-8 path"),
            "mysite.wsgi",
            "--no-control-socket",
        ],
    );
    opts.cwd = Some(examples_dir("django_app"));
    let mut c = Curfew::start(opts);
    let r = http(c.port, "GET", "/", &[("X-Forwarded-Proto", "https")], b"").expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["is_secure"], true, "{v}");
    assert_eq!(v["host"], "localhost", "{v}");
    assert_eq!(v["worker"], "0", "{v}");
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(20)), 0, "{}", c.log_text());
    assert_no_survivors(&c);
}
