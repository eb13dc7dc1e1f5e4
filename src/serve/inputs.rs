//! The orchestrator's outside inputs: the process's signals, or channels
//! that send the same inputs (in-process tests).

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

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
pub(super) enum Input {
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
    pub(super) async fn next(&mut self) -> Input {
        let Inputs { stops, controls } = self;
        tokio::select! {
            Some(sig) = stops.recv() => Input::Stop(sig),
            Some(ctl) = controls.recv() => Input::Control(ctl),
            else => std::future::pending().await,
        }
    }

    /// The next stop signal (never, once the sender is gone).
    pub(super) async fn next_stop(&mut self) -> StopSignal {
        match self.stops.recv().await {
            Some(sig) => sig,
            None => std::future::pending().await,
        }
    }
}
