//! `curfew gen`: platform files whose numbers agree with the configuration
//! (each grace at least curfew's stop budget, rounded up to a second), so
//! `curfew check` passes on them.

use super::{Budget, PlatformError};
use crate::config::{BindAddr, Config};

/// What `curfew gen` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenTarget {
    /// A `.service` unit (`Type=notify`, or `notify-reload`).
    Systemd,
    /// A `.socket` unit for socket activation of `bind`.
    SystemdSocket,
    /// A Deployment.
    Kubernetes,
    /// A compose file.
    Compose,
    /// A Dockerfile's stop-related lines.
    Dockerfile,
    /// `fly.toml`'s stop settings.
    Fly,
    /// A Nomad task's stop settings.
    Nomad,
}

impl GenTarget {
    pub const ALL: [(&'static str, GenTarget); 7] = [
        ("systemd", GenTarget::Systemd),
        ("systemd-socket", GenTarget::SystemdSocket),
        ("kubernetes", GenTarget::Kubernetes),
        ("compose", GenTarget::Compose),
        ("dockerfile", GenTarget::Dockerfile),
        ("fly", GenTarget::Fly),
        ("nomad", GenTarget::Nomad),
    ];
}

impl std::str::FromStr for GenTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<GenTarget, String> {
        GenTarget::ALL
            .iter()
            .find(|(n, _)| *n == s || (s == "k8s" && *n == "kubernetes"))
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                format!(
                    "unknown target {s:?}: one of {}",
                    GenTarget::ALL.map(|(n, _)| n).join(", ")
                )
            })
    }
}

/// How the generated files start curfew.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// The app's name (unit, Deployment, service, job).
    pub name: String,
    /// curfew's path (systemd) and the config file's path, absolute: what
    /// runs on this host (systemd, Nomad's `exec` driver).
    pub exe: String,
    pub config: Option<String>,
    /// The config file's path in the image (containers): relative to the
    /// directory `gen` ran in, which the image's WORKDIR holds (`COPY .`);
    /// `None` for `./curfew.toml`, which curfew reads by default.
    pub config_in_image: Option<String>,
    /// The directory `gen` ran in: the unit's `WorkingDirectory` (relative
    /// paths of the config, a bare command found through the venv).
    pub workdir: Option<String>,
    /// The container image (Kubernetes, compose).
    pub image: String,
    /// `Type=notify-reload` (systemd ≥ 253) instead of `Type=notify` +
    /// `ExecReload`.
    pub notify_reload: bool,
}

pub fn generate(cfg: &Config, target: GenTarget, o: &GenOptions) -> Result<String, PlatformError> {
    let budget = Budget::of(cfg);
    let stop = budget.total_secs();
    let why = format!("at least curfew's stop budget: {}", budget.explain());
    let serve_args: Vec<String> = match &o.config {
        Some(c) => vec!["serve".into(), "--config".into(), c.clone()],
        None => vec!["serve".into()],
    };
    // In a container: the config's path in the image, never this host's.
    let container_argv = {
        let mut v = vec!["curfew".to_owned(), "serve".to_owned()];
        if let Some(c) = &o.config_in_image {
            v.extend(["--config".to_owned(), c.clone()]);
        }
        serde_json::to_string(&v).unwrap_or_default()
    };
    let admin = match &cfg.admin_bind {
        Some(BindAddr::Tcp(a)) if a.port() != 0 => Some(*a),
        _ => None,
    };
    let admin_port = admin.map(|a| a.port());
    let public = cfg.binds.iter().find_map(|b| match b {
        BindAddr::Tcp(a) => Some(*a),
        BindAddr::Unix(_) => None,
    });
    let public_port = public.map(|a| a.port());
    // A container is reached on its own address, never on loopback: a
    // loopback bind (the default) or admin_bind is widened for it.
    let widen: Vec<(&str, String)> = [("CURFEW_BIND", public), ("CURFEW_ADMIN_BIND", admin)]
        .into_iter()
        .filter_map(|(var, a)| {
            let a = a?;
            a.ip()
                .is_loopback()
                .then(|| (var, format!("0.0.0.0:{}", a.port())))
        })
        .collect();
    Ok(match target {
        GenTarget::Systemd => {
            let ty = if o.notify_reload {
                "notify-reload"
            } else {
                "notify"
            };
            let reload = if o.notify_reload {
                String::new()
            } else {
                "ExecReload=/bin/kill -HUP $MAINPID\n".to_owned()
            };
            // Where `gen` ran: relative paths (the command, the SQLite
            // store) resolve there as when curfew is run by hand; a curfew
            // installed in a virtualenv finds the app's commands beside it.
            let mut env = String::new();
            if let Some(dir) = &o.workdir {
                env.push_str(&format!("WorkingDirectory={dir}\n"));
            }
            if let Some(bin) = venv_bin(&o.exe) {
                env.push_str(&format!(
                    "Environment=PATH={bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
                ));
            }
            format!(
                "# Generated by `curfew gen systemd`.\n[Unit]\nDescription={name} (curfew)\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nType={ty}\n{env}ExecStart={exe} {args}\n{reload}# curfew stops its workers itself: SIGTERM to curfew only.\nKillMode=mixed\nKillSignal=SIGTERM\n# {why}\nTimeoutStopSec={stop}\nRestart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n",
                name = o.name,
                exe = o.exe,
                args = serve_args.join(" "),
            )
        }
        GenTarget::SystemdSocket => {
            let listens: Vec<String> = cfg
                .binds
                .iter()
                .map(|b| match b {
                    BindAddr::Tcp(a) => format!("ListenStream={a}"),
                    BindAddr::Unix(p) => format!("ListenStream={}", p.display()),
                })
                .collect();
            format!(
                "# Generated by `curfew gen systemd-socket`: {name}.socket, beside {name}.service.\n# curfew adopts these sockets for `bind` (socket activation): a restart refuses no connection.\n[Unit]\nDescription={name} listening socket (curfew)\n\n[Socket]\n{listens}\nFileDescriptorName=web\n\n[Install]\nWantedBy=sockets.target\n",
                name = o.name,
                listens = listens.join("\n"),
            )
        }
        GenTarget::Kubernetes => {
            let probe = match admin_port {
                Some(p) => format!(
                    "          readinessProbe:\n            httpGet:\n              path: /readyz\n              port: {p}\n            periodSeconds: 2\n            failureThreshold: 1\n"
                ),
                None => "          # Set admin_bind (e.g. \"0.0.0.0:9000\") for a readiness probe on /readyz.\n".to_owned(),
            };
            let ports: Vec<String> = public_port
                .into_iter()
                .chain(admin_port)
                .map(|p| format!("            - containerPort: {p}\n"))
                .collect();
            let env = if widen.is_empty() {
                String::new()
            } else {
                let vars: Vec<String> = widen
                    .iter()
                    .map(|(k, v)| {
                        format!("            - name: {k}\n              value: \"{v}\"\n")
                    })
                    .collect();
                format!(
                    "          # The kubelet and Services reach the pod's IP, not its loopback.\n          env:\n{}",
                    vars.concat()
                )
            };
            format!(
                "# Generated by `curfew gen kubernetes`.\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      # {why}.\n      # No preStop sleep: curfew's drain_delay keeps serving while endpoints go.\n      terminationGracePeriodSeconds: {stop}\n      containers:\n        - name: {name}\n          image: {image}\n          command: {argv}\n{env}          ports:\n{ports}{probe}",
                name = o.name,
                image = o.image,
                argv = container_argv,
                ports = if ports.is_empty() {
                    "            []\n".to_owned()
                } else {
                    ports.concat()
                },
            )
        }
        GenTarget::Compose => format!(
            "# Generated by `curfew gen compose`.\nservices:\n  {name}:\n    image: {image}\n    # entrypoint, not command: it replaces an image's ENTRYPOINT (such as\n    # `curfew gen dockerfile`'s) instead of appending to it.\n    entrypoint: {argv}\n{env}    stop_signal: SIGTERM\n    # {why}\n    stop_grace_period: {stop}s\n{ports}",
            name = o.name,
            image = o.image,
            argv = container_argv,
            env = if widen.is_empty() {
                String::new()
            } else {
                let vars: Vec<String> = widen
                    .iter()
                    .map(|(k, v)| format!("      {k}: \"{v}\"\n"))
                    .collect();
                format!(
                    "    # Published ports reach the container's address, not its loopback.\n    environment:\n{}",
                    vars.concat()
                )
            },
            ports = public_port
                .map(|p| format!("    ports:\n      - \"{p}:{p}\"\n"))
                .unwrap_or_default(),
        ),
        GenTarget::Dockerfile => format!(
            "# Generated by `curfew gen dockerfile`: the stop-related lines, to put in your Dockerfile.\n# curfew is PID 1 (exec form: no shell in between) and reaps every child.\nSTOPSIGNAL SIGTERM\nENTRYPOINT {argv}\n{env}# `docker stop` waits 10 s: give it {stop} s ({why}):\n#   docker stop --time {stop} …   or   docker run --stop-timeout {stop} …\n",
            argv = container_argv,
            // PORT, not CURFEW_BIND, for the public address: a platform that
            // sets PORT at run time (Heroku, Render, Cloud Run) still wins.
            env = widen
                .iter()
                .map(|(k, v)| match (*k, v.rsplit_once(':')) {
                    ("CURFEW_BIND", Some((_, port))) => format!(
                        "# Reached on the container's address, not its loopback (a platform's own PORT wins):\nENV PORT={port}\n"
                    ),
                    _ => format!(
                        "# Reached on the container's address, not its loopback:\nENV {k}={v}\n"
                    ),
                })
                .collect::<String>(),
        ),
        GenTarget::Fly => format!(
            "# Generated by `curfew gen fly`: the stop settings of fly.toml.\n# SIGTERM: curfew's graceful stop (Fly's default SIGINT is graceful too, once).\nkill_signal = \"SIGTERM\"\n# {why}\nkill_timeout = {stop}\n"
        ),
        GenTarget::Nomad => format!(
            "# Generated by `curfew gen nomad`: the stop settings of the task running curfew.\ntask \"{name}\" {{\n  driver = \"exec\"\n  config {{\n    command = \"{exe}\"\n    args    = {args}\n  }}\n  kill_signal  = \"SIGTERM\"\n  # {why}\n  kill_timeout = \"{stop}s\"\n}}\n",
            name = o.name,
            exe = o.exe,
            args = serde_json::to_string(&serve_args).unwrap_or_default(),
        ),
    })
}

/// The `bin` directory of the virtualenv `exe` is installed in, if it is
/// one (a `pyvenv.cfg` beside that `bin`): the app's commands (uvicorn,
/// gunicorn) are there, which systemd's PATH does not hold.
fn venv_bin(exe: &str) -> Option<String> {
    let bin = std::path::Path::new(exe).parent()?;
    bin.parent()?
        .join("pyvenv.cfg")
        .is_file()
        .then(|| bin.display().to_string())
}
