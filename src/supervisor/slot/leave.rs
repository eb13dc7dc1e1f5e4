//! Workers that leave: a lane's worker discarded, a replaced worker drained
//! and stopped in the background, the slot retired (scale down) or shut down.

use super::super::SlotOutcome;
use super::super::instance::{Instance, note_forced};
use super::boot::Stage;
use super::replace::Purpose;
use super::{Slot, State};

impl Slot {
    /// Drop a lane's worker: a boot is cancelled (it stops its worker), a
    /// prepared worker is stopped; both in the background.
    pub(super) fn discard(&self, stage: Stage, why: &'static str) {
        match stage {
            Stage::Delay(_) => {}
            Stage::Booting { fut, cancel } => {
                cancel.cancel();
                self.shared.retiring.spawn(async move {
                    let _ = fut.await;
                });
            }
            Stage::Prepared(inst) => {
                let shared = self.shared.clone();
                let stop_timeout = self.spec.stop_timeout;
                self.shared.retiring.spawn(async move {
                    let forced = inst.stop(stop_timeout, &shared.kill_now, why).await;
                    note_forced(&shared, forced);
                });
            }
        }
    }

    /// Retire `old` in the background: its in-flight requests finish (up to
    /// graceful_timeout), then it gets SIGTERM. If it dies meanwhile, that
    /// is reported as the exit it was. Its exit is counted under `replaced`
    /// (`recycled` or `reload`) in the metrics.
    pub(super) fn drain_and_stop(&self, mut old: Instance, replaced: &'static str) {
        let shared = self.shared.clone();
        let spec = self.spec.clone();
        self.shared.retiring.spawn(async move {
            let uid = old.uid;
            let drained = shared.backends.drained(uid, spec.graceful_timeout);
            tokio::select! {
                status = old.wait_exit() => {
                    let during = format!("draining (replaced: {replaced})");
                    old.died(status, None, &during).await;
                    return;
                }
                ok = drained => if !ok {
                    tracing::warn!(worker = old.id, pid = old.pid, "Requests still in flight after graceful_timeout; stopping the old worker anyway.");
                },
            }
            let forced = old.stop(spec.stop_timeout, &shared.kill_now, replaced).await;
            note_forced(&shared, forced);
        });
    }

    /// Scale down: cancel what is under way, drain the serving worker, stop
    /// it, end the slot.
    pub(super) async fn retire(self, mut st: State) -> SlotOutcome {
        if let Some(stage) = st.restart.take() {
            self.discard(stage, "scaled down");
        }
        if let Some(mut r) = st.replacement.take() {
            if let Purpose::Reload(t) = &mut r.purpose {
                // Nothing to prepare in a slot that leaves.
                if let Some(ready) = t.ready.take() {
                    let _ = ready.send(Ok(()));
                }
                t.finish(true);
            }
            self.discard(r.stage, "scaled down");
        }
        let Some(mut inst) = st.current.take() else {
            return SlotOutcome::default();
        };
        self.unroute(&inst);
        let uid = inst.uid;
        let drained = self
            .shared
            .backends
            .drained(uid, self.spec.graceful_timeout);
        tokio::select! {
            status = inst.wait_exit() => {
                inst.died(status, None, "draining (scaled down)").await;
                return SlotOutcome::default();
            }
            ok = drained => if !ok {
                tracing::warn!(worker = self.id, pid = inst.pid, "Requests still in flight after graceful_timeout; stopping the worker anyway.");
            },
            _ = self.stop.cancelled() => {}
        }
        let forced = inst
            .stop(self.spec.stop_timeout, &self.shared.kill_now, "scaled down")
            .await;
        SlotOutcome { forced }
    }

    /// Shutdown: boots under way stop their workers (their cancel tokens
    /// are children of `stop`), a prepared worker and the serving one are
    /// stopped; all at once.
    pub(super) async fn shutdown(self, mut st: State) -> SlotOutcome {
        if let Some(inst) = &st.current {
            self.unroute(inst);
        }
        let spec = &self.spec;
        let kill_now = &self.shared.kill_now;
        let finish = |stage: Option<Stage>| async move {
            match stage {
                None | Some(Stage::Delay(_)) => false,
                Some(Stage::Booting { fut, .. }) => {
                    let _ = fut.await;
                    false
                }
                Some(Stage::Prepared(inst)) => {
                    inst.stop(spec.stop_timeout, kill_now, "shutdown").await
                }
            }
        };
        let current = async {
            match st.current.take() {
                Some(inst) => inst.stop(spec.stop_timeout, kill_now, "shutdown").await,
                None => false,
            }
        };
        let (a, b, c) = tokio::join!(
            finish(st.restart.take()),
            finish(st.replacement.take().map(|r| r.stage)),
            current
        );
        SlotOutcome {
            forced: a || b || c,
        }
    }
}
