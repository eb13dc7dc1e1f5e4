//! `curfew status`, `reload`, `stop`, `scale` against a running instance over
//! the control socket, and the admin endpoint's `/status` and its readiness.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::*;

#[test]
fn status_scale_reload_stop_over_the_control_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("curfew.toml");
    let admin = free_port();
    let write_with = |tag: &str, fail: bool, extra: &str| {
        let fail = if fail { ", \"--fail-boot\"" } else { "" };
        std::fs::write(
            &cfg,
            format!("command = [{TESTWORKER:?}, \"--tag\", {tag:?}{fail}]\nadmin_bind = \"127.0.0.1:{admin}\"\n{extra}"),
        )
        .expect("write");
    };
    let write = |tag: &str, fail: bool| write_with(tag, fail, "workers = 2\n");
    write("one", false);
    let mut c = Curfew::start(Opts {
        args: vec!["--config".into(), cfg.display().to_string()],
        command: vec![],
        env: vec![],
        cwd: None,
        bind: None,
        wrap: None,
        nofile: None,
    });
    let mode = std::fs::metadata(&c.control_socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "control socket is private");

    let (code, out, err) = c.ctl(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("phase serving")
            && out.contains("generation 1")
            && out.contains("workers 2/2"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 4, "header + 2 workers: {out}");

    let (code, out, _) = c.ctl(&["scale", "3"]);
    assert_eq!(code, 0);
    assert!(out.contains("to 3"), "{out}");
    c.wait_log_count(WORKER_READY, 3, Duration::from_secs(5));

    // A new command and a restart-only setting (backlog): the reload
    // applies the one and names the other, in its answer and a WARN line.
    write_with("two", false, "workers = 2\nbacklog = 5\n");
    let (code, out, err) = c.ctl(&["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("generation 2"), "{out}");
    assert!(
        out.contains("kept until a restart of curfew: backlog"),
        "{out}"
    );
    assert_eq!(c.count_log("`backlog` changed, which needs a restart"), 1);
    assert!(get(c.port, "/").body.contains("tag=two"));

    let (code, out, _) = c.ctl(&["status", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["generation"], 2);
    // The file's `workers` did not change: the scale to 3 survives.
    assert_eq!(v["workers_wanted"], 3);
    assert!(v["workers"].as_array().is_some_and(|w| w.len() == 3), "{v}");
    assert!(
        v["workers"][0]["rss_bytes"].as_u64().is_some_and(|r| r > 0),
        "{v}"
    );
    // The admin endpoint serves the same report.
    let admin_status: serde_json::Value =
        serde_json::from_str(&get(admin, "/status").body).expect("json");
    assert!(
        admin_status["generation"].as_u64() >= Some(2),
        "{admin_status}"
    );

    // The file's `workers` changed: the reload applies it.
    write_with("two", false, "workers = 4\nbacklog = 5\n");
    let (code, out, err) = c.ctl(&["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("generation 3"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&c.ctl(&["status", "--json"]).1).expect("json");
    assert_eq!(v["workers_wanted"], 4);
    wait_until("4 workers serving", Duration::from_secs(10), || {
        let v: serde_json::Value =
            serde_json::from_str(&c.ctl(&["status", "--json"]).1).expect("json");
        v["workers"].as_array().is_some_and(|w| w.len() == 4)
    });

    write("broken", true);
    let (code, _, err) = c.ctl(&["reload"]);
    assert_eq!(code, 1, "a failed reload exits non-zero");
    assert!(
        err.contains("ImportError") || err.contains("could not boot"),
        "{err}"
    );
    assert!(
        get(c.port, "/").body.contains("tag=two"),
        "old generation still serving"
    );

    let (code, _, err) = c.ctl(&["scale", "0"]);
    assert_eq!(code, 2, "{err}");

    let (code, out, _) = c.ctl(&["stop"]);
    assert_eq!(code, 0);
    assert!(out.contains("stopping"), "{out}");
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    assert!(!c.control_socket.exists(), "socket removed on exit");

    let (code, _, err) = c.ctl(&["status"]);
    assert_eq!(code, 1);
    assert!(err.contains("no curfew is listening"), "{err}");
    assert_no_survivors(&c);
}

#[test]
fn second_instance_on_the_same_control_socket_is_refused() {
    let c = Curfew::start(Opts::testworker(&["-w", "1"], &[]));
    let out = std::process::Command::new(CURFEW)
        .args([
            "serve",
            "-w",
            "1",
            "--bind",
            &format!("127.0.0.1:{}", free_port()),
            "--control-socket",
        ])
        .arg(&c.control_socket)
        .args(["--", TESTWORKER])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    assert_eq!(
        get(c.port, "/").status,
        200,
        "the first instance is unaffected"
    );
}

/// `curfew status` counts each slot's restarts of dead workers.
#[test]
fn status_counts_restarts() {
    let c = Curfew::start(Opts::testworker(&["-w", "1"], &[]));
    assert_eq!(get(c.port, "/crash").status, 502);
    c.wait_log_count(WORKER_READY, 2, Duration::from_secs(5));
    let (code, out, err) = c.ctl(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["workers"][0]["restarts"], 1, "{v}");
    let (_, table, _) = c.ctl(&["status"]);
    assert!(table.contains("RESTARTS"), "{table}");
}

/// With `admin_token`, everything but the probes needs the bearer token; an
/// admin address reachable from other hosts without one refuses the job
/// API and says so at start.
#[test]
fn the_admin_token_guards_all_but_the_probes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("jobs.db").display().to_string();
    let admin = free_port();
    let token = "0123456789abcdef-token";
    let mut opts = Opts::testworker(
        &[
            "-w",
            "1",
            "--admin-bind",
            &format!("127.0.0.1:{admin}"),
            "--jobs-store",
            &store,
        ],
        &[],
    );
    opts.env.push(("CURFEW_ADMIN_TOKEN".into(), token.into()));
    let c = Curfew::start(opts);
    assert_eq!(get(admin, "/readyz").status, 200, "probes need nothing");
    assert_eq!(get(admin, "/healthz").status, 200);
    for path in ["/status", "/metrics", "/jobs"] {
        let r = http(admin, "GET", path, &[], b"").expect("request");
        assert_eq!(r.status, 401, "{path} without a token");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = http(
            admin,
            "GET",
            path,
            &[("Authorization", "Bearer wrong-wrong-wrong")],
            b"",
        )
        .expect("request");
        assert_eq!(r.status, 401, "{path} with a wrong token");
        let auth = format!("Bearer {token}");
        let r = http(admin, "GET", path, &[("Authorization", &auth)], b"").expect("request");
        assert_eq!(r.status, 200, "{path} with the token");
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let auth = format!("bearer  {token}");
        let r = http(admin, "GET", path, &[("Authorization", &auth)], b"").expect("request");
        assert_eq!(r.status, 200, "{path} with the token, scheme in lower case");
    }
    // Workers get it, for the SDK.
    let env = get(c.port, "/env?name=CURFEW_ADMIN_TOKEN");
    assert!(env.body.contains(token), "{}", env.body);
    assert!(c.faults().is_empty(), "{:?}", c.faults());
    drop(c);

    // Reachable from other hosts, no token: the job API is refused.
    let admin = free_port();
    let opts = Opts::testworker(
        &[
            "-w",
            "1",
            "--admin-bind",
            &format!("0.0.0.0:{admin}"),
            "--jobs-store",
            &store,
        ],
        &[],
    );
    let c = Curfew::start(opts);
    c.wait_log("has no admin_token", Duration::from_secs(2));
    assert_eq!(get(admin, "/jobs").status, 403);
    assert_eq!(get(admin, "/status").status, 200);
}

/// An admin endpoint on a Unix socket: it answers there, and curfew removes
/// the socket file when it exits (it used to stay behind: the endpoint's
/// task was dropped with the runtime before it closed its listener).
#[test]
fn an_admin_unix_socket_is_removed_at_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = dir.path().join("admin.sock");
    let mut c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "1",
            "--admin-bind",
            &format!("unix:{}", admin.display()),
        ],
        &[],
    ));
    assert!(unix_status_line(&admin, "/readyz").contains("200"));
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
    assert!(!admin.exists(), "the admin socket file is left behind");
}
