//! Lifecycle events of the orchestrator, each a value whose `emit` writes
//! its log line (with a stable `event=` field, for people and tests to
//! search), updates its metric and fires its hook together, so the three
//! never disagree (vector's `internal_events` are the model).
//!
//! In text logs an event reads `event="reload_finished" result="ok" …`;
//! tests wait on that, not on the sentence.
//!
//! The supervisor emits [`WorkerExited`] and [`WorkerAborted`]; the
//! orchestrator the rest. Hooks arrive through [`HookSink`] (the
//! supervisor sits below the hooks runner).

use std::time::Duration;

use crate::config::hooks::HookEvent;
use crate::metrics::Metrics;
use crate::protocol::jobs::Running;

/// Where hook details go: [`crate::hooks::Hooks`] in curfew, anything that
/// records them in tests.
pub trait HookSink: Send + Sync {
    fn fire(&self, event: HookEvent, details: serde_json::Value);
}

impl<F: Fn(HookEvent, serde_json::Value) + Send + Sync> HookSink for F {
    fn fire(&self, event: HookEvent, details: serde_json::Value) {
        self(event, details)
    }
}

/// No hooks (before the orchestrator has wired them).
pub struct NoHooks;

impl HookSink for NoHooks {
    fn fire(&self, _: HookEvent, _: serde_json::Value) {}
}

/// Where an event goes besides the log.
pub struct Sinks<'a> {
    pub metrics: &'a Metrics,
    pub hooks: &'a dyn HookSink,
}

/// How loud a worker's exit is (from `supervisor::classify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loudness {
    /// Stopped as curfew asked.
    Info,
    /// It exited on its own, or had to be SIGKILLed.
    Warn,
    /// A signal curfew did not send, or a crash.
    Error,
}

/// A worker process exited (`curfew_worker_exits_total`, `worker_exit` for
/// an exit curfew did not ask for).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerExited {
    pub worker: usize,
    pub pid: u32,
    pub uptime_ms: u64,
    /// The classification (`exited`, `oom_killed`, `stopped`, …).
    pub reason: &'static str,
    /// What the metric counts: `reason`, or why curfew replaced it
    /// (`recycled`, `reload`) when it stopped as asked.
    pub counted_as: &'static str,
    /// The log message (`classify`'s description).
    pub message: String,
    pub loudness: Loudness,
    /// Curfew asked it to stop (no `worker_exit` hook).
    pub asked: bool,
    /// Why curfew stopped it, or what it was doing when it exited.
    pub why: String,
    /// The exit status as text.
    pub exit: String,
    pub restart_in: Option<Duration>,
    /// Requests it was serving (not asked for exits only).
    pub requests: String,
    /// Its last stderr lines, on one line.
    pub stderr: String,
}

impl WorkerExited {
    pub const NAME: &'static str = "worker_exited";

    /// The `worker_exit` hook's details.
    pub fn hook(&self) -> serde_json::Value {
        serde_json::json!({
            "worker": self.worker,
            "pid": self.pid,
            "reason": self.reason,
            "exit": self.exit,
            "message": self.message,
            "requests": self.requests,
            "uptime_ms": self.uptime_ms,
            "restart_in_ms": self.restart_in.map(|d| d.as_millis() as u64),
        })
    }

    pub fn emit(&self, sinks: &Sinks<'_>) {
        let event = Self::NAME;
        let (worker, pid, uptime_ms, reason) = (self.worker, self.pid, self.uptime_ms, self.reason);
        let restart_in_ms = self.restart_in.map(|d| d.as_millis() as u64);
        let (msg, why, requests, stderr) = (&self.message, &self.why, &self.requests, &self.stderr);
        sinks.metrics.worker_exit(self.counted_as);
        match self.loudness {
            Loudness::Info => {
                tracing::info!(event, worker, pid, uptime_ms, reason, why = %why, "{msg}");
                return;
            }
            Loudness::Error => {
                tracing::error!(event, worker, pid, uptime_ms, reason, during = %why, restart_in_ms, requests = %requests, stderr = %stderr, "{msg}")
            }
            Loudness::Warn => {
                tracing::warn!(event, worker, pid, uptime_ms, reason, during = %why, restart_in_ms, requests = %requests, stderr = %stderr, "{msg}")
            }
        }
        if !self.asked {
            sinks.hooks.fire(HookEvent::WorkerExit, self.hook());
        }
    }
}

/// A hung worker was aborted (SIGABRT, then SIGKILL) with its stack dump
/// (`curfew_worker_exits_total{reason="hung"}`, `worker_abort`).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerAborted {
    pub worker: usize,
    pub pid: u32,
    pub reason: String,
    pub request: String,
    /// It did not exit on SIGABRT within `abort_timeout`.
    pub killed_after_abort: bool,
    /// What it wrote after the SIGABRT (the stack dump).
    pub stack_dump: String,
}

impl WorkerAborted {
    pub const NAME: &'static str = "worker_aborted";

    /// The `worker_abort` hook's details.
    pub fn hook(&self) -> serde_json::Value {
        serde_json::json!({
            "worker": self.worker,
            "pid": self.pid,
            "reason": self.reason,
            "request": self.request,
            "stack_dump": self.stack_dump,
        })
    }

    pub fn emit(&self, sinks: &Sinks<'_>) {
        sinks.metrics.worker_exit("hung");
        tracing::error!(
            event = Self::NAME,
            worker = self.worker,
            pid = self.pid,
            reason = %self.reason,
            request = %self.request,
            killed_after_abort = self.killed_after_abort,
            stack_dump = %self.stack_dump,
            "Worker hung: aborted it (SIGABRT{}) and starting a replacement.",
            if self.killed_after_abort { ", then SIGKILL" } else { "" }
        );
        sinks.hooks.fire(HookEvent::WorkerAbort, self.hook());
    }
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

/// curfew serves: the listeners accept and every worker answered
/// (`when_ready`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    pub listen: String,
    pub workers: usize,
    pub boot_ms: u64,
}

impl Serving {
    pub const NAME: &'static str = "serving";

    pub fn emit(&self, sinks: &Sinks<'_>) {
        tracing::info!(
            event = Self::NAME,
            listen = %self.listen,
            workers = self.workers,
            boot_ms = self.boot_ms,
            "Serving."
        );
        sinks.hooks.fire(
            HookEvent::WhenReady,
            serde_json::json!({ "workers": self.workers, "listen": self.listen }),
        );
    }
}

/// An upgrade of curfew itself (SIGUSR2, `curfew upgrade`), from the old
/// process's side, and its successor's `TookOver`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// The new curfew was started with the listening sockets.
    Started {
        pid: u32,
        program: String,
        sockets: usize,
    },
    /// The new curfew serves; this one stops accepting and drains.
    HandedOver { pid: u32, duration_ms: u64 },
    /// (In the new curfew.) The old one handed over (`acked`), or closed
    /// the channel without a word (it stopped or died); this one is the
    /// service now either way.
    TookOver { from_pid: u32, acked: bool },
    /// The new curfew did not start; this one keeps serving.
    Failed {
        pid: Option<u32>,
        reason: String,
        /// Its last lines on stderr.
        stderr: String,
    },
    /// Not started: why (PID 1, not serving, a reload running).
    Refused { reason: String },
    /// Asked again while one is under way (joined or ignored).
    AlreadyRunning { pid: u32 },
    /// A stop came first: the new curfew is stopped too.
    Abandoned { pid: u32, signal: &'static str },
}

impl Upgrade {
    pub const NAME: &'static str = "upgrade";

    pub fn emit(&self) {
        let event = Self::NAME;
        match self {
            Upgrade::Started {
                pid,
                program,
                sockets,
            } => tracing::info!(
                event,
                result = "started",
                pid,
                program = %program,
                sockets,
                "Upgrade: started the new curfew with the listening sockets; it takes over once every worker is ready."
            ),
            Upgrade::HandedOver { pid, duration_ms } => tracing::info!(
                event,
                result = "handed_over",
                pid,
                duration_ms,
                "Upgrade: the new curfew serves; stop accepting and drain."
            ),
            Upgrade::TookOver {
                from_pid,
                acked: true,
            } => tracing::info!(
                event,
                result = "took_over",
                from_pid,
                "Upgrade: took over from the previous curfew, which drains and exits."
            ),
            Upgrade::TookOver {
                from_pid,
                acked: false,
            } => tracing::warn!(
                event,
                result = "took_over",
                from_pid,
                "Upgrade: the previous curfew closed the channel without handing over (it stopped or died); serving on as the service."
            ),
            Upgrade::Failed {
                pid,
                reason,
                stderr,
            } => tracing::error!(
                event,
                result = "failed",
                pid,
                reason = %reason,
                stderr = %stderr,
                "Upgrade failed: {reason}; this curfew keeps serving."
            ),
            Upgrade::Refused { reason } => tracing::warn!(
                event,
                result = "refused",
                reason = %reason,
                "Upgrade refused: {reason}."
            ),
            Upgrade::AlreadyRunning { pid } => tracing::info!(
                event,
                result = "ignored",
                pid,
                "Upgrade requested while one is under way (new curfew pid {pid}); waiting for that one."
            ),
            Upgrade::Abandoned { pid, signal } => tracing::info!(
                event,
                result = "abandoned",
                pid,
                signal,
                "Upgrade abandoned: {signal} received; stopping the new curfew too."
            ),
        }
    }
}

/// A request the drain's deadline cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutRequest {
    pub method: String,
    pub path: String,
    pub age_ms: u64,
    /// The worker serving it; `None`: it was still queued.
    pub worker: Option<usize>,
}

/// How the request drain ended (`curfew_drain_duration_seconds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainFinished {
    /// Every request finished.
    Drained { duration: Duration },
    /// `graceful_timeout` passed with these still in flight or queued.
    Expired {
        duration: Duration,
        graceful_timeout: Duration,
        cut: Vec<CutRequest>,
    },
}

impl DrainFinished {
    pub const NAME: &'static str = "drain_finished";

    pub fn emit(&self, sinks: &Sinks<'_>) {
        let event = Self::NAME;
        match self {
            DrainFinished::Drained { duration } => {
                sinks.metrics.drain_done(*duration);
                tracing::info!(
                    event,
                    result = "drained",
                    duration_ms = duration.as_millis() as u64,
                    "Drained: every request finished."
                );
            }
            DrainFinished::Expired {
                duration,
                graceful_timeout,
                cut,
            } => {
                sinks.metrics.drain_done(*duration);
                for r in cut {
                    let (method, path, age_ms) = (&r.method, &r.path, r.age_ms);
                    match r.worker {
                        Some(worker) => tracing::warn!(
                            %method,
                            %path,
                            age_ms,
                            worker,
                            "Request still in flight at graceful_timeout: cutting it off."
                        ),
                        None => tracing::warn!(
                            %method,
                            %path,
                            age_ms,
                            "Request still queued at graceful_timeout: cutting it off."
                        ),
                    }
                }
                tracing::warn!(
                    event,
                    result = "expired",
                    requests = cut.len(),
                    duration_ms = duration.as_millis() as u64,
                    graceful_timeout_ms = graceful_timeout.as_millis() as u64,
                    "graceful_timeout reached with work in flight."
                );
            }
        }
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
        // One field list for both levels, so they cannot drift apart.
        macro_rules! summary {
            ($level:expr, $result:expr, $($message:tt)+) => {
                tracing::event!(
                    $level,
                    event,
                    result = $result,
                    signal,
                    duration_ms,
                    requests_finished_during_shutdown = requests_finished,
                    requests_aborted,
                    exit_code,
                    $($message)+
                )
            };
        }
        if exit_code == crate::exit::OK {
            summary!(tracing::Level::INFO, "clean", "Shutdown complete: clean.");
        } else {
            let (result, why) = match exit_code {
                crate::exit::FORCED => (
                    "forced",
                    "forced (work was cut off or a worker had to be killed)",
                ),
                crate::exit::IMMEDIATE => ("immediate", "immediate stop requested"),
                _ => ("failed", "failed"),
            };
            summary!(tracing::Level::WARN, result, "Shutdown complete: {why}.");
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
