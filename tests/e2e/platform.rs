//! `curfew check` and `curfew gen` through the real binary: generated files
//! pass `curfew check` (and `systemd-analyze verify`, where it exists), a
//! misfit exits 1, and `curfew serve` warns at start on a platform it
//! recognises from its environment.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

fn curfew(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(CURFEW)
        .args(args)
        .current_dir(dir)
        .env_remove("CURFEW_CONFIG")
        .output()
        .expect("run curfew");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn generated_files_pass_check_and_systemd_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("curfew.toml"),
        "command = \"sh\"\ngraceful_timeout = \"50s\"\nadmin_bind = \"0.0.0.0:9000\"\n",
    )
    .expect("config");
    for (target, file) in [
        ("systemd", "app.service"),
        ("systemd-socket", "app.socket"),
        ("kubernetes", "deploy.yaml"),
        ("compose", "compose.yaml"),
        ("dockerfile", "Dockerfile"),
        ("fly", "fly.toml"),
        ("nomad", "app.nomad"),
    ] {
        let (code, text, err) = curfew(dir.path(), &["gen", target]);
        assert_eq!(code, 0, "gen {target}: {err}");
        std::fs::write(dir.path().join(file), &text).expect("write");
        if target == "systemd-socket" {
            continue;
        }
        let (code, out, err) = curfew(dir.path(), &["check", file]);
        assert_eq!(code, 0, "check {file}:\n{text}\n{out}{err}");
        assert!(out.contains("curfew fits this platform."), "{out}");
        assert!(!out.contains("MISFIT"), "{out}");
    }
    // 0 + 50 + 5 + 2 = 57 s.
    let unit = std::fs::read_to_string(dir.path().join("app.service")).expect("unit");
    assert!(unit.contains("\nTimeoutStopSec=57\n"), "{unit}");
    assert!(unit.contains("\nKillMode=mixed\n") && unit.contains("\nType=notify\n"));
    let Ok(verify) = Command::new("systemd-analyze")
        .args(["verify", "app.service", "app.socket"])
        .current_dir(dir.path())
        .output()
    else {
        eprintln!("systemd-analyze is not installed: not verified");
        return;
    };
    assert!(
        verify.status.success() && verify.stderr.is_empty() && verify.stdout.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn check_exits_1_on_a_misfit_and_reports_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("curfew.toml"),
        "command = \"sh\"\ndrain_delay = \"5s\"\ngraceful_timeout = \"30s\"\n",
    )
    .expect("config");
    std::fs::write(
        dir.path().join("fly.toml"),
        "app = \"a\"\nkill_timeout = 10\n",
    )
    .expect("fly");
    // Found by its name in the current directory.
    let (code, out, _) = curfew(dir.path(), &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[MISFIT] budget: kill_timeout 10s < curfew's stop budget 42s"),
        "{out}"
    );
    let (code, out, _) = curfew(dir.path(), &["check", "--json", "fly.toml"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["platform"], "fly");
    assert_eq!(report["budget"]["total"], 42.0);
    assert_eq!(report["findings"][0]["level"], "misfit");
    // Unknown platform, unreadable file: usage and config errors.
    let (code, _, err) = curfew(dir.path(), &["check", "--platform", "mesos"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown platform"), "{err}");
    let (code, _, err) = curfew(
        dir.path(),
        &["check", "--platform", "systemd", "missing.service"],
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("cannot read missing.service"), "{err}");
}

/// On Heroku (DYNO set) a 30 s graceful_timeout (budget 37 s) exceeds the
/// 30 s window: `curfew serve` says so at start, and serves anyway.
#[test]
fn serve_warns_when_the_platform_in_its_environment_does_not_fit() {
    let mut opts = Opts::testworker(&["-w", "1", "--graceful-timeout", "30s"], &[]);
    opts.env.push(("DYNO".into(), "web.1".into()));
    let mut c = Curfew::start(opts);
    let line = c.wait_log("platform=heroku check=\"budget\"", Duration::from_secs(5));
    assert!(
        line.contains(" WARN ") && line.contains("30s < curfew's stop budget 37s"),
        "{line}"
    );
    c.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(20)), 0);
}

/// `curfew check` and `curfew gen` run where the app is not installed (CI,
/// a laptop): a command, chdir, token file or access log directory that
/// exists only in the deployment is not required; a bad value still is.
#[test]
fn check_and_gen_do_not_need_the_app_installed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "command = \"uvicorn-not-installed-here app:app --fd 3\"\nchdir = \"/app-not-here\"\nadmin_bind = \"0.0.0.0:9000\"\nadmin_token_file = \"/run/secrets/not-here\"\naccess_log = \"/var/log/not-here/access.log\"\n";
    std::fs::write(dir.path().join("curfew.toml"), config).expect("config");
    let (code, text, err) = curfew(dir.path(), &["gen", "kubernetes"]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(dir.path().join("deploy.yaml"), &text).expect("write");
    let (code, out, err) = curfew(dir.path(), &["check", "deploy.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("command not found"), "{err}");
    std::fs::write(
        dir.path().join("curfew.toml"),
        format!("{config}workers = 0\n"),
    )
    .expect("config");
    let (code, _, err) = curfew(dir.path(), &["gen", "kubernetes"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("`workers`"), "{err}");
}
