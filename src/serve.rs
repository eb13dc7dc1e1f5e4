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

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::config::{Config, WorkerSocket};
use crate::lifecycle::{Event, Machine, Outcome, Phase, StopSignal};
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
}

struct Signals {
    term: Signal,
    int: Signal,
    quit: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    async fn next(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.term.recv() => StopSignal::Term,
            _ = self.int.recv() => StopSignal::Int,
            _ = self.quit.recv() => StopSignal::Quit,
        }
    }
}

/// The orchestrator's state across phases.
struct Run {
    cfg: Config,
    machine: Machine,
    phase_tx: watch::Sender<Phase>,
    front: Arc<Front>,
    sup: Supervisor,
    reaper: Reaper,
    signals: Signals,
    stop_requested_at: Option<Instant>,
    completed_at_stop: u64,
    aborted: usize,
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
    }
}

/// Run curfew until it has stopped; returns the process exit code.
pub async fn run(cfg: Config) -> Result<i32, ServeError> {
    // Become the subreaper of everything the workers start, so no grandchild
    // escapes to the host's init and every one is reaped here.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::debug!(error = %e, "Could not become a child subreaper.");
    }
    let signals = Signals::install().map_err(ServeError::Setup)?;
    let reaper = Reaper::start().map_err(ServeError::Setup)?;

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
    let run_dir = if cfg.worker_socket == WorkerSocket::Unix {
        make_run_dir().map_err(ServeError::RunDir)?
    } else {
        std::env::temp_dir()
    };

    let front = Front::new(&cfg);
    let spec = WorkerSpec::from_config(&cfg, run_dir.clone());
    let sup = Supervisor::new(reaper.clone(), spec, front.clone());
    let handle = sup.handle();
    front.on_hung(Box::new(move |uid, reason, request| handle.abort(uid, reason, request)));
    let handle = sup.handle();
    front.router.on_recycle(Box::new(move |uid, reason| handle.recycle(uid, reason)));
    let (phase_tx, _) = watch::channel(Phase::Starting);
    let mut run = Run {
        cfg,
        machine: Machine::new(),
        phase_tx,
        front,
        sup,
        reaper,
        signals,
        stop_requested_at: None,
        completed_at_stop: 0,
        aborted: 0,
    };

    let admin_stop = tokio_util::sync::CancellationToken::new();
    if let Some(l) = admin_listener {
        tracing::info!(admin = %l.describe(), "Admin endpoint: /healthz, /readyz.");
        let state = crate::admin::AdminState {
            phase: run.phase_tx.subscribe(),
            front: run.front.clone(),
        };
        tokio::spawn(crate::admin::serve(l, state, admin_stop.clone()));
    }

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
            sig = run.signals.next() => run.on_signal(sig),
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
    } else {
        for l in listeners {
            l.drain_and_close();
        }
    }

    loop {
        match run.machine.phase() {
            Phase::Starting => unreachable!("left above"),
            Phase::Serving => {
                let sig = run.signals.next().await;
                run.on_signal(sig);
            }
            Phase::LameDuck => {
                let delay = run.cfg.drain_delay;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => { run.apply(Event::DrainDelayElapsed); }
                    sig = run.signals.next() => run.on_signal(sig),
                }
            }
            Phase::Draining => drain(&mut run).await,
            Phase::Stopping => {
                let stop = run.sup.stop_all();
                tokio::pin!(stop);
                let outcome = loop {
                    tokio::select! {
                        o = &mut stop => break o,
                        sig = run.signals.next() => {
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

    let code = run.machine.exit_code();
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

async fn drain(run: &mut Run) {
    let started = Instant::now();
    run.front.stop_accepting().await;
    let deadline = tokio::time::Instant::now() + run.cfg.graceful_timeout;
    let in_flight = run.front.router.requests().len();
    tracing::info!(
        in_flight,
        graceful_timeout_ms = run.cfg.graceful_timeout.as_millis() as u64,
        "Draining: listeners closed; waiting for in-flight requests."
    );
    let front = run.front.clone();
    let drained = tokio::select! {
        d = front.drain(deadline) => d,
        sig = run.signals.next() => {
            run.on_signal(sig);
            if run.machine.phase() != Phase::Draining {
                return;
            }
            // Ignored repeat signal: keep draining until the same deadline.
            loop {
                tokio::select! {
                    d = front.drain(deadline) => break d,
                    sig = run.signals.next() => {
                        run.on_signal(sig);
                        if run.machine.phase() != Phase::Draining {
                            return;
                        }
                    }
                }
            }
        }
    };
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
