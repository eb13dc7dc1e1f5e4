//! curfew as PID 1 of a PID namespace (a container's init): an orphaned
//! grandchild is reaped, SIGTERM drains and stops as usual, and curfew's
//! exit code is the namespace's.

use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn as_pid_1_it_reaps_orphans_drains_and_passes_its_exit_code() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("pid1-orphan-{}", std::process::id());
    // The worker leaves an orphan behind (a subshell's `sleep`), which the
    // kernel reparents to PID 1: curfew.
    // A second one exits at once: it must be reaped, not left a zombie.
    let worker = format!("(exec -a {marker} sleep 300 &) ; (sleep 0.2 &) ; exec {TESTWORKER}");
    let Some(ns) = serve_as_pid1(port, &dir.path().join("c.sock"), &["bash", "-c", &worker]) else {
        return;
    };
    wait_until("orphan started", Duration::from_secs(5), || {
        !processes_with(&marker).is_empty()
    });
    // curfew's pid as the host sees it: unshare's only child.
    let children = std::fs::read_to_string(format!("/proc/{}/task/{}/children", ns.id(), ns.id()))
        .expect("children");
    let curfew: i32 = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("curfew's pid");
    let status = std::fs::read_to_string(format!("/proc/{curfew}/status")).expect("status");
    let ns_pid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or("?")
        .to_owned();
    assert_eq!(ns_pid, "1", "curfew is PID 1 in its namespace");
    // The orphan that exited was reaped by curfew: no zombie child of it.
    std::thread::sleep(Duration::from_millis(600));
    let zombies: Vec<i32> = curfew::supervisor::procfs::all()
        .into_iter()
        .filter(|p| p.ppid == curfew && p.state == 'Z')
        .map(|p| p.pid)
        .collect();
    assert!(zombies.is_empty(), "zombies left under curfew: {zombies:?}");

    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(curfew),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let out = ns.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "curfew's exit code, through the namespace\n{log}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "stopped in {:?}",
        t.elapsed()
    );
    assert!(log.contains("event=\"shutdown_complete\""), "{log}");
    // The orphan did not outlive its init.
    wait_until("orphan gone", Duration::from_secs(2), || {
        processes_with(&marker).is_empty()
    });
}
