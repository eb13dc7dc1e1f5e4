//! A worker killed from outside in every state of its slot (issue 15): it
//! leaves routing at once, the requests that waited for it are served by the
//! next ready worker (never a 502 because nobody accepted them), and its
//! death is logged once as the external kill it was, never as "stopped by
//! curfew". Plus the operations that overlap a reload.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::*;

/// A curfew.toml for the test worker with `tag` and a boot delay.
fn write_config(path: &std::path::Path, tag: &str, boot_ms: u64, extra: &str) {
    let text = format!(
        "command = [{TESTWORKER:?}, \"--tag\", {tag:?}, \"--boot-delay-ms\", \"{boot_ms}\"]\n{extra}\n"
    );
    std::fs::write(path, text).expect("write config");
}

fn start_with_config(path: &std::path::Path) -> Curfew {
    Curfew::start(Opts {
        args: vec!["--config".into(), path.display().to_string()],
        command: vec![],
        env: vec![],
        cwd: None,
        bind: None,
        wrap: None,
        nofile: None,
    })
}

fn kill(pid: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).expect("kill worker");
}

/// The log lines about worker `pid`'s exit.
fn exit_lines(c: &Curfew, pid: i32) -> Vec<String> {
    let pid_field = format!(" pid={pid} ");
    c.logs()
        .into_iter()
        .filter(|l| format!("{l} ").contains(&pid_field))
        .filter(|l| {
            [
                "Worker stopped by curfew",
                "Worker killed",
                "Worker exited on its own",
                "Worker crashed",
                "Worker hung",
            ]
            .iter()
            .any(|m| l.contains(m))
        })
        .collect()
}

/// Exactly one exit line for `pid`, and it is an external kill (ERROR).
fn assert_logged_as_external_kill(c: &Curfew, pid: i32) {
    let lines = exit_lines(c, pid);
    assert_eq!(
        lines.len(),
        1,
        "exit lines of {pid}: {lines:#?}\n{}",
        c.log_text()
    );
    assert!(
        lines[0].contains(" ERROR ")
            && lines[0].contains("Worker killed by SIGKILL, which curfew did not send"),
        "{}",
        lines[0]
    );
}

/// The proof: the only ready worker is killed while a reload
/// prepares its successor. The slot restarts its own generation at once;
/// requests sent in the gap wait in the queue and are answered (none gets a
/// 502); the new generation still takes over when ready, and the kill is
/// logged once as an external kill.
#[test]
fn kill_the_only_worker_while_a_reload_prepares() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("curfew.toml");
    let extra = "workers = 1\nworker_concurrency = 4";
    write_config(&cfg, "old", 600, extra);
    let mut c = start_with_config(&cfg);
    let old = c.worker_pids()[0];
    write_config(&cfg, "new", 1500, extra);
    c.signal(Signal::SIGHUP);
    wait_until(
        "the new worker to be started",
        Duration::from_secs(5),
        || children(c.pid()).len() == 2,
    );
    let killed_at = Instant::now();
    kill(old);
    // Dead (a zombie at most: its sockets are closed). A request sent while
    // the SIGKILL was still on its way could reach the dying process and
    // fail, like one in flight at the kill.
    wait_until("the worker to be dead", Duration::from_secs(5), || {
        !alive(old)
    });
    // The gap: nothing is ready until the restart (600 ms boot) or the new
    // generation (1500 ms boot) answers.
    let port = c.port;
    let clients: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(i * 20));
                let r = http(port, "GET", "/", &[], b"").expect("request");
                (r.status, r.body, Instant::now())
            })
        })
        .collect();
    let answers: Vec<_> = clients
        .into_iter()
        .map(|h| h.join().expect("join"))
        .collect();
    for (status, body, at) in &answers {
        assert_eq!(*status, 200, "{body}\n{}", c.log_text());
        assert!(
            at.duration_since(killed_at) >= Duration::from_millis(300),
            "answered before any worker could be ready"
        );
    }
    c.wait_log(&event("reload_finished", "ok"), Duration::from_secs(10));
    assert!(get(c.port, "/").body.contains("tag=new"));
    assert_logged_as_external_kill(&c, old);
    let line = c.wait_log(
        "restarting the current generation meanwhile",
        Duration::ZERO,
    );
    assert!(line.contains(" INFO "), "{line}");
    assert_eq!(c.count_log("No worker accepted"), 0, "{}", c.log_text());
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    assert_no_survivors(&c);
}

/// A request refused by the only worker (it closed its listener: it is
/// going away) is not failed: it waits in the queue, and the next worker to
/// be ready (here the restart after the worker is killed) serves it.
#[test]
fn a_refused_request_waits_for_the_next_worker() {
    let mut c = Curfew::start(Opts::testworker(
        &["-w", "1", "--worker-concurrency", "1", "--timeout", "20s"],
        &["--boot-delay-ms", "500"],
    ));
    let old = c.worker_pids()[0];
    assert_eq!(get(c.port, "/close-listener").status, 200);
    c.wait_log("testworker closed its listener", Duration::from_secs(2));
    // Pooled connections to it expire (1 s): the next request must connect.
    std::thread::sleep(Duration::from_millis(1300));
    let port = c.port;
    let waiting = std::thread::spawn(move || {
        let r = http(port, "POST", "/echo", &[], b"kept").expect("answer");
        (r.status, r.body)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!waiting.is_finished(), "the refused request is waiting");
    kill(old);
    let (status, body) = waiting.join().expect("join");
    assert_eq!((status, body.as_str()), (200, "kept"), "{}", c.log_text());
    assert_logged_as_external_kill(&c, old);
    assert_eq!(c.count_log("No worker accepted"), 0, "{}", c.log_text());
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    assert_no_survivors(&c);
}

/// The old worker of a reload, draining a slow request, is killed: its
/// request fails (it was on it), and its death is an external kill, not
/// "stopped by curfew" (it used to be logged at INFO with why="reload").
/// The same for a worker draining after a scale-down.
#[test]
fn kill_a_draining_worker_after_a_reload_and_a_scale_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("curfew.toml");
    let extra = "workers = 1\nworker_concurrency = 4";
    write_config(&cfg, "a", 0, extra);
    let mut c = start_with_config(&cfg);
    let old = c.worker_pids()[0];
    let port = c.port;
    let slow = std::thread::spawn(move || http(port, "GET", "/sleep?ms=5000", &[], b""));
    std::thread::sleep(Duration::from_millis(300)); // on the worker by now
    c.signal(Signal::SIGHUP);
    c.wait_log(&event("reload_finished", "ok"), Duration::from_secs(10));
    kill(old);
    let r = slow.join().expect("join").expect("answer");
    assert_eq!(r.status, 502, "{}", r.body);
    wait_until("the kill to be logged", Duration::from_secs(5), || {
        !exit_lines(&c, old).is_empty()
    });
    assert_logged_as_external_kill(&c, old);

    // Scale down from 2: the leaving worker drains a slow request and is
    // killed meanwhile.
    c.signal(Signal::SIGTTIN);
    c.wait_log_count(WORKER_READY, 2, Duration::from_secs(5));
    let pids = c.worker_pids();
    let leaving = *pids.last().expect("the new slot's worker");
    let slows: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || http(port, "GET", "/sleep?ms=3000", &[], b"")))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    c.signal(Signal::SIGTTOU);
    c.wait_log("Scaling workers.", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(100));
    kill(leaving);
    let statuses: Vec<u16> = slows
        .into_iter()
        .map(|h| h.join().expect("join").expect("answer").status)
        .collect();
    assert!(statuses.contains(&502), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 502),
        "{statuses:?}"
    );
    wait_until(
        "the second kill to be logged",
        Duration::from_secs(5),
        || !exit_lines(&c, leaving).is_empty(),
    );
    assert_logged_as_external_kill(&c, leaving);
    assert_eq!(c.count_log("Worker stopped by curfew (signal SIGKILL)"), 0);
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    assert_no_survivors(&c);
}

/// A reload's new worker is killed while it boots: the reload fails (the
/// old generation keeps serving), and the kill is logged once, as such.
#[test]
fn kill_a_booting_new_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("curfew.toml");
    let extra = "workers = 1\nworker_concurrency = 4";
    write_config(&cfg, "a", 0, extra);
    let mut c = start_with_config(&cfg);
    let old = c.worker_pids()[0];
    write_config(&cfg, "b", 2000, extra);
    c.signal(Signal::SIGHUP);
    let mut booting = 0;
    wait_until(
        "the new worker to be started",
        Duration::from_secs(5),
        || {
            booting = children(c.pid())
                .into_iter()
                .find(|p| *p != old)
                .unwrap_or(0);
            booting != 0
        },
    );
    kill(booting);
    let line = c.wait_log(&event("reload_finished", "failed"), Duration::from_secs(10));
    assert!(line.contains("signal SIGKILL"), "{line}");
    assert_logged_as_external_kill(&c, booting);
    assert!(
        exit_lines(&c, booting)[0].contains("booting"),
        "{:?}",
        exit_lines(&c, booting)
    );
    assert!(get(c.port, "/").body.contains("tag=a"));
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    assert_no_survivors(&c);
}

/// HUP, HUP and TTIN while a (slow) reload runs: the first HUP is queued,
/// the second merges into it, the TTIN is queued behind; each is logged at
/// INFO and runs when the reload is over: two reloads in all, one more
/// worker, no fault.
#[test]
fn operations_during_a_reload_are_queued_and_merged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("curfew.toml");
    let extra = "workers = 2\nworker_concurrency = 4";
    write_config(&cfg, "a", 600, extra);
    let mut c = start_with_config(&cfg);
    c.signal(Signal::SIGHUP);
    c.wait_log("Reload requested", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(100));
    c.signal(Signal::SIGHUP);
    c.wait_log(
        "queued; it runs when the reload ends",
        Duration::from_secs(5),
    );
    c.signal(Signal::SIGHUP);
    c.wait_log(
        "merged into the reload already queued",
        Duration::from_secs(5),
    );
    c.signal(Signal::SIGTTIN);
    c.wait_log_count(
        "queued; it runs when the reload ends",
        2,
        Duration::from_secs(5),
    );
    c.wait_log_count(&event("reload_finished", "ok"), 2, Duration::from_secs(20));
    c.wait_log("Scaling workers.", Duration::from_secs(5));
    wait_until("three workers", Duration::from_secs(10), || {
        children(c.pid()).len() == 3
    });
    assert_eq!(
        c.count_log("Reload requested: re-reading"),
        2,
        "{}",
        c.log_text()
    );
    assert!(c.faults().is_empty(), "{:?}", c.faults());
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    assert_no_survivors(&c);
}

/// `retry_idempotent`: a GET whose worker dies before answering is sent
/// once more to another worker; one that kills that worker too is a
/// suspected query of death and gets its 502. Off by default.
#[test]
fn idempotent_requests_survive_one_worker_death_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = |n: &str| dir.path().join(n).display().to_string();

    let off = Curfew::start(Opts::testworker(&["-w", "2"], &[]));
    let r = get(off.port, &format!("/crash-once?marker={}", marker("a")));
    assert_eq!(r.status, 502, "off by default: {}", r.body);
    drop(off);

    let c = Curfew::start(Opts::testworker(
        &["-w", "2", "--retry-idempotent", "true"],
        &[],
    ));
    let r = get(c.port, &format!("/crash-once?marker={}", marker("b")));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "survived\n");
    c.wait_log("sending it once more", Duration::from_secs(2));
    // Both workers back before the next one.
    c.wait_log_count(WORKER_READY, 3, Duration::from_secs(10));
    let r = get(c.port, "/crash");
    assert_eq!(r.status, 502, "{}", r.body);
    c.wait_log("Suspected query of death", Duration::from_secs(2));
    assert_eq!(c.count_log("Suspected query of death"), 1);
    // A POST is never retried.
    c.wait_log_count(WORKER_READY, 5, Duration::from_secs(10));
    let r = http(
        c.port,
        "POST",
        &format!("/crash-once?marker={}", marker("c")),
        &[],
        b"x",
    )
    .expect("request");
    assert_eq!(r.status, 502);
}
