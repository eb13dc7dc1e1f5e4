//! `curfew check`: each platform's file read for what decides a graceful
//! stop, compared with curfew's configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use super::{
    Budget, Finding, Level, Platform, PlatformError, Report, judge_budget, judge_jobs,
    judge_signal, show, timespan,
};
use crate::config::{BindAddr, Config};

/// Compares `cfg` with `platform`'s file at `file` (or, without one, with
/// the platform's defaults).
pub fn check(
    cfg: &Config,
    platform: Platform,
    file: Option<&Path>,
) -> Result<Report, PlatformError> {
    let budget = Budget::of(cfg);
    let text = match file {
        Some(path) => {
            Some(
                std::fs::read_to_string(path).map_err(|source| PlatformError::Read {
                    path: path.to_path_buf(),
                    source,
                })?,
            )
        }
        None => None,
    };
    let path = file.map(Path::to_path_buf).unwrap_or_default();
    let ctx = Ctx {
        cfg,
        budget: &budget,
        path: &path,
    };
    let mut findings = match (platform, text.as_deref()) {
        (p, None) => defaults_only(&ctx, p),
        (Platform::Systemd, Some(t)) => systemd(&ctx, t),
        (Platform::Kubernetes, Some(t)) => kubernetes(&ctx, t)?,
        (Platform::Compose, Some(t)) => compose(&ctx, t)?,
        (Platform::Docker, Some(t)) => dockerfile(&ctx, t),
        (Platform::Fly, Some(t)) => fly(&ctx, t)?,
        (Platform::Heroku, Some(t)) => procfile(&ctx, t),
        (Platform::Render, Some(t)) => render(&ctx, t)?,
        (Platform::Nomad, Some(t)) => nomad(&ctx, t),
    };
    findings.extend(judge_jobs(cfg));
    Ok(Report {
        platform,
        file: file.map(Path::to_path_buf),
        budget,
        findings,
    })
}

struct Ctx<'a> {
    cfg: &'a Config,
    budget: &'a Budget,
    path: &'a PathBuf,
}

impl Ctx<'_> {
    fn parse_err(&self, message: impl Into<String>) -> PlatformError {
        PlatformError::Parse {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    /// A duration setting: parsed, or a misfit saying the platform will
    /// not read it either.
    fn grace(&self, setting: &str, value: Option<&str>, default: Duration) -> Finding {
        match value.map(timespan::parse) {
            None => judge_budget(
                self.budget,
                default,
                &format!("{setting} (not set: the default)"),
            ),
            Some(Ok(None)) => Finding::new(
                "budget",
                Level::Ok,
                format!("{setting} is infinity: never SIGKILLed"),
            ),
            Some(Ok(Some(d))) => judge_budget(self.budget, d, setting),
            Some(Err(e)) => Finding::new(
                "budget",
                Level::Misfit,
                format!(
                    "{setting}: {e}; the platform rejects or ignores it and uses {} instead{}",
                    show(default),
                    match judge_budget(self.budget, default, setting).level {
                        Level::Misfit => ", which is shorter than curfew's stop budget",
                        _ => "",
                    }
                ),
            ),
        }
    }
}

fn defaults_only(ctx: &Ctx<'_>, p: Platform) -> Vec<Finding> {
    vec![
        judge_budget(
            ctx.budget,
            p.default_grace(),
            &format!("{p}'s default {}", p.grace_setting()),
        ),
        judge_signal(p.default_signal(), &format!("{p} (by default)")),
        Finding::new(
            "file",
            Level::Warn,
            format!(
                "no {p} file given: its defaults were assumed; pass the file to check the real values"
            ),
        ),
    ]
}

/// A systemd unit's `[Service]` section.
fn systemd(ctx: &Ctx<'_>, text: &str) -> Vec<Finding> {
    let mut section = String::new();
    let mut keys: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_owned();
            continue;
        }
        if section == "Service"
            && let Some((k, v)) = line.split_once('=')
        {
            keys.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    // The last assignment wins, as in systemd.
    let get = |k: &str| {
        keys.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    let mut out = Vec::new();
    // `TimeoutSec=` sets the stop timeout too: whichever of the two comes
    // last wins.
    let (setting, value) = keys
        .iter()
        .rev()
        .find(|(n, _)| n == "TimeoutStopSec" || n == "TimeoutSec")
        .map_or(("TimeoutStopSec", None), |(n, v)| {
            let setting = if n == "TimeoutSec" {
                "TimeoutSec"
            } else {
                "TimeoutStopSec"
            };
            (setting, Some(v.as_str()))
        });
    out.push(ctx.grace(setting, value, Platform::Systemd.default_grace()));
    out.push(match get("KillMode").unwrap_or("control-group") {
        "mixed" => Finding::new(
            "kill_mode",
            Level::Ok,
            "KillMode=mixed: SIGTERM to curfew only; curfew stops its workers",
        ),
        "process" => Finding::new(
            "kill_mode",
            Level::Ok,
            "KillMode=process: SIGTERM to curfew only (prefer mixed: a final SIGKILL then reaches every process)",
        ),
        "control-group" => Finding::new(
            "kill_mode",
            Level::Misfit,
            "KillMode=control-group (the default): systemd sends SIGTERM to every worker at once, cutting their requests; set KillMode=mixed",
        ),
        other => Finding::new(
            "kill_mode",
            Level::Warn,
            format!("KillMode={other}: set KillMode=mixed"),
        ),
    });
    out.push(judge_signal(
        get("KillSignal").unwrap_or("SIGTERM"),
        "KillSignal",
    ));
    let ty = get("Type").unwrap_or("simple");
    out.push(match ty {
        "notify" | "notify-reload" => Finding::new(
            "notify",
            Level::Ok,
            format!("Type={ty}: systemd waits for curfew's READY=1 (every worker answering)"),
        ),
        other => Finding::new(
            "notify",
            Level::Warn,
            format!(
                "Type={other}: systemd counts the service started before any worker answers; use Type=notify"
            ),
        ),
    });
    if ty != "notify-reload" && get("ExecReload").is_none() {
        out.push(Finding::new(
            "reload",
            Level::Warn,
            "no ExecReload: `systemctl reload` fails; add ExecReload=/bin/kill -HUP $MAINPID",
        ));
    }
    out
}

fn load_yaml(ctx: &Ctx<'_>, text: &str) -> Result<Vec<Yaml>, PlatformError> {
    YamlLoader::load_from_str(text).map_err(|e| ctx.parse_err(format!("not valid YAML: {e}")))
}

/// A shell as PID 1 (`sh -c "curfew serve …"` without `exec`) does not
/// pass SIGTERM on.
fn judge_shell(argv: &[String], from: &str) -> Option<Finding> {
    let first = argv.first()?;
    let shell = ["sh", "/bin/sh", "bash", "/bin/bash", "/usr/bin/env sh"].contains(&first.as_str());
    if !shell || argv.get(1).map(String::as_str) != Some("-c") {
        return None;
    }
    let script = argv.get(2).map(String::as_str).unwrap_or("").trim_start();
    Some(if script.starts_with("exec ") {
        Finding::new(
            "shell",
            Level::Ok,
            format!("{from} runs a shell that execs curfew: signals reach curfew"),
        )
    } else {
        Finding::new(
            "shell",
            Level::Misfit,
            format!(
                "{from} runs `{} -c` without `exec`: the shell gets the stop signal and does not pass it on; start the script with `exec curfew …` or run curfew directly",
                first
            ),
        )
    })
}

fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(a) => a
            .iter()
            .filter_map(|v| match v {
                Yaml::String(s) => Some(s.clone()),
                Yaml::Integer(i) => Some(i.to_string()),
                _ => None,
            })
            .collect(),
        Yaml::String(s) => vec![s.clone()],
        _ => vec![],
    }
}

fn yaml_secs(y: &Yaml) -> Option<String> {
    match y {
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Real(r) => Some(r.clone()),
        Yaml::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Kubernetes workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet,
/// Job, Pod): each pod spec's grace (minus a `preStop` sleep, which runs
/// inside it), the containers' readiness probes and commands.
fn kubernetes(ctx: &Ctx<'_>, text: &str) -> Result<Vec<Finding>, PlatformError> {
    let docs = load_yaml(ctx, text)?;
    let mut out = Vec::new();
    for doc in docs.iter().flat_map(|d| match d {
        Yaml::Hash(_) if d["kind"].as_str() == Some("List") => {
            d["items"].as_vec().cloned().unwrap_or_default()
        }
        _ => vec![d.clone()],
    }) {
        let kind = doc["kind"].as_str().unwrap_or("");
        let name = doc["metadata"]["name"].as_str().unwrap_or("?");
        let spec = match kind {
            "Pod" => &doc["spec"],
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                &doc["spec"]["template"]["spec"]
            }
            _ => continue,
        };
        let what = format!("{kind}/{name}");
        let grace = match yaml_secs(&spec["terminationGracePeriodSeconds"]) {
            Some(v) => match timespan::parse(&v) {
                Ok(Some(d)) => d,
                _ => {
                    return Err(ctx.parse_err(format!(
                        "{what}: terminationGracePeriodSeconds {v:?} is not a number of seconds"
                    )));
                }
            },
            None => Platform::Kubernetes.default_grace(),
        };
        let Some(containers) = spec["containers"].as_vec() else {
            return Err(ctx.parse_err(format!("{what}: no containers")));
        };
        for c in containers {
            let cname = c["name"].as_str().unwrap_or("?");
            let prestop = prestop_sleep(&c["lifecycle"]["preStop"]);
            let setting = match prestop {
                Some(p) => format!(
                    "{what} terminationGracePeriodSeconds {} − preStop sleep {} (it runs inside the grace)",
                    show(grace),
                    show(p)
                ),
                None => format!("{what} terminationGracePeriodSeconds"),
            };
            out.push(judge_budget(
                ctx.budget,
                grace.saturating_sub(prestop.unwrap_or_default()),
                &setting,
            ));
            if prestop.is_some() {
                out.push(Finding::new(
                    "prestop",
                    Level::Warn,
                    format!("{what} container {cname}: a preStop sleep is not needed: curfew's drain_delay ({}) keeps serving while endpoints are removed", show(ctx.cfg.drain_delay)),
                ));
            }
            let probe = &c["readinessProbe"]["httpGet"];
            out.push(match probe["path"].as_str() {
                Some("/readyz") => Finding::new(
                    "readiness",
                    Level::Ok,
                    format!("{what} container {cname}: readiness probe on /readyz (not ready from the stop request on)"),
                ),
                Some(other) => Finding::new(
                    "readiness",
                    Level::Warn,
                    format!("{what} container {cname}: readiness probe on {other}, which the app answers while curfew drains; point it at /readyz on admin_bind"),
                ),
                None => Finding::new(
                    "readiness",
                    Level::Warn,
                    format!("{what} container {cname}: no HTTP readiness probe; add one on /readyz (admin_bind) so endpoints go as soon as the stop begins"),
                ),
            });
            if probe["path"].as_str() == Some("/readyz")
                && let Some(port) = probe["port"].as_i64()
                && !admin_port_is(ctx.cfg, port)
            {
                out.push(Finding::new(
                    "readiness",
                    Level::Misfit,
                    format!("{what} container {cname}: the readiness probe asks port {port}, but admin_bind is {}", admin_desc(ctx.cfg)),
                ));
            }
            // The kubelet probes the pod's IP and Services send there: a
            // loopback address is unreachable unless the container's env
            // widens it.
            let env_names: Vec<&str> = c["env"]
                .as_vec()
                .map(|v| v.iter().filter_map(|e| e["name"].as_str()).collect())
                .unwrap_or_default();
            if probe["path"].as_str() == Some("/readyz")
                && loopback(ctx.cfg.admin_bind.as_ref())
                && !env_names.contains(&"CURFEW_ADMIN_BIND")
            {
                out.push(Finding::new(
                    "readiness",
                    Level::Misfit,
                    format!("{what} container {cname}: admin_bind is {}, which the kubelet cannot reach on the pod's IP; set admin_bind = \"0.0.0.0:{}\" (or CURFEW_ADMIN_BIND in the container's env)", admin_desc(ctx.cfg), probe["port"].as_i64().unwrap_or(0)),
                ));
            }
            if c["ports"].as_vec().is_some_and(|p| !p.is_empty())
                && ctx.cfg.binds.iter().any(|b| loopback(Some(b)))
                && !env_names.contains(&"CURFEW_BIND")
            {
                out.push(Finding::new(
                    "bind",
                    Level::Misfit,
                    format!("{what} container {cname}: bind is {}, which Services and the pod's IP cannot reach; bind 0.0.0.0 (or set CURFEW_BIND in the container's env)", ctx.cfg.binds.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
                ));
            }
            let mut argv = strings(&c["command"]);
            argv.extend(strings(&c["args"]));
            out.extend(judge_shell(&argv, &format!("{what} container {cname}")));
        }
    }
    if out.is_empty() {
        return Err(
            ctx.parse_err("no Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or Pod found")
        );
    }
    Ok(out)
}

/// A TCP address on loopback (reachable only from inside the container).
fn loopback(bind: Option<&BindAddr>) -> bool {
    matches!(bind, Some(BindAddr::Tcp(a)) if a.ip().is_loopback())
}

fn admin_port_is(cfg: &Config, port: i64) -> bool {
    matches!(&cfg.admin_bind, Some(BindAddr::Tcp(a)) if i64::from(a.port()) == port)
}

fn admin_desc(cfg: &Config) -> String {
    cfg.admin_bind
        .as_ref()
        .map_or_else(|| "off".to_owned(), ToString::to_string)
}

/// A `preStop` hook's sleep: `exec: command: [sleep, N]` (or `sh -c "sleep
/// N"`) or `sleep: seconds: N`.
fn prestop_sleep(pre: &Yaml) -> Option<Duration> {
    if let Some(n) = pre["sleep"]["seconds"].as_i64() {
        return Some(Duration::from_secs(n.max(0) as u64));
    }
    let argv = strings(&pre["exec"]["command"]).join(" ");
    let at = argv.find("sleep ")?;
    let n = argv[at + 6..].split_whitespace().next()?;
    timespan::parse(n.trim_matches(|c| c == '"' || c == '\'' || c == ';'))
        .ok()
        .flatten()
}

/// A compose file: every service that runs curfew (or every service when
/// none names it).
fn compose(ctx: &Ctx<'_>, text: &str) -> Result<Vec<Finding>, PlatformError> {
    let docs = load_yaml(ctx, text)?;
    let services = docs
        .first()
        .and_then(|d| d["services"].as_hash())
        .ok_or_else(|| ctx.parse_err("no `services`"))?;
    let mentions = |s: &Yaml| {
        let mut all = strings(&s["command"]);
        all.extend(strings(&s["entrypoint"]));
        all.extend(strings(&s["image"]));
        all.iter().any(|a| a.contains("curfew"))
    };
    let any = services.values().any(mentions);
    let mut out = Vec::new();
    for (name, s) in services {
        if any && !mentions(s) {
            continue;
        }
        let name = name.as_str().unwrap_or("?");
        let grace = yaml_secs(&s["stop_grace_period"]);
        out.push(ctx.grace(
            &format!("service {name} stop_grace_period"),
            grace.as_deref(),
            Platform::Compose.default_grace(),
        ));
        if let Some(sig) = s["stop_signal"].as_str() {
            out.push(judge_signal(sig, &format!("service {name} stop_signal")));
        }
        for key in ["entrypoint", "command"] {
            out.extend(judge_shell(
                &strings(&s[key]),
                &format!("service {name} {key}"),
            ));
        }
        // Published ports reach the container's address, not its loopback.
        let env_sets = |var: &str| match &s["environment"] {
            Yaml::Hash(h) => h.contains_key(&Yaml::String(var.to_owned())),
            Yaml::Array(a) => a
                .iter()
                .filter_map(Yaml::as_str)
                .any(|e| e.split('=').next() == Some(var)),
            _ => false,
        };
        if s["ports"].as_vec().is_some_and(|p| !p.is_empty())
            && ctx.cfg.binds.iter().any(|b| loopback(Some(b)))
            && !env_sets("CURFEW_BIND")
        {
            out.push(Finding::new(
                "bind",
                Level::Misfit,
                format!("service {name}: bind is {}, which published ports cannot reach; bind 0.0.0.0 (or set CURFEW_BIND in its environment)", ctx.cfg.binds.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
            ));
        }
    }
    Ok(out)
}

/// A Dockerfile: STOPSIGNAL, the last ENTRYPOINT/CMD's form, and the
/// budget against `docker stop`'s 10 s.
fn dockerfile(ctx: &Ctx<'_>, text: &str) -> Vec<Finding> {
    let mut stopsignal = None;
    let mut entry: Option<(String, String)> = None;
    let mut cmd: Option<String> = None;
    // Continuation lines joined first.
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    for line in joined.lines() {
        let line = line.trim();
        let Some((word, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        match word.to_ascii_uppercase().as_str() {
            "FROM" => {
                // A new stage: only the last one counts.
                stopsignal = None;
                entry = None;
                cmd = None;
            }
            "STOPSIGNAL" => stopsignal = Some(rest.trim().to_owned()),
            "ENTRYPOINT" => entry = Some(("ENTRYPOINT".to_owned(), rest.trim().to_owned())),
            "CMD" => cmd = Some(rest.trim().to_owned()),
            _ => {}
        }
    }
    // The wait is `docker stop --time`'s, not the Dockerfile's: a budget
    // beyond the default is a warning with the number to give it.
    let mut wait = judge_budget(
        ctx.budget,
        Platform::Docker.default_grace(),
        "docker stop's default wait (10s)",
    );
    if wait.level == Level::Misfit {
        wait = Finding::new(
            "budget",
            Level::Warn,
            format!(
                "docker stop waits 10s by default, less than curfew's stop budget {}: run `docker stop --time {}` (or `docker run --stop-timeout {}`), or use compose's stop_grace_period",
                show(ctx.budget.total),
                ctx.budget.total_secs(),
                ctx.budget.total_secs()
            ),
        );
    }
    let mut out = vec![
        wait,
        judge_signal(
            stopsignal.as_deref().unwrap_or("SIGTERM"),
            if stopsignal.is_some() {
                "STOPSIGNAL"
            } else {
                "docker stop (no STOPSIGNAL)"
            },
        ),
    ];
    // The process that becomes PID 1: ENTRYPOINT if set, else CMD.
    let pid1 = entry.or_else(|| cmd.map(|c| ("CMD".to_owned(), c)));
    match pid1 {
        Some((word, form)) if !form.starts_with('[') => out.push(Finding::new(
            "shell",
            Level::Misfit,
            format!(
                "{word} in shell form (`{word} {form}`) runs `/bin/sh -c`, which does not pass SIGTERM on: use the exec form, {word} [\"curfew\", \"serve\", …]"
            ),
        )),
        Some((word, form)) => {
            let argv: Vec<String> = serde_json::from_str(&form).unwrap_or_default();
            out.extend(judge_shell(&argv, &word));
        }
        None => {}
    }
    out
}

/// `fly.toml`: `kill_timeout` (seconds or a duration) and `kill_signal`.
fn fly(ctx: &Ctx<'_>, text: &str) -> Result<Vec<Finding>, PlatformError> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| ctx.parse_err(e.to_string()))?;
    let timeout = doc.get("kill_timeout").map(|v| match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let signal = doc
        .get("kill_signal")
        .and_then(|v| v.as_str())
        .unwrap_or("SIGINT");
    Ok(vec![
        ctx.grace(
            "kill_timeout",
            timeout.as_deref(),
            Platform::Fly.default_grace(),
        ),
        judge_signal(signal, "kill_signal"),
    ])
}

/// A Procfile: Heroku's fixed 30 s, and SIGTERM to every process.
fn procfile(ctx: &Ctx<'_>, text: &str) -> Vec<Finding> {
    let mut out = vec![judge_budget(
        ctx.budget,
        Platform::Heroku.default_grace(),
        "Heroku's shutdown window (30s, fixed)",
    )];
    let web = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("web:").map(str::trim));
    match web {
        Some(cmd) if cmd.contains("curfew") => out.push(Finding::new(
            "signal",
            Level::Warn,
            "Heroku sends SIGTERM to every process of the dyno, the workers too: use an app server that finishes its requests on SIGTERM (uvicorn, gunicorn do)",
        )),
        Some(cmd) => out.push(Finding::new(
            "file",
            Level::Warn,
            format!("the web process does not run curfew: `{cmd}`"),
        )),
        None => out.push(Finding::new("file", Level::Warn, "no `web:` process")),
    }
    out
}

/// `render.yaml`: each service's `maxShutdownDelaySeconds`.
fn render(ctx: &Ctx<'_>, text: &str) -> Result<Vec<Finding>, PlatformError> {
    let docs = load_yaml(ctx, text)?;
    let services = docs
        .first()
        .and_then(|d| d["services"].as_vec())
        .ok_or_else(|| ctx.parse_err("no `services`"))?;
    Ok(services
        .iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap_or("?");
            ctx.grace(
                &format!("service {name} maxShutdownDelaySeconds"),
                yaml_secs(&s["maxShutdownDelaySeconds"]).as_deref(),
                Platform::Render.default_grace(),
            )
        })
        .collect())
}

/// A Nomad job (HCL): `kill_timeout` and `kill_signal`, read line by line.
fn nomad(ctx: &Ctx<'_>, text: &str) -> Vec<Finding> {
    let value = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
        })
    };
    vec![
        ctx.grace(
            "kill_timeout",
            value("kill_timeout").as_deref(),
            Platform::Nomad.default_grace(),
        ),
        judge_signal(
            value("kill_signal").as_deref().unwrap_or("SIGINT"),
            "kill_signal",
        ),
    ]
}
