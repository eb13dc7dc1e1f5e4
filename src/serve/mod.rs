//! `curfew serve`: the orchestrator. It owns the lifecycle [`Machine`], feeds
//! it signals, timers and worker events, and performs each phase's entry
//! actions on the proxy ([`Front`]) and the [`Supervisor`]:
//!
//! | phase      | entry action                                                          |
//! |------------|-----------------------------------------------------------------------|
//! | starting   | bind listeners, start N workers, wait until all are ready             |
//! | serving    | accept connections                                                    |
//! | lame-duck  | readiness fails; keep serving for `drain_delay`                        |
//! | draining   | accept what is queued, close listeners, drain connections until done  |
//! |            | or `graceful_timeout` (then name and cut what is left)                |
//! | stopping   | SIGTERM workers, SIGKILL after `worker_stop_timeout`; kill leftovers   |
//! | stopped    | log the summary; the exit code comes from the machine                 |

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use crate::control;
use crate::hooks::{HookEvent, Hooks};
use crate::metrics::Metrics;

use crate::config::reload::{after_reload, plan_reload};
use crate::config::{BindAddr, Config, ConfigError, ReloadStrategy};
pub use crate::lifecycle::StopSignal;
use crate::lifecycle::{Event, Machine, Outcome, Phase};
use crate::processor::Processor;
use crate::proxy::listener::{BindError, Listener};
use crate::proxy::{Front, FrontConfig};
use crate::supervisor::reaper::Reaper;
use crate::supervisor::{Supervisor, WorkerSpec, make_run_dir};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot set up signal handling or the reaper: {0}")]
    Setup(std::io::Error),
    #[error(
        "cannot create the private directory for worker sockets in {base}: {source}; point XDG_RUNTIME_DIR (or TMPDIR) at a short, writable directory (on a read-only root file system, an emptyDir or tmpfs mount), or set worker_socket = \"fd-tcp\" (no directory needed)"
    )]
    RunDir {
        base: String,
        source: std::io::Error,
    },
    #[error("cannot start the proxy threads: {0}")]
    ProxyThreads(std::io::Error),
    #[error(transparent)]
    Control(control::ControlError),
    #[error("cannot open the job store: {0}")]
    Jobs(curfew_store::StoreError),
    #[error(transparent)]
    Activation(#[from] activation::ActivationError),
    #[error(transparent)]
    AccessLog(#[from] crate::proxy::access_log::OpenError),
    #[error("upgrade: {0}")]
    Upgrade(#[from] upgrade::child::SuccessorError),
    #[error("upgrade: cannot take over the control socket: {0}")]
    UpgradeControl(std::io::Error),
}

mod activation;
mod build;
mod drain;
mod inputs;
mod ops;
mod phases;
mod report;
mod status;
mod upgrade;
use status::StatusSource;
pub use upgrade::remember_invocation;

use drain::drain;
use inputs::Input;
pub use inputs::{ControlSignal, InputSender, Inputs};
use ops::{Deferred, Op, route_control, run_op};
use report::report_incomplete;

/// Re-reads the configuration from the same sources as at start (for reloads).
pub type Reloader = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// The orchestrator's state across phases.
struct Run {
    /// systemd notify (a no-op without `NOTIFY_SOCKET`).
    notifier: Arc<crate::notify::Notifier>,
    cfg: Config,
    machine: Machine,
    phase_tx: watch::Sender<Phase>,
    front: Arc<Front>,
    sup: Supervisor,
    reaper: Reaper,
    inputs: Inputs,
    status: StatusSource,
    metrics: Arc<Metrics>,
    reloader: Reloader,
    hooks: Hooks,
    /// The job processor, with a `[jobs]` section.
    jobs: Option<Processor>,
    run_dir: std::path::PathBuf,
    stop_requested_at: Option<Instant>,
    completed_at_stop: u64,
    aborted: usize,
    /// Operations that arrived while a reload was running (run after it).
    deferred: Deferred,
    /// Ends the control socket and admin endpoint tasks at teardown.
    background: tokio_util::sync::CancellationToken,
    /// Copies of the listening sockets, for an upgrade to pass on.
    sockets: upgrade::Sockets,
    /// An upgrade under way (this process is the old curfew).
    upgrade: Option<upgrade::InProgress>,
    /// The pid of an upgrade's new curfew a stop abandoned (SIGTERMed):
    /// the teardown waits for it before the final kill.
    abandoned: Option<u32>,
    /// The jobs' hand-back has been reported (by the drain): the stop
    /// does not report the same hand-back again.
    jobs_reported: bool,
    /// Cancelled at an upgrade's hand-over: the admin endpoint, and the
    /// control socket, stop accepting (the new curfew has them; a cancelled
    /// `control_release` also means its file is the new curfew's).
    admin_release: tokio_util::sync::CancellationToken,
    control_release: tokio_util::sync::CancellationToken,
    /// The admin endpoint's task: awaited at teardown, so its listener is
    /// closed and its Unix socket file removed before curfew exits.
    admin_task: Option<tokio::task::JoinHandle<()>>,
    /// This process is an upgrade's new curfew, until it took over.
    successor: Option<upgrade::child::Successor>,
    /// The passed fds it adopted (reported to the old curfew).
    adopted: Vec<i32>,
    /// Cancelled once this process is the service: the admin endpoint and
    /// the control socket start accepting (at once, without an upgrade).
    took_over: tokio_util::sync::CancellationToken,
    /// Cancelled once the files of the sockets this process serves are its
    /// own to remove: at once, or for an upgrade's new curfew when the old
    /// one acknowledged the hand-over (a new curfew that fails before then
    /// leaves the old one's control socket and socket files in place).
    owns_files: tokio_util::sync::CancellationToken,
}

impl Run {
    /// Feed an event to the machine and publish the new phase.
    fn apply(&mut self, event: Event) -> Outcome {
        let before = self.machine.phase();
        let out = self.machine.handle(event);
        match out {
            Outcome::Enter(p) => {
                let _ = self.phase_tx.send(p);
                tracing::debug!(from = %before, to = %p, ?event, "Phase change.");
            }
            Outcome::StopNow => {
                let _ = self.phase_tx.send(Phase::Stopping);
                tracing::info!(from = %before, ?event, "Immediate stop requested: killing workers now.");
                // Jobs first: a delivery cut by the kill is handed back, not failed.
                if let Some(jobs) = &self.jobs {
                    jobs.cut_now();
                }
                self.sup.kill_now();
                self.front.abort.cancel();
                // No new connection is accepted only to be cut: the
                // listeners close now (a bound one refuses from here on),
                // and with them the copies kept for an upgrade.
                self.front.close_listeners_now();
                self.sockets = upgrade::Sockets::default();
            }
            Outcome::Ignored => {
                if let Event::Signal(sig) = event {
                    tracing::info!(signal = sig.name(), phase = %before, "Stop already in progress; signal ignored (send SIGQUIT or a second SIGINT to stop at once).");
                }
            }
        }
        out
    }

    /// Where events go besides the log.
    fn sinks(&self) -> crate::events::Sinks<'_> {
        crate::events::Sinks {
            metrics: &self.metrics,
            hooks: &self.hooks,
        }
    }

    /// An upgrade handed the service to the new curfew: drain at once
    /// (as after SIGTERM and `drain_delay`); nothing goes to systemd any
    /// more (the new process is its main one).
    fn on_handover(&mut self) {
        self.mark_stop_requested();
        self.apply(Event::HandedOver);
        self.deferred.cancel();
    }

    /// The stop starts now: its clock, the requests done so far (the
    /// summary counts those finished after), and no more job claims.
    fn mark_stop_requested(&mut self) {
        self.stop_requested_at = Some(Instant::now());
        self.completed_at_stop = self.front.router.completed();
        if let Some(jobs) = &self.jobs {
            jobs.stop_claiming();
        }
    }

    /// The next stop signal, while stopping (lame duck, draining,
    /// stopping): an operation that arrives meanwhile is answered —
    /// SIGUSR1's report runs, any other is refused, its caller told — so a
    /// control request that raced the stop never waits for the exit.
    async fn next_stop(&mut self) -> StopSignal {
        loop {
            match self.inputs.next().await {
                Input::Stop(sig) => return sig,
                Input::Op(op) => self.answer_while_stopping(op).await,
            }
        }
    }

    /// An operation that arrived after the stop: see [`Run::next_stop`].
    async fn answer_while_stopping(&mut self, op: Op) {
        let (what, replies) = match op {
            Op::LogStatus => {
                report::log_status(&self.status).await;
                return;
            }
            Op::Reload { replies } => ("reload", replies),
            Op::Scale { up: true } => ("scale up (SIGTTIN)", vec![]),
            Op::Scale { up: false } => ("scale down (SIGTTOU)", vec![]),
            Op::ScaleTo { reply, .. } => ("scale", vec![reply]),
            Op::Upgrade { reply } => ("upgrade", reply.into_iter().collect()),
        };
        let phase = self.machine.phase();
        tracing::info!(operation = what, %phase, "Operation refused: curfew is stopping.");
        for r in replies {
            let _ = r.send(control::Response::err(format!(
                "refused: curfew is stopping ({phase})"
            )));
        }
    }

    fn on_signal(&mut self, sig: StopSignal) {
        upgrade::abandon(self, sig.name());
        if self.stop_requested_at.is_none() {
            self.mark_stop_requested();
            // The whole stop's budget; the beat extends systemd's stop
            // timeout up to its end, never past it.
            self.notifier.stopping(
                self.cfg.drain_delay + self.cfg.graceful_timeout + self.cfg.worker_stop_timeout,
                &format!("Stopping: {} received; draining.", sig.name()),
            );
        }
        let phase = self.machine.phase();
        if let Outcome::Enter(Phase::LameDuck) = self.apply(Event::Signal(sig)) {
            let drain_delay_ms = self.cfg.drain_delay.as_millis() as u64;
            if drain_delay_ms == 0 {
                tracing::info!(
                    signal = sig.name(),
                    drain_delay_ms,
                    "Received {}: shutting down gracefully; not ready any more, draining.",
                    sig.name()
                );
            } else {
                tracing::info!(
                    signal = sig.name(),
                    drain_delay_ms,
                    "Received {}: shutting down gracefully; not ready any more, still serving for drain_delay ({:?}).",
                    sig.name(),
                    self.cfg.drain_delay
                );
            }
        } else if phase == Phase::Starting && self.machine.phase() == Phase::Stopping {
            tracing::info!(
                signal = sig.name(),
                "Received {} while starting: stopping workers.",
                sig.name()
            );
        }
        if self.machine.phase() != Phase::Serving {
            self.deferred.cancel();
        }
    }
}

/// Run curfew until it has stopped, driven by the process's signals;
/// returns the process exit code.
pub async fn run(cfg: Config, reloader: Reloader) -> Result<i32, ServeError> {
    let inputs = Inputs::os().map_err(ServeError::Setup)?;
    run_with(cfg, reloader, inputs).await
}

/// [`run`], driven by `inputs` instead of the process's signals.
pub async fn run_with(cfg: Config, reloader: Reloader, inputs: Inputs) -> Result<i32, ServeError> {
    let (mut run, listeners) = Run::build(cfg, reloader, inputs).await?;
    phases::starting(&mut run, listeners).await;
    loop {
        match run.machine.phase() {
            Phase::Starting => unreachable!("starting() leaves it"),
            Phase::Serving => phases::serving(&mut run).await,
            Phase::LameDuck => phases::lame_duck(&mut run).await,
            Phase::Draining => drain(&mut run).await,
            Phase::Stopping => phases::stopping(&mut run).await,
            Phase::Stopped => break,
        }
    }
    Ok(phases::teardown(run).await)
}

/// The workers' spec: the config's, plus what the app needs to reach
/// curfew (the Python SDK reads these):
/// - `CURFEW_JOB_TOKEN` with a job processor (the secret that tells the app
///   a request is a job delivery);
/// - `CURFEW_ADMIN_URL` when `admin_bind` is set: `http://127.0.0.1:9000`
///   (a wildcard address becomes loopback) or `unix:/abs/path`, where the app
///   enqueues with `POST /jobs`; not set for a port 0, which is only known
///   once bound, nor for an address reachable from other hosts without
///   `admin_token` (its job API refuses every caller);
/// - `CURFEW_CONTROL_SOCKET`, the control socket's absolute path: the same
///   jobs requests work there (`curfew enqueue` run by a worker finds its own
///   curfew, and the SDK falls back to it without an admin address). It
///   gives nothing a worker did not have: the socket is its user's (0600).
fn worker_spec(cfg: &Config, run_dir: std::path::PathBuf, jobs: Option<&Processor>) -> WorkerSpec {
    let mut spec = WorkerSpec::from_config(cfg, run_dir);
    if let Some(jobs) = jobs {
        spec.extra_env
            .push(("CURFEW_JOB_TOKEN".to_owned(), jobs.token().to_owned()));
    }
    let absolute = |p: &std::path::Path| match std::env::current_dir() {
        Ok(cwd) => cwd.join(p),
        Err(_) => p.to_path_buf(),
    };
    // An admin address reachable from other hosts refuses the job API
    // without admin_token: the app then enqueues through the control
    // socket instead of being sent to a 403.
    let job_api_open = cfg.admin_token.is_some()
        || !matches!(&cfg.admin_bind, Some(BindAddr::Tcp(a)) if !a.ip().is_loopback());
    let admin_url = match &cfg.admin_bind {
        _ if !job_api_open => None,
        Some(BindAddr::Tcp(a)) if a.port() != 0 => {
            let ip = match a.ip() {
                std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                }
                std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                    std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
                }
                ip => ip,
            };
            Some(format!(
                "http://{}",
                std::net::SocketAddr::new(ip, a.port())
            ))
        }
        Some(BindAddr::Unix(p)) => Some(format!("unix:{}", absolute(p).display())),
        _ => None,
    };
    if let Some(url) = admin_url {
        spec.extra_env.push(("CURFEW_ADMIN_URL".to_owned(), url));
    }
    if let Some(token) = &cfg.admin_token {
        // The SDK's enqueue sends it; a `curfew` run in a worker reads it as
        // the same setting.
        spec.extra_env
            .push(("CURFEW_ADMIN_TOKEN".to_owned(), token.expose().to_owned()));
    }
    spec.extra_env.push((
        "CURFEW_CONTROL_SOCKET".to_owned(),
        absolute(&cfg.control_socket).display().to_string(),
    ));
    spec
}
