//! The orchestrator's outside inputs: the process's signals, or channels
//! that send the same inputs (in-process tests).

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::ops::Op;
use crate::lifecycle::StopSignal;

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
    /// SIGUSR2: upgrade curfew itself.
    Upgrade,
}

/// Where the orchestrator's outside inputs come from: the process's signals
/// ([`Inputs::os`]) or, to drive the orchestration in-process (tests),
/// channels ([`Inputs::channel`]). Control-socket requests join the same
/// stream as operations ([`Op`]), so every phase handler reads one source.
pub struct Inputs {
    stops: mpsc::UnboundedReceiver<StopSignal>,
    ops: mpsc::UnboundedReceiver<Op>,
    sender: InputSender,
    /// Run every period while the orchestrator waits for an input (the
    /// systemd status line and watchdog ping, `Run::build`): it runs only
    /// while the loop that answers signals does.
    beat: Option<Beat>,
}

/// A periodic call made from within the orchestrator's waits.
struct Beat {
    every: tokio::time::Interval,
    call: Box<dyn FnMut() + Send>,
}

/// One input: a stop signal (for the lifecycle machine) or an operation.
pub(super) enum Input {
    Stop(StopSignal),
    Op(Op),
}

/// Sends inputs to an orchestrator built with [`Inputs::channel`].
#[derive(Clone)]
pub struct InputSender {
    stops: mpsc::UnboundedSender<StopSignal>,
    ops: mpsc::UnboundedSender<Op>,
}

impl InputSender {
    /// As if the process got SIGTERM (`Term`), SIGINT (`Int`) or SIGQUIT
    /// (`Quit`).
    pub fn stop(&self, sig: StopSignal) {
        let _ = self.stops.send(sig);
    }

    /// As if the process got SIGHUP, SIGTTIN, SIGTTOU or SIGUSR1.
    pub fn control(&self, ctl: ControlSignal) {
        self.op(match ctl {
            ControlSignal::Reload => Op::Reload { replies: vec![] },
            ControlSignal::ScaleUp => Op::Scale { up: true },
            ControlSignal::ScaleDown => Op::Scale { up: false },
            ControlSignal::Status => Op::LogStatus,
            ControlSignal::Upgrade => Op::Upgrade { reply: None },
        });
    }

    /// `curfew scale workers` as the control socket hands it on once it saw
    /// curfew serving (the orchestrator may be stopping by the time it
    /// reads it); the answer arrives on the receiver.
    pub fn scale_request(
        &self,
        workers: usize,
    ) -> tokio::sync::oneshot::Receiver<crate::control::Response> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.op(Op::ScaleTo { workers, reply });
        rx
    }

    /// An operation (from a signal or the control socket).
    pub(super) fn op(&self, op: Op) {
        let _ = self.ops.send(op);
    }
}

impl Inputs {
    /// Inputs fed by channels, and their sender.
    pub fn channel() -> (Inputs, InputSender) {
        let (stop_tx, stops) = mpsc::unbounded_channel();
        let (op_tx, ops) = mpsc::unbounded_channel();
        let sender = InputSender {
            stops: stop_tx,
            ops: op_tx,
        };
        (
            Inputs {
                stops,
                ops,
                sender: sender.clone(),
                beat: None,
            },
            sender,
        )
    }

    /// Calls `call` every `every` while an input is awaited.
    pub(super) fn set_beat(&mut self, every: std::time::Duration, call: Box<dyn FnMut() + Send>) {
        let mut every = tokio::time::interval(every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.beat = Some(Beat { every, call });
    }

    /// A sender into these inputs (for the control socket's requests).
    pub(super) fn sender(&self) -> InputSender {
        self.sender.clone()
    }

    /// Inputs from the process's signals: TERM, INT, QUIT stop; HUP, TTIN,
    /// TTOU, USR1, USR2 control. Must be called inside the runtime.
    pub fn os() -> std::io::Result<Inputs> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut quit = signal(SignalKind::quit())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut ttin = signal(SignalKind::from_raw(libc::SIGTTIN))?;
        let mut ttou = signal(SignalKind::from_raw(libc::SIGTTOU))?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        // nginx's and gunicorn's "upgrade the binary".
        let mut usr2 = signal(SignalKind::user_defined2())?;
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
                    _ = usr2.recv() => {
                        tracing::info!(signal = "SIGUSR2", "Received SIGUSR2: upgrading curfew itself.");
                        tx.control(ControlSignal::Upgrade);
                    }
                }
            }
        });
        Ok(inputs)
    }

    /// The next input of either kind.
    pub(super) async fn next(&mut self) -> Input {
        let Inputs {
            stops, ops, beat, ..
        } = self;
        loop {
            tokio::select! {
                Some(sig) = stops.recv() => return Input::Stop(sig),
                Some(op) = ops.recv() => return Input::Op(op),
                () = Beat::tick(beat) => {}
            }
        }
    }

    /// An operation already waiting, if any (without waiting).
    pub(super) fn pending_op(&mut self) -> Option<Op> {
        self.ops.try_recv().ok()
    }

    /// The next stop signal (never, once the sender is gone).
    pub(super) async fn next_stop(&mut self) -> StopSignal {
        let Inputs { stops, beat, .. } = self;
        loop {
            tokio::select! {
                Some(sig) = stops.recv() => return sig,
                () = Beat::tick(beat) => {}
            }
        }
    }
}

impl Beat {
    /// Waits for the next period and makes the call; never returns without
    /// a beat (so a closed channel waits here instead of spinning).
    async fn tick(beat: &mut Option<Beat>) {
        match beat {
            Some(b) => {
                b.every.tick().await;
                (b.call)();
            }
            None => std::future::pending().await,
        }
    }
}
