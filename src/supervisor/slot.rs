//! One worker slot (`CURFEW_WORKER_ID` = its id): a task that keeps one
//! ready worker process in it. It starts the worker and waits until it is
//! ready, hands it to the router, restarts it with backoff when it dies,
//! aborts it when hung, replaces it (start the new one, wait until ready,
//! switch, then drain and stop the old one) for recycling and reloads, and
//! stops it when told to.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::classify::{ExitClass, SentSignal};
use super::instance::{Boot, Instance};
use super::reaper::ExitStatus;
use super::{BootError, Command, ReadyWorker, Shared, SlotOutcome};

/// How often `max_memory` is checked.
const MEMORY_CHECK: Duration = Duration::from_secs(3);

pub struct Slot {
    pub shared: Arc<Shared>,
    pub id: usize,
    pub stop: CancellationToken,
    pub cmds: mpsc::UnboundedReceiver<Command>,
    pub cmd_tx: mpsc::UnboundedSender<Command>,
    pub first_boot: Option<oneshot::Sender<Result<usize, BootError>>>,
    pub backoff: Backoff,
    /// Times this slot's worker died or hung and was restarted.
    pub restarts: u32,
}

enum Next {
    /// Start a new worker after this delay.
    Restart(Duration),
    /// The slot is done.
    Done(SlotOutcome),
}

impl Slot {
    pub async fn run(mut self) -> SlotOutcome {
        loop {
            if self.stop.is_cancelled() {
                return SlotOutcome::default();
            }
            let Some(inst) = self.boot().await else {
                if self.first_boot.is_none() && !self.stop.is_cancelled() {
                    // Boot failed after startup: boot() already slept its backoff.
                    continue;
                }
                return SlotOutcome::default();
            };
            match self.serve(inst).await {
                Next::Done(o) => return o,
                Next::Restart(delay) => {
                    self.restarts += 1;
                    if sleep_or_stop(delay, &self.stop).await {
                        return SlotOutcome::default();
                    }
                }
            }
        }
    }

    fn new_uid(&self) -> u64 {
        self.shared.next_uid.fetch_add(1, Ordering::Relaxed)
    }

    /// Start a worker with the current spec and wait until it is ready.
    /// `None`: it failed (reported; backoff slept) or we were stopped.
    async fn boot(&mut self) -> Option<Instance> {
        let spec = self.shared.spec();
        let uid = self.new_uid();
        let mut inst = match Instance::start(
            &self.shared.reaper,
            &spec,
            self.id,
            uid,
            self.shared.metrics.clone(),
        ) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(worker = self.id, error = %e, "Could not start worker.");
                self.boot_failed(format!("could not start: {e}"), String::new())
                    .await;
                return None;
            }
        };
        match inst
            .wait_ready(&self.shared.backends, spec.boot_timeout, &self.stop)
            .await
        {
            Boot::Ready => {
                tracing::info!(
                    worker = self.id,
                    pid = inst.pid,
                    generation = inst.generation,
                    boot_ms = inst.started.elapsed().as_millis() as u64,
                    "Worker ready."
                );
                if let Some(tx) = self.first_boot.take() {
                    let _ = tx.send(Ok(self.id));
                }
                self.route(&inst);
                Some(inst)
            }
            Boot::Stopped => {
                inst.stop(
                    spec.stop_timeout,
                    &self.shared.kill_now,
                    "stopped while booting",
                )
                .await;
                None
            }
            failed => {
                let reason = inst.boot_failure(failed, spec.boot_timeout).await;
                let stderr = inst.tail.last(12);
                if self.first_boot.is_none() {
                    tracing::warn!(
                        worker = self.id,
                        pid = inst.pid,
                        stderr = %inst.tail.last_one_line(12),
                        "Worker failed to boot: {reason}."
                    );
                }
                self.boot_failed(reason, stderr).await;
                None
            }
        }
    }

    async fn boot_failed(&mut self, reason: String, stderr: String) {
        if let Some(tx) = self.first_boot.take() {
            let _ = tx.send(Err(BootError {
                id: self.id,
                reason,
                stderr,
            }));
            // Startup fails as a whole: the orchestrator stops this slot.
            self.stop.cancelled().await;
            return;
        }
        let delay = self.backoff.next_delay(Duration::ZERO);
        sleep_or_stop(delay, &self.stop).await;
    }

    /// Hand a ready instance to the router and make it addressable.
    fn route(&self, inst: &Instance) {
        let spec = self.shared.spec();
        self.shared.register(inst.uid, self.cmd_tx.clone());
        self.shared.backends.add(ReadyWorker {
            uid: inst.uid,
            id: self.id,
            pid: inst.pid,
            addr: inst.addr.clone(),
            generation: inst.generation,
            restarts: self.restarts,
            max_requests: spec
                .max_requests
                .map(|m| m + jitter(spec.max_requests_jitter)),
        });
    }

    fn unroute(&self, inst: &Instance) {
        self.shared.unregister(inst.uid);
        self.shared.backends.remove(inst.uid);
    }

    /// Serve with `inst` until it must be restarted or the slot ends.
    async fn serve(&mut self, mut inst: Instance) -> Next {
        let liveness = self.shared.spec().liveness.clone();
        let mut live_tick =
            tokio::time::interval(liveness.as_ref().map_or(MEMORY_CHECK, |l| l.interval));
        live_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        live_tick.reset(); // the first probe one interval after it became ready
        let mut live_failures = 0u32;
        let mut memory = tokio::time::interval(MEMORY_CHECK);
        memory.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let max_memory = self.shared.spec().max_memory;
            tokio::select! {
                status = &mut inst.exit => {
                    // What it was serving when it died, before it leaves routing.
                    let requests = self.shared.backends.requests_on(inst.uid).join(", ");
                    self.unroute(&inst);
                    let status = status.unwrap_or(ExitStatus::Code(-1));
                    inst.signal_group(Signal::SIGKILL);
                    inst.flush_stderr().await;
                    let delay = self.backoff.next_delay(inst.started.elapsed());
                    let class = ExitClass::of(status, SentSignal::None, inst.oom_killed());
                    inst.log_exit(&class, Some(delay), &requests);
                    self.shared.event(
                        "worker_exit",
                        serde_json::json!({
                            "worker": self.id,
                            "pid": inst.pid,
                            "reason": class.reason(),
                            "exit": status.to_string(),
                            "message": class.describe(),
                            "requests": requests,
                            "uptime_ms": inst.started.elapsed().as_millis() as u64,
                            "restart_in_ms": delay.as_millis() as u64,
                        }),
                    );
                    return Next::Restart(delay);
                }
                _ = self.stop.cancelled() => {
                    self.unroute(&inst);
                    let spec = self.shared.spec();
                    let forced = inst.stop(spec.stop_timeout, &self.shared.kill_now, "shutdown").await;
                    return Next::Done(SlotOutcome { forced });
                }
                _ = live_tick.tick(), if liveness.is_some() => {
                    let Some(l) = &liveness else { continue };
                    match self.shared.backends.liveness(inst.addr.clone(), l.path.clone(), l.timeout).await {
                        Ok(()) => live_failures = 0,
                        Err(e) => {
                            live_failures += 1;
                            tracing::info!(worker = self.id, pid = inst.pid, failures = live_failures, of = l.failures, error = %e, "Liveness probe failed.");
                            if live_failures >= l.failures {
                                let requests = self.shared.backends.requests_on(inst.uid).join(", ");
                                self.unroute(&inst);
                                let delay = self.backoff.next_delay(inst.started.elapsed());
                                let reason = format!("liveness probe failed {live_failures} times: {e}");
                                let spec = self.shared.spec();
                                inst.abort(spec.abort_timeout, &reason, &requests, &self.shared.kill_now).await;
                                self.shared.event(
                                    "worker_abort",
                                    serde_json::json!({ "worker": self.id, "pid": inst.pid, "reason": reason, "request": requests, "stack_dump": inst.tail.last(60) }),
                                );
                                return Next::Restart(delay);
                            }
                        }
                    }
                }
                _ = memory.tick(), if max_memory.is_some() => {
                    let limit = max_memory.unwrap_or(u64::MAX);
                    let rss = inst.rss_bytes();
                    if rss > limit {
                        let reason = format!("RSS {} MiB > {} MiB", rss >> 20, limit >> 20);
                        inst = self.replace(inst, &reason).await;
                    }
                }
                cmd = self.cmds.recv() => match cmd {
                    None => {}
                    Some(Command::Abort { uid, reason, request }) if uid == inst.uid => {
                        self.unroute(&inst);
                        let delay = self.backoff.next_delay(inst.started.elapsed());
                        let spec = self.shared.spec();
                        inst.abort(spec.abort_timeout, &reason, &request, &self.shared.kill_now).await;
                        self.shared.event(
                            "worker_abort",
                            serde_json::json!({
                                "worker": self.id,
                                "pid": inst.pid,
                                "reason": reason,
                                "request": request,
                                "stack_dump": inst.tail.last(60),
                            }),
                        );
                        return Next::Restart(delay);
                    }
                    Some(Command::Recycle { uid, reason }) if uid == inst.uid => {
                        inst = self.replace(inst, &reason).await;
                    }
                    Some(Command::Prepare { generation, ready, go, done }) => {
                        inst = self.prepare(inst, generation, ready, go).await;
                        let _ = done.send(());
                    }
                    Some(Command::Retire) => {
                        self.unroute(&inst);
                        let spec = self.shared.spec();
                        let drained = self.shared.backends.drained(inst.uid, spec.graceful_timeout).await;
                        if !drained {
                            tracing::warn!(worker = self.id, pid = inst.pid, "Requests still in flight after graceful_timeout; stopping the worker anyway.");
                        }
                        let forced = inst.stop(spec.stop_timeout, &self.shared.kill_now, "scaled down").await;
                        return Next::Done(SlotOutcome { forced });
                    }
                    Some(_) => {} // addressed to an instance that is gone
                },
            }
        }
    }

    /// Start a new worker with the current spec; once it is ready, switch
    /// traffic to it and retire `old` (drain, then stop). If the new one
    /// cannot boot, keep serving with `old`.
    async fn replace(&mut self, old: Instance, reason: &str) -> Instance {
        tracing::info!(
            worker = self.id,
            pid = old.pid,
            reason,
            "Recycling worker: starting its replacement."
        );
        match self.start_replacement().await {
            Ok(new) => {
                self.backoff = Backoff::default();
                self.switch(old, new, reason, "recycled")
            }
            Err(e) => {
                tracing::warn!(worker = self.id, pid = old.pid, error = %e, "Replacement failed to boot; keeping the current worker.");
                old
            }
        }
    }

    /// Two-phase replacement for a reload: boot the new generation, report,
    /// and switch only when told to (`go`), so a reload that fails anywhere
    /// leaves the old generation serving everywhere.
    async fn prepare(
        &mut self,
        old: Instance,
        generation: u64,
        ready: oneshot::Sender<Result<(), BootError>>,
        go: oneshot::Receiver<bool>,
    ) -> Instance {
        if old.generation >= generation {
            let _ = ready.send(Ok(()));
            return old;
        }
        let new = match self.start_replacement().await {
            Ok(n) => n,
            Err(e) => {
                let _ = ready.send(Err(e));
                return old;
            }
        };
        let _ = ready.send(Ok(()));
        let commit = tokio::select! {
            d = go => d.unwrap_or(false),
            _ = self.stop.cancelled() => false,
        };
        if commit {
            self.switch(old, new, "reload", "reload")
        } else {
            let spec = self.shared.spec();
            let kill_now = self.shared.kill_now.clone();
            new.stop(spec.stop_timeout, &kill_now, "reload aborted")
                .await;
            old
        }
    }

    async fn start_replacement(&mut self) -> Result<Instance, BootError> {
        let spec = self.shared.spec();
        let uid = self.new_uid();
        let mut new = Instance::start(
            &self.shared.reaper,
            &spec,
            self.id,
            uid,
            self.shared.metrics.clone(),
        )
        .map_err(|e| BootError {
            id: self.id,
            reason: format!("could not start: {e}"),
            stderr: String::new(),
        })?;
        match new
            .wait_ready(&self.shared.backends, spec.boot_timeout, &self.stop)
            .await
        {
            Boot::Ready => {
                tracing::info!(
                    worker = self.id,
                    pid = new.pid,
                    generation = new.generation,
                    boot_ms = new.started.elapsed().as_millis() as u64,
                    "Replacement worker ready."
                );
                Ok(new)
            }
            Boot::Stopped => {
                new.stop(
                    spec.stop_timeout,
                    &self.shared.kill_now,
                    "stopped while booting",
                )
                .await;
                Err(BootError {
                    id: self.id,
                    reason: "stopped while booting".into(),
                    stderr: String::new(),
                })
            }
            failed => {
                let reason = new.boot_failure(failed, spec.boot_timeout).await;
                Err(BootError {
                    id: self.id,
                    reason,
                    stderr: new.tail.last(12),
                })
            }
        }
    }

    /// Route to `new`, stop routing to `old`, and retire `old` in the
    /// background: its in-flight requests finish (up to graceful_timeout),
    /// then it gets SIGTERM. Its exit is counted under `replaced`
    /// (`recycled` or `reload`) in the metrics.
    fn switch(
        &mut self,
        mut old: Instance,
        new: Instance,
        why: &str,
        replaced: &'static str,
    ) -> Instance {
        old.replaced = Some(replaced);
        self.route(&new);
        self.unroute(&old);
        let shared = self.shared.clone();
        let why = why.to_string();
        self.shared.retiring.spawn(async move {
            let spec = shared.spec();
            if !shared.backends.drained(old.uid, spec.graceful_timeout).await {
                tracing::warn!(worker = old.id, pid = old.pid, "Requests still in flight after graceful_timeout; stopping the old worker anyway.");
            }
            if old.stop(spec.stop_timeout, &shared.kill_now, &why).await {
                shared.forced.store(true, Ordering::Relaxed);
            }
        });
        new
    }
}

/// Sleep `d` unless `stop` fires first; returns true if stopped.
pub async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.cancelled() => true,
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
