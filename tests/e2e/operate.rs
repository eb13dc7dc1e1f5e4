//! Operating a running curfew: zero-downtime reloads, recycling, scaling,
//! status.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::*;

/// A curfew.toml for the test worker with `tag` in its command.
fn write_config(path: &std::path::Path, tag: &str, extra: &str) {
    let text = format!(
        "command = [{:?}, \"--tag\", {:?}]\nworkers = 3\nworker_concurrency = 2\n{extra}\n",
        TESTWORKER, tag
    );
    std::fs::write(path, text).expect("write config");
}

fn config_opts(path: &std::path::Path) -> Opts {
    Opts {
        args: vec!["--config".into(), path.display().to_string()],
        command: vec![],
        env: vec![],
        cwd: None,
        bind: None,
        wrap: None,
        nofile: None,
    }
}

/// Many reloads in a row under continuous keep-alive load with requests of
/// mixed length: zero failed requests, and each reload serves the new code.
#[test]
fn reloads_under_load_fail_no_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("curfew.toml");
    write_config(&cfg, "v0", "");
    let mut c = Curfew::start(config_opts(&cfg));
    // The load lasts until the reloads are done (at most 120 s), however
    // slow a loaded machine makes them.
    let load = Load::start(
        c.port,
        &[
            "/:30",
            "/sleep?ms=20:10",
            "/sleep?ms=300:2",
            "/stream?chunks=3&ms=50:1",
        ],
        8,
        120_000,
    );
    load.wait_flowing();
    let reloads = 50;
    let t0 = Instant::now();
    for i in 1..=reloads {
        let tag = format!("v{i}");
        write_config(&cfg, &tag, "");
        c.signal(Signal::SIGHUP);
        c.wait_log_count(&event("reload_finished", "ok"), i, Duration::from_secs(20));
        // The new code answers (old workers may still finish their requests).
        let body = get(c.port, "/").body;
        assert!(
            body.contains(&format!("tag={tag}\n")),
            "after reload {i}: {body}"
        );
        // Spread the reloads over the load, so old generations are draining
        // slow requests while the next reload starts.
        std::thread::sleep(Duration::from_millis(90));
    }
    let reload_time = t0.elapsed();
    load.stop();
    let r = load.finish();
    assert!(
        r.n("duration_ms") > reload_time.as_millis() as u64,
        "the load ended before the reloads: {reload_time:?}, {}",
        r.json
    );
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(20)), 0, "{}", c.log_text());
    assert_eq!(
        r.n("failed"),
        0,
        "failed requests across {reloads} reloads: {}",
        r.json
    );
    assert_eq!(
        r.other_statuses("200"),
        0,
        "non-200 across reloads: {}",
        r.json
    );
    assert!(r.n("ok") > 500, "{}", r.json);
    assert!(
        c.faults().is_empty(),
        "reloads logged faults: {:?}",
        c.faults()
    );
    assert_eq!(c.count_log(REPLACEMENT_READY), 3 * reloads);
    eprintln!("{reloads} reloads in {reload_time:?}; load: {}", r.json);
    assert_no_survivors(&c);
}

/// A reload onto code that cannot boot: no failed request, the old workers
/// keep serving, the error names the reason.
#[test]
fn failed_reload_keeps_the_old_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("curfew.toml");
    write_config(&cfg, "good", "");
    let mut c = Curfew::start(config_opts(&cfg));
    let load = Load::start(c.port, &["/:10", "/sleep?ms=50:1"], 4, 3000);
    load.wait_flowing();
    std::fs::write(
        &cfg,
        format!("command = [{:?}, \"--tag\", \"bad\", \"--fail-boot\"]\nworkers = 3\nworker_concurrency = 2\n", TESTWORKER),
    )
    .expect("write");
    c.signal(Signal::SIGHUP);
    let line = c.wait_log(&event("reload_finished", "failed"), Duration::from_secs(10));
    assert!(
        line.contains("ImportError") || line.contains("exited during boot"),
        "{line}"
    );
    assert!(get(c.port, "/").body.contains("tag=good"));
    // A bad config file is refused the same way.
    std::fs::write(&cfg, "command = \"x\"\nworkers = -1\n").expect("write");
    c.signal(Signal::SIGHUP);
    let line = c.wait_log("configuration is invalid", Duration::from_secs(5));
    assert!(line.contains("workers"), "{line}");
    let r = load.finish();
    assert_eq!(r.n("failed"), 0, "{}", r.json);
    assert_eq!(r.other_statuses("200"), 0, "{}", r.json);
    assert!(get(c.port, "/").body.contains("tag=good"));
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
    assert_no_survivors(&c);
}

/// Rolling reloads replace the workers a batch at a time.
#[test]
fn rolling_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("curfew.toml");
    write_config(&cfg, "a", "reload_strategy = \"rolling\"\nreload_batch = 1");
    let mut c = Curfew::start(config_opts(&cfg));
    write_config(&cfg, "b", "reload_strategy = \"rolling\"\nreload_batch = 1");
    c.signal(Signal::SIGHUP);
    c.wait_log(&event("reload_finished", "ok"), Duration::from_secs(10));
    for _ in 0..6 {
        assert!(get(c.port, "/").body.contains("tag=b"));
    }
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
}

/// max_requests = 50 under load for a minute: many recycles, zero failed
/// requests.
#[test]
fn max_requests_recycles_without_failures() {
    let mut c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "2",
            "--worker-concurrency",
            "2",
            "--max-requests",
            "50",
            "--max-requests-jitter",
            "10",
        ],
        &[],
    ));
    let load = Load::start(c.port, &["/:20", "/sleep?ms=30:1"], 6, 60_000);
    let r = load.finish();
    assert_eq!(r.n("failed"), 0, "{}", r.json);
    assert_eq!(r.other_statuses("200"), 0, "{}", r.json);
    let recycles = c.count_log("Recycling worker");
    assert!(
        recycles as u64 >= r.n("ok") / 60 / 2,
        "only {recycles} recycles for {} requests",
        r.n("ok")
    );
    let line = c.wait_log("Recycling worker", Duration::from_secs(1));
    assert!(
        line.contains("max_requests") && line.contains(" INFO "),
        "{line}"
    );
    assert!(c.faults().is_empty(), "{:?}", c.faults());
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
    assert_no_survivors(&c);
}

/// A worker whose memory grows past max_memory is recycled, at INFO, with the reason.
#[test]
fn max_memory_recycles() {
    let c = Curfew::start(Opts::testworker(&["-w", "1", "--max-memory", "48MiB"], &[]));
    assert_eq!(get(c.port, "/alloc?mb=80").status, 200);
    let line = c.wait_log("Recycling worker", Duration::from_secs(10));
    assert!(
        line.contains("RSS") && line.contains("> 48 MiB") && line.contains(" INFO "),
        "{line}"
    );
    c.wait_log(REPLACEMENT_READY, Duration::from_secs(5));
    assert_eq!(get(c.port, "/").status, 200);
}

/// SIGTTIN / SIGTTOU add and drain-and-remove workers; SIGUSR1 logs status.
#[test]
fn scale_and_status_by_signal() {
    let mut c = Curfew::start(Opts::testworker(&["-w", "2"], &[]));
    c.signal(Signal::SIGTTIN);
    c.wait_log_count(WORKER_READY, 3, Duration::from_secs(5));
    let port = c.port;
    let slow = std::thread::spawn(move || {
        (0..4)
            .map(|_| std::thread::spawn(move || get(port, "/sleep?ms=600").status))
            .map(|h| h.join().expect("join"))
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(150));
    c.signal(Signal::SIGTTOU);
    c.wait_log("scaled down", Duration::from_secs(5));
    c.signal(Signal::SIGTTOU);
    c.wait_log_count("scaled down", 2, Duration::from_secs(5));
    assert_eq!(
        slow.join().expect("join"),
        vec![200; 4],
        "requests on removed workers finished"
    );
    c.signal(Signal::SIGTTOU);
    c.wait_log("Already at one worker", Duration::from_secs(5));
    c.signal(Signal::SIGUSR1);
    let status = c.wait_log("Status.", Duration::from_secs(5));
    assert!(
        status.contains("workers=1") && status.contains("phase=serving"),
        "{status}"
    );
    c.wait_log("Status: worker.", Duration::from_secs(5));
    assert!(c.faults().is_empty(), "{:?}", c.faults());
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
    assert_no_survivors(&c);
}
