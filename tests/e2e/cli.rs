//! What a user meets at the command line: completions, the manual page,
//! `--version`, help texts, and the hints and wording of common mistakes
//! and ordinary stops.

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::*;

fn curfew(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(CURFEW)
        .args(args)
        .output()
        .expect("run curfew");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What bash's completion offers for `line` (the cursor at its end), with
/// the script `curfew completions bash` prints sourced.
fn bash_completes(line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split(' ').collect();
    let script = format!(
        "source <(\"$CURFEW\" completions bash)\n\
         COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n\
         COMP_WORDS=({}); COMP_CWORD={}\n\
         _curfew curfew '{}' '{}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words.get(words.len().wrapping_sub(2)).unwrap_or(&"")
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("CURFEW", CURFEW)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completes_commands_and_flags() {
    assert_eq!(bash_completes("curfew se"), vec!["serve"]);
    let jobs = bash_completes("curfew jobs ");
    assert!(jobs.iter().any(|w| w == "retry"), "{jobs:?}");
    let flags = bash_completes("curfew serve --graceful");
    assert_eq!(flags, vec!["--graceful-timeout"]);
    for shell in ["zsh", "fish"] {
        let (code, out, err) = curfew(&["completions", shell]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("serve"), "{shell}: {out}");
    }
    let (code, _, err) = curfew(&["completions", "tcsh"]);
    assert_eq!(code, 2, "an unknown shell is a usage error: {err}");
}

#[test]
fn the_manual_pages_render() {
    let (code, page, err) = curfew(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        page.starts_with(".ie") || page.contains(".TH curfew 1"),
        "{page}"
    );
    assert!(
        page.contains("serve") && page.contains("completions"),
        "{page}"
    );
    let (code, page, err) = curfew(&["man", "serve"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        page.contains(".TH curfew\\-serve 1") || page.contains(".TH curfew-serve 1"),
        "{page}"
    );
    assert!(page.contains("graceful\\-timeout"), "{page}");
    let (code, _, err) = curfew(&["man", "sevre"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no command `sevre`") && err.contains("serve"),
        "{err}"
    );
}

#[test]
fn version_and_help_say_what_is_there() {
    let (code, out, _) = curfew(&["--version"]);
    assert_eq!(code, 0);
    // `curfew 0.1.0 (0123456789ab)`: the commit it was built from.
    let commit = out
        .trim()
        .rsplit_once(" (")
        .and_then(|(_, c)| c.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no commit in {out:?}"));
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{out}"
    );
    let (_, top, _) = curfew(&["--help"]);
    assert!(top.contains("jobs") && top.contains("enqueue"), "{top}");
    let (_, serve, _) = curfew(&["serve", "--help"]);
    for needle in [
        "SIGHUP", "SIGTTIN", "SIGUSR1", "/metrics", "/jobs", "/status",
    ] {
        assert!(
            serve.contains(needle),
            "serve --help lacks {needle}:\n{serve}"
        );
    }
}

/// A worker that never serves on the socket curfew passed it (it ignores
/// fd 3) fails to boot with a hint saying how to serve on it.
#[test]
fn a_worker_ignoring_fd_3_gets_a_hint() {
    let mut c = Curfew::spawn(Opts::command(
        &["-w", "1", "--boot-timeout", "1s"],
        &["sleep", "30"],
    ));
    assert_eq!(c.wait_exit(Duration::from_secs(15)), 1, "{}", c.log_text());
    let text = c.log_text();
    assert!(
        text.contains("not ready within boot_timeout")
            && text.contains("hint: the worker never answered on the socket curfew gave it")
            && text.contains("uvicorn --fd 3"),
        "{text}"
    );
    assert_no_survivors(&c);
}

/// A worker that binds curfew's own port (uvicorn --port 8000 beside
/// `bind = 127.0.0.1:8000`) fails with "address already in use": the hint
/// says curfew owns that address.
#[test]
fn a_worker_binding_curfews_port_gets_a_hint() {
    let port = free_port();
    let script = format!(
        "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
         s.bind(('127.0.0.1', {port})); s.listen(); import time; time.sleep(30)"
    );
    let mut opts = Opts::command(
        &["-w", "1", "--boot-timeout", "5s"],
        &["python3", "-c", &script],
    );
    opts.bind = Some(format!("127.0.0.1:{port}"));
    let mut c = Curfew::spawn(opts);
    assert_eq!(c.wait_exit(Duration::from_secs(15)), 1, "{}", c.log_text());
    let text = c.log_text();
    assert!(
        text.contains("Address already in use")
            && text.contains("hint: the worker tried to listen on an address of its own"),
        "{text}"
    );
    assert_no_survivors(&c);
}

/// With `drain_delay = 0` the stop's log line does not promise a delay.
#[test]
fn no_drain_delay_is_not_announced() {
    let mut c = Curfew::start(Opts::testworker(&["-w", "1", "--drain-delay", "0"], &[]));
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
    let line = c.wait_log("Received SIGTERM", Duration::from_secs(1));
    assert!(
        line.contains("draining") && !line.contains("still serving for drain_delay"),
        "{line}"
    );
}

/// SIGTERM while `max_requests` recycling keeps replacements booting: the
/// replacements curfew stops are its own ordinary stop, not a fault.
#[test]
fn a_stop_during_recycling_logs_no_fault() {
    let mut c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "2",
            "--worker-concurrency",
            "2",
            "--max-requests",
            "5",
        ],
        &["--boot-delay-ms", "50"],
    ));
    let load = Load::start(c.port, &["/:10"], 4, 3000);
    load.wait_flowing();
    c.wait_log("Recycling worker", Duration::from_secs(5));
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(20)), 0, "{}", c.log_text());
    let r = load.finish();
    assert_eq!(r.n("failed"), 0, "{}", r.json);
    assert!(c.faults().is_empty(), "{:?}", c.faults());
}
