//! Worker supervision: socket modes, ids, crash restarts, exit
//! classification, boot failures.

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::*;

fn worker_ids(port: u16, n: usize) -> HashSet<String> {
    (0..n)
        .map(|_| get(port, "/env?name=CURFEW_WORKER_ID").body)
        .collect()
}

fn check_mode(extra: &[&str], worker_args: &[&str]) {
    let mut c = Curfew::start(Opts::testworker(
        &[&["-w", "3", "--worker-concurrency", "1"], extra].concat(),
        worker_args,
    ));
    // Each worker has its own id 0..N-1.
    let ids = worker_ids(c.port, 30);
    assert_eq!(
        ids,
        HashSet::from(["0".to_string(), "1".to_string(), "2".to_string()]),
        "{}",
        c.log_text()
    );
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    assert_no_survivors(&c);
}

/// Default: inherited fd 3 with LISTEN_FDS=1 and LISTEN_PID = the worker's
/// own pid (the test worker exits 2 on a mismatch).
#[test]
fn fd_mode_with_listen_pid() {
    check_mode(&[], &[]);
}

/// `fd-tcp`: the same on a loopback TCP socket; no proxy trust is set up.
#[test]
fn fd_tcp_mode_by_setting() {
    check_mode(&["--worker-socket", "fd-tcp"], &[]);
    // No run directory is needed (here none could be made).
    let mut opts = Opts::testworker(&["-w", "1", "--worker-socket", "fd-tcp"], &[]);
    opts.env
        .push(("XDG_RUNTIME_DIR".into(), "/nonexistent/curfew-test".into()));
    let c = Curfew::start(opts);
    assert_eq!(get(c.port, "/env?name=FORWARDED_ALLOW_IPS").status, 404);
}

/// In fd mode each worker's socket is a file in curfew's private run
/// directory; a worker that is gone takes its file with it, and the
/// directory is removed at exit.
#[test]
fn fd_mode_sockets_live_in_a_private_run_dir() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let xdg = tempfile::tempdir().expect("tempdir");
    let mut opts = Opts::testworker(&["-w", "2"], &[]);
    opts.env
        .push(("XDG_RUNTIME_DIR".into(), xdg.path().display().to_string()));
    let mut c = Curfew::start(opts);
    let pid = c.pid();
    let run_dir = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(xdg.path())
            .expect("xdg")
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("curfew-{pid}-")))
            })
            .collect()
    };
    let dirs = run_dir();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let mode = std::fs::metadata(&dirs[0])
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    let sockets = |dir: &std::path::Path| -> usize {
        std::fs::read_dir(dir)
            .expect("run dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_type().is_ok_and(|t| t.is_socket()))
            })
            .count()
    };
    assert_eq!(sockets(&dirs[0]), 2);
    // Five crashes and restarts: still one socket per live worker.
    for n in 0..5 {
        let _ = http(c.port, "GET", "/crash", &[], b"");
        c.wait_log_count(WORKER_READY, 3 + n, Duration::from_secs(10));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sockets(&dirs[0]) != 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sockets(&dirs[0]), 2, "{}", c.log_text());
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    assert!(run_dir().is_empty(), "run dir removed at exit");
    assert_no_survivors(&c);
}

#[test]
fn port_mode_by_placeholder() {
    check_mode(&[], &["--port", "{port}"]);
}

#[test]
fn unix_socket_mode_by_placeholder() {
    check_mode(&[], &["--unix", "{socket}"]);
}

/// The fd-mode environment is the systemd convention.
#[test]
fn fd_mode_environment() {
    let c = Curfew::start(Opts::testworker(&["-w", "1"], &[]));
    assert_eq!(get(c.port, "/env?name=LISTEN_FDS").body, "1");
    // fd 3 is a Unix socket: uvicorn and gunicorn must trust curfew's
    // X-Forwarded-* from a peer without an address.
    assert_eq!(get(c.port, "/env?name=FORWARDED_ALLOW_IPS").body, "*");
    let pid = get(c.port, "/env?name=LISTEN_PID").body;
    assert_eq!(
        c.worker_pids(),
        vec![pid.parse::<i32>().expect("LISTEN_PID is a pid")]
    );
    assert_eq!(
        get(c.port, "/env?name=WEB_CONCURRENCY").status,
        404,
        "WEB_CONCURRENCY is not passed on"
    );
}

/// A crashing worker is restarted; requests on other workers are
/// unaffected; only the request on the crashed worker fails (502).
#[test]
fn crash_fails_only_its_own_request_and_restarts() {
    let mut c = Curfew::start(Opts::testworker(&["-w", "3"], &[]));
    let load = Load::start(c.port, &["/:10", "/sleep?ms=20:1"], 4, 2500);
    load.wait_flowing();
    std::thread::sleep(Duration::from_millis(300));
    let r = get(c.port, "/crash");
    assert_eq!(r.status, 502, "{r:?}");
    let line = c.wait_log("Worker crashed", Duration::from_secs(5));
    assert!(
        line.contains("SIGABRT") && line.contains(" ERROR "),
        "{line}"
    );
    c.wait_log_count(WORKER_READY, 4, Duration::from_secs(5));
    let res = load.finish();
    assert_eq!(res.n("failed"), 0, "{}", res.json);
    assert_eq!(
        res.other_statuses("200"),
        0,
        "other workers unaffected: {}",
        res.json
    );
    let mid = c.wait_log("Worker failed mid-request", Duration::from_secs(1));
    assert_eq!(field(&mid, "path").as_deref(), Some("/crash"), "{mid}");
    assert_eq!(c.worker_ids_alive(), 3);
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
    assert_no_survivors(&c);
}

/// Exits are classified: own exit code (WARN), external SIGKILL (ERROR naming
/// the OOM killer), and the stop we asked for (INFO).
#[test]
fn exits_are_classified() {
    let mut c = Curfew::start(Opts::testworker(&["-w", "2"], &[]));
    let _ = http(c.port, "GET", "/exit?code=7", &[], b"");
    let line = c.wait_log("exited on its own with code 7", Duration::from_secs(5));
    assert!(line.contains(" WARN "), "{line}");
    c.wait_log_count(WORKER_READY, 3, Duration::from_secs(5));

    let victim = *c.worker_pids().last().expect("a worker");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).expect("kill");
    let line = c.wait_log(
        "Worker killed by SIGKILL, which curfew did not send",
        Duration::from_secs(5),
    );
    assert!(line.contains(" ERROR ") && line.contains("OOM"), "{line}");
    c.wait_log_count(WORKER_READY, 4, Duration::from_secs(5));

    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
    assert_eq!(
        c.count_log("Worker stopped by curfew"),
        2,
        "{}",
        c.log_text()
    );
}

/// A worker that cannot boot at startup: curfew exits non-zero with the
/// worker's last stderr lines (the traceback) in the message.
#[test]
fn boot_failure_at_startup_exits_with_stderr() {
    let mut c = Curfew::spawn(Opts::testworker(&["-w", "2"], &["--fail-boot"]));
    let code = c.wait_exit(Duration::from_secs(10));
    assert_eq!(code, 1, "{}", c.log_text());
    let text = c.log_text();
    assert!(
        text.contains("failed to boot")
            && text.contains("ImportError: testworker told to fail boot"),
        "{text}"
    );
    assert_no_survivors(&c);
}

/// A worker that never becomes ready within boot_timeout is killed and the
/// start fails with the reason.
#[test]
fn boot_timeout() {
    let mut c = Curfew::spawn(Opts::testworker(
        &["-w", "1", "--boot-timeout", "500ms"],
        &["--boot-delay-ms", "60000"],
    ));
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 1, "{}", c.log_text());
    assert!(
        c.log_text().contains("not ready within boot_timeout"),
        "{}",
        c.log_text()
    );
    assert_no_survivors(&c);
}

/// ready_path: a worker is ready only once that path answers 2xx.
#[test]
fn ready_path_gates_readiness() {
    let mut c = Curfew::spawn(Opts::testworker(
        &[
            "-w",
            "1",
            "--ready-path",
            "/status?code=503",
            "--boot-timeout",
            "700ms",
        ],
        &[],
    ));
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 1);
    assert!(c.log_text().contains("answered 503"), "{}", c.log_text());
    let c = Curfew::start(Opts::testworker(
        &["-w", "1", "--ready-path", "/health"],
        &["--boot-delay-ms", "300"],
    ));
    assert_eq!(get(c.port, "/").status, 200);
}

/// Worker output is re-logged line by line with the worker id.
#[test]
fn worker_output_is_relogged_with_worker_id() {
    let c = Curfew::start(Opts::testworker(&["-w", "1"], &[]));
    assert_eq!(
        get(c.port, "/stderr?lines=2&text=hello-from-worker").status,
        200
    );
    let line = c.wait_log("hello-from-worker 1", Duration::from_secs(2));
    assert!(
        line.contains("worker=0") && line.contains("stream=\"stderr\"") && line.contains(" INFO "),
        "{line}"
    );
}

/// Even if curfew itself is SIGKILLed (OOM killer, kill -9), its workers do
/// not live on as orphans.
#[test]
fn workers_die_with_a_killed_curfew() {
    let mut c = Curfew::start(Opts::testworker(&["-w", "3"], &[]));
    assert_eq!(c.worker_pids().len(), 3);
    c.signal(Signal::SIGKILL);
    let _ = c.child.wait();
    assert_no_survivors(&c);
}

/// A worker killed by the kernel's OOM killer is reported as such (the memory
/// cgroup's oom_kill count rose), with the request it was serving. The test
/// runs curfew in a child memory cgroup of its own with a 96 MiB limit (cgroup
/// v1 or v2, as root); where it cannot make one, it says so and checks nothing.
#[test]
fn oom_killed_worker_is_named_with_its_request() {
    let Some(cg) = TestCgroup::create(96 << 20) else {
        eprintln!(
            "skipped: cannot create a memory cgroup here (needs root and a writable cgroup fs)"
        );
        return;
    };
    let mut opts = Opts::testworker(&["-w", "1"], &[]);
    opts.wrap = Some(cg.procs_file.clone());
    let mut c = Curfew::start(opts);
    let r = http(c.port, "GET", "/alloc?mb=400", &[], b"").expect("request");
    assert_eq!(r.status, 502, "{}", r.body);
    let line = c.wait_log("killed by the kernel OOM killer", Duration::from_secs(10));
    assert!(
        line.contains(" ERROR ") && line.contains("/alloc?mb=400"),
        "{line}"
    );
    c.wait_log_count(WORKER_READY, 2, Duration::from_secs(10));
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
    assert_no_survivors(&c);
}
