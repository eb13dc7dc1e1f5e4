//! Lifecycle events of the orchestrator, each a value whose `emit` writes
//! its log line (with a stable `event=` field, for people and tests to
//! search), updates its metric and fires its hook together, so the three
//! never disagree (vector's `internal_events` are the model).
//!
//! In text logs an event reads `event="reload_finished" result="ok" …`;
//! tests wait on that, not on the sentence.
//!
//! Events of the supervisor (worker exits, aborts) are still logged where
//! they happen (`supervisor::instance`); they move here next.

use crate::hooks::{HookEvent, Hooks};
use crate::metrics::Metrics;
use crate::protocol::jobs::Running;

/// Where an event goes besides the log.
pub struct Sinks<'a> {
    pub metrics: &'a Metrics,
    pub hooks: &'a Hooks,
}

/// How a reload ended (`curfew_reloads_total`, `on_reload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadFinished {
    /// The new generation is serving.
    Done {
        generation: u64,
        duration_ms: u64,
        /// Changed settings kept until a restart of curfew.
        restart_only: Vec<&'static str>,
    },
    /// The configuration was invalid or the new generation could not boot:
    /// the current workers keep serving.
    Failed { error: String },
    /// A stop came first.
    Abandoned { signal: &'static str },
}

impl ReloadFinished {
    pub const NAME: &'static str = "reload_finished";

    pub fn ok(&self) -> bool {
        matches!(self, ReloadFinished::Done { .. })
    }

    /// The `on_reload` hook's details.
    pub fn hook(&self) -> serde_json::Value {
        match self {
            ReloadFinished::Done {
                generation,
                restart_only,
                ..
            } => serde_json::json!({
                "result": "ok",
                "generation": generation,
                "restart_only": restart_only,
            }),
            ReloadFinished::Failed { error } => {
                serde_json::json!({ "result": "failed", "error": error })
            }
            ReloadFinished::Abandoned { .. } => serde_json::json!({
                "result": "failed",
                "error": "reload abandoned: curfew is stopping",
            }),
        }
    }

    pub fn emit(&self, sinks: &Sinks<'_>) {
        let event = Self::NAME;
        match self {
            ReloadFinished::Done {
                generation,
                duration_ms,
                restart_only,
            } => tracing::info!(
                event,
                result = "ok",
                generation,
                duration_ms,
                restart_only = restart_only.join(", "),
                "Reload complete: the new generation is serving."
            ),
            ReloadFinished::Failed { error } => tracing::error!(
                event,
                result = "failed",
                error = %error,
                "Reload failed; the current workers keep serving."
            ),
            ReloadFinished::Abandoned { signal } => {
                tracing::info!(
                    event,
                    result = "abandoned",
                    signal,
                    "Reload abandoned: stopping."
                )
            }
        }
        sinks.metrics.reload(self.ok());
        sinks.hooks.fire(HookEvent::OnReload, self.hook());
    }
}

/// Jobs still running at the shutdown's cut-off, handed back to their
/// queues (`on_incomplete`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobsHandedBack<'a> {
    /// Stopped and put back `queued`.
    pub released: &'a [Running],
    /// Could not be put back (store unreachable): they run again when their
    /// lease expires.
    pub unreleased: &'a [Running],
    /// Jobs that finished during the drain.
    pub finished: usize,
}

impl JobsHandedBack<'_> {
    pub const NAME: &'static str = "jobs_handed_back";

    /// The `on_incomplete` hook's details.
    pub fn hook(&self) -> serde_json::Value {
        let list = |v: &[Running]| serde_json::to_value(v).unwrap_or_default();
        serde_json::json!({
            "released": list(self.released),
            "unreleased": list(self.unreleased),
        })
    }

    /// Nothing when no job was cut.
    pub fn emit(&self, sinks: &Sinks<'_>) {
        if self.released.is_empty() && self.unreleased.is_empty() {
            return;
        }
        let event = Self::NAME;
        for r in self.released {
            tracing::info!(event, job_id = r.id, queue = %r.queue, kind = %r.kind, attempt = r.attempt, age_ms = r.age_ms, "Job still running at the cut-off: stopped and handed back to its queue (it runs again; the attempt is not counted as a failure).");
        }
        for r in self.unreleased {
            tracing::error!(event, job_id = r.id, queue = %r.queue, kind = %r.kind, attempt = r.attempt, age_ms = r.age_ms, "Job still running at the cut-off could not be handed back (store unreachable): it runs again when its lease expires or when this node starts again.");
        }
        tracing::warn!(
            event,
            released = self.released.len(),
            unreleased = self.unreleased.len(),
            finished = self.finished,
            "Jobs were still running at the shutdown's cut-off (graceful_timeout minus jobs.release_reserve)."
        );
        sinks.hooks.fire(HookEvent::OnIncomplete, self.hook());
    }
}

/// The last line of a run (`on_exit` gets the same numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownComplete {
    pub signal: Option<&'static str>,
    /// From the stop request; `None` when none came (a boot failure).
    pub duration_ms: Option<u64>,
    pub requests_finished: u64,
    pub requests_aborted: usize,
    pub exit_code: i32,
}

impl ShutdownComplete {
    pub const NAME: &'static str = "shutdown_complete";

    /// The `on_exit` hook's details (run, with a deadline, before the
    /// summary line).
    pub fn hook(&self) -> serde_json::Value {
        serde_json::json!({
            "exit_code": self.exit_code,
            "signal": self.signal,
            "requests_aborted": self.requests_aborted,
        })
    }

    /// The summary line: INFO for a clean exit, WARN otherwise.
    pub fn emit(&self) {
        let event = Self::NAME;
        let ShutdownComplete {
            signal,
            duration_ms,
            requests_finished,
            requests_aborted,
            exit_code,
        } = *self;
        if exit_code == crate::exit::OK {
            tracing::info!(
                event,
                signal,
                duration_ms,
                requests_finished_during_shutdown = requests_finished,
                requests_aborted,
                exit_code,
                "Shutdown complete: clean."
            );
        } else {
            tracing::warn!(
                event,
                signal,
                duration_ms,
                requests_finished_during_shutdown = requests_finished,
                requests_aborted,
                exit_code,
                "Shutdown complete: {}.",
                match exit_code {
                    crate::exit::FORCED => "forced (work was cut off or a worker had to be killed)",
                    crate::exit::IMMEDIATE => "immediate stop requested",
                    _ => "failed",
                }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_hook_details() {
        let done = ReloadFinished::Done {
            generation: 3,
            duration_ms: 10,
            restart_only: vec!["bind"],
        };
        assert!(done.ok());
        assert_eq!(
            done.hook(),
            serde_json::json!({"result": "ok", "generation": 3, "restart_only": ["bind"]})
        );
        let failed = ReloadFinished::Failed {
            error: "boom".into(),
        };
        assert!(!failed.ok());
        assert_eq!(failed.hook()["result"], "failed");
        assert_eq!(
            ReloadFinished::Abandoned { signal: "SIGTERM" }.hook()["result"],
            "failed"
        );
    }

    #[test]
    fn shutdown_hook_details() {
        let s = ShutdownComplete {
            signal: Some("SIGTERM"),
            duration_ms: Some(5),
            requests_finished: 2,
            requests_aborted: 1,
            exit_code: 3,
        };
        assert_eq!(
            s.hook(),
            serde_json::json!({"exit_code": 3, "signal": "SIGTERM", "requests_aborted": 1})
        );
    }
}
