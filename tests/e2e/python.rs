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

/// uvicorn on fd 3 (the default: a Unix socket) sees the client curfew
/// resolved, and the scheme a trusted proxy gave, through the
/// `FORWARDED_ALLOW_IPS=*` curfew sets for it; a forged first entry never
/// reaches it.
#[test]
fn uvicorn_on_fd_3_sees_the_client_curfew_resolved() {
    let uvicorn = venv_bin("uvicorn");
    let uvicorn = uvicorn.to_str().expect("utf-8 path");
    let index = |port: u16, xff: &str| -> serde_json::Value {
        let r = http(
            port,
            "GET",
            "/",
            &[("X-Forwarded-For", xff), ("X-Forwarded-Proto", "https")],
            b"",
        )
        .expect("request");
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).expect("json")
    };
    let worker = [uvicorn, "app:app", "--fd", "3", "--no-access-log"];
    for (trust, xff, client, scheme) in [
        // The test is a trusted proxy (loopback, the default) behind a
        // load balancer in 10/8: the client the balancer saw comes first.
        (
            "127.0.0.1/32,10.0.0.0/8",
            "6.6.6.6, 198.51.100.7, 10.1.2.3",
            "198.51.100.7",
            "https",
        ),
        // The test's peer is not trusted: its own headers are dropped.
        ("10.0.0.0/8", "6.6.6.6", "127.0.0.1", "http"),
    ] {
        let mut opts = Opts::command(
            &[
                "-w",
                "1",
                "--ready-path",
                "/health",
                "--forwarded-allow-ips",
                trust,
            ],
            &worker,
        );
        opts.cwd = Some(examples_dir("fastapi_app"));
        let mut c = Curfew::start(opts);
        let v = index(c.port, xff);
        assert_eq!(v["client"], client, "{trust}: {v}");
        assert_eq!(v["scheme"], scheme, "{trust}: {v}");
        let server = v["server"][0].as_str().unwrap_or_default();
        assert!(
            server.ends_with(".sock") && v["server"][1].is_null(),
            "fd 3 is a Unix socket in curfew's run directory: {v}"
        );
        c.signal(Signal::SIGTERM);
        assert_eq!(c.wait_exit(Duration::from_secs(20)), 0, "{}", c.log_text());
        assert_no_survivors(&c);
    }
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
