//! Bad configuration exits non-zero with a message naming the problem.

use std::process::Command;

use crate::support::*;

fn run(args: &[&str], env: &[(&str, &str)], cwd: Option<&std::path::Path>) -> (i32, String) {
    let mut cmd = Command::new(CURFEW);
    cmd.args(args)
        .env_remove("WEB_CONCURRENCY")
        .env_remove("PORT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let out = cmd.output().expect("run curfew");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_key_in_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("curfew.toml"),
        "command = \"true\"\ngraceful_timout = \"5s\"\n",
    )
    .expect("write");
    let (code, err) = run(&["serve"], &[], Some(dir.path()));
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("graceful_timout") && err.contains("curfew.toml"),
        "{err}"
    );
}

#[test]
fn negative_timeout_flag() {
    let (code, err) = run(
        &["serve", "--graceful-timeout", "-5s", "--", TESTWORKER],
        &[],
        None,
    );
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("graceful_timeout")
            && err.contains("negative")
            && err.contains("command line"),
        "{err}"
    );
}

#[test]
fn bad_env_value_names_the_variable() {
    let (code, err) = run(
        &["serve", "--", TESTWORKER],
        &[("CURFEW_WORKERS", "-3")],
        None,
    );
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("CURFEW_WORKERS") && err.contains("workers"),
        "{err}"
    );
    let (code, err) = run(
        &["serve", "--", TESTWORKER],
        &[("CURFEW_GRACEFULL_TIMEOUT", "1")],
        None,
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("CURFEW_GRACEFULL_TIMEOUT"), "{err}");
}

#[test]
fn command_not_found() {
    let (code, err) = run(&["serve", "--", "no-such-program-curfew-test"], &[], None);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("command not found") && err.contains("no-such-program-curfew-test"),
        "{err}"
    );
}

#[test]
fn no_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, err) = run(&["serve"], &[], Some(dir.path()));
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("no worker command"), "{err}");
}

#[test]
fn port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let bind = format!("127.0.0.1:{port}");
    let (code, err) = run(
        &["serve", "-w", "1", "--bind", &bind, "--", TESTWORKER],
        &[],
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&bind) && err.contains("in use"), "{err}");
    // Nothing was started, and the run still ends with its summary line.
    assert!(!err.contains("Starting workers"), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("event=\"shutdown_complete\" result=\"failed\"")
            && last.contains("exit_code=1"),
        "{err}"
    );
}

/// fd mode needs a private directory for the workers' sockets: where none
/// can be made (a read-only root file system), the error says where it
/// tried and both ways out (`workers::fd_tcp_mode_by_setting` runs
/// without one).
#[test]
fn no_writable_run_directory_names_the_fixes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("not-there");
    let missing = missing.to_str().expect("utf-8");
    let ctl = dir.path().join("ctl.sock");
    let ctl = ctl.to_str().expect("utf-8");
    let args = [
        "serve",
        "-w",
        "1",
        "--bind",
        "127.0.0.1:0",
        "--control-socket",
        ctl,
        "--",
        TESTWORKER,
    ];
    let (code, err) = run(&args, &[("XDG_RUNTIME_DIR", missing)], None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(missing) && err.contains("XDG_RUNTIME_DIR") && err.contains("fd-tcp"),
        "{err}"
    );
    assert!(!err.contains("Starting workers"), "{err}");
}

#[test]
fn a_misspelt_key_or_variable_gets_a_suggestion() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("curfew.toml"),
        "command = \"true\"\nwokers = 3\n",
    )
    .expect("write");
    let (code, err) = run(&["serve"], &[], Some(dir.path()));
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("unknown key `wokers`: did you mean `workers`?"),
        "{err}"
    );
    assert!(
        !err.contains("max_requests_jitter"),
        "not every key listed: {err}"
    );

    std::fs::write(
        dir.path().join("curfew.toml"),
        "command = \"true\"\n[jobs]\nstore = \"sqlite://x.db\"\n[jobs.queues.default]\nconcurency = 2\n",
    )
    .expect("write");
    let (code, err) = run(&["serve"], &[], Some(dir.path()));
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("did you mean `concurrency`?"), "{err}");

    let (code, err) = run(
        &["serve", "--", TESTWORKER],
        &[("CURFEW_WOKERS", "3")],
        None,
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("did you mean CURFEW_WORKERS?"), "{err}");
}

#[test]
fn usage_error_is_code_2() {
    let (code, _) = run(&["serve", "--no-such-flag"], &[], None);
    assert_eq!(code, 2);
}

#[test]
fn help_documents_every_option_with_default() {
    let out = Command::new(CURFEW)
        .args(["serve", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--graceful-timeout",
        "--drain-delay",
        "--worker-stop-timeout",
        "--backlog",
        "--worker-concurrency",
        "--workers",
    ] {
        assert!(help.contains(opt), "{opt} missing");
    }
    assert!(
        help.contains("default: 30s") && help.contains("2 × cores + 1"),
        "{help}"
    );
}

/// PORT and WEB_CONCURRENCY (Heroku, Render, ...) configure bind and workers;
/// JSON logs are one object per line.
#[test]
fn platform_env_conventions_and_json_logs() {
    let port = free_port();
    let mut opts = Opts::testworker(&["--log-format", "json"], &[]);
    opts.env = vec![
        ("PORT".into(), port.to_string()),
        ("WEB_CONCURRENCY".into(), "3".into()),
    ];
    let mut c = Curfew::spawn(opts);
    // PORT → 0.0.0.0:$PORT; WEB_CONCURRENCY gives 3 workers.
    let serving = c.wait_log("\"Serving.\"", std::time::Duration::from_secs(20));
    assert!(serving.contains(&format!("0.0.0.0:{port}")), "{serving}");
    assert_eq!(get(port, "/").status, 200);
    assert_eq!(c.worker_pids_json().len(), 3, "{}", c.log_text());
    // Both are curfew's: a worker that read PORT would try to bind
    // curfew's own address, one that read WEB_CONCURRENCY would fork.
    for name in ["PORT", "WEB_CONCURRENCY"] {
        assert_eq!(
            get(port, &format!("/env?name={name}")).status,
            404,
            "{name}"
        );
    }
    c.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(c.wait_exit(std::time::Duration::from_secs(10)), 0);
    for line in c.logs() {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
}

/// A duration too large for `Instant` arithmetic (it used to pass
/// validation and panic in the first worker's boot, or at SIGTERM) is a
/// configuration error naming the key, from any layer.
#[test]
fn a_duration_above_ten_years_is_refused() {
    let (code, err) = run(
        &["serve", "--", TESTWORKER],
        &[("CURFEW_BOOT_TIMEOUT", "1e19")],
        None,
    );
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("boot_timeout")
            && err.contains("CURFEW_BOOT_TIMEOUT")
            && err.contains("at most 10 years"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let (code, err) = run(
        &[
            "serve",
            "--graceful-timeout",
            "9999999999999999999",
            "--",
            TESTWORKER,
        ],
        &[],
        None,
    );
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("graceful_timeout") && err.contains("at most 10 years"),
        "{err}"
    );
}

/// `CURFEW_LOG_LEVEL=` (a template variable left unset) would turn every
/// log line off, errors included: refused, with the fix.
#[test]
fn an_empty_log_level_is_refused() {
    for (args, env) in [
        (
            vec!["serve", "--", TESTWORKER],
            vec![("CURFEW_LOG_LEVEL", "")],
        ),
        (vec!["serve", "--log-level", " ", "--", TESTWORKER], vec![]),
    ] {
        let (code, err) = run(&args, &env, None);
        assert_eq!(code, 78, "{err}");
        assert!(
            err.contains("log_level") && err.contains("empty") && err.contains("\"info\""),
            "{err}"
        );
    }
}

/// Values that used to be accepted and then ignored or misread are
/// refused with exit 78, naming the key (or variable) and the fix.
#[test]
fn values_once_ignored_are_refused() {
    // A misspelt key in a hook's table (it used to run with the default
    // hook_timeout).
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("curfew.toml"),
        "command = \"true\"\n[hooks]\nworker_exit = { run = \"true\", timout = \"3s\" }\n",
    )
    .expect("write");
    let (code, err) = run(&["serve"], &[], Some(dir.path()));
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("unknown key `timout`: did you mean `timeout`?"),
        "{err}"
    );
    // (flags, environment, what the error must contain)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case<'_>] = &[
        // The probe of an async worker on a sync one: never probed.
        (
            &["--liveness-path", "/alive"],
            &[],
            &["liveness_path", "worker_concurrency"],
        ),
        // liveness_* without liveness_path: checked all the same.
        (
            &[],
            &[("CURFEW_LIVENESS_FAILURES", "-4")],
            &["liveness_failures", "CURFEW_LIVENESS_FAILURES"],
        ),
        (
            &["--liveness-interval", "soon"],
            &[],
            &["liveness_interval", "not a duration"],
        ),
        // 0 made every stop a SIGKILL and every shutdown "forced".
        (
            &["--worker-stop-timeout", "0"],
            &[],
            &["worker_stop_timeout", "greater than zero"],
        ),
        // Reserved once, read by nothing.
        (&[], &[("CURFEW_LOG", "debug")], &["CURFEW_LOG_LEVEL"]),
        // Port 0 would bind a random port.
        (&[], &[("PORT", "0")], &["PORT", "1-65535"]),
        // Every entry is checked, also after "*".
        (
            &["--forwarded-allow-ips", "*,10.0.0.0/33"],
            &[],
            &["forwarded_allow_ips", "10.0.0.0/33"],
        ),
        // Less than a byte is not "no limit".
        (
            &[],
            &[("CURFEW_MAX_REQUEST_BODY", "0.5")],
            &["max_request_body", "less than one byte"],
        ),
        (
            &["--max-memory", "0.5B"],
            &[],
            &["max_memory", "less than one byte"],
        ),
    ];
    for (flags, env, wanted) in cases {
        let mut args = vec!["serve"];
        args.extend_from_slice(flags);
        args.extend(["--", TESTWORKER]);
        let (code, err) = run(&args, env, None);
        assert_eq!(code, 78, "{flags:?} {env:?}: {err}");
        for w in *wanted {
            assert!(err.contains(w), "{flags:?} {env:?}: {w:?} missing: {err}");
        }
    }
}

/// A hook or a command job that runs curfew (`curfew check`, `curfew jobs`
/// from `on_exit`) has the variables curfew set for it: they are not
/// "unknown" settings (the run fails on the bad worker count instead).
#[test]
fn variables_curfew_sets_for_its_children_are_not_settings() {
    for env in [
        &[
            ("CURFEW_HOOK", "on_exit"),
            ("CURFEW_HOOK_EVENT", "on_exit"),
            ("CURFEW_HOOK_EXIT_CODE", "0"),
        ][..],
        &[
            ("CURFEW_JOB_ID", "7"),
            ("CURFEW_JOB_ATTEMPT", "1"),
            ("CURFEW_JOB_MAX_ATTEMPTS", "20"),
            ("CURFEW_JOB_KIND", "k"),
            ("CURFEW_JOB_QUEUE", "q"),
        ][..],
    ] {
        let (code, err) = run(&["serve", "-w", "0", "--", TESTWORKER], env, None);
        assert_eq!(code, 78, "{err}");
        assert!(
            err.contains("`workers`") && !err.contains("unknown environment variable"),
            "{err}"
        );
    }
}

/// A setting given in an environment variable that is not UTF-8 is an
/// error naming the variable (it used to be dropped: CURFEW_CHDIR=/srv/caf\xe9
/// ran the workers in the current directory).
#[test]
fn a_variable_that_is_not_utf8_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(CURFEW)
        .args(["serve", "--", TESTWORKER])
        .env_remove("WEB_CONCURRENCY")
        .env_remove("PORT")
        .env("CURFEW_CHDIR", std::ffi::OsStr::from_bytes(b"/srv/caf\xe9"))
        .output()
        .expect("run curfew");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("CURFEW_CHDIR") && err.contains("UTF-8"),
        "{err}"
    );
}

/// gunicorn's FORWARDED_ALLOW_IPS is a comma list; CURFEW_FORWARDED_ALLOW_IPS
/// takes one too (it was refused as one address), and every entry is checked.
#[test]
fn forwarded_allow_ips_from_the_environment_takes_a_comma_list() {
    let (code, err) = run(
        &["serve", "-w", "0", "--", TESTWORKER],
        &[("CURFEW_FORWARDED_ALLOW_IPS", "10.0.0.1,10.0.0.2")],
        None,
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("`workers`"), "the list passed: {err}");
    let (code, err) = run(
        &["serve", "--", TESTWORKER],
        &[("CURFEW_FORWARDED_ALLOW_IPS", "10.0.0.1,10.0.0.0/33")],
        None,
    );
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("forwarded_allow_ips") && err.contains("10.0.0.0/33"),
        "{err}"
    );
}

/// A timeout nothing can succeed in (`--timeout 1ms` made every request a
/// 504 and, on sync workers, aborted the worker that served it) is refused
/// with the least value; one that rounds to 0 is not taken as "off".
#[test]
fn a_timeout_too_short_to_succeed_is_refused() {
    for (flag, value, wanted) in [
        ("--timeout", "1ms", "at least 100ms"),
        ("--header-timeout", "1ns", "at least 100ms"),
        ("--timeout", "1e-10", "less than a nanosecond"),
    ] {
        let (code, err) = run(&["serve", flag, value, "--", TESTWORKER], &[], None);
        assert_eq!(code, 78, "{flag} {value}: {err}");
        assert!(
            err.contains(&flag[2..].replace('-', "_")) && err.contains(wanted),
            "{flag} {value}: {err}"
        );
    }
}

/// The load generator's `--rate` is checked like any setting: a rate whose
/// period no `Duration` holds (1e-300 per second) is a usage error, not a
/// panic.
#[test]
fn load_generator_refuses_a_rate_out_of_range() {
    let out = Command::new(LOAD)
        .args(["--url", "http://127.0.0.1:9", "--duration-ms", "10"])
        .args(["--rate", "1e-300"])
        .output()
        .expect("run curfew-load");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--rate") && err.contains("out of range") && !err.contains("panicked"),
        "{err}"
    );
}

/// The value of WEB_CONCURRENCY wins over the file's `workers`, so its
/// error names WEB_CONCURRENCY (it blamed the file, which said 4).
#[test]
fn web_concurrency_error_names_the_variable_not_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("curfew.toml"),
        format!("command = {TESTWORKER:?}\nworkers = 4\n"),
    )
    .expect("write");
    let (code, err) = run(&["serve"], &[("WEB_CONCURRENCY", "0")], Some(dir.path()));
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("`workers` = 0 in environment variable WEB_CONCURRENCY"),
        "{err}"
    );
}

/// Flags and settings that would be accepted and then ignored are refused:
/// a listing filter with a `curfew jobs` subcommand, `--pg-schema` with a
/// SQLite store (usage, exit 2), `reload_batch` without a rolling reload
/// (exit 78).
#[test]
fn ignored_flags_and_settings_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let (code, err) = run(
        &["jobs", "-q", "mail", "prune", "--store", &store],
        &[],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--queue") && err.contains("prune"), "{err}");
    let (code, err) = run(
        &["jobs", "--store", &store, "--pg-schema", "app"],
        &[],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--pg-schema") && err.contains("SQLite"),
        "{err}"
    );
    let (code, err) = run(
        &["serve", "--reload-batch", "2", "--", TESTWORKER],
        &[],
        None,
    );
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("reload_batch") && err.contains("rolling"),
        "{err}"
    );
}

/// A value of the wrong type names the key and what it takes, not an
/// internal type ("untagged enum RawDuration").
#[test]
fn a_value_of_the_wrong_type_says_what_the_key_takes() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("curfew.toml"),
        "command = \"true\"\ngraceful_timeout = true\n",
    )
    .expect("write");
    let (code, err) = run(&["serve"], &[], Some(dir.path()));
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("graceful_timeout")
            && err.contains("a number of seconds or a string like \"30s\"")
            && !err.contains("untagged"),
        "{err}"
    );
}
