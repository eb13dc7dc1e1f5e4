//! One worker process: starting it, waiting until it is ready, stopping it,
//! aborting it when hung, measuring its memory, and logging how it ended.
//!
//! Its exit status arrives once (from the reaper) and is kept: whoever
//! watches the process next ([`Instance::wait_exit`], [`Instance::exited`])
//! sees the same status, so an exit noticed in one state of its slot is never
//! lost or re-read as something else in the next.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::classify::{ExitClass, SentSignal, Severity};
use super::output::{self, Stream, Tail};
use super::reaper::ExitStatus;
use super::{Backends, Shared, WorkerAddr, WorkerSpec, spawn};
use crate::events::{Loudness, WorkerAborted, WorkerExited};

/// How long a stop waits for a worker after SIGKILL before moving on.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// A worker process being supervised.
pub struct Instance {
    pub uid: u64,
    pub id: usize,
    pub pid: u32,
    pub addr: WorkerAddr,
    pub generation: u64,
    /// Recycle after this many requests (`max_requests` + jitter).
    pub max_requests: Option<u64>,
    exit: oneshot::Receiver<ExitStatus>,
    /// The exit status, once received.
    status: Option<ExitStatus>,
    pub started: Instant,
    pub tail: Tail,
    /// Its output relay (told when it is ready).
    output: output::Worker,
    /// The cgroup's OOM-kill count when it started.
    pub oom_kills_at_start: Option<u64>,
    /// Set when it is stopped because it was replaced (`recycled`,
    /// `reload`): the reason its exit is counted under in the metrics.
    pub replaced: Option<&'static str>,
    shared: Arc<Shared>,
    stderr_done: Option<JoinHandle<()>>,
}

impl Drop for Instance {
    /// A worker that has exited leaves its Unix socket's file behind (fd and
    /// unix modes): removed here, so recycles and restarts do not fill the
    /// run directory. A worker still running keeps it (the run directory is
    /// removed at exit).
    fn drop(&mut self) {
        if self.exited().is_some()
            && let WorkerAddr::Unix(path) = &self.addr
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// How a boot attempt ended.
pub enum Boot {
    Ready,
    Exited(ExitStatus),
    TimedOut(String),
    Stopped,
}

/// Why a worker did not become ready.
pub struct BootFailure {
    pub reason: String,
    /// Its exit was logged (and reported) as a worker exit already: it was
    /// killed by a signal curfew did not send, or crashed, while booting.
    pub logged: bool,
}

impl Instance {
    pub fn start(
        shared: &Arc<Shared>,
        spec: &WorkerSpec,
        id: usize,
        uid: u64,
    ) -> std::io::Result<Instance> {
        let s = spawn::spawn(&shared.reaper, spec, id, uid)?;
        let out = output::Worker::new(id, s.pid, spec.worker_log_level, shared.relay.clone());
        if let Some(rx) = s.stdout {
            output::capture(rx, out.clone(), Stream::Stdout, None);
        }
        let tail = Tail::default();
        let stderr_done = s
            .stderr
            .map(|rx| output::capture(rx, out.clone(), Stream::Stderr, Some(tail.clone())));
        Ok(Instance {
            uid,
            id,
            pid: s.pid,
            addr: s.addr,
            generation: spec.generation,
            max_requests: spec
                .max_requests
                .map(|m| m + jitter(spec.max_requests_jitter)),
            exit: s.exit,
            status: None,
            started: Instant::now(),
            tail,
            output: out,
            oom_kills_at_start: super::oom::oom_kills(),
            replaced: None,
            shared: shared.clone(),
            stderr_done,
        })
    }

    /// Resolves once the process has exited (at once if it has already).
    /// Cancel-safe: dropping it loses nothing.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        // The reaper drops the sender only if its table is gone (never while
        // curfew runs); -1 stands for "unknown".
        let s = (&mut self.exit).await.unwrap_or(ExitStatus::Code(-1));
        self.status = Some(s);
        s
    }

    /// [`Instance::wait_exit`] after a SIGKILL, for at most [`KILL_WAIT`]:
    /// a process stuck in the kernel (uninterruptible sleep on NFS or FUSE)
    /// dies only when it leaves it, and must not hold a stop forever. On
    /// time out it is named at WARN and taken as killed (the reaper still
    /// reaps it whenever it exits).
    async fn wait_killed(&mut self) -> ExitStatus {
        match tokio::time::timeout(KILL_WAIT, self.wait_exit()).await {
            Ok(s) => s,
            Err(_) => {
                tracing::warn!(
                    worker = self.id,
                    pid = self.pid,
                    waited_ms = KILL_WAIT.as_millis() as u64,
                    "Worker still there after SIGKILL (stuck in the kernel, e.g. on NFS or FUSE); not waiting for it any more."
                );
                ExitStatus::Signal(Signal::SIGKILL as i32)
            }
        }
    }

    /// The exit status if the process has exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            match self.exit.try_recv() {
                Ok(s) => self.status = Some(s),
                Err(oneshot::error::TryRecvError::Closed) => {
                    self.status = Some(ExitStatus::Code(-1))
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
        self.status
    }

    pub fn signal_group(&self, sig: Signal) {
        // The worker leads its own process group (process_group(0) at spawn).
        let _ = killpg(Pid::from_raw(self.pid as i32), sig);
    }

    /// It is ready: a traceback from now on is not a boot crash, and a
    /// boot crash seen before is news again at a later boot.
    pub fn mark_ready(&self) {
        self.output.ready.store(true, Ordering::Relaxed);
        self.shared.relay.worker_ready();
    }

    /// Wait (briefly) until its stderr has been read to the end, so the tail
    /// holds its last words.
    pub async fn flush_stderr(&mut self) {
        if let Some(h) = self.stderr_done.take() {
            let _ = tokio::time::timeout(Duration::from_millis(500), h).await;
        }
    }

    /// Probe until ready, exit, timeout or stop. Probes start fast (10 ms)
    /// and back off to 200 ms.
    pub async fn wait_ready(
        &mut self,
        backends: &Arc<dyn Backends>,
        timeout: Duration,
        stop: &CancellationToken,
    ) -> Boot {
        let deadline = tokio::time::Instant::now() + crate::config::duration::bounded(timeout);
        let mut interval = Duration::from_millis(10);
        let mut last = String::from("no probe completed");
        let addr = self.addr.clone();
        loop {
            tokio::select! {
                status = self.wait_exit() => return Boot::Exited(status),
                _ = tokio::time::sleep_until(deadline) => return Boot::TimedOut(last),
                _ = stop.cancelled() => return Boot::Stopped,
                r = backends.probe(addr.clone()) => match r {
                    Ok(()) => return Boot::Ready,
                    Err(e) => last = e,
                },
            }
            tokio::select! {
                status = self.wait_exit() => return Boot::Exited(status),
                _ = tokio::time::sleep_until(deadline) => return Boot::TimedOut(last),
                _ = stop.cancelled() => return Boot::Stopped,
                _ = tokio::time::sleep(interval) => {}
            }
            interval = (interval * 2).min(Duration::from_millis(200));
        }
    }

    /// After a failed boot: make sure it is gone and describe why. A worker
    /// killed by a signal curfew did not send (the OOM killer, an operator)
    /// or crashed while booting is logged as such, like any such exit.
    pub async fn boot_failure(&mut self, boot: Boot, boot_timeout: Duration) -> BootFailure {
        let mut logged = false;
        let reason = match boot {
            Boot::Exited(status) => {
                self.signal_group(Signal::SIGKILL);
                self.flush_stderr().await;
                let class = ExitClass::of(status, SentSignal::None, self.oom_killed());
                if matches!(class, ExitClass::KilledExternally { .. }) {
                    self.log_exit(&class, None, "booting");
                    logged = true;
                }
                format!("it exited during boot ({status})")
            }
            Boot::TimedOut(last) => {
                self.signal_group(Signal::SIGKILL);
                let _ = self.wait_killed().await;
                format!("not ready within boot_timeout ({boot_timeout:?}); last probe: {last}")
            }
            Boot::Ready | Boot::Stopped => String::from("boot interrupted"),
        };
        self.signal_group(Signal::SIGKILL); // leftovers of its group
        self.flush_stderr().await;
        if !logged {
            self.shared.metrics.worker_exit("boot_failed");
        }
        BootFailure { reason, logged }
    }

    /// An exit curfew did not ask for (the process died while it served,
    /// booted, waited for a reload's go, or drained): kill what is left of its
    /// group, read its last words, log it by its class (WARN or ERROR, never
    /// "stopped by curfew") and tell the `worker_exit` hook. `during` says
    /// what it was doing.
    pub async fn died(mut self, status: ExitStatus, restart_in: Option<Duration>, during: &str) {
        self.signal_group(Signal::SIGKILL);
        self.flush_stderr().await;
        let class = ExitClass::of(status, SentSignal::None, self.oom_killed());
        self.log_exit(&class, restart_in, during);
    }

    /// SIGTERM the worker's group, wait `stop_timeout`, then SIGKILL (at once
    /// if `kill_now` fires). Returns whether it had to be killed. A worker
    /// that is already dead, or dies of a signal curfew did not send while it
    /// stops, is reported as such (see [`Instance::died`]).
    pub async fn stop(
        mut self,
        stop_timeout: Duration,
        kill_now: &CancellationToken,
        why: &str,
    ) -> bool {
        if let Some(status) = self.exited() {
            self.died(status, None, &format!("before it was stopped ({why})"))
                .await;
            return false;
        }
        let mut sent = SentSignal::Term;
        let mut forced = false;
        if kill_now.is_cancelled() {
            self.signal_group(Signal::SIGKILL);
            sent = SentSignal::Kill;
        } else {
            self.signal_group(Signal::SIGTERM);
        }
        let term = sent == SentSignal::Term;
        let status = if !term {
            self.wait_killed().await
        } else {
            tokio::select! {
                s = self.wait_exit() => s,
                _ = tokio::time::sleep(stop_timeout) => {
                    tracing::warn!(
                        worker = self.id,
                        pid = self.pid,
                        timeout_ms = stop_timeout.as_millis() as u64,
                        "Worker did not exit within worker_stop_timeout after SIGTERM; sending SIGKILL."
                    );
                    forced = true;
                    self.signal_group(Signal::SIGKILL);
                    sent = SentSignal::Kill;
                    self.wait_killed().await
                }
                _ = kill_now.cancelled() => {
                    self.signal_group(Signal::SIGKILL);
                    sent = SentSignal::Kill;
                    self.wait_killed().await
                }
            }
        };
        // Anything left in its process group goes too.
        self.signal_group(Signal::SIGKILL);
        self.flush_stderr().await;
        if sent == SentSignal::Kill && !forced {
            self.shared.metrics.worker_exit("killed_by_curfew");
            tracing::info!(
                worker = self.id,
                pid = self.pid,
                "Worker killed (immediate stop)."
            );
        } else {
            let class = ExitClass::of(status, sent, self.oom_killed());
            if class.asked() {
                self.log_exit(&class, None, why);
            } else {
                self.log_exit(&class, None, &format!("stopping ({why})"));
            }
        }
        forced
    }

    /// A hung worker: SIGABRT so its runtime can dump where it is stuck
    /// (Python with faulthandler prints every thread's traceback), wait
    /// `abort_timeout`, SIGKILL if still there; then log it, with the stack
    /// dump, as the one worker event that is an ERROR by design, and tell the
    /// `worker_abort` hook. (One that died before the SIGABRT is reported as
    /// the exit it was.)
    pub async fn abort(mut self, abort_timeout: Duration, reason: &str, request: &str) {
        if let Some(status) = self.exited() {
            self.died(status, None, "serving").await;
            return;
        }
        let mark = self.tail.mark();
        self.signal_group(Signal::SIGABRT);
        let kill_now = self.shared.kill_now.clone();
        let killed = tokio::select! {
            _ = self.wait_exit() => false,
            _ = tokio::time::sleep(abort_timeout) => true,
            _ = kill_now.cancelled() => true,
        };
        if killed {
            self.signal_group(Signal::SIGKILL);
            let _ = self.wait_killed().await;
        }
        self.signal_group(Signal::SIGKILL);
        self.flush_stderr().await;
        WorkerAborted {
            worker: self.id,
            pid: self.pid,
            reason: reason.to_string(),
            request: request.to_string(),
            killed_after_abort: killed,
            stack_dump: self.tail.since(mark, 60),
        }
        .emit(&self.shared.sinks());
    }

    /// Did the cgroup's OOM-kill count rise since it started?
    pub fn oom_killed(&self) -> bool {
        matches!((self.oom_kills_at_start, super::oom::oom_kills()), (Some(a), Some(b)) if b > a)
    }

    /// Log an exit once, at the level its class calls for, and count it. An
    /// exit curfew did not ask for names the requests the worker was serving
    /// and goes to the `worker_exit` hook; `why` is why curfew stopped it, or
    /// for an exit it did not ask for, what the worker was doing.
    pub fn log_exit(&self, class: &ExitClass, restart_in: Option<Duration>, why: &str) {
        let severity = class.severity();
        let quiet = severity == Severity::Info;
        WorkerExited {
            worker: self.id,
            pid: self.pid,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            reason: class.reason(),
            // A replaced worker that stopped when asked counts as replaced.
            counted_as: match (class, self.replaced) {
                (ExitClass::Stopped(_), Some(r)) => r,
                _ => class.reason(),
            },
            message: class.describe(),
            loudness: match severity {
                Severity::Info => Loudness::Info,
                Severity::Error => Loudness::Error,
                _ => Loudness::Warn,
            },
            asked: class.asked(),
            why: why.to_owned(),
            exit: self.status.map(|s| s.to_string()).unwrap_or_default(),
            restart_in,
            requests: if quiet {
                String::new()
            } else {
                self.shared.backends.requests_on(self.uid).join(", ")
            },
            stderr: if quiet {
                String::new()
            } else {
                self.tail.summary(8)
            },
        }
        .emit(&self.shared.sinks());
    }

    /// Resident memory of the worker and every process in its group, bytes.
    pub fn rss_bytes(&self) -> u64 {
        group_rss_bytes(self.pid as i32)
    }
}

/// Record that a worker's stop had to be forced (for the exit code).
pub fn note_forced(shared: &Shared, forced: bool) {
    if forced {
        shared.forced.store(true, Ordering::Relaxed);
    }
}

/// A random number in `0..=max` (for `max_requests_jitter`), from the
/// process's random uuid source; no cryptographic need.
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let r = u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .unwrap_or([0; 8]),
    );
    r % (max + 1)
}

/// Sum of RSS over the processes whose process group is `pgid` (from /proc).
pub fn group_rss_bytes(pgid: i32) -> u64 {
    super::procfs::all()
        .iter()
        .filter(|p| p.pgrp == pgid)
        .map(|p| p.rss_pages * super::procfs::PAGE)
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rss_of_own_group_is_plausible() {
        let pgid = nix::unistd::getpgrp().as_raw();
        let rss = super::group_rss_bytes(pgid);
        assert!(rss > 1 << 20, "rss {rss}");
    }
}
