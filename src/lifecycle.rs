//! The lifecycle state machine: the single source of truth for what phase
//! curfew is in and what an event (a signal, a timer, workers becoming ready)
//! does to it.
//!
//! ```text
//! starting ──ready──▶ serving ──stop──▶ lame-duck ──drain_delay──▶ draining ──drained──▶ stopping ──workers gone──▶ stopped
//!    │                                                                  └──graceful_timeout (forced)──▶ ┘
//!    └──boot failed / stop──────────────────────────────────────────────────────────────────────────▶ stopping
//! any phase ──immediate stop (2nd SIGINT, SIGQUIT)──▶ stopping (immediate)
//! ```
//!
//! This module is pure: it performs no I/O. [`crate::serve`] feeds it events
//! and performs the side effects of each transition; the proxy and the
//! supervisor watch the resulting [`Phase`] through a `tokio::sync::watch`.
//!
//! Invariants:
//! - phases only move forward;
//! - a graceful stop request while already stopping is ignored (Heroku and
//!   systemd may deliver SIGTERM several times), except that a second SIGINT
//!   (Ctrl-C twice) or any SIGQUIT escalates to an immediate stop;
//! - the exit code is decided by what happened on the way
//!   ([`Machine::exit_code`]).

use std::fmt;

use crate::exit;

/// Where curfew is in its life. Ordered: a later phase compares greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Booting the first generation of workers; no traffic accepted yet.
    Starting,
    /// Accepting and serving traffic; ready.
    Serving,
    /// Stop requested: not ready any more, but still accepting and serving for
    /// `drain_delay` so load balancers can deregister us.
    LameDuck,
    /// Listeners closed (after accepting what waited in the kernel queue);
    /// in-flight requests finish, keep-alive connections are closed.
    Draining,
    /// Workers are being stopped (SIGTERM, then SIGKILL after `worker_stop_timeout`).
    Stopping,
    /// Everything is down; curfew exits.
    Stopped,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::LameDuck => "lame-duck",
            Phase::Draining => "draining",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
        }
    }

    /// Ready for new traffic (what `/readyz` reports).
    pub fn is_ready(self) -> bool {
        self == Phase::Serving
    }

    /// The public listeners are open in this phase.
    pub fn accepts_connections(self) -> bool {
        matches!(self, Phase::Serving | Phase::LameDuck)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The signals curfew gives a lifecycle meaning to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Int,
    Quit,
}

impl StopSignal {
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Int => "SIGINT",
            StopSignal::Quit => "SIGQUIT",
        }
    }
}

/// Something that happened, fed to [`Machine::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Every worker of the first generation is ready.
    WorkersReady,
    /// A worker of the first generation could not boot.
    BootFailed,
    /// A stop signal arrived.
    Signal(StopSignal),
    /// `drain_delay` has passed since the stop request.
    DrainDelayElapsed,
    /// Nothing is in flight any more and every client connection is closed.
    Drained,
    /// `graceful_timeout` passed with work still in flight.
    GraceExpired,
    /// Every worker process has exited and been reaped.
    WorkersStopped,
    /// A new curfew (an upgrade) serves the same sockets: stop accepting
    /// and drain at once (no `drain_delay`: the address never stops being
    /// served, so there is nothing for a load balancer to notice).
    HandedOver,
}

/// What the orchestrator must do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Enter this phase (and perform its entry actions).
    Enter(Phase),
    /// Stop immediately: kill workers now and go to `Stopping`.
    StopNow,
    /// The event changes nothing (e.g. a repeated SIGTERM).
    Ignored,
}

/// The lifecycle state, plus what the exit code depends on.
#[derive(Debug, Clone)]
pub struct Machine {
    phase: Phase,
    /// Which signal started the stop, if any.
    stop_signal: Option<StopSignal>,
    boot_failed: bool,
    forced: bool,
    immediate: bool,
    /// The stop is an upgrade's hand-over (not a signal).
    handed_over: bool,
}

impl Default for Machine {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine {
    pub fn new() -> Self {
        Machine {
            phase: Phase::Starting,
            stop_signal: None,
            boot_failed: false,
            forced: false,
            immediate: false,
            handed_over: false,
        }
    }

    /// This curfew handed its sockets to a successor (an upgrade).
    pub fn handed_over(&self) -> bool {
        self.handed_over
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn stop_signal(&self) -> Option<StopSignal> {
        self.stop_signal
    }

    pub fn is_immediate(&self) -> bool {
        self.immediate
    }

    /// Record that the shutdown had to use force (a worker SIGKILLed after
    /// `worker_stop_timeout`), which makes the exit code [`exit::FORCED`].
    pub fn mark_forced(&mut self) {
        self.forced = true;
    }

    /// Apply an event. Returns what the orchestrator must do.
    pub fn handle(&mut self, event: Event) -> Outcome {
        use Phase::*;
        let next = match (self.phase, event) {
            (Stopped, _) => return Outcome::Ignored,

            // Escalation: QUIT always, INT once a stop is under way.
            (_, Event::Signal(StopSignal::Quit)) => return self.stop_now(StopSignal::Quit),
            // After a hand-over the first SIGINT (a Ctrl-C reaching both
            // curfews) is a graceful stop's, which is under way already.
            (Draining | Stopping, Event::Signal(sig))
                if self.handed_over && self.stop_signal.is_none() =>
            {
                self.stop_signal = Some(sig);
                return Outcome::Ignored;
            }
            (LameDuck | Draining | Stopping, Event::Signal(StopSignal::Int)) if !self.immediate => {
                return self.stop_now(StopSignal::Int);
            }
            (LameDuck | Draining | Stopping, Event::Signal(_)) => return Outcome::Ignored,

            (Starting, Event::WorkersReady) => Serving,
            (Starting, Event::BootFailed) => {
                self.boot_failed = true;
                Stopping
            }
            (Starting, Event::Signal(sig)) => {
                // Nothing is being served yet: there is nothing to drain.
                self.stop_signal = Some(sig);
                Stopping
            }
            (Serving, Event::Signal(sig)) => {
                self.stop_signal = Some(sig);
                LameDuck
            }
            (Serving, Event::HandedOver) => {
                self.handed_over = true;
                Draining
            }
            (LameDuck, Event::DrainDelayElapsed) => Draining,
            (Draining, Event::Drained) => Stopping,
            (Draining, Event::GraceExpired) => {
                self.forced = true;
                Stopping
            }
            (Stopping, Event::WorkersStopped) => Stopped,
            _ => return Outcome::Ignored,
        };
        self.phase = next;
        Outcome::Enter(next)
    }

    fn stop_now(&mut self, sig: StopSignal) -> Outcome {
        if self.immediate || self.phase == Phase::Stopped {
            return Outcome::Ignored;
        }
        self.immediate = true;
        self.stop_signal.get_or_insert(sig);
        self.phase = Phase::Stopping;
        Outcome::StopNow
    }

    /// The process exit code this run ends with.
    pub fn exit_code(&self) -> i32 {
        if self.boot_failed {
            exit::FAILURE
        } else if self.immediate {
            exit::IMMEDIATE
        } else if self.forced {
            exit::FORCED
        } else {
            exit::OK
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving() -> Machine {
        let mut m = Machine::new();
        assert_eq!(
            m.handle(Event::WorkersReady),
            Outcome::Enter(Phase::Serving)
        );
        m
    }

    #[test]
    fn clean_shutdown_walks_every_phase_and_exits_zero() {
        let mut m = serving();
        assert_eq!(
            m.handle(Event::Signal(StopSignal::Term)),
            Outcome::Enter(Phase::LameDuck)
        );
        assert_eq!(
            m.handle(Event::DrainDelayElapsed),
            Outcome::Enter(Phase::Draining)
        );
        assert_eq!(m.handle(Event::Drained), Outcome::Enter(Phase::Stopping));
        assert_eq!(
            m.handle(Event::WorkersStopped),
            Outcome::Enter(Phase::Stopped)
        );
        assert_eq!(m.exit_code(), exit::OK);
        assert_eq!(m.stop_signal(), Some(StopSignal::Term));
    }

    #[test]
    fn a_hand_over_drains_at_once_and_exits_zero() {
        let mut m = serving();
        assert_eq!(m.handle(Event::HandedOver), Outcome::Enter(Phase::Draining));
        assert!(m.handed_over());
        assert_eq!(m.stop_signal(), None);
        // A first SIGINT (Ctrl-C) or SIGTERM meanwhile changes nothing; a
        // second SIGINT or a SIGQUIT still stops at once.
        assert_eq!(m.handle(Event::Signal(StopSignal::Int)), Outcome::Ignored);
        assert_eq!(m.handle(Event::Signal(StopSignal::Term)), Outcome::Ignored);
        assert_eq!(
            m.clone().handle(Event::Signal(StopSignal::Int)),
            Outcome::StopNow
        );
        assert_eq!(m.handle(Event::Drained), Outcome::Enter(Phase::Stopping));
        assert_eq!(
            m.handle(Event::WorkersStopped),
            Outcome::Enter(Phase::Stopped)
        );
        assert_eq!(m.exit_code(), exit::OK);
        // Only from serving.
        let mut m = Machine::new();
        assert_eq!(m.handle(Event::HandedOver), Outcome::Ignored);
        assert!(!m.handed_over());
    }

    #[test]
    fn sigint_is_graceful_like_sigterm() {
        let mut m = serving();
        assert_eq!(
            m.handle(Event::Signal(StopSignal::Int)),
            Outcome::Enter(Phase::LameDuck)
        );
        assert!(!m.is_immediate());
    }

    #[test]
    fn repeated_sigterm_is_ignored() {
        let mut m = serving();
        m.handle(Event::Signal(StopSignal::Term));
        assert_eq!(m.handle(Event::Signal(StopSignal::Term)), Outcome::Ignored);
        m.handle(Event::DrainDelayElapsed);
        assert_eq!(m.handle(Event::Signal(StopSignal::Term)), Outcome::Ignored);
        assert_eq!(m.phase(), Phase::Draining);
    }

    #[test]
    fn second_sigint_stops_now() {
        let mut m = serving();
        m.handle(Event::Signal(StopSignal::Int));
        m.handle(Event::DrainDelayElapsed);
        assert_eq!(m.handle(Event::Signal(StopSignal::Int)), Outcome::StopNow);
        assert_eq!(m.phase(), Phase::Stopping);
        assert_eq!(m.handle(Event::Signal(StopSignal::Int)), Outcome::Ignored);
        m.handle(Event::WorkersStopped);
        assert_eq!(m.exit_code(), exit::IMMEDIATE);
    }

    #[test]
    fn sigint_after_sigterm_escalates() {
        let mut m = serving();
        m.handle(Event::Signal(StopSignal::Term));
        assert_eq!(m.handle(Event::Signal(StopSignal::Int)), Outcome::StopNow);
    }

    #[test]
    fn sigquit_stops_now_from_any_phase() {
        for phase_events in [
            vec![],
            vec![Event::WorkersReady],
            vec![Event::WorkersReady, Event::Signal(StopSignal::Term)],
        ] {
            let mut m = Machine::new();
            for e in phase_events {
                m.handle(e);
            }
            assert_eq!(m.handle(Event::Signal(StopSignal::Quit)), Outcome::StopNow);
            assert_eq!(m.phase(), Phase::Stopping);
        }
    }

    #[test]
    fn grace_expiry_forces_exit_code() {
        let mut m = serving();
        m.handle(Event::Signal(StopSignal::Term));
        m.handle(Event::DrainDelayElapsed);
        assert_eq!(
            m.handle(Event::GraceExpired),
            Outcome::Enter(Phase::Stopping)
        );
        m.handle(Event::WorkersStopped);
        assert_eq!(m.exit_code(), exit::FORCED);
    }

    #[test]
    fn worker_killed_on_stop_forces_exit_code() {
        let mut m = serving();
        m.handle(Event::Signal(StopSignal::Term));
        m.handle(Event::DrainDelayElapsed);
        m.handle(Event::Drained);
        m.mark_forced();
        m.handle(Event::WorkersStopped);
        assert_eq!(m.exit_code(), exit::FORCED);
    }

    #[test]
    fn boot_failure_exits_with_failure() {
        let mut m = Machine::new();
        assert_eq!(m.handle(Event::BootFailed), Outcome::Enter(Phase::Stopping));
        m.handle(Event::WorkersStopped);
        assert_eq!(m.exit_code(), exit::FAILURE);
    }

    #[test]
    fn stop_while_starting_skips_draining() {
        let mut m = Machine::new();
        assert_eq!(
            m.handle(Event::Signal(StopSignal::Term)),
            Outcome::Enter(Phase::Stopping)
        );
        assert_eq!(m.handle(Event::WorkersReady), Outcome::Ignored);
        m.handle(Event::WorkersStopped);
        assert_eq!(m.exit_code(), exit::OK);
    }

    #[test]
    fn phases_only_move_forward() {
        let mut m = serving();
        m.handle(Event::Signal(StopSignal::Term));
        assert_eq!(m.handle(Event::WorkersReady), Outcome::Ignored);
        assert_eq!(
            m.handle(Event::Drained),
            Outcome::Ignored,
            "drained before draining"
        );
        assert_eq!(m.phase(), Phase::LameDuck);
        assert!(Phase::Serving < Phase::LameDuck && Phase::Draining < Phase::Stopping);
    }

    #[test]
    fn nothing_happens_after_stopped() {
        let mut m = serving();
        m.handle(Event::Signal(StopSignal::Quit));
        m.handle(Event::WorkersStopped);
        for e in [
            Event::Signal(StopSignal::Quit),
            Event::Signal(StopSignal::Int),
            Event::Drained,
        ] {
            assert_eq!(m.handle(e), Outcome::Ignored);
        }
    }

    #[test]
    fn readiness_and_accepting_by_phase() {
        assert!(Phase::Serving.is_ready());
        assert!(!Phase::LameDuck.is_ready());
        assert!(Phase::LameDuck.accepts_connections());
        assert!(!Phase::Draining.accepts_connections());
    }
}
