//! Why did a worker exit? Every exit is classified, and the class decides the
//! log level: an exit curfew asked for is INFO, an exit on its own is WARN, a
//! crash or a kill curfew did not send is ERROR (naming the OOM killer when it
//! is the likely cause). An exit by a foreign signal is foreign even after
//! curfew's SIGTERM (a worker OOM-killed while it drains).

use super::reaper::{ExitStatus, signal_name};

/// What curfew had done to the worker before it exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentSignal {
    None,
    /// The polite stop signal (SIGTERM) to drain and exit. An exit by any
    /// other signal after it (SIGKILL from the OOM killer or an operator, a
    /// crash) is still not curfew's doing.
    Term,
    /// SIGKILL after the worker did not stop within `worker_stop_timeout`,
    /// or because the worker failed to boot in time.
    Kill,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitClass {
    /// Exited after curfew asked it to stop (any status).
    Stopped(ExitStatus),
    /// curfew had to SIGKILL it.
    KilledByCurfew,
    /// Exited on its own with this code (including 0: a worker is not meant to exit).
    Exited(i32),
    /// Killed by a signal curfew did not send.
    KilledExternally {
        signal: i32,
        likely_oom: bool,
        oom_confirmed: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warn,
    Error,
}

impl ExitClass {
    pub fn of(status: ExitStatus, sent: SentSignal, oom_kills_rose: bool) -> ExitClass {
        match (sent, status) {
            (SentSignal::Kill, _) => ExitClass::KilledByCurfew,
            (SentSignal::Term, ExitStatus::Signal(sig)) if sig != libc::SIGTERM => {
                ExitClass::of(status, SentSignal::None, oom_kills_rose)
            }
            (SentSignal::Term, s) => ExitClass::Stopped(s),
            (SentSignal::None, ExitStatus::Code(c)) => ExitClass::Exited(c),
            (SentSignal::None, ExitStatus::Signal(sig)) => ExitClass::KilledExternally {
                signal: sig,
                likely_oom: sig == libc::SIGKILL || oom_kills_rose,
                oom_confirmed: oom_kills_rose,
            },
        }
    }

    /// Whether curfew asked for this exit (stopped or killed it itself).
    pub fn asked(&self) -> bool {
        matches!(self, ExitClass::Stopped(_) | ExitClass::KilledByCurfew)
    }

    pub fn severity(&self) -> Severity {
        match self {
            ExitClass::Stopped(_) => Severity::Info,
            ExitClass::KilledByCurfew | ExitClass::Exited(_) => Severity::Warn,
            ExitClass::KilledExternally { .. } => Severity::Error,
        }
    }

    /// Short machine-readable reason (log field, later a metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            ExitClass::Stopped(_) => "stopped",
            ExitClass::KilledByCurfew => "killed_by_curfew",
            ExitClass::Exited(_) => "exited",
            ExitClass::KilledExternally {
                oom_confirmed: true,
                ..
            } => "oom_killed",
            ExitClass::KilledExternally {
                likely_oom: true, ..
            } => "oom_or_external_kill",
            ExitClass::KilledExternally { signal, .. } if is_crash_signal(*signal) => "crashed",
            ExitClass::KilledExternally { .. } => "killed_by_signal",
        }
    }

    /// A sentence for the log.
    pub fn describe(&self) -> String {
        match self {
            ExitClass::Stopped(s) => format!("Worker stopped by curfew ({s})."),
            ExitClass::KilledByCurfew => "Worker killed by curfew with SIGKILL.".to_string(),
            ExitClass::Exited(code) => format!("Worker exited on its own with code {code}."),
            ExitClass::KilledExternally { oom_confirmed: true, .. } => {
                "Worker killed by the kernel OOM killer (the cgroup's oom_kill count rose while it ran).".to_string()
            }
            ExitClass::KilledExternally { signal, likely_oom: true, .. } if *signal == libc::SIGKILL => {
                "Worker killed by SIGKILL, which curfew did not send: most likely the kernel OOM killer (check `dmesg` or the cgroup's memory.events).".to_string()
            }
            ExitClass::KilledExternally { signal, .. } if is_crash_signal(*signal) => {
                format!("Worker crashed with {} (a fatal error inside the worker).", signal_name(*signal))
            }
            ExitClass::KilledExternally { signal, .. } => {
                format!("Worker killed by {}, which curfew did not send.", signal_name(*signal))
            }
        }
    }
}

/// Signals a process raises on itself when it crashes (abort(), a bad memory
/// access, ...), as opposed to ones sent by someone else.
fn is_crash_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGABRT
            | libc::SIGSEGV
            | libc::SIGBUS
            | libc::SIGFPE
            | libc::SIGILL
            | libc::SIGTRAP
            | libc::SIGSYS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_we_asked_for_are_info() {
        for s in [
            ExitStatus::Code(0),
            ExitStatus::Code(1),
            ExitStatus::Signal(libc::SIGTERM),
        ] {
            let c = ExitClass::of(s, SentSignal::Term, false);
            assert_eq!(c, ExitClass::Stopped(s));
            assert_eq!(c.severity(), Severity::Info);
        }
    }

    /// The issue-15 case: curfew sent SIGTERM (a reload's old worker, a
    /// scale-down) but the worker died of a SIGKILL curfew did not send.
    #[test]
    fn a_foreign_signal_after_our_sigterm_is_still_foreign() {
        let c = ExitClass::of(ExitStatus::Signal(libc::SIGKILL), SentSignal::Term, false);
        assert_eq!(c.severity(), Severity::Error);
        assert_eq!(c.reason(), "oom_or_external_kill");
        assert!(!c.asked());
        assert!(!c.describe().contains("stopped by curfew"));
        let c = ExitClass::of(ExitStatus::Signal(libc::SIGSEGV), SentSignal::Term, false);
        assert_eq!(c.reason(), "crashed");
        assert!(ExitClass::of(ExitStatus::Signal(libc::SIGTERM), SentSignal::Term, false).asked());
    }

    #[test]
    fn our_sigkill_is_a_warning() {
        let c = ExitClass::of(ExitStatus::Signal(libc::SIGKILL), SentSignal::Kill, false);
        assert_eq!(c, ExitClass::KilledByCurfew);
        assert_eq!(c.severity(), Severity::Warn);
    }

    #[test]
    fn own_exit_is_a_warning_with_code() {
        let c = ExitClass::of(ExitStatus::Code(3), SentSignal::None, false);
        assert_eq!(c, ExitClass::Exited(3));
        assert_eq!(c.severity(), Severity::Warn);
        assert!(c.describe().contains("code 3"));
    }

    #[test]
    fn foreign_sigkill_is_an_error_naming_oom() {
        let c = ExitClass::of(ExitStatus::Signal(libc::SIGKILL), SentSignal::None, false);
        assert_eq!(c.severity(), Severity::Error);
        assert!(c.describe().contains("OOM"));
        assert_eq!(c.reason(), "oom_or_external_kill");
    }

    #[test]
    fn a_rising_oom_count_confirms_the_oom_killer() {
        let c = ExitClass::of(ExitStatus::Signal(libc::SIGKILL), SentSignal::None, true);
        assert_eq!(c.reason(), "oom_killed");
        assert!(c.describe().contains("killed by the kernel OOM killer"));
        assert_eq!(c.severity(), Severity::Error);
    }

    #[test]
    fn foreign_sigterm_is_an_error() {
        let c = ExitClass::of(ExitStatus::Signal(libc::SIGTERM), SentSignal::None, false);
        assert_eq!(c.severity(), Severity::Error);
        assert!(c.describe().contains("SIGTERM, which curfew did not send"));
    }

    #[test]
    fn foreign_segv_is_an_error_without_oom() {
        let c = ExitClass::of(ExitStatus::Signal(libc::SIGSEGV), SentSignal::None, false);
        assert_eq!(
            c,
            ExitClass::KilledExternally {
                signal: libc::SIGSEGV,
                likely_oom: false,
                oom_confirmed: false,
            }
        );
        assert!(c.describe().contains("crashed with SIGSEGV"));
        assert_eq!(c.reason(), "crashed");
        assert!(!c.describe().contains("OOM"));
    }
}
