use std::path::Path;

use super::*;
use crate::config::{Sources, load, raw::RawConfig};

fn config(toml_text: &str) -> Config {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("curfew.toml");
    std::fs::write(&path, format!("command = \"sh\"\n{toml_text}")).expect("write");
    load(Sources {
        config_file: Some(path),
        env: vec![],
        flags: RawConfig::default(),
        cwd: dir.path().into(),
    })
    .expect("valid config")
}

fn check_text(cfg: &Config, platform: Platform, name: &str, text: &str) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    check(cfg, platform, Some(&path)).expect("check")
}

fn levels(r: &Report, check: &str) -> Vec<Level> {
    r.findings
        .iter()
        .filter(|f| f.check == check)
        .map(|f| f.level)
        .collect()
}

fn options() -> generate::GenOptions {
    generate::GenOptions {
        name: "app".into(),
        exe: "/usr/local/bin/curfew".into(),
        config: Some("/etc/app/curfew.toml".into()),
        config_in_image: None,
        workdir: Some("/srv/app".into()),
        image: "registry.example/app:1".into(),
        notify_reload: false,
    }
}

/// What `curfew gen` writes, `curfew check` passes, for every platform
/// with a file, with the defaults and with a longer budget.
#[test]
fn generated_files_pass_check() {
    for extra in [
        "",
        "graceful_timeout = \"2m\"\nadmin_bind = \"0.0.0.0:9000\"\n",
    ] {
        let cfg = config(extra);
        for (target, platform, file) in [
            (GenTarget::Systemd, Platform::Systemd, "app.service"),
            (GenTarget::Kubernetes, Platform::Kubernetes, "deploy.yaml"),
            (GenTarget::Compose, Platform::Compose, "compose.yaml"),
            (GenTarget::Fly, Platform::Fly, "fly.toml"),
            (GenTarget::Nomad, Platform::Nomad, "app.nomad"),
            (GenTarget::Dockerfile, Platform::Docker, "Dockerfile"),
        ] {
            let text = generate(&cfg, target, &options()).expect("generate");
            let r = check_text(&cfg, platform, file, &text);
            assert!(r.fits(), "{platform} ({extra:?}):\n{text}\n{}", r.text());
            assert_eq!(Platform::from_path(Path::new(file)), Some(platform));
        }
    }
}

#[test]
fn systemd_units() {
    let cfg = config(""); // budget 0 + 20 + 5 + 2 = 27 s
    assert_eq!(Budget::of(&cfg).total_secs(), 27);
    // The README's old snippet: the inline comment makes systemd ignore the
    // line (90 s applies, which fits), and control-group kills the workers.
    let r = check_text(
        &cfg,
        Platform::Systemd,
        "a.service",
        "[Service]\nExecStart=/usr/bin/curfew serve\nTimeoutStopSec=45   # comment\n",
    );
    assert!(!r.fits(), "{}", r.text());
    assert_eq!(levels(&r, "budget"), [Level::Misfit], "{}", r.text());
    assert_eq!(levels(&r, "kill_mode"), [Level::Misfit]);
    assert_eq!(levels(&r, "notify"), [Level::Warn]);
    assert_eq!(levels(&r, "reload"), [Level::Warn]);
    // Too short.
    let r = check_text(
        &cfg,
        Platform::Systemd,
        "a.service",
        "[Service]\nType=notify\nKillMode=mixed\nTimeoutStopSec=20\nExecReload=/bin/kill -HUP $MAINPID\n",
    );
    assert_eq!(levels(&r, "budget"), [Level::Misfit], "{}", r.text());
    assert!(
        r.text()
            .contains("TimeoutStopSec 20s < curfew's stop budget 27s"),
        "{}",
        r.text()
    );
    // The default 90 s fits; SIGQUIT does not.
    let r = check_text(
        &cfg,
        Platform::Systemd,
        "a.service",
        "[Service]\nType=notify-reload\nKillMode=mixed\nKillSignal=SIGQUIT\n",
    );
    assert_eq!(levels(&r, "budget"), [Level::Ok]);
    assert_eq!(levels(&r, "signal"), [Level::Misfit]);
    assert!(levels(&r, "reload").is_empty());
}

#[test]
fn kubernetes_manifests() {
    // graceful_timeout 30 s: a budget of 37 s, over Kubernetes' default.
    let cfg = config("admin_bind = \"0.0.0.0:9000\"\ngraceful_timeout = \"30s\"\n");
    let deploy = |grace: &str, prestop: &str, probe: &str, command: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n{grace}      containers:\n        - name: app\n          image: x\n          command: {command}\n{prestop}{probe}"
        )
    };
    let probe = "          readinessProbe:\n            httpGet: {path: /readyz, port: 9000}\n";
    let r = check_text(
        &cfg,
        Platform::Kubernetes,
        "k.yaml",
        &deploy(
            "      terminationGracePeriodSeconds: 60\n",
            "",
            probe,
            "[curfew, serve]",
        ),
    );
    assert!(r.fits(), "{}", r.text());
    // The default 30 s is short of 37 s; a preStop sleep eats into 40 s.
    let r = check_text(
        &cfg,
        Platform::Kubernetes,
        "k.yaml",
        &deploy("", "", probe, "[curfew]"),
    );
    assert_eq!(levels(&r, "budget"), [Level::Misfit], "{}", r.text());
    let r = check_text(
        &cfg,
        Platform::Kubernetes,
        "k.yaml",
        &deploy(
            "      terminationGracePeriodSeconds: 40\n",
            "          lifecycle:\n            preStop:\n              exec: {command: [sleep, \"10\"]}\n",
            probe,
            "[curfew]",
        ),
    );
    assert_eq!(levels(&r, "budget"), [Level::Misfit], "{}", r.text());
    assert_eq!(levels(&r, "prestop"), [Level::Warn]);
    // Probe elsewhere, on the wrong port; a shell without exec.
    let r = check_text(
        &cfg,
        Platform::Kubernetes,
        "k.yaml",
        &deploy(
            "      terminationGracePeriodSeconds: 60\n",
            "",
            "          readinessProbe:\n            httpGet: {path: /readyz, port: 8080}\n",
            "[sh, -c, \"curfew serve\"]",
        ),
    );
    assert_eq!(
        levels(&r, "readiness"),
        [Level::Ok, Level::Misfit],
        "{}",
        r.text()
    );
    assert_eq!(levels(&r, "shell"), [Level::Misfit]);
    // Not YAML, or no workload: an error.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("k.yaml");
    std::fs::write(&p, "kind: Service\n").expect("write");
    assert!(check(&cfg, Platform::Kubernetes, Some(&p)).is_err());
}

#[test]
fn compose_dockerfile_fly_render_heroku_nomad() {
    let cfg = config("");
    let r = check_text(
        &cfg,
        Platform::Compose,
        "compose.yaml",
        "services:\n  db:\n    image: postgres\n  web:\n    image: app\n    command: [curfew, serve]\n",
    );
    assert_eq!(
        levels(&r, "budget"),
        [Level::Misfit],
        "only the curfew service, default 10 s: {}",
        r.text()
    );
    let r = check_text(
        &cfg,
        Platform::Compose,
        "compose.yaml",
        "services:\n  web:\n    command: curfew serve\n    stop_grace_period: 1m30s\n    stop_signal: SIGQUIT\n",
    );
    assert_eq!(levels(&r, "budget"), [Level::Ok], "{}", r.text());
    assert_eq!(levels(&r, "signal"), [Level::Misfit]);

    let r = check_text(
        &cfg,
        Platform::Docker,
        "Dockerfile",
        "FROM python:3.12\nSTOPSIGNAL SIGTERM\nCMD curfew serve -- uvicorn app:app --fd 3\n",
    );
    assert_eq!(levels(&r, "shell"), [Level::Misfit], "{}", r.text());
    assert_eq!(levels(&r, "budget"), [Level::Warn]);
    let r = check_text(
        &cfg,
        Platform::Docker,
        "Dockerfile",
        "FROM x AS build\nCMD make\nFROM python:3.12\nENTRYPOINT [\"curfew\", \"serve\"]\n",
    );
    assert!(r.fits(), "{}", r.text());

    // Fly: SIGINT and 5 s by default.
    let r = check_text(&cfg, Platform::Fly, "fly.toml", "app = \"a\"\n");
    assert_eq!(levels(&r, "budget"), [Level::Misfit], "{}", r.text());
    assert_eq!(levels(&r, "signal"), [Level::Ok]);
    let r = check_text(&cfg, Platform::Fly, "fly.toml", "kill_timeout = \"60s\"\n");
    assert!(r.fits(), "{}", r.text());

    // graceful_timeout 30 s: a budget of 37 s, over the 30 s defaults.
    let long = config("graceful_timeout = \"30s\"\n");
    let r = check_text(
        &long,
        Platform::Render,
        "render.yaml",
        "services:\n  - type: web\n    name: a\n    maxShutdownDelaySeconds: 60\n  - type: web\n    name: b\n",
    );
    assert_eq!(
        levels(&r, "budget"),
        [Level::Ok, Level::Misfit],
        "{}",
        r.text()
    );

    let r = check_text(&long, Platform::Heroku, "Procfile", "web: curfew serve\n");
    assert_eq!(
        levels(&r, "budget"),
        [Level::Misfit],
        "37 s > 30 s: {}",
        r.text()
    );
    // The defaults (27 s) fit Heroku's 30 s.
    assert!(check_text(&cfg, Platform::Heroku, "Procfile", "web: curfew serve\n").fits());

    let r = check_text(
        &cfg,
        Platform::Nomad,
        "a.nomad",
        "job \"a\" {\n  group \"g\" {\n    task \"t\" {\n      kill_timeout = \"45s\"\n      kill_signal = \"SIGTERM\"\n    }\n  }\n}\n",
    );
    assert!(r.fits(), "{}", r.text());
}

#[test]
fn jobs_longer_than_the_drain_warn() {
    let cfg = config("[jobs]\n[jobs.queues.default]\n[jobs.queues.slow]\ntimeout = \"10m\"\n");
    let r = check(&cfg, Platform::Systemd, None).expect("check");
    let jobs: Vec<_> = r.findings.iter().filter(|f| f.check == "jobs").collect();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].level, Level::Warn);
    assert!(jobs[0].message.contains("\"slow\""), "{}", jobs[0].message);
}

#[test]
fn platform_from_env_and_startup_warning() {
    let env = |k: &str| vec![(k.to_owned(), "1".to_owned())];
    assert_eq!(Platform::from_env(&env("DYNO")), Some(Platform::Heroku));
    assert_eq!(
        Platform::from_env(&env("FLY_APP_NAME")),
        Some(Platform::Fly)
    );
    assert_eq!(
        Platform::from_env(&env("KUBERNETES_SERVICE_HOST")),
        Some(Platform::Kubernetes)
    );
    assert_eq!(
        Platform::from_env(&env("INVOCATION_ID")),
        Some(Platform::Systemd)
    );
    assert_eq!(Platform::from_env(&env("RENDER")), Some(Platform::Render));
    assert_eq!(Platform::from_env(&env("HOME")), None);
    let cfg = config("graceful_timeout = \"30s\"\n"); // 37 s > Heroku's 30 s
    let (p, findings) = startup(&cfg, &env("DYNO")).expect("heroku");
    assert_eq!(p, Platform::Heroku);
    assert_eq!(findings[0].level, Level::Misfit);
    // The defaults fit.
    let (_, findings) = startup(&config(""), &env("DYNO")).expect("heroku");
    assert_eq!(findings[0].level, Level::Ok);
    assert!(startup(&cfg, &env("HOME")).is_none());
}

/// Generated files fit where they run: a container's command names the
/// config by its path in the image (never this host's), compose replaces
/// the image's ENTRYPOINT, a loopback bind or admin_bind (the defaults) is
/// widened in the container's env, and the systemd unit runs where `gen`
/// ran. `check` finds a loopback address a probe or a published port
/// cannot reach.
#[test]
fn generated_files_run_in_their_place() {
    let cfg = config("admin_bind = \"127.0.0.1:9000\"\n");
    let mut o = options();
    o.config_in_image = Some("deploy/curfew.toml".into());
    let k8s = generate(&cfg, GenTarget::Kubernetes, &o).expect("generate");
    assert!(
        k8s.contains(r#"command: ["curfew","serve","--config","deploy/curfew.toml"]"#),
        "{k8s}"
    );
    assert!(!k8s.contains("/etc/app"), "{k8s}");
    assert!(
        k8s.contains("name: CURFEW_BIND\n              value: \"0.0.0.0:8000\"")
            && k8s.contains("name: CURFEW_ADMIN_BIND\n              value: \"0.0.0.0:9000\""),
        "{k8s}"
    );
    let compose = generate(&cfg, GenTarget::Compose, &o).expect("generate");
    assert!(compose.contains("entrypoint: [\"curfew\""), "{compose}");
    assert!(
        !compose
            .lines()
            .any(|l| l.trim_start().starts_with("command:")),
        "{compose}"
    );
    assert!(
        compose.contains("CURFEW_BIND: \"0.0.0.0:8000\""),
        "{compose}"
    );
    let docker = generate(&cfg, GenTarget::Dockerfile, &o).expect("generate");
    assert!(docker.contains("ENV PORT=8000"), "{docker}");
    assert!(!docker.contains("CURFEW_BIND"), "{docker}");
    o.config_in_image = None;
    let k8s = generate(&cfg, GenTarget::Kubernetes, &o).expect("generate");
    assert!(k8s.contains(r#"command: ["curfew","serve"]"#), "{k8s}");
    let unit = generate(&cfg, GenTarget::Systemd, &o).expect("generate");
    assert!(unit.contains("WorkingDirectory=/srv/app\n"), "{unit}");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/curfew serve --config /etc/app/curfew.toml"),
        "{unit}"
    );

    // check: the same manifest without the env is a misfit twice.
    let bare = k8s
        .lines()
        .filter(|l| {
            !l.contains("CURFEW_") && !l.contains("value:") && !l.trim_start().starts_with("env:")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let r = check_text(&cfg, Platform::Kubernetes, "k.yaml", &bare);
    assert_eq!(levels(&r, "bind"), [Level::Misfit], "{}", r.text());
    assert!(
        levels(&r, "readiness").contains(&Level::Misfit),
        "{}",
        r.text()
    );
    let r = check_text(&cfg, Platform::Kubernetes, "k.yaml", &k8s);
    assert!(r.fits(), "{}", r.text());
}

/// `TimeoutSec=` sets the stop timeout too; the last of the two wins.
#[test]
fn systemd_timeout_sec_and_timeout_stop_sec_in_order() {
    let cfg = config(""); // budget 27 s
    let unit = |lines: &str| {
        format!("[Service]\nExecStart=/usr/bin/curfew serve\nKillMode=mixed\n{lines}")
    };
    let r = check_text(
        &cfg,
        Platform::Systemd,
        "a.service",
        &unit("TimeoutStopSec=60\nTimeoutSec=10\n"),
    );
    assert_eq!(levels(&r, "budget"), [Level::Misfit], "{}", r.text());
    let r = check_text(
        &cfg,
        Platform::Systemd,
        "a.service",
        &unit("TimeoutSec=10\nTimeoutStopSec=60\n"),
    );
    assert_eq!(levels(&r, "budget"), [Level::Ok], "{}", r.text());
}
