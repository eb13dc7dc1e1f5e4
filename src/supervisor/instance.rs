//! One worker process: starting it, waiting until it is ready, stopping it,
//! aborting it when hung, measuring its memory, and logging how it ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::classify::{ExitClass, SentSignal, Severity};
use super::output::{self, Stream, Tail};
use super::reaper::{ExitStatus, Reaper};
use super::{Backends, WorkerAddr, WorkerSpec, spawn};
use crate::metrics::Metrics;

/// A worker process being supervised.
pub struct Instance {
    pub uid: u64,
    pub id: usize,
    pub pid: u32,
    pub addr: WorkerAddr,
    pub generation: u64,
    pub exit: oneshot::Receiver<ExitStatus>,
    pub started: Instant,
    pub tail: Tail,
    /// The cgroup's OOM-kill count when it started.
    pub oom_kills_at_start: Option<u64>,
    /// Set when it is stopped because it was replaced (`recycled`,
    /// `reload`): the reason its exit is counted under in the metrics.
    pub replaced: Option<&'static str>,
    metrics: Arc<Metrics>,
    stderr_done: Option<JoinHandle<()>>,
}

/// How a boot attempt ended.
pub enum Boot {
    Ready,
    Exited(ExitStatus),
    TimedOut(String),
    Stopped,
}

impl Instance {
    pub fn start(
        reaper: &Reaper,
        spec: &WorkerSpec,
        id: usize,
        uid: u64,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Instance> {
        let s = spawn::spawn(reaper, spec, id, uid)?;
        if let Some(out) = s.stdout {
            output::capture(out, id, s.pid, Stream::Stdout, None);
        }
        let tail = Tail::default();
        let stderr_done = s
            .stderr
            .map(|err| output::capture(err, id, s.pid, Stream::Stderr, Some(tail.clone())));
        Ok(Instance {
            uid,
            id,
            pid: s.pid,
            addr: s.addr,
            generation: spec.generation,
            exit: s.exit,
            started: Instant::now(),
            tail,
            oom_kills_at_start: super::oom::oom_kills(),
            replaced: None,
            metrics,
            stderr_done,
        })
    }

    pub fn signal_group(&self, sig: Signal) {
        // The worker leads its own process group (process_group(0) at spawn).
        let _ = killpg(Pid::from_raw(self.pid as i32), sig);
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
        let deadline = tokio::time::Instant::now() + timeout;
        let mut interval = Duration::from_millis(10);
        let mut last = String::from("no probe completed");
        loop {
            tokio::select! {
                status = &mut self.exit => return Boot::Exited(status.unwrap_or(ExitStatus::Code(-1))),
                _ = tokio::time::sleep_until(deadline) => return Boot::TimedOut(last),
                _ = stop.cancelled() => return Boot::Stopped,
                r = backends.probe(self.addr.clone()) => match r {
                    Ok(()) => return Boot::Ready,
                    Err(e) => last = e,
                },
            }
            tokio::select! {
                status = &mut self.exit => return Boot::Exited(status.unwrap_or(ExitStatus::Code(-1))),
                _ = tokio::time::sleep_until(deadline) => return Boot::TimedOut(last),
                _ = stop.cancelled() => return Boot::Stopped,
                _ = tokio::time::sleep(interval) => {}
            }
            interval = (interval * 2).min(Duration::from_millis(200));
        }
    }

    /// After a failed boot: make sure it is gone and describe why.
    pub async fn boot_failure(&mut self, boot: Boot, boot_timeout: Duration) -> String {
        let reason = match boot {
            Boot::Exited(status) => format!("it exited during boot ({status})"),
            Boot::TimedOut(last) => {
                self.signal_group(Signal::SIGKILL);
                let _ = (&mut self.exit).await;
                format!("not ready within boot_timeout ({boot_timeout:?}); last probe: {last}")
            }
            Boot::Ready | Boot::Stopped => String::from("boot interrupted"),
        };
        self.signal_group(Signal::SIGKILL); // leftovers of its group
        self.flush_stderr().await;
        self.metrics.worker_exit("boot_failed");
        reason
    }

    /// SIGTERM the worker's group, wait `stop_timeout`, then SIGKILL (at once
    /// if `kill_now` fires). Returns whether it had to be killed.
    pub async fn stop(
        mut self,
        stop_timeout: Duration,
        kill_now: &CancellationToken,
        why: &str,
    ) -> bool {
        let mut sent = SentSignal::Term;
        let mut forced = false;
        if kill_now.is_cancelled() {
            self.signal_group(Signal::SIGKILL);
            sent = SentSignal::Kill;
        } else {
            self.signal_group(Signal::SIGTERM);
        }
        let status = tokio::select! {
            s = &mut self.exit => s,
            _ = tokio::time::sleep(stop_timeout), if sent == SentSignal::Term => {
                tracing::warn!(
                    worker = self.id,
                    pid = self.pid,
                    timeout_ms = stop_timeout.as_millis() as u64,
                    "Worker did not exit within worker_stop_timeout after SIGTERM; sending SIGKILL."
                );
                forced = true;
                self.signal_group(Signal::SIGKILL);
                sent = SentSignal::Kill;
                (&mut self.exit).await
            }
            _ = kill_now.cancelled(), if sent == SentSignal::Term => {
                self.signal_group(Signal::SIGKILL);
                sent = SentSignal::Kill;
                (&mut self.exit).await
            }
        };
        let status = status.unwrap_or(ExitStatus::Code(-1));
        // Anything left in its process group goes too.
        self.signal_group(Signal::SIGKILL);
        self.flush_stderr().await;
        if sent == SentSignal::Kill && !forced {
            self.metrics.worker_exit("killed_by_curfew");
            tracing::info!(
                worker = self.id,
                pid = self.pid,
                "Worker killed (immediate stop)."
            );
        } else {
            self.log_exit(&ExitClass::of(status, sent, false), None, why);
        }
        forced
    }

    /// A hung worker: SIGABRT so its runtime can dump where it is stuck
    /// (Python with faulthandler prints every thread's traceback), wait
    /// `abort_timeout`, SIGKILL if still there; then log it, with the stack
    /// dump, as the one worker event that is an ERROR by design.
    pub async fn abort(
        &mut self,
        abort_timeout: Duration,
        reason: &str,
        request: &str,
        kill_now: &CancellationToken,
    ) {
        let mark = self.tail.mark();
        self.signal_group(Signal::SIGABRT);
        let killed = tokio::select! {
            _ = &mut self.exit => false,
            _ = tokio::time::sleep(abort_timeout) => true,
            _ = kill_now.cancelled() => true,
        };
        if killed {
            self.signal_group(Signal::SIGKILL);
            let _ = (&mut self.exit).await;
        }
        self.signal_group(Signal::SIGKILL);
        self.flush_stderr().await;
        self.metrics.worker_exit("hung");
        tracing::error!(
            worker = self.id,
            pid = self.pid,
            reason,
            request,
            killed_after_abort = killed,
            stack_dump = %self.tail.since(mark, 60),
            "Worker hung: aborted it (SIGABRT{}) and starting a replacement.",
            if killed { ", then SIGKILL" } else { "" }
        );
    }

    /// Did the cgroup's OOM-kill count rise since it started?
    pub fn oom_killed(&self) -> bool {
        matches!((self.oom_kills_at_start, super::oom::oom_kills()), (Some(a), Some(b)) if b > a)
    }

    pub fn log_exit(&self, class: &ExitClass, restart_in: Option<Duration>, why: &str) {
        let msg = class.describe();
        let (id, pid) = (self.id, self.pid);
        let uptime_ms = self.started.elapsed().as_millis() as u64;
        let restart_in_ms = restart_in.map(|d| d.as_millis() as u64);
        let reason = class.reason();
        // A replaced worker that stopped when asked counts as replaced.
        self.metrics.worker_exit(match (class, self.replaced) {
            (ExitClass::Stopped(_), Some(r)) => r,
            _ => reason,
        });
        match class.severity() {
            Severity::Info => tracing::info!(worker = id, pid, uptime_ms, reason, why, "{msg}"),
            Severity::Warn => {
                let stderr = self.tail.last_one_line(8);
                tracing::warn!(worker = id, pid, uptime_ms, reason, restart_in_ms, stderr = %stderr, "{msg}")
            }
            Severity::Error => {
                let stderr = self.tail.last_one_line(8);
                tracing::error!(worker = id, pid, uptime_ms, reason, restart_in_ms, requests = why, stderr = %stderr, "{msg}")
            }
        }
    }

    /// Resident memory of the worker and every process in its group, bytes.
    pub fn rss_bytes(&self) -> u64 {
        group_rss_bytes(self.pid as i32)
    }
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
