//! Booting a worker: the lanes' stage (backoff, booting, prepared), a boot
//! from start to ready, and the restart lane's outcome.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use super::super::hint;
use super::super::instance::{Boot, Instance};
use super::super::{BootError, BoxFuture, Shared, SlotOutcome, WorkerSpec};
use super::{Slot, State};

/// A boot that did not give a ready worker.
pub(super) struct Failed {
    pub(super) error: BootError,
    /// Already logged (a spawn error, or a kill or crash during boot).
    pub(super) logged: bool,
    /// curfew stopped it (shutdown, or the boot was cancelled).
    pub(super) stopped: bool,
}

pub(super) type Booted = Result<Instance, Failed>;

/// Where a new worker is.
pub(super) enum Stage {
    /// Restart lane: waiting out the backoff.
    Delay(Pin<Box<Sleep>>),
    /// Started, not ready yet. `cancel` makes it stop the worker and end.
    Booting {
        fut: BoxFuture<'static, Booted>,
        cancel: CancellationToken,
    },
    /// Replacement lane, reload: ready, not routed, waiting for `go`.
    Prepared(Instance),
}

impl Slot {
    /// Start a worker of `spec`; it is ready when the stage's future says so.
    pub(super) fn boot(&self, spec: Arc<WorkerSpec>, replacement: bool) -> Stage {
        let cancel = self.stop.child_token();
        let fut = Box::pin(boot_worker(
            self.shared.clone(),
            spec,
            self.id,
            self.new_uid(),
            cancel.clone(),
            replacement,
        ));
        Stage::Booting { fut, cancel }
    }

    /// The restart lane's boot ended.
    pub(super) async fn restarted(
        &mut self,
        st: &mut State,
        booted: Booted,
    ) -> Option<SlotOutcome> {
        st.restart = None;
        match booted {
            Ok(inst) => {
                if let Some(tx) = self.first_boot.take() {
                    let _ = tx.send(Ok(self.id));
                }
                self.take_over(st, inst, "restarted");
            }
            Err(f) if f.stopped => {}
            Err(f) => {
                if let Some(tx) = self.first_boot.take() {
                    let _ = tx.send(Err(f.error));
                    // Startup fails as a whole: the orchestrator stops this slot.
                    self.stop.cancelled().await;
                    return Some(SlotOutcome::default());
                }
                if !f.logged {
                    tracing::warn!(
                        worker = self.id,
                        stderr = %f.error.stderr,
                        "Worker failed to boot: {}.",
                        f.error.reason
                    );
                }
                self.restart_later(st);
            }
        }
        None
    }

    /// Schedule a restart after the backoff, unless one is under way.
    pub(super) fn restart_later(&mut self, st: &mut State) {
        if st.current.is_none() && st.restart.is_none() {
            let delay = self.backoff.next_delay(Duration::ZERO);
            st.restart = Some(Stage::Delay(Box::pin(tokio::time::sleep(delay))));
        }
    }
}

/// Start worker `uid` of `spec` and wait until it is ready, it fails, or
/// `cancel` fires (then it is stopped).
async fn boot_worker(
    shared: Arc<Shared>,
    spec: Arc<WorkerSpec>,
    id: usize,
    uid: u64,
    cancel: CancellationToken,
    replacement: bool,
) -> Booted {
    let failed = |reason: String, stderr: String, logged: bool, stopped: bool| Failed {
        error: BootError { id, reason, stderr },
        logged,
        stopped,
    };
    let mut inst = match Instance::start(&shared, &spec, id, uid) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(worker = id, error = %e, "Could not start worker.");
            shared.metrics.worker_exit("boot_failed");
            return Err(failed(
                format!("could not start: {e}"),
                String::new(),
                true,
                false,
            ));
        }
    };
    match inst
        .wait_ready(&shared.backends, spec.boot_timeout, &cancel)
        .await
    {
        Boot::Ready => {
            inst.mark_ready();
            let boot_ms = inst.started.elapsed().as_millis() as u64;
            let (pid, generation) = (inst.pid, inst.generation);
            let event = "worker_ready";
            if replacement {
                tracing::info!(
                    event,
                    result = "replacement",
                    worker = id,
                    pid,
                    generation,
                    boot_ms,
                    "Replacement worker ready."
                );
            } else {
                tracing::info!(
                    event,
                    result = "booted",
                    worker = id,
                    pid,
                    generation,
                    boot_ms,
                    "Worker ready."
                );
            }
            Ok(inst)
        }
        Boot::Stopped => {
            inst.stop(spec.stop_timeout, &shared.kill_now, "stopped while booting")
                .await;
            Err(failed(
                "stopped while booting".into(),
                String::new(),
                false,
                true,
            ))
        }
        boot => {
            let last_probe = match &boot {
                Boot::TimedOut(last) => Some(last.clone()),
                _ => None,
            };
            let f = inst.boot_failure(boot, spec.boot_timeout).await;
            // The hint reads the raw lines; the error carries their
            // one-line summary (a traceback was logged as its own event).
            let stderr = inst.tail.last(12);
            let failure = match &last_probe {
                Some(last_probe) => hint::Failure::TimedOut { last_probe },
                None => hint::Failure::Exited,
            };
            let reason = match hint::for_boot_failure(spec.socket, failure, &stderr) {
                Some(h) => format!("{}; hint: {h}", f.reason),
                None => f.reason,
            };
            Err(failed(reason, inst.tail.summary(12), f.logged, false))
        }
    }
}
