//! Lifecycle hooks wired to curfew: they get the event's details, and a hook
//! that hangs never delays a shutdown past its budget.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::*;

/// worker_exit, worker_abort, when_ready, on_exit receive JSON details.
#[test]
fn hooks_receive_event_details() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.jsonl");
    let hook = format!(
        "sh -c 'cat >> {}; echo >> {}'",
        out.display(),
        out.display()
    );
    let mut c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "2",
            "--timeout",
            "700ms",
            "--hook",
            &format!("when_ready={hook}"),
            "--hook",
            &format!("worker_exit={hook}"),
            "--hook",
            &format!("worker_abort={hook}"),
            "--hook",
            &format!("on_exit={hook}"),
        ],
        &[],
    ));
    assert_eq!(get(c.port, "/crash").status, 502);
    assert_eq!(get(c.port, "/spin").status, 504);
    c.wait_log(WORKER_ABORTED, Duration::from_secs(5));
    c.wait_log_count(WORKER_READY, 4, Duration::from_secs(5));
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    let text = std::fs::read_to_string(&out).expect("hook output");
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for want in ["when_ready", "worker_exit", "worker_abort", "on_exit"] {
        assert!(names.contains(&want), "{want} missing in {names:?}");
    }
    let exit = events
        .iter()
        .find(|e| e["event"] == "worker_exit")
        .expect("worker_exit");
    assert_eq!(exit["reason"], "crashed", "{exit}");
    assert!(
        exit["requests"]
            .as_str()
            .is_some_and(|r| r.contains("/crash")),
        "{exit}"
    );
    let abort = events
        .iter()
        .find(|e| e["event"] == "worker_abort")
        .expect("worker_abort");
    assert!(
        abort["request"]
            .as_str()
            .is_some_and(|r| r.contains("/spin")),
        "{abort}"
    );
    let on_exit = events
        .iter()
        .find(|e| e["event"] == "on_exit")
        .expect("on_exit");
    assert_eq!(on_exit["exit_code"], 0);
    assert_eq!(on_exit["signal"], "SIGTERM");
}

/// An on_exit hook that sleeps forever is killed at its budget: the
/// shutdown ends right after, with the same exit code.
#[test]
fn hanging_hook_does_not_delay_shutdown_past_its_budget() {
    let mut c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "1",
            "--hook",
            "on_exit=sleep 1000",
            "--hook-timeout",
            "800ms",
        ],
        &[],
    ));
    let t0 = Instant::now();
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
        "shutdown took {took:?}"
    );
    assert!(
        c.log_text().contains("Hook timed out and was killed."),
        "{}",
        c.log_text()
    );
    assert_no_survivors(&c);
}

/// The hook budget also never exceeds the shutdown's own deadline
/// (graceful_timeout + worker_stop_timeout here) and its 1 s margin.
#[test]
fn hook_is_cut_at_the_shutdown_deadline() {
    let mut c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "1",
            "--hook",
            "on_exit=sleep 1000",
            "--hook-timeout",
            "60s",
            "--graceful-timeout",
            "500ms",
            "--worker-stop-timeout",
            "500ms",
        ],
        &[],
    ));
    let t0 = Instant::now();
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(2000) && took < Duration::from_millis(3500),
        "took {took:?}"
    );
    assert_no_survivors(&c);
}

/// A forced shutdown (a request past graceful_timeout, a worker that
/// needs SIGKILL) reaches the teardown after the stop's budget: on_exit
/// still runs, within the platform margin, with exit code 3 (fails if its
/// deadline is the budget itself: "Hook not run: its deadline has already
/// passed").
#[test]
fn on_exit_runs_after_a_forced_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("on_exit.json");
    let mut c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "1",
            "--graceful-timeout",
            "500ms",
            "--worker-stop-timeout",
            "500ms",
            "--hook",
            &format!("on_exit=sh -c 'cat > {}'", out.display()),
        ],
        &["--ignore-sigterm"],
    ));
    let port = c.port;
    let hung = std::thread::spawn(move || http(port, "GET", "/hang", &[], b""));
    wait_until("the request is in flight", Duration::from_secs(5), || {
        let (_, status, _) = c.ctl(&["status", "--json"]);
        serde_json::from_str::<serde_json::Value>(&status)
            .is_ok_and(|v| v["requests_in_flight"] == 1)
    });
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 3, "{}", c.log_text());
    let _ = hung.join();
    let text = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("on_exit did not run ({e}):\n{}", c.log_text()));
    let details: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
    assert_eq!(details["exit_code"], 3, "{details}");
}

/// A bad hook is a configuration error naming it.
#[test]
fn bad_hook_config_is_refused() {
    let out = std::process::Command::new(CURFEW)
        .args(["serve", "--hook", "on_lunch=true", "--", TESTWORKER])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("on_lunch") && err.contains("on_exit"), "{err}");
    let out = std::process::Command::new(CURFEW)
        .args([
            "serve",
            "--hook",
            "on_exit=https://example.invalid/x",
            "--",
            TESTWORKER,
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
}

/// Hooks merge event by event across layers: a `--hook` flag adds to the
/// hooks of the environment (or file) instead of silently replacing them
/// all; an event given twice in `--hook` is refused.
#[test]
fn hook_layers_merge_event_by_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.jsonl");
    let hook = format!(
        "sh -c 'cat >> {}; echo >> {}'",
        out.display(),
        out.display()
    );
    let mut opts = Opts::testworker(&["-w", "1", "--hook", &format!("when_ready={hook}")], &[]);
    opts.env = vec![("CURFEW_HOOKS".into(), format!("{{ on_exit = {:?} }}", hook))];
    let mut c = Curfew::start(opts);
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    let text = std::fs::read_to_string(&out).expect("hook output");
    let names: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["event"].as_str().map(str::to_owned))
        .collect();
    for want in ["when_ready", "on_exit"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing in {names:?}"
        );
    }

    let out = std::process::Command::new(CURFEW)
        .args(["serve", "--hook", "on_exit=true", "--hook", "on_exit=false"])
        .args(["--", TESTWORKER])
        .output()
        .expect("run curfew");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("on_exit") && err.contains("more than once"),
        "{err}"
    );
}
