//! Platform fit: does curfew's stop fit the platform that stops it?
//!
//! Every platform gives a stopping process a budget (systemd's
//! `TimeoutStopSec`, Kubernetes' `terminationGracePeriodSeconds`, compose's
//! `stop_grace_period`, Fly's and Nomad's `kill_timeout`, Heroku's 30 s, …)
//! and a stop signal, then SIGKILLs. curfew's own budget is `drain_delay +
//! graceful_timeout + worker_stop_timeout` plus a margin for the teardown.
//! `check` reads a platform's file (unit, manifest, compose file, Dockerfile,
//! `fly.toml`, `render.yaml`, Procfile, Nomad job) and compares them, with the
//! numbers, beside the other ways a platform breaks a graceful stop (the
//! stop signal, systemd's `KillMode`, a shell as PID 1, the readiness probe,
//! jobs longer than the drain). `gen` writes files whose numbers agree with
//! the configuration, so `check` passes on them. `startup` is what
//! `curfew serve` logs when it recognises a platform from its environment.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;

mod check;
pub mod generate;
mod timespan;

pub use check::check;
pub use generate::{GenTarget, generate};

/// Added to curfew's own stop budget: the teardown after the workers are
/// gone (hooks cut, leftovers killed, the summary), and the platform's own
/// delay in delivering the signal.
pub const MARGIN: Duration = Duration::from_secs(2);

/// A platform curfew knows the stop behaviour of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Systemd,
    Kubernetes,
    Docker,
    Compose,
    Fly,
    Heroku,
    Render,
    Nomad,
}

impl Platform {
    pub const ALL: [Platform; 8] = [
        Platform::Systemd,
        Platform::Kubernetes,
        Platform::Docker,
        Platform::Compose,
        Platform::Fly,
        Platform::Heroku,
        Platform::Render,
        Platform::Nomad,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Platform::Systemd => "systemd",
            Platform::Kubernetes => "kubernetes",
            Platform::Docker => "docker",
            Platform::Compose => "compose",
            Platform::Fly => "fly",
            Platform::Heroku => "heroku",
            Platform::Render => "render",
            Platform::Nomad => "nomad",
        }
    }

    /// The grace before SIGKILL when the platform's file does not set it.
    pub fn default_grace(self) -> Duration {
        Duration::from_secs(match self {
            Platform::Systemd => 90,
            Platform::Kubernetes | Platform::Heroku | Platform::Render => 30,
            Platform::Docker | Platform::Compose => 10,
            Platform::Fly | Platform::Nomad => 5,
        })
    }

    /// The setting that holds the grace, as the platform names it.
    pub fn grace_setting(self) -> &'static str {
        match self {
            Platform::Systemd => "TimeoutStopSec",
            Platform::Kubernetes => "terminationGracePeriodSeconds",
            Platform::Docker => "docker stop --time (or --stop-timeout at docker run)",
            Platform::Compose => "stop_grace_period",
            Platform::Fly | Platform::Nomad => "kill_timeout",
            Platform::Heroku => "the fixed shutdown window",
            Platform::Render => "maxShutdownDelaySeconds",
        }
    }

    /// The signal the platform sends when its file does not say.
    pub fn default_signal(self) -> &'static str {
        match self {
            Platform::Fly | Platform::Nomad => "SIGINT",
            _ => "SIGTERM",
        }
    }

    /// The platform a file is for, from its name.
    pub fn from_path(path: &Path) -> Option<Platform> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        Some(if ext == "service" {
            Platform::Systemd
        } else if name.starts_with("dockerfile") || ext == "dockerfile" {
            Platform::Docker
        } else if name == "fly.toml" {
            Platform::Fly
        } else if name == "render.yaml" || name == "render.yml" {
            Platform::Render
        } else if name == "procfile" {
            Platform::Heroku
        } else if (name.starts_with("compose") || name.starts_with("docker-compose"))
            && (ext == "yaml" || ext == "yml")
        {
            Platform::Compose
        } else if ext == "nomad" || ext == "hcl" {
            Platform::Nomad
        } else if ext == "yaml" || ext == "yml" || ext == "json" {
            Platform::Kubernetes
        } else {
            return None;
        })
    }

    /// The platform this process runs on, from its environment.
    pub fn from_env(env: &[(String, String)]) -> Option<Platform> {
        let has = |k: &str| env.iter().any(|(n, v)| n == k && !v.is_empty());
        [
            ("DYNO", Platform::Heroku),
            ("FLY_APP_NAME", Platform::Fly),
            ("KUBERNETES_SERVICE_HOST", Platform::Kubernetes),
            ("RENDER", Platform::Render),
            ("NOMAD_ALLOC_ID", Platform::Nomad),
            ("INVOCATION_ID", Platform::Systemd),
        ]
        .into_iter()
        .find(|(k, _)| has(k))
        .map(|(_, p)| p)
    }

    /// The platform's file in `dir`, by its usual name.
    pub fn find_file(dir: &Path) -> Option<(Platform, PathBuf)> {
        [
            ("fly.toml", Platform::Fly),
            ("render.yaml", Platform::Render),
            ("Procfile", Platform::Heroku),
            ("compose.yaml", Platform::Compose),
            ("compose.yml", Platform::Compose),
            ("docker-compose.yaml", Platform::Compose),
            ("docker-compose.yml", Platform::Compose),
            ("Dockerfile", Platform::Docker),
        ]
        .into_iter()
        .map(|(f, p)| (p, dir.join(f)))
        .find(|(_, path)| path.is_file())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Platform, String> {
        Platform::ALL
            .into_iter()
            .find(|p| {
                p.name() == s.to_ascii_lowercase() || (s == "k8s" && *p == Platform::Kubernetes)
            })
            .ok_or_else(|| {
                format!(
                    "unknown platform {s:?}: one of {}",
                    Platform::ALL.map(Platform::name).join(", ")
                )
            })
    }
}

/// curfew's own stop budget, from the configuration.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Budget {
    #[serde(serialize_with = "secs")]
    pub drain_delay: Duration,
    #[serde(serialize_with = "secs")]
    pub graceful_timeout: Duration,
    #[serde(serialize_with = "secs")]
    pub worker_stop_timeout: Duration,
    #[serde(serialize_with = "secs")]
    pub margin: Duration,
    #[serde(serialize_with = "secs")]
    pub total: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Budget {
    pub fn of(cfg: &Config) -> Budget {
        let total = cfg
            .drain_delay
            .saturating_add(cfg.graceful_timeout)
            .saturating_add(cfg.worker_stop_timeout)
            .saturating_add(MARGIN);
        Budget {
            drain_delay: cfg.drain_delay,
            graceful_timeout: cfg.graceful_timeout,
            worker_stop_timeout: cfg.worker_stop_timeout,
            margin: MARGIN,
            total,
        }
    }

    /// The total in whole seconds, rounded up (what a platform's setting
    /// must be at least).
    pub fn total_secs(&self) -> u64 {
        self.total.as_secs() + u64::from(self.total.subsec_nanos() > 0)
    }

    /// `drain_delay 5s + graceful_timeout 30s + … = 42s`.
    pub fn explain(&self) -> String {
        format!(
            "drain_delay {} + graceful_timeout {} + worker_stop_timeout {} + margin {} = {}",
            show(self.drain_delay),
            show(self.graceful_timeout),
            show(self.worker_stop_timeout),
            show(self.margin),
            show(self.total)
        )
    }
}

/// A duration as a person writes it: `30s`, `1.5s`, `2m 30s`.
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{}s", d.as_secs_f64())
    } else if ms >= 60_000 && !ms.is_multiple_of(60_000) {
        format!("{}m {}s", ms / 60_000, (ms % 60_000) / 1000)
    } else if ms >= 60_000 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    /// Works, but could be better (or cannot be verified from the file).
    Warn,
    /// The stop will not be graceful: requests or jobs are cut.
    Misfit,
}

impl Level {
    pub fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Misfit => "MISFIT",
        }
    }
}

/// One comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What was compared: `budget`, `signal`, `kill_mode`, `shell`,
    /// `readiness`, `jobs`, `notify`, `reload`, `file`.
    pub check: &'static str,
    pub level: Level,
    pub message: String,
}

impl Finding {
    pub fn new(check: &'static str, level: Level, message: impl Into<String>) -> Finding {
        Finding {
            check,
            level,
            message: message.into(),
        }
    }
}

/// What `curfew check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub platform: Platform,
    /// The platform's file (none: the platform's defaults).
    pub file: Option<PathBuf>,
    pub budget: Budget,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn worst(&self) -> Level {
        self.findings
            .iter()
            .map(|f| f.level)
            .max()
            .unwrap_or(Level::Ok)
    }

    pub fn fits(&self) -> bool {
        self.worst() < Level::Misfit
    }

    /// The text `curfew check` prints.
    pub fn text(&self) -> String {
        let mut out = format!(
            "platform: {}{}\ncurfew's stop budget: {}\n",
            self.platform,
            self.file
                .as_ref()
                .map(|f| format!(" ({})", f.display()))
                .unwrap_or_else(|| " (its defaults: no file)".to_owned()),
            self.budget.explain()
        );
        for f in &self.findings {
            out.push_str(&format!(
                "[{}] {}: {}\n",
                f.level.label(),
                f.check,
                f.message
            ));
        }
        out.push_str(if self.fits() {
            "curfew fits this platform.\n"
        } else {
            "curfew does not fit this platform: fix each MISFIT above.\n"
        });
        out
    }
}

/// Errors of `curfew check` and `curfew gen`.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "which platform? none was found from the environment or the files here: give --platform ({}) and the platform's file",
        Platform::ALL.map(Platform::name).join(", ")
    )]
    Unknown,
    #[error("{0}")]
    Usage(String),
}

/// The signal a platform sends, judged: curfew stops gracefully on SIGTERM
/// and on a first SIGINT; SIGQUIT is its immediate stop; anything else it
/// does not treat as a stop at all (the platform then SIGKILLs).
pub fn judge_signal(signal: &str, from: &str) -> Finding {
    let norm = signal.trim().trim_matches('"').to_ascii_uppercase();
    let norm = if norm.starts_with("SIG") {
        norm
    } else {
        format!("SIG{norm}")
    };
    match norm.as_str() {
        "SIGTERM" | "SIG15" => Finding::new(
            "signal",
            Level::Ok,
            format!("{from} sends SIGTERM: curfew's graceful stop"),
        ),
        "SIGINT" | "SIG2" => Finding::new(
            "signal",
            Level::Ok,
            format!(
                "{from} sends SIGINT: a first SIGINT is curfew's graceful stop (a second one stops at once)"
            ),
        ),
        "SIGQUIT" | "SIG3" => Finding::new(
            "signal",
            Level::Misfit,
            format!(
                "{from} sends SIGQUIT, curfew's immediate stop: every request in flight is cut; send SIGTERM"
            ),
        ),
        _ => Finding::new(
            "signal",
            Level::Misfit,
            format!("{from} sends {norm}, which curfew does not treat as a stop: send SIGTERM"),
        ),
    }
}

/// curfew's budget against a platform's grace (`grace` from `setting`).
pub fn judge_budget(budget: &Budget, grace: Duration, setting: &str) -> Finding {
    if grace >= budget.total {
        Finding::new(
            "budget",
            Level::Ok,
            format!(
                "{setting} {} >= curfew's stop budget {}",
                show(grace),
                show(budget.total)
            ),
        )
    } else {
        Finding::new(
            "budget",
            Level::Misfit,
            format!(
                "{setting} {} < curfew's stop budget {} ({}): the platform SIGKILLs curfew mid-drain; raise {setting} to at least {}s or shorten graceful_timeout",
                show(grace),
                show(budget.total),
                budget.explain(),
                budget.total_secs()
            ),
        )
    }
}

/// The longest job timeout against the time the drain gives running jobs
/// (`graceful_timeout − release_reserve`): a longer job is cut (handed back
/// and run again) at every deploy.
pub fn judge_jobs(cfg: &Config) -> Option<Finding> {
    let jobs = cfg.jobs.as_ref()?;
    let longest = jobs.queues.iter().max_by_key(|q| q.timeout)?;
    let room = cfg.graceful_timeout.saturating_sub(jobs.release_reserve);
    Some(if longest.timeout <= room {
        Finding::new(
            "jobs",
            Level::Ok,
            format!(
                "the longest job timeout ({} on queue {:?}) fits the drain's room for jobs (graceful_timeout − release_reserve = {})",
                show(longest.timeout),
                longest.name,
                show(room)
            ),
        )
    } else {
        Finding::new(
            "jobs",
            Level::Warn,
            format!(
                "jobs on queue {:?} may run {} but a stop gives them {} (graceful_timeout − release_reserve): a long job is cut and handed back at every deploy",
                longest.name,
                show(longest.timeout),
                show(room)
            ),
        )
    })
}

/// What `curfew serve` says at start on a platform it recognises from its
/// environment: the budget against that platform's default grace (the real
/// one is in a file curfew cannot see, so a misfit is only a warning here).
pub fn startup(cfg: &Config, env: &[(String, String)]) -> Option<(Platform, Vec<Finding>)> {
    let platform = Platform::from_env(env)?;
    let budget = Budget::of(cfg);
    let mut findings = vec![judge_budget(
        &budget,
        platform.default_grace(),
        &format!("{}'s default {}", platform, platform.grace_setting()),
    )];
    findings.extend(judge_jobs(cfg));
    Some((platform, findings))
}

#[cfg(test)]
mod tests;
