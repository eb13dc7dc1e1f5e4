//! Upgrading curfew itself (SIGUSR2, `curfew upgrade`): curfew is started
//! from a copy of the binary, the copy is replaced on disk, and the running
//! curfew starts what is at its path now with its listening sockets; the
//! new one serves with the configuration on disk before the old one drains.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use curfew_store::JobState;
use nix::sys::signal::Signal;

use crate::support::jobs::*;
use crate::support::*;
use crate::systemd::{NotifySocket, find};

/// A copy of the curfew binary at `dir/curfew` (what curfew is started as).
fn copy_binary(dir: &Path) -> PathBuf {
    let path = dir.join("curfew");
    std::fs::copy(CURFEW, &path).expect("copy curfew");
    path
}

/// Replaces the file at `path` the way a package manager does: a new file
/// renamed over it (the running one keeps the old, now unlinked, inode).
fn replace_with(path: &Path, from: &Path) {
    let tmp = path.with_extension("new");
    std::fs::copy(from, &tmp).expect("copy the new binary");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// The pid the old curfew started the new one as.
fn new_pid(c: &Curfew) -> i32 {
    let line = c.wait_log(&event("upgrade", "started"), Duration::from_secs(20));
    field(&line, "pid")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line}"))
}

/// Stops the curfew at `pid` (no longer the test's child: re-parented when
/// the old one exited) and waits until it is gone.
fn stop(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
    wait_until("the new curfew exits", Duration::from_secs(30), || {
        !alive(pid)
    });
}

fn status_pid(c: &Curfew) -> i64 {
    let (code, out, err) = c.ctl(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("status json");
    v["pid"].as_i64().expect("pid")
}

/// The config the test rewrites between the versions: the worker's tag and
/// `max_connections` only take effect at a restart of curfew.
fn write_config(path: &Path, store: &TestStore, admin: u16, tag: &str, extra: &str) {
    let text = format!(
        "admin_bind = \"127.0.0.1:{admin}\"\n\
         workers = 3\nworker_concurrency = 8\ndrain_delay = 0\ngraceful_timeout = \"30s\"\n\
         {extra}\n\
         command = [{TESTWORKER:?}, \"--tag\", {tag:?}, \"--jobs-log\", {log:?}]\n\
         [jobs]\n{store}release_reserve = \"2s\"\n[jobs.queues.default]\nconcurrency = 4\n",
        log = store.log_path().display().to_string(),
        store = store.toml(),
    );
    std::fs::write(path, text).expect("write config");
}

fn config_opts(cfg: &Path) -> Opts {
    let mut o = Opts::command(&["--config", cfg.to_str().expect("utf-8")], &[]);
    o.command.clear();
    o
}

/// SIGUSR2 under keep-alive load with 1–2 s requests in flight and jobs
/// running (SQLite store), after the binary at curfew's path was replaced
/// and the configuration changed: no request fails, no connection is
/// refused, every job runs exactly once (the new curfew neither reclaims
/// the old one's running jobs nor runs them beside it), the old curfew
/// exits 0, and the new one serves the new restart-only settings and
/// answers `curfew status`.
#[test]
fn sigusr2_upgrades_to_the_new_binary_under_load_losing_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = copy_binary(dir.path());
    let store = TestStore::sqlite();
    let admin = free_port();
    let cfg = dir.path().join("curfew.toml");
    write_config(&cfg, &store, admin, "v1", "max_connections = 100");
    let mut c = Curfew::spawn_program(config_opts(&cfg), &program);
    c.wait_log(SERVING, Duration::from_secs(30));
    assert!(get(c.port, "/").body.contains("tag=v1"));

    let load = Load::start_with(
        c.port,
        &["/", "/sleep?ms=1000", "/sleep?ms=2000", "/", "/sleep?ms=10"],
        12,
        120_000,
        &["--ready-after", "20"],
    );
    load.wait_flowing();
    let first = enqueue_many(
        admin,
        (0..12)
            .map(|_| job_body("work", r#"{"ms": 1500}"#))
            .collect(),
        2,
    );
    wait_until("jobs running", Duration::from_secs(20), || {
        starts(&store.log_path()).len() >= 4
    });

    // The new version: another file at the same path, and a restart-only
    // change in the configuration.
    replace_with(&program, Path::new(CURFEW));
    write_config(&cfg, &store, admin, "v2", "max_connections = 200");
    let old = c.pid();
    let t = Instant::now();
    c.signal(Signal::SIGUSR2);
    let new = new_pid(&c);
    assert_ne!(new, old);
    c.wait_log(&event("upgrade", "handed_over"), Duration::from_secs(60));
    c.wait_log(&event("upgrade", "took_over"), Duration::from_secs(20));
    // The old one drains its requests and jobs, and exits 0.
    assert_eq!(c.wait_exit(Duration::from_secs(60)), 0, "{}", c.log_text());
    let exited_after = t.elapsed();
    assert!(alive(new), "the new curfew outlives the old one");

    // The new one is the service: the new settings, the control socket.
    assert_eq!(status_pid(&c), i64::from(new));
    assert!(get(c.port, "/").body.contains("tag=v2"));
    let later = enqueue_many(
        admin,
        (0..4).map(|_| job_body("work", r#"{"ms": 10}"#)).collect(),
        1,
    );
    std::thread::sleep(Duration::from_millis(1500));
    load.stop();
    let r = load.finish();
    assert_eq!(r.n("failed"), 0, "failed requests: {}", r.json);
    assert_eq!(r.n("refused"), 0, "refused connections: {}", r.json);
    assert_eq!(r.other_statuses("200"), 0, "non-200 answers: {}", r.json);
    assert!(r.n("ok") > 20, "{}", r.json);

    let all: Vec<i64> = first.iter().chain(&later).copied().collect();
    wait_until("every job succeeded", Duration::from_secs(60), || {
        count_state(&store.jobs(), JobState::Succeeded) == all.len()
    });
    // Each job started once: none was reclaimed from the live old curfew
    // (it would have started twice, the second beside the first).
    let started = starts(&store.log_path());
    for id in &all {
        assert_eq!(
            started.get(id),
            Some(&1),
            "job {id} started {:?} times; log:\n{}",
            started.get(id),
            std::fs::read_to_string(store.log_path()).unwrap_or_default()
        );
    }
    // The old curfew's own summary, and the new one took nothing back.
    assert!(c.count_log(&event("shutdown_complete", "clean")) >= 1);
    assert_eq!(c.count_log("Reclaimed the jobs"), 0, "{}", c.log_text());
    eprintln!("old curfew exited {exited_after:?} after SIGUSR2");
    stop(new);
}

/// An upgrade to a binary that cannot start (a script that exits 1): the
/// old curfew keeps serving, logs the reason at ERROR, and `curfew upgrade`
/// exits non-zero with it and the new process's last stderr lines; with
/// the right binary back, the same request upgrades.
#[test]
fn a_new_curfew_that_cannot_start_leaves_the_old_one_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = copy_binary(dir.path());
    let mut c = Curfew::spawn_program(Opts::testworker(&["-w", "1"], &[]), &program);
    c.wait_log(SERVING, Duration::from_secs(30));

    let script = dir.path().join("broken");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'curfew-next: broken on purpose' >&2\nexit 1\n",
    )
    .expect("write script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    replace_with(&program, &script);
    let (code, _, err) = c.ctl(&["upgrade"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("exit code 1"), "{err}");
    assert!(err.contains("broken on purpose"), "{err}");
    assert!(err.contains("keeps serving"), "{err}");
    let line = c.wait_log(&event("upgrade", "failed"), Duration::from_secs(5));
    assert!(line.contains(" ERROR "), "{line}");
    assert_eq!(get(c.port, "/").status, 200);
    assert_eq!(status_pid(&c), i64::from(c.pid()));

    // The right binary again: the same request now works.
    replace_with(&program, Path::new(CURFEW));
    let (code, _, err) = c.ctl(&["upgrade"]);
    assert_eq!(code, 0, "{err}");
    let new = new_pid(&c);
    assert_eq!(c.wait_exit(Duration::from_secs(30)), 0);
    assert_eq!(get(c.port, "/").status, 200);
    stop(new);
}

/// An upgrade to a configuration whose worker fails at boot (the real
/// curfew as the new process: it builds, adopts the control socket by
/// path, and stops when its worker fails): the old curfew keeps serving,
/// and its control socket with it — the failed new one leaves the file it
/// never owned (fails if it unlinks it: `curfew status` finds no curfew).
#[test]
fn a_new_curfew_whose_worker_fails_at_boot_leaves_the_control_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = copy_binary(dir.path());
    let cfg = dir.path().join("curfew.toml");
    std::fs::write(&cfg, format!("workers = 1\ncommand = [{TESTWORKER:?}]\n"))
        .expect("write config");
    let mut c = Curfew::spawn_program(config_opts(&cfg), &program);
    c.wait_log(SERVING, Duration::from_secs(30));
    std::fs::write(
        &cfg,
        format!("workers = 1\ncommand = [{TESTWORKER:?}, \"--fail-boot\"]\n"),
    )
    .expect("a worker that fails at boot");
    let (code, _, err) = c.ctl(&["upgrade"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("keeps serving"), "{err}");
    assert!(
        c.control_socket.exists(),
        "the old curfew's control socket file is still there"
    );
    assert_eq!(status_pid(&c), i64::from(c.pid()));
    assert_eq!(get(c.port, "/").status, 200);

    // A working configuration again: the same request upgrades.
    std::fs::write(&cfg, format!("workers = 1\ncommand = [{TESTWORKER:?}]\n"))
        .expect("write config");
    let (code, _, err) = c.ctl(&["upgrade"]);
    assert_eq!(code, 0, "{err}");
    let old = c.pid();
    assert_eq!(c.wait_exit(Duration::from_secs(30)), 0, "{}", c.log_text());
    let new = status_pid(&c);
    assert_ne!(new, i64::from(old));
    stop(new as i32);
}

/// An invalid configuration on disk: the new curfew exits at once with
/// the configuration error, which `curfew upgrade` returns; the old one
/// keeps serving with the configuration it read.
#[test]
fn an_invalid_configuration_fails_the_upgrade_with_its_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = copy_binary(dir.path());
    let cfg = dir.path().join("curfew.toml");
    std::fs::write(&cfg, format!("workers = 1\ncommand = [{TESTWORKER:?}]\n"))
        .expect("write config");
    let mut c = Curfew::spawn_program(config_opts(&cfg), &program);
    c.wait_log(SERVING, Duration::from_secs(30));
    std::fs::write(&cfg, "workers = \"many\"\n").expect("break config");
    let (code, _, err) = c.ctl(&["upgrade"]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("workers"),
        "the config error is returned: {err}"
    );
    assert!(err.contains("exit code 78"), "{err}");
    assert_eq!(get(c.port, "/").status, 200);
    assert_eq!(status_pid(&c), i64::from(c.pid()));
    assert!(
        c.faults()
            .iter()
            .any(|l| l.contains(&event("upgrade", "failed")))
    );
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(20)), 0);
}

/// Under systemd (a fake NOTIFY_SOCKET): a second SIGUSR2 while the new
/// curfew boots is ignored (INFO), a reload meanwhile is refused, the old
/// one sends `MAINPID=<new pid>` at the hand-over and nothing after it, and
/// the new one sends `READY=1` after that.
#[test]
fn under_systemd_the_old_curfew_names_the_new_one_mainpid() {
    let notify = NotifySocket::bind();
    let dir = tempfile::tempdir().expect("tempdir");
    let program = copy_binary(dir.path());
    let cfg = dir.path().join("curfew.toml");
    std::fs::write(
        &cfg,
        format!(
            "workers = 2\ndrain_delay = 0\ncommand = [{TESTWORKER:?}, \"--boot-delay-ms\", \"1500\"]\n"
        ),
    )
    .expect("write config");
    let mut opts = config_opts(&cfg);
    opts.env = vec![
        ("NOTIFY_SOCKET".into(), notify.path.display().to_string()),
        ("WATCHDOG_USEC".into(), "2000000".into()),
    ];
    let mut c = Curfew::spawn_program(opts, &program);
    c.wait_log(SERVING, Duration::from_secs(30));
    notify.wait_count("READY=1", 1);
    let old = c.pid();
    c.signal(Signal::SIGUSR2);
    let new = new_pid(&c);
    c.signal(Signal::SIGUSR2);
    let ignored = c.wait_log(&event("upgrade", "ignored"), Duration::from_secs(5));
    assert!(ignored.contains(" INFO "), "{ignored}");
    let (code, _, err) = c.ctl(&["reload"]);
    assert_ne!(code, 0);
    assert!(err.contains("upgrade is under way"), "{err}");
    c.wait_log(&event("upgrade", "handed_over"), Duration::from_secs(30));
    notify.wait_count(&format!("MAINPID={new}"), 1);
    notify.wait_count("READY=1", 2);
    assert_eq!(c.wait_exit(Duration::from_secs(30)), 0);
    let texts = notify.texts();
    let mainpid = find(&texts, 0, &format!("MAINPID={new}")).expect("MAINPID");
    let ready = find(&texts, mainpid, "READY=1").expect("READY=1 after MAINPID");
    assert!(ready > mainpid);
    // Nothing from the old process after the hand-over: no STOPPING=1.
    assert_eq!(notify.count("STOPPING=1"), 0, "{texts:?}");
    // The new one keeps the watchdog (WATCHDOG_PID is not passed on).
    let pings = notify.count("WATCHDOG=1");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(notify.count("WATCHDOG=1") > pings, "{:?}", notify.texts());
    assert_ne!(old, new);
    stop(new);
    notify.wait_count("STOPPING=1", 1);
}

/// As PID 1 of a PID namespace (a container's init) an upgrade is refused:
/// PID 1 cannot be handed over. curfew says so and keeps serving.
#[test]
fn as_pid_1_an_upgrade_is_refused() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("c.sock");
    let Some(ns) = serve_as_pid1(port, &sock, &[TESTWORKER]) else {
        return;
    };
    let out = std::process::Command::new(CURFEW)
        .args(["upgrade", "--control-socket"])
        .arg(&sock)
        .output()
        .expect("curfew upgrade");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("PID 1"), "{err}");
    assert_eq!(get(port, "/").status, 200);
    let stop = std::process::Command::new(CURFEW)
        .args(["stop", "--control-socket"])
        .arg(&sock)
        .output()
        .expect("curfew stop");
    assert!(stop.status.success());
    let out = ns.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains(&event("upgrade", "refused")), "{log}");
}

/// A SIGTERM while the new curfew still boots abandons the upgrade: the new
/// process is stopped too (it never served), the old one drains and exits 0,
/// and nothing is left running.
#[test]
fn sigterm_during_an_upgrade_stops_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = copy_binary(dir.path());
    let cfg = dir.path().join("curfew.toml");
    std::fs::write(
        &cfg,
        format!("workers = 1\ndrain_delay = 0\ncommand = [{TESTWORKER:?}]\n"),
    )
    .expect("write config");
    let mut c = Curfew::spawn_program(config_opts(&cfg), &program);
    c.wait_log(SERVING, Duration::from_secs(30));
    // The new version boots slowly.
    std::fs::write(
        &cfg,
        format!(
            "workers = 1\ndrain_delay = 0\ncommand = [{TESTWORKER:?}, \"--boot-delay-ms\", \"5000\"]\n"
        ),
    )
    .expect("write config");
    c.signal(Signal::SIGUSR2);
    let new = new_pid(&c);
    c.signal(Signal::SIGTERM);
    let line = c.wait_log(&event("upgrade", "abandoned"), Duration::from_secs(5));
    assert!(line.contains(" INFO "), "{line}");
    assert_eq!(c.wait_exit(Duration::from_secs(30)), 0, "{}", c.log_text());
    wait_until("the new curfew is gone", Duration::from_secs(10), || {
        !alive(new)
    });
    assert_no_survivors(&c);
}

/// The copies of the listening sockets kept for an upgrade do not outlive
/// the listeners: during a plain stop's drain a new connection is refused
/// at once (not queued, then reset at exit).
#[test]
fn copies_kept_for_an_upgrade_do_not_hold_the_port_during_a_drain() {
    let mut c = Curfew::start(Opts::testworker(
        &["-w", "1", "--drain-delay", "0", "--graceful-timeout", "10s"],
        &[],
    ));
    let port = c.port;
    let slow = std::thread::spawn(move || get(port, "/sleep?ms=2000").status);
    std::thread::sleep(Duration::from_millis(300));
    c.signal(Signal::SIGTERM);
    c.wait_log("Draining", Duration::from_secs(5));
    let e = std::net::TcpStream::connect(("127.0.0.1", port))
        .expect_err("the port is closed while the drain goes on");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    assert_eq!(slow.join().expect("request"), 200);
    assert_eq!(c.wait_exit(Duration::from_secs(20)), 0);
}

/// The soft open-file limit of process `pid`.
fn soft_nofile(pid: i32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    line.split_whitespace()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("soft limit in {line}"))
}

/// curfew raises its soft open-file limit and gives its workers the one it
/// started with; the new curfew of an upgrade does the same with that
/// original limit (it used to start with the old curfew's raised one and
/// pass it on to its workers).
#[test]
fn the_new_curfew_gives_its_workers_the_original_open_file_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = copy_binary(dir.path());
    let store = TestStore::sqlite();
    let cfg = dir.path().join("curfew.toml");
    write_config(&cfg, &store, free_port(), "v1", "");
    let mut opts = config_opts(&cfg);
    opts.nofile = Some((512, 2048));
    let mut c = Curfew::spawn_program(opts, &program);
    c.wait_log(SERVING, Duration::from_secs(30));
    let check = |curfew: i32, who: &str| {
        assert_eq!(soft_nofile(curfew), 2048, "{who} raises its own limit");
        let workers = children(curfew);
        assert!(!workers.is_empty(), "{who} has workers");
        for w in workers {
            assert_eq!(soft_nofile(w), 512, "a worker of {who}");
        }
    };
    check(c.pid(), "the first curfew");
    c.signal(Signal::SIGUSR2);
    let new = new_pid(&c);
    c.wait_log(&event("upgrade", "took_over"), Duration::from_secs(30));
    assert_eq!(c.wait_exit(Duration::from_secs(30)), 0, "{}", c.log_text());
    check(new, "the new curfew");
    stop(new);
}

/// The admin address on a Unix socket the old curfew created: the new one
/// answers on it after the upgrade, the old one leaves the file alone when
/// it exits, and the new one removes it when it stops (it used to stay
/// behind, as if a service manager owned it).
#[test]
fn an_admin_unix_socket_is_passed_on_and_removed_by_the_new_curfew() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = copy_binary(dir.path());
    let admin = dir.path().join("admin.sock");
    let cfg = dir.path().join("curfew.toml");
    std::fs::write(
        &cfg,
        format!(
            "admin_bind = \"unix:{}\"\nworkers = 1\ndrain_delay = 0\ncommand = [{TESTWORKER:?}]\n",
            admin.display()
        ),
    )
    .expect("write config");
    let mut c = Curfew::spawn_program(config_opts(&cfg), &program);
    c.wait_log(SERVING, Duration::from_secs(30));
    assert!(unix_status_line(&admin, "/healthz").contains("200"));
    c.signal(Signal::SIGUSR2);
    let new = new_pid(&c);
    c.wait_log(&event("upgrade", "took_over"), Duration::from_secs(30));
    assert_eq!(c.wait_exit(Duration::from_secs(30)), 0, "{}", c.log_text());
    assert!(
        unix_status_line(&admin, "/healthz").contains("200"),
        "the new curfew answers on the admin socket"
    );
    stop(new);
    assert!(
        !admin.exists(),
        "the admin socket file is removed when the new curfew stops"
    );
}

/// Connections waiting in the admin socket's queue at the hand-over are
/// the new curfew's to answer: the old one stops accepting without taking
/// them (fails if it accepts and drops them: the client reads EOF). The
/// old one's 64 admin connections are held by idle clients, so those sent
/// after them wait in the kernel's queue until the hand-over.
#[test]
fn admin_connections_queued_at_the_hand_over_reach_the_new_curfew() {
    use std::io::BufReader;
    use std::net::TcpStream;
    let dir = tempfile::tempdir().expect("tempdir");
    let program = copy_binary(dir.path());
    let admin = free_port();
    let cfg = dir.path().join("curfew.toml");
    std::fs::write(
        &cfg,
        format!(
            "admin_bind = \"127.0.0.1:{admin}\"\nworkers = 1\ndrain_delay = 0\ncommand = [{TESTWORKER:?}]\n"
        ),
    )
    .expect("write config");
    let mut c = Curfew::spawn_program(config_opts(&cfg), &program);
    c.wait_log(SERVING, Duration::from_secs(30));
    assert_eq!(get(admin, "/healthz").status, 200);
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(("127.0.0.1", admin)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let queued: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", admin)).expect("connect queues");
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            send_request(&mut s, "GET", "/healthz", &[], b"", true).expect("send");
            s
        })
        .collect();
    let old = c.pid();
    let (code, _, err) = c.ctl(&["upgrade"]);
    assert_eq!(code, 0, "{err}");
    for s in queued {
        let r = read_response(&mut BufReader::new(s))
            .expect("a connection queued at the hand-over is answered, not dropped");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    drop(idle);
    assert_eq!(c.wait_exit(Duration::from_secs(30)), 0, "{}", c.log_text());
    let new = status_pid(&c);
    assert_ne!(new, i64::from(old));
    stop(new as i32);
}

/// A stop during an upgrade gives the new curfew its own stop before the
/// final kill: the new curfew (still booting its worker) runs its 1 s
/// on_exit hook and logs its own summary through the old one (fails if the
/// old one's final kill takes the new curfew at once: its summary never
/// comes).
#[test]
fn an_abandoned_upgrade_lets_the_new_curfew_stop_before_the_final_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = copy_binary(dir.path());
    let cfg = dir.path().join("curfew.toml");
    std::fs::write(
        &cfg,
        format!("workers = 1\ndrain_delay = 0\ncommand = [{TESTWORKER:?}]\n"),
    )
    .expect("write config");
    let mut c = Curfew::spawn_program(config_opts(&cfg), &program);
    c.wait_log(SERVING, Duration::from_secs(30));
    std::fs::write(
        &cfg,
        format!(
            "workers = 1\ndrain_delay = 0\n\
             command = [{TESTWORKER:?}, \"--boot-delay-ms\", \"20000\"]\n\
             [hooks]\non_exit = \"sleep 1\"\n"
        ),
    )
    .expect("write config");
    c.signal(Signal::SIGUSR2);
    let new = new_pid(&c);
    // Its worker is booting.
    c.wait_log_count("Starting workers.", 2, Duration::from_secs(20));
    let t0 = Instant::now();
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(30)), 0, "{}", c.log_text());
    let took = t0.elapsed();
    assert_eq!(
        c.count_log("event=\"shutdown_complete\""),
        2,
        "both curfews' summaries:\n{}",
        c.log_text()
    );
    assert!(
        took >= Duration::from_secs(1),
        "the old curfew waited for the new one's stop: {took:?}"
    );
    wait_until("the new curfew is gone", Duration::from_secs(10), || {
        !alive(new)
    });
    assert_no_survivors(&c);
}
