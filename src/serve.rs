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

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};

use crate::control;
use crate::hooks::{HookEvent, Hooks};
use crate::metrics::Metrics;
use crate::status::StatusSource;

use crate::config::reload::{after_reload, plan_reload};
use crate::config::{Config, ConfigError, ReloadStrategy, WorkerSocket};
pub use crate::lifecycle::StopSignal;
use crate::lifecycle::{Event, Machine, Outcome, Phase};
use crate::processor::Processor;
use crate::proxy::Front;
use crate::proxy::listener::{BindError, Listener};
use crate::supervisor::reaper::Reaper;
use crate::supervisor::{Supervisor, WorkerSpec, make_run_dir};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot set up signal handling or the reaper: {0}")]
    Setup(std::io::Error),
    #[error("cannot create the directory for worker sockets: {0}")]
    RunDir(std::io::Error),
    #[error(transparent)]
    Control(control::ControlError),
    #[error("cannot open the job store: {0}")]
    Jobs(curfew_store::StoreError),
}

/// Signals that control a running curfew (not stops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlSignal {
    /// SIGHUP: zero-downtime reload.
    Reload,
    /// SIGTTIN: one worker more.
    ScaleUp,
    /// SIGTTOU: one worker fewer.
    ScaleDown,
    /// SIGUSR1: status report to the log.
    Status,
}

/// Where the orchestrator's outside inputs come from: the process's signals
/// ([`Inputs::os`]) or, to drive the orchestration in-process (tests),
/// channels ([`Inputs::channel`]). Requests from the control socket arrive
/// beside them.
pub struct Inputs {
    stops: mpsc::UnboundedReceiver<StopSignal>,
    controls: mpsc::UnboundedReceiver<ControlSignal>,
}

/// One input: a stop or a control signal.
enum Input {
    Stop(StopSignal),
    Control(ControlSignal),
}

/// Sends inputs to an orchestrator built with [`Inputs::channel`].
#[derive(Clone)]
pub struct InputSender {
    stops: mpsc::UnboundedSender<StopSignal>,
    controls: mpsc::UnboundedSender<ControlSignal>,
}

impl InputSender {
    /// As if the process got SIGTERM (`Term`), SIGINT (`Int`) or SIGQUIT
    /// (`Quit`).
    pub fn stop(&self, sig: StopSignal) {
        let _ = self.stops.send(sig);
    }

    /// As if the process got SIGHUP, SIGTTIN, SIGTTOU or SIGUSR1.
    pub fn control(&self, ctl: ControlSignal) {
        let _ = self.controls.send(ctl);
    }
}

impl Inputs {
    /// Inputs fed by channels, and their sender.
    pub fn channel() -> (Inputs, InputSender) {
        let (stop_tx, stops) = mpsc::unbounded_channel();
        let (ctl_tx, controls) = mpsc::unbounded_channel();
        (
            Inputs { stops, controls },
            InputSender {
                stops: stop_tx,
                controls: ctl_tx,
            },
        )
    }

    /// Inputs from the process's signals: TERM, INT, QUIT stop; HUP, TTIN,
    /// TTOU, USR1 control. Must be called inside the runtime.
    pub fn os() -> std::io::Result<Inputs> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut quit = signal(SignalKind::quit())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut ttin = signal(SignalKind::from_raw(libc::SIGTTIN))?;
        let mut ttou = signal(SignalKind::from_raw(libc::SIGTTOU))?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let (inputs, tx) = Inputs::channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => tx.stop(StopSignal::Term),
                    _ = int.recv() => tx.stop(StopSignal::Int),
                    _ = quit.recv() => tx.stop(StopSignal::Quit),
                    _ = hup.recv() => tx.control(ControlSignal::Reload),
                    _ = ttin.recv() => tx.control(ControlSignal::ScaleUp),
                    _ = ttou.recv() => tx.control(ControlSignal::ScaleDown),
                    _ = usr1.recv() => tx.control(ControlSignal::Status),
                }
                if tx.stops.is_closed() {
                    return;
                }
            }
        });
        Ok(inputs)
    }

    /// The next input of either kind.
    async fn next(&mut self) -> Input {
        let Inputs { stops, controls } = self;
        tokio::select! {
            Some(sig) = stops.recv() => Input::Stop(sig),
            Some(ctl) = controls.recv() => Input::Control(ctl),
            else => std::future::pending().await,
        }
    }

    /// The next stop signal (never, once the sender is gone).
    async fn next_stop(&mut self) -> StopSignal {
        match self.stops.recv().await {
            Some(sig) => sig,
            None => std::future::pending().await,
        }
    }
}

/// Re-reads the configuration from the same sources as at start (for reloads).
pub type Reloader = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// The orchestrator's state across phases.
struct Run {
    cfg: Config,
    machine: Machine,
    phase_tx: watch::Sender<Phase>,
    front: Arc<Front>,
    sup: Supervisor,
    reaper: Reaper,
    inputs: Inputs,
    /// Requests from the control socket.
    ops: mpsc::Receiver<control::Incoming>,
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
            }
            Outcome::Ignored => {
                if let Event::Signal(sig) = event {
                    tracing::info!(signal = sig.name(), phase = %before, "Stop already in progress; signal ignored (send SIGQUIT or a second SIGINT to stop at once).");
                }
            }
        }
        out
    }

    fn on_signal(&mut self, sig: StopSignal) {
        if self.stop_requested_at.is_none() {
            self.stop_requested_at = Some(Instant::now());
            self.completed_at_stop = self.front.router.completed();
            if let Some(jobs) = &self.jobs {
                jobs.stop_claiming();
            }
        }
        let phase = self.machine.phase();
        if let Outcome::Enter(Phase::LameDuck) = self.apply(Event::Signal(sig)) {
            tracing::info!(
                signal = sig.name(),
                drain_delay_ms = self.cfg.drain_delay.as_millis() as u64,
                "Received {}: shutting down gracefully; not ready any more, still serving for drain_delay.",
                sig.name()
            );
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
    // Become the subreaper of everything the workers start, so no grandchild
    // escapes to the host's init and every one is reaped here.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::debug!(error = %e, "Could not become a child subreaper.");
    }
    let reaper = Reaper::start().map_err(ServeError::Setup)?;
    let hooks = Hooks::new(reaper.clone(), cfg.hooks.clone());
    let store = match &cfg.jobs {
        Some(j) => Some(Processor::open_store(j).await.map_err(ServeError::Jobs)?),
        None => None,
    };

    let mut listeners = Vec::new();
    for b in &cfg.binds {
        match Listener::bind(b) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                for l in listeners {
                    l.drain_and_close();
                }
                return Err(e.into());
            }
        }
    }
    let admin_listener = match &cfg.admin_bind {
        Some(a) => match crate::admin::bind(a) {
            Ok(l) => Some(l),
            Err(e) => {
                for l in listeners {
                    l.drain_and_close();
                }
                return Err(e.into());
            }
        },
        None => None,
    };
    let control_listener = match control::bind(&cfg.control_socket) {
        Ok(l) => l,
        Err(e) => {
            for l in listeners {
                l.drain_and_close();
            }
            return Err(ServeError::Control(e));
        }
    };
    let run_dir = if cfg.worker_socket == WorkerSocket::Unix {
        make_run_dir().map_err(ServeError::RunDir)?
    } else {
        std::env::temp_dir()
    };

    let metrics = Arc::new(Metrics::new());
    let front = Front::new(&cfg, metrics.clone());
    let jobs = match (store, &cfg.jobs) {
        (Some(store), Some(j)) => Some(Processor::new(
            j.clone(),
            store,
            front.clone(),
            reaper.clone(),
            cfg.chdir.clone(),
        )),
        _ => None,
    };
    let spec = worker_spec(&cfg, run_dir.clone(), jobs.as_ref());
    let sup = Supervisor::new(reaper.clone(), spec, front.clone(), metrics.clone());
    {
        let hooks = hooks.clone();
        sup.on_event(Box::new(move |name, details| {
            if let Some(event) = HookEvent::from_name(name) {
                hooks.fire(event, details);
            }
        }));
    }
    let handle = sup.handle();
    front.on_hung(Box::new(move |uid, reason, request| {
        handle.abort(uid, reason, request)
    }));
    let handle = sup.handle();
    front
        .router
        .on_recycle(Box::new(move |uid, reason| handle.recycle(uid, reason)));
    let (phase_tx, _) = watch::channel(Phase::Starting);
    let status = StatusSource {
        front: front.clone(),
        phase: phase_tx.subscribe(),
        generation: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        workers_wanted: Arc::new(std::sync::atomic::AtomicUsize::new(cfg.workers)),
        started: Instant::now(),
        jobs: jobs.clone(),
    };
    let control_stop = tokio_util::sync::CancellationToken::new();
    let (ops_tx, ops) = mpsc::channel(16);
    {
        let (ctl_tx, ctl_rx) = mpsc::channel(16);
        tokio::spawn(control::serve(
            control_listener,
            cfg.control_socket.clone(),
            ctl_tx,
            control_stop.clone(),
        ));
        tokio::spawn(route_control(ctl_rx, ops_tx, status.clone()));
    }
    let mut run = Run {
        cfg,
        machine: Machine::new(),
        phase_tx,
        front,
        sup,
        reaper,
        inputs,
        ops,
        status,
        metrics,
        reloader,
        hooks: hooks.clone(),
        jobs,
        run_dir: run_dir.clone(),
        stop_requested_at: None,
        completed_at_stop: 0,
        aborted: 0,
        deferred: Deferred::default(),
    };

    let admin_stop = tokio_util::sync::CancellationToken::new();
    if let Some(l) = admin_listener {
        tracing::info!(admin = %l.describe(), "Admin endpoint: /healthz, /readyz, /status, /metrics.");
        let state = crate::admin::AdminState {
            phase: run.phase_tx.subscribe(),
            front: run.front.clone(),
            status: run.status.clone(),
            metrics: run.metrics.clone(),
            jobs: run.jobs.clone(),
        };
        tokio::spawn(crate::admin::serve(l, state, admin_stop.clone()));
    }

    run.hooks
        .run(
            HookEvent::OnStarting,
            serde_json::json!({ "workers": run.cfg.workers, "command": run.cfg.command.join(" ") }),
            None,
        )
        .await;
    let started = Instant::now();
    tracing::info!(
        workers = run.cfg.workers,
        command = %run.cfg.command.join(" "),
        worker_socket = run.cfg.worker_socket.as_str(),
        "Starting workers."
    );
    let mut boots = run.sup.start(run.cfg.workers);
    let mut ready = 0;
    while run.machine.phase() == Phase::Starting {
        tokio::select! {
            r = boots.recv() => match r {
                Some(Ok(_)) => {
                    ready += 1;
                    if ready == run.cfg.workers {
                        run.apply(Event::WorkersReady);
                    }
                }
                Some(Err(e)) => {
                    tracing::error!("{e}");
                    run.apply(Event::BootFailed);
                }
                None => {
                    run.apply(Event::BootFailed);
                }
            },
            sig = run.inputs.next_stop() => run.on_signal(sig),
        }
    }

    if run.machine.phase() == Phase::Serving {
        let names: Vec<String> = listeners.iter().map(Listener::describe).collect();
        run.front.serve(listeners);
        tracing::info!(
            listen = %names.join(", "),
            workers = run.cfg.workers,
            boot_ms = started.elapsed().as_millis() as u64,
            "Serving."
        );
        if let Some(jobs) = &run.jobs {
            jobs.begin();
        }
        run.hooks.fire(
            HookEvent::WhenReady,
            serde_json::json!({ "workers": run.cfg.workers, "listen": names.join(", ") }),
        );
    } else {
        for l in listeners {
            l.drain_and_close();
        }
    }

    loop {
        match run.machine.phase() {
            Phase::Starting => unreachable!("left above"),
            Phase::Serving => {
                if let Some(op) = run.deferred.next() {
                    run_deferred(&mut run, op).await;
                    continue;
                }
                tokio::select! {
                    input = run.inputs.next() => match input {
                        Input::Stop(sig) => run.on_signal(sig),
                        Input::Control(ctl) => control(&mut run, ctl).await,
                    },
                    Some((req, reply)) = run.ops.recv() => operate(&mut run, req, reply).await,
                }
            }
            Phase::LameDuck => {
                let delay = run.cfg.drain_delay;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => { run.apply(Event::DrainDelayElapsed); }
                    sig = run.inputs.next_stop() => run.on_signal(sig),
                }
            }
            Phase::Draining => drain(&mut run).await,
            Phase::Stopping => {
                // Whatever is still running (an immediate stop, a stop while
                // starting) is handed back before the workers go.
                if let Some(jobs) = run.jobs.clone() {
                    let report = jobs
                        .finish(tokio::time::Instant::now() + std::time::Duration::from_secs(2))
                        .await;
                    report_incomplete(&run, &report);
                }
                let stop = run.sup.stop_all();
                tokio::pin!(stop);
                let outcome = loop {
                    tokio::select! {
                        o = &mut stop => break o,
                        sig = run.inputs.next_stop() => {
                            // Only an escalation matters now; apply() kills at once.
                            if let Outcome::StopNow = run.machine.clone().handle(Event::Signal(sig)) {
                                run.apply(Event::Signal(sig));
                            }
                        }
                    }
                };
                if outcome.forced {
                    run.machine.mark_forced();
                }
                run.front.abort_all().await;
                run.apply(Event::WorkersStopped);
            }
            Phase::Stopped => break,
        }
    }

    admin_stop.cancel();
    control_stop.cancel();
    // Removed here, not (only) by the control task: the runtime may end
    // before that task runs again.
    let _ = std::fs::remove_file(&run.cfg.control_socket);
    // on_exit, and any hook still running, end by the shutdown's deadline
    // (drain_delay + graceful_timeout + worker_stop_timeout after the stop
    // request), never later: a hook cannot hold the platform's stop timeout.
    let code = run.machine.exit_code();
    let hook_deadline = run.stop_requested_at.map(|t| {
        tokio::time::Instant::from_std(t)
            + run.cfg.drain_delay
            + run.cfg.graceful_timeout
            + run.cfg.worker_stop_timeout
    });
    run.hooks
        .run(
            HookEvent::OnExit,
            serde_json::json!({
                "exit_code": code,
                "signal": run.machine.stop_signal().map(|s| s.name()),
                "requests_aborted": run.aborted,
            }),
            hook_deadline,
        )
        .await;
    run.hooks
        .shutdown(
            hook_deadline
                .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(1)),
        )
        .await;
    if let Some(jobs) = &run.jobs {
        jobs.close().await;
    }
    let leftovers = run.reaper.kill_all_children().await;
    if leftovers > 0 {
        tracing::warn!(
            processes = leftovers,
            "Killed leftover child processes (started by workers and left behind)."
        );
    }
    if run.cfg.worker_socket == WorkerSocket::Unix {
        let _ = std::fs::remove_dir_all(&run_dir);
    }

    let duration_ms = run
        .stop_requested_at
        .map(|t| t.elapsed().as_millis() as u64);
    let finished = run
        .front
        .router
        .completed()
        .saturating_sub(run.completed_at_stop);
    let signal = run.machine.stop_signal().map(|s| s.name());
    if code == crate::exit::OK {
        tracing::info!(
            signal,
            duration_ms,
            requests_finished_during_shutdown = finished,
            requests_aborted = run.aborted,
            exit_code = code,
            "Shutdown complete: clean."
        );
    } else {
        tracing::warn!(
            signal,
            duration_ms,
            requests_finished_during_shutdown = finished,
            requests_aborted = run.aborted,
            exit_code = code,
            "Shutdown complete: {}.",
            match code {
                crate::exit::FORCED => "forced (work was cut off or a worker had to be killed)",
                crate::exit::IMMEDIATE => "immediate stop requested",
                _ => "failed",
            }
        );
    }
    Ok(code)
}

/// The workers' spec: the config's, plus `CURFEW_JOB_TOKEN` with a job
/// processor (the secret that tells the app a request is a job delivery).
fn worker_spec(cfg: &Config, run_dir: std::path::PathBuf, jobs: Option<&Processor>) -> WorkerSpec {
    let mut spec = WorkerSpec::from_config(cfg, run_dir);
    if let Some(jobs) = jobs {
        spec.extra_env
            .push(("CURFEW_JOB_TOKEN".to_owned(), jobs.token().to_owned()));
    }
    spec
}

/// Logs the jobs handed back at the cut-off and tells the `on_incomplete`
/// hook.
fn report_incomplete(run: &Run, report: &crate::processor::DrainReport) {
    if report.released.is_empty() && report.unreleased.is_empty() {
        return;
    }
    for r in &report.released {
        tracing::info!(job_id = r.id, queue = %r.queue, kind = %r.kind, attempt = r.attempt, age_ms = r.age_ms, "Job still running at the cut-off: stopped and handed back to its queue (it runs again; the attempt is not counted as a failure).");
    }
    for r in &report.unreleased {
        tracing::error!(job_id = r.id, queue = %r.queue, kind = %r.kind, attempt = r.attempt, age_ms = r.age_ms, "Job still running at the cut-off could not be handed back (store unreachable): it runs again when its lease expires or when this node starts again.");
    }
    tracing::warn!(
        released = report.released.len(),
        unreleased = report.unreleased.len(),
        finished = report.finished,
        "Jobs were still running at the shutdown's cut-off (graceful_timeout minus jobs.release_reserve)."
    );
    let list = |v: &[crate::processor::Running]| serde_json::to_value(v).unwrap_or_default();
    run.hooks.fire(
        HookEvent::OnIncomplete,
        serde_json::json!({
            "released": list(&report.released),
            "unreleased": list(&report.unreleased),
        }),
    );
}

/// Waits for `work` while answering stop signals (a repeated SIGTERM is
/// ignored and the wait goes on); `None` when a signal ended the draining
/// phase (an immediate stop).
async fn while_draining<F: std::future::Future>(run: &mut Run, work: F) -> Option<F::Output> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return Some(out),
            sig = run.inputs.next_stop() => {
                run.on_signal(sig);
                if run.machine.phase() != Phase::Draining {
                    return None;
                }
            }
        }
    }
}

async fn drain(run: &mut Run) {
    let started = Instant::now();
    run.front.stop_accepting().await;
    let deadline = tokio::time::Instant::now() + run.cfg.graceful_timeout;
    // Jobs drain beside the requests, until the cut-off that keeps
    // `release_reserve` of the budget for handing the rest back.
    let mut job_drain = run.jobs.clone().map(|jobs| {
        let cut_at = deadline
            .checked_sub(jobs.config().release_reserve)
            .unwrap_or(deadline);
        tokio::spawn(async move { jobs.drain(cut_at, deadline).await })
    });
    let in_flight = run.front.router.requests().len();
    tracing::info!(
        in_flight,
        graceful_timeout_ms = run.cfg.graceful_timeout.as_millis() as u64,
        "Draining: listeners closed; waiting for in-flight requests."
    );
    let front = run.front.clone();
    let Some(drained) = while_draining(run, front.drain(deadline)).await else {
        return;
    };
    if let Some(handle) = job_drain.as_mut() {
        let jobs_running = run.jobs.as_ref().map_or(0, |j| j.running().len());
        if jobs_running > 0 {
            tracing::info!(jobs_running, "Waiting for running jobs.");
        }
        let Some(report) = while_draining(run, handle).await else {
            return;
        };
        match report {
            Ok(report) => report_incomplete(run, &report),
            Err(e) => tracing::error!(error = %e, "The job drain task failed."),
        }
    }
    run.metrics.drain_done(started.elapsed());
    if drained {
        tracing::info!(
            duration_ms = started.elapsed().as_millis() as u64,
            "Drained: every request finished."
        );
        run.apply(Event::Drained);
    } else {
        let left = run.front.router.requests();
        run.aborted = left.len();
        for r in &left {
            match r.worker {
                Some(w) => tracing::warn!(
                    method = %r.method,
                    path = %r.path,
                    age_ms = r.age().as_millis() as u64,
                    worker = w,
                    "Request still in flight at graceful_timeout: cutting it off."
                ),
                None => tracing::warn!(
                    method = %r.method,
                    path = %r.path,
                    age_ms = r.age().as_millis() as u64,
                    "Request still queued at graceful_timeout: cutting it off."
                ),
            }
        }
        tracing::warn!(
            requests = left.len(),
            graceful_timeout_ms = run.cfg.graceful_timeout.as_millis() as u64,
            "graceful_timeout reached with work in flight."
        );
        run.front.abort_all().await;
        run.apply(Event::GraceExpired);
    }
}

/// Act on a control signal while serving.
async fn control(run: &mut Run, ctl: ControlSignal) {
    match ctl {
        ControlSignal::Reload => {
            let _ = reload_and_tell(run).await;
        }
        ControlSignal::ScaleUp => scale_by_one(run, true),
        ControlSignal::ScaleDown => scale_by_one(run, false),
        ControlSignal::Status => log_status(&run.status).await,
    }
}

/// SIGTTIN / SIGTTOU: one worker more or fewer (never fewer than one).
fn scale_by_one(run: &mut Run, up: bool) {
    let from = run.sup.workers();
    let to = if up {
        from + 1
    } else {
        from.saturating_sub(1).max(1)
    };
    if to == from {
        tracing::info!(workers = from, "Already at one worker; not scaling down.");
        return;
    }
    tracing::info!(from, to, "Scaling workers.");
    scale_to(run, to);
}

/// Scales to `to` workers. `run.cfg.workers` stays the configured number,
/// so a later reload changes the count only when the file's does.
fn scale_to(run: &mut Run, to: usize) {
    run.sup.scale(to);
    run.status
        .workers_wanted
        .store(to, std::sync::atomic::Ordering::Relaxed);
}

/// An operation that arrived while a reload was running. A reload holds the
/// supervisor until every slot of its batch has switched, so nothing else
/// may change the slots meanwhile; instead:
///
/// - a reload request is queued; one that arrives right after another
///   queued reload merges into it (a reload re-reads the configuration
///   when it runs, so one covers both);
/// - a scale request (SIGTTIN, SIGTTOU, `curfew scale`) is queued;
/// - a status request is answered at once; a stop abandons the reload.
///
/// Queued operations run in arrival order as soon as the reload is over,
/// each logged (INFO) when queued; a stop drops them (their callers are
/// told). Worker deaths need none of this: each slot handles its own at once.
enum Op {
    Reload {
        replies: Vec<oneshot::Sender<control::Response>>,
    },
    Scale {
        up: bool,
    },
    ScaleTo {
        workers: usize,
        reply: oneshot::Sender<control::Response>,
    },
}

#[derive(Default)]
struct Deferred {
    queue: std::collections::VecDeque<Op>,
}

impl Deferred {
    /// Queue `op`; `true` if it merged into the reload queued last.
    fn push(&mut self, op: Op) -> bool {
        if let Op::Reload { replies } = op {
            if let Some(Op::Reload { replies: queued }) = self.queue.back_mut() {
                queued.extend(replies);
                return true;
            }
            self.queue.push_back(Op::Reload { replies });
            return false;
        }
        self.queue.push_back(op);
        false
    }

    fn next(&mut self) -> Option<Op> {
        self.queue.pop_front()
    }

    /// curfew is stopping: drop what is queued, telling any caller.
    fn cancel(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        tracing::info!(
            operations = self.queue.len(),
            "Operations queued behind a reload are dropped: curfew is stopping."
        );
        for op in self.queue.drain(..) {
            let replies = match op {
                Op::Reload { replies } => replies,
                Op::ScaleTo { reply, .. } => vec![reply],
                Op::Scale { .. } => vec![],
            };
            for r in replies {
                let _ = r.send(control::Response::err("refused: curfew is stopping"));
            }
        }
    }

    /// Queue `op`, arrived during a reload, and say so in the log.
    fn defer(&mut self, op: Op) {
        let what = match &op {
            Op::Reload { .. } => "reload",
            Op::Scale { up: true } => "scale up (SIGTTIN)",
            Op::Scale { up: false } => "scale down (SIGTTOU)",
            Op::ScaleTo { .. } => "scale (control socket)",
        };
        if self.push(op) {
            tracing::info!(
                operation = what,
                "Reload requested while a reload is running: merged into the reload already queued."
            );
        } else {
            tracing::info!(
                operation = what,
                queued = self.queue.len(),
                "Operation requested while a reload is running: queued; it runs when the reload ends."
            );
        }
    }
}

/// Run an operation that waited for a reload to end.
async fn run_deferred(run: &mut Run, op: Op) {
    match op {
        Op::Reload { replies } => {
            let r = reload_and_tell(run).await;
            for reply in replies {
                let _ = reply.send(reload_response(&r));
            }
        }
        Op::Scale { up } => scale_by_one(run, up),
        Op::ScaleTo { workers, reply } => {
            let _ = reply.send(scale_op(run, workers));
        }
    }
}

/// SIGHUP: re-read the configuration and replace every worker with one of the
/// new generation, without dropping a request. If the configuration is bad or
/// the new workers cannot boot, the current ones keep serving.
async fn reload(run: &mut Run) -> Result<Reloaded, String> {
    let r = try_reload(run).await;
    run.metrics.reload(r.is_ok());
    r
}

/// A reload that happened.
struct Reloaded {
    generation: u64,
    /// Changed settings that keep their old value until a restart.
    restart_only: Vec<&'static str>,
}

async fn try_reload(run: &mut Run) -> Result<Reloaded, String> {
    tracing::info!(
        generation = run.sup.generation(),
        "Reload requested: re-reading the configuration."
    );
    let new = match (run.reloader)() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Reload failed: the configuration is invalid; the current workers keep serving.");
            return Err(format!(
                "the configuration is invalid; the current workers keep serving: {e}"
            ));
        }
    };
    let plan = plan_reload(&run.cfg, &new);
    for key in &plan.restart_only {
        tracing::warn!(
            setting = key,
            "Reload: `{key}` changed, which needs a restart of curfew; keeping the current value."
        );
    }
    if !plan.applied.is_empty() {
        tracing::info!(
            settings = plan.applied.join(", "),
            "Reload: applying the changed settings."
        );
    }
    let new = after_reload(&run.cfg, &new);
    let spec = worker_spec(&new, run.run_dir.clone(), run.jobs.as_ref());
    let batch = match new.reload {
        ReloadStrategy::AllAtOnce => run.sup.workers(),
        ReloadStrategy::Rolling(n) => n,
    };
    let t0 = Instant::now();
    let outcome = {
        let reload = run.sup.reload(spec, batch);
        tokio::pin!(reload);
        loop {
            tokio::select! {
                r = &mut reload => break Ok(r),
                input = run.inputs.next() => match input {
                    Input::Stop(sig) => break Err(sig),
                    Input::Control(ControlSignal::Status) => log_status(&run.status).await,
                    Input::Control(ControlSignal::Reload) => run.deferred.defer(Op::Reload { replies: vec![] }),
                    Input::Control(ControlSignal::ScaleUp) => run.deferred.defer(Op::Scale { up: true }),
                    Input::Control(ControlSignal::ScaleDown) => run.deferred.defer(Op::Scale { up: false }),
                },
                Some((req, reply)) = run.ops.recv() => match req {
                    control::Request::Stop => {
                        let _ = reply.send(control::Response::ok("stopping gracefully"));
                        tracing::info!("Stop requested on the control socket.");
                        break Err(StopSignal::Term);
                    }
                    control::Request::Reload => run.deferred.defer(Op::Reload { replies: vec![reply] }),
                    control::Request::Scale { workers } => run.deferred.defer(Op::ScaleTo { workers, reply }),
                    // Answered by the control router, never sent here.
                    control::Request::Status | control::Request::Jobs { .. } => {
                        let _ = reply.send(control::Response::err("not an operation"));
                    }
                },
            }
        }
    };
    match outcome {
        Ok(Ok(generation)) => {
            tracing::info!(
                generation,
                duration_ms = t0.elapsed().as_millis() as u64,
                "Reload complete: the new generation is serving."
            );
            // A count set by `curfew scale` stays unless the file's changed.
            if plan.applied.contains(&"workers") && new.workers != run.sup.workers() {
                tracing::info!(
                    from = run.sup.workers(),
                    to = new.workers,
                    "Reload: scaling workers."
                );
                run.sup.scale(new.workers);
            }
            run.cfg = new;
            run.status
                .generation
                .store(generation, std::sync::atomic::Ordering::Relaxed);
            run.status
                .workers_wanted
                .store(run.sup.workers(), std::sync::atomic::Ordering::Relaxed);
            Ok(Reloaded {
                generation,
                restart_only: plan.restart_only,
            })
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "Reload failed; the current workers keep serving.");
            Err(e.to_string())
        }
        Err(sig) => {
            tracing::info!(signal = sig.name(), "Reload abandoned: stopping.");
            run.on_signal(sig);
            Err("reload abandoned: curfew is stopping".into())
        }
    }
}

/// A reload, then the on_reload hook with its result.
async fn reload_and_tell(run: &mut Run) -> Result<Reloaded, String> {
    let r = reload(run).await;
    let details = match &r {
        Ok(r) => serde_json::json!({
            "result": "ok",
            "generation": r.generation,
            "restart_only": r.restart_only,
        }),
        Err(e) => serde_json::json!({ "result": "failed", "error": e }),
    };
    run.hooks.fire(HookEvent::OnReload, details);
    r
}

/// A request from the control socket (`curfew reload`, `stop`, `scale`).
async fn operate(run: &mut Run, req: control::Request, reply: oneshot::Sender<control::Response>) {
    use control::{Request, Response};
    match req {
        Request::Status => {
            let _ = reply.send(Response {
                ok: true,
                status: Some(run.status.full().await),
                ..Default::default()
            });
        }
        Request::Reload => {
            let r = reload_and_tell(run).await;
            let _ = reply.send(reload_response(&r));
        }
        Request::Stop => {
            let _ = reply.send(Response::ok("stopping gracefully"));
            tracing::info!("Stop requested on the control socket.");
            run.on_signal(StopSignal::Term);
        }
        Request::Jobs { .. } => {
            let _ = reply.send(Response::err(
                "jobs requests are answered by the control router",
            ));
        }
        Request::Scale { workers } => {
            let _ = reply.send(scale_op(run, workers));
        }
    }
}

fn reload_response(r: &Result<Reloaded, String>) -> control::Response {
    match r {
        Ok(Reloaded {
            generation,
            restart_only,
        }) if !restart_only.is_empty() => control::Response::ok(format!(
            "reloaded: generation {generation} is serving; changed but kept until a restart of curfew: {}",
            restart_only.join(", ")
        )),
        Ok(r) => control::Response::ok(format!("reloaded: generation {} is serving", r.generation)),
        Err(e) => control::Response::err(e.clone()),
    }
}

/// `curfew scale N`.
fn scale_op(run: &mut Run, workers: usize) -> control::Response {
    if workers == 0 || workers > 1024 {
        return control::Response::err(format!(
            "workers must be between 1 and 1024, not {workers}"
        ));
    }
    let from = run.sup.workers();
    tracing::info!(from, to = workers, "Scaling workers (control socket).");
    scale_to(run, workers);
    control::Response::ok(format!("scaling from {from} to {workers} workers"))
}

/// Answer control requests: status at once in any phase; the rest go to the
/// orchestrator while serving, and are refused once a stop is under way.
async fn route_control(
    mut rx: mpsc::Receiver<control::Incoming>,
    ops: mpsc::Sender<control::Incoming>,
    status: StatusSource,
) {
    while let Some((req, reply)) = rx.recv().await {
        let phase = *status.phase.borrow();
        match req {
            control::Request::Status => {
                let _ = reply.send(control::Response {
                    ok: true,
                    status: Some(status.full().await),
                    ..Default::default()
                });
            }
            // Jobs live in the store: answered in any phase, beside the
            // orchestrator (a slow store does not hold up other requests).
            control::Request::Jobs { request } => {
                let jobs = status.jobs.clone();
                tokio::spawn(async move {
                    let response = match jobs {
                        None => control::Response::err(
                            "this curfew has no job processor: add a [jobs] section to curfew.toml",
                        ),
                        Some(j) => match j.operate(request).await {
                            Ok((message, data)) => control::Response {
                                ok: true,
                                message: Some(message),
                                data,
                                ..Default::default()
                            },
                            Err(e) => control::Response::err(e.message),
                        },
                    };
                    let _ = reply.send(response);
                });
            }
            _ if phase != Phase::Serving => {
                let msg = match (&req, phase) {
                    (control::Request::Stop, p) if p > Phase::Serving => {
                        "already stopping".to_string()
                    }
                    (_, p) => format!("refused: curfew is {p}"),
                };
                let _ = reply.send(
                    if matches!(req, control::Request::Stop) && phase > Phase::Serving {
                        control::Response::ok(msg)
                    } else {
                        control::Response::err(msg)
                    },
                );
            }
            other => {
                if ops.send((other, reply)).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// SIGUSR1: a status report in the log (the same as `curfew status`).
async fn log_status(status: &StatusSource) {
    let st = status.full().await;
    tracing::info!(
        phase = %st.phase,
        uptime_s = st.uptime_s,
        generation = st.generation,
        workers = st.workers.len(),
        workers_wanted = st.workers_wanted,
        in_flight = st.requests_in_flight,
        queued = st.requests_queued,
        requests_completed = st.requests_completed,
        "Status."
    );
    for w in st.workers {
        tracing::info!(
            worker = w.id,
            pid = w.pid,
            generation = w.generation,
            age_s = w.age_s,
            in_flight = w.in_flight,
            served = w.requests_served,
            rss_mib = w.rss_bytes >> 20,
            "Status: worker."
        );
    }
    if let Some(jobs) = st.jobs {
        for q in jobs.queues {
            let s = q.store.as_ref();
            tracing::info!(
                queue = %q.queue,
                concurrency = q.concurrency,
                running_here = q.running_here,
                queued = s.map(|s| s.queued),
                scheduled = s.map(|s| s.scheduled),
                running = s.map(|s| s.running),
                failed = s.map(|s| s.failed),
                dead = s.map(|s| s.dead),
                oldest_queued_age_ms = s.and_then(|s| s.oldest_queued_age_ms),
                succeeded_here = q.succeeded,
                store_up = jobs.store_up,
                "Status: job queue."
            );
        }
        for r in jobs.running {
            tracing::info!(job_id = r.id, queue = %r.queue, kind = %r.kind, attempt = r.attempt, age_ms = r.age_ms, "Status: running job.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operations arriving during a reload: queued in order; a reload right
    /// after a queued reload merges into it (with its caller's reply);
    /// one after a queued scale does not (it must see the scale).
    #[test]
    fn operations_during_a_reload_queue_and_merge() {
        let mut d = Deferred::default();
        assert!(!d.push(Op::Reload { replies: vec![] }));
        let (tx, mut rx) = oneshot::channel();
        assert!(d.push(Op::Reload { replies: vec![tx] }));
        assert!(!d.push(Op::Scale { up: true }));
        assert!(!d.push(Op::Reload { replies: vec![] }));
        assert!(!d.push(Op::Scale { up: false }));
        let kinds: Vec<String> = d
            .queue
            .iter()
            .map(|op| match op {
                Op::Reload { replies } => format!("reload/{}", replies.len()),
                Op::Scale { up } => format!("scale/{up}"),
                Op::ScaleTo { workers, .. } => format!("to/{workers}"),
            })
            .collect();
        assert_eq!(kinds, ["reload/1", "scale/true", "reload/0", "scale/false"]);
        // A stop drops them all and answers the callers.
        d.cancel();
        assert!(d.next().is_none());
        let answer = rx.try_recv().expect("answered");
        assert!(!answer.ok);
    }
}
