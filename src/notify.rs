//! systemd's notify protocol (`Type=notify`, sd_notify(3)) for curfew's own
//! process, over the `sd-notify` crate: `READY=1` once serving, `RELOADING=1`
//! with `MONOTONIC_USEC` then `READY=1` around a reload, `STOPPING=1` at the
//! stop request, `STATUS=` lines for `systemctl status`,
//! `EXTEND_TIMEOUT_USEC` while the stop still has budget, `WATCHDOG=1`, and
//! `MAINPID=` when an upgrade hands the service to a new curfew process.
//!
//! Off (every call a no-op) unless `NOTIFY_SOCKET` is set. The variable stays
//! in curfew's environment (the crate reads it there) and is removed from
//! every child's: a worker or hook must not speak for the service
//! (`supervisor::spawn`, `supervisor::command`).
//!
//! The orchestrator calls [`Notifier::beat`] from its own input loop
//! (`serve::Inputs`) every [`Notifier::beat_every`]: the watchdog ping then
//! proves that the loop which answers signals still runs, not merely that a
//! timer task does.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// How often the status line is refreshed (and the watchdog pinged, unless
/// it needs more often).
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// Added to the remaining stop budget in `EXTEND_TIMEOUT_USEC`, for the
/// teardown after the workers are gone (leftovers killed, summary logged).
const EXTEND_MARGIN: Duration = Duration::from_secs(2);

/// curfew's side of the notify protocol.
#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
    /// `WATCHDOG_USEC` (when `WATCHDOG_PID` is absent or ours).
    watchdog: Option<Duration>,
    /// The last `STATUS=` sent, to send only changes.
    last_status: Mutex<String>,
    /// When the whole stop must be over: stop request + drain_delay +
    /// graceful_timeout + worker_stop_timeout.
    stop_deadline: Mutex<Option<Instant>>,
    /// A failed send is logged once.
    warned: AtomicBool,
    /// Sends nothing while set: an upgrade's new curfew until the old one
    /// has named it `MAINPID`, the old one after that.
    muted: AtomicBool,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        let watchdog = if enabled {
            sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
        } else {
            None
        };
        Notifier {
            enabled,
            watchdog,
            last_status: Mutex::new(String::new()),
            stop_deadline: Mutex::new(None),
            warned: AtomicBool::new(false),
            muted: AtomicBool::new(false),
        }
    }

    /// One that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            enabled: false,
            watchdog: None,
            last_status: Mutex::new(String::new()),
            stop_deadline: Mutex::new(None),
            warned: AtomicBool::new(false),
            muted: AtomicBool::new(false),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How often [`Notifier::beat`] must run: every 2 s, or at half the
    /// watchdog interval when that is shorter.
    pub fn beat_every(&self) -> Duration {
        match self.watchdog {
            Some(w) => (w / 2).clamp(Duration::from_millis(1), STATUS_EVERY),
            None => STATUS_EVERY,
        }
    }

    /// `READY=1` with the status line: serving (after the start, or after a
    /// reload).
    pub fn ready(&self, status: &str) {
        self.remember(status);
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Send nothing (`true`) or again (`false`).
    pub fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::SeqCst);
    }

    /// `MAINPID=<pid>`: an upgrade's new curfew is the service's main
    /// process from now on (sent by the old one, which systemd accepts
    /// from the main process with the default `NotifyAccess=main`).
    pub fn main_pid(&self, pid: u32, status: &str) {
        self.remember(status);
        self.send(&[NotifyState::MainPid(pid), NotifyState::Status(status)]);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC` (which `Type=notify-reload`
    /// requires), at the start of a reload.
    pub fn reloading(&self) {
        let status = "Reloading: booting the new generation of workers.";
        self.remember(status);
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now, NotifyState::Status(status)]),
            Err(_) => self.send(&[NotifyState::Reloading, NotifyState::Status(status)]),
        }
    }

    /// `STOPPING=1` at the stop request, with `EXTEND_TIMEOUT_USEC` for the
    /// whole stop budget (`budget` from now, plus a margin for the
    /// teardown).
    pub fn stopping(&self, budget: Duration, status: &str) {
        // Checked: configuration caps each duration at 10 years, but an
        // overflowing deadline must not panic in the stop path.
        let deadline = Instant::now().checked_add(budget);
        if let Ok(mut d) = self.stop_deadline.lock() {
            *d = deadline;
        }
        self.remember(status);
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status(status),
            extend(budget.saturating_add(EXTEND_MARGIN)),
        ]);
    }

    /// The periodic beat: `WATCHDOG=1` (when the watchdog is on), the status
    /// line if it changed, and while a stop still has budget,
    /// `EXTEND_TIMEOUT_USEC` up to its deadline (never past it: a stop that
    /// overruns its own budget is left to the platform's kill).
    pub fn beat(&self, status: &str) {
        if !self.enabled || self.muted.load(Ordering::SeqCst) {
            return;
        }
        let mut states = Vec::with_capacity(3);
        if self.watchdog.is_some() {
            states.push(NotifyState::Watchdog);
        }
        if self.remember(status) {
            states.push(NotifyState::Status(status));
        }
        let deadline = self.stop_deadline.lock().ok().and_then(|d| *d);
        if let Some(left) = deadline.and_then(|d| d.checked_duration_since(Instant::now())) {
            states.push(extend(left + EXTEND_MARGIN));
        }
        if !states.is_empty() {
            self.send(&states);
        }
    }

    /// Keeps `status` as the last one sent; `true` if it changed.
    fn remember(&self, status: &str) -> bool {
        let Ok(mut last) = self.last_status.lock() else {
            return true;
        };
        if *last == status {
            return false;
        }
        status.clone_into(&mut last);
        true
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled || self.muted.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = sd_notify::notify(states)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                error = %e,
                "Cannot send to NOTIFY_SOCKET (systemd notify); later failures are not logged."
            );
        }
    }
}

fn extend(d: Duration) -> NotifyState<'static> {
    NotifyState::ExtendTimeoutUsec(u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beat_interval_follows_the_watchdog() {
        let mut n = Notifier::disabled();
        assert_eq!(n.beat_every(), STATUS_EVERY);
        n.watchdog = Some(Duration::from_millis(400));
        assert_eq!(n.beat_every(), Duration::from_millis(200));
        n.watchdog = Some(Duration::from_secs(60));
        assert_eq!(n.beat_every(), STATUS_EVERY);
    }

    #[test]
    fn status_is_sent_only_when_it_changes() {
        let n = Notifier::disabled();
        assert!(n.remember("a"));
        assert!(!n.remember("a"));
        assert!(n.remember("b"));
    }

    #[test]
    fn extend_saturates() {
        assert_eq!(
            extend(Duration::from_secs(3)).to_string(),
            "EXTEND_TIMEOUT_USEC=3000000"
        );
        assert_eq!(
            extend(Duration::from_secs(100_000)).to_string(),
            format!("EXTEND_TIMEOUT_USEC={}", u32::MAX)
        );
    }
}
