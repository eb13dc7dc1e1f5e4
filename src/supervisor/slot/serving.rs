//! The serving worker: routing it, a new worker taking over, and losing it
//! (died, or hung and aborted).

use std::time::Duration;

use super::super::ReadyWorker;
use super::super::instance::Instance;
use super::super::reaper::ExitStatus;
use super::boot::Stage;
use super::replace::{Purpose, Replacement};
use super::watch::Watch;
use super::{Slot, State};

impl Slot {
    /// Hand a ready instance to the router and make it addressable.
    pub(super) fn route(&self, inst: &Instance) {
        self.shared.register(inst.uid, self.cmd_tx.clone());
        self.shared.backends.add(ReadyWorker {
            uid: inst.uid,
            id: self.id,
            pid: inst.pid,
            addr: inst.addr.clone(),
            generation: inst.generation,
            restarts: self.restarts,
            max_requests: inst.max_requests,
        });
    }

    pub(super) fn unroute(&self, inst: &Instance) {
        self.shared.unregister(inst.uid);
        self.shared.backends.remove(inst.uid);
    }

    /// `new` (ready) becomes the serving worker. A worker serving until now
    /// is removed from routing, drained and stopped in the background; a
    /// restart under way is called off. `false` (nothing changed but a
    /// restart scheduled if the slot is empty) if `new` died since it was
    /// found ready: a dead worker is never routed.
    pub(super) fn take_over(
        &mut self,
        st: &mut State,
        mut new: Instance,
        replaced: &'static str,
    ) -> bool {
        if let Some(status) = new.exited() {
            self.shared
                .retiring
                .spawn(new.died(status, None, "ready, before it took traffic"));
            self.restart_later(st);
            return false;
        }
        self.route(&new);
        if let Some(mut old) = st.current.take() {
            old.replaced = Some(replaced);
            self.unroute(&old);
            self.drain_and_stop(old, replaced);
        }
        if let Some(stage) = st.restart.take() {
            tracing::info!(
                worker = self.id,
                "A worker took over the slot: the restart under way is called off."
            );
            self.discard(stage, "restart called off");
        }
        st.watch = Some(Watch::new(&self.spec));
        st.current = Some(new);
        true
    }

    /// The serving worker leaves without being asked (it died or hung): out
    /// of routing now, counted as a restart, and a restart is on its way
    /// after the backoff (unless a recycle's new worker already is: it takes
    /// the slot when ready). Returns it with that backoff.
    fn lose_current(&mut self, st: &mut State) -> Option<(Instance, Duration)> {
        let inst = st.current.take()?;
        st.watch = None;
        self.unroute(&inst);
        self.restarts += 1;
        let delay = self.backoff.next_delay(inst.started.elapsed());
        if !st.recycling() && st.restart.is_none() {
            st.restart = Some(Stage::Delay(Box::pin(tokio::time::sleep(delay))));
        }
        Some((inst, delay))
    }

    /// The serving worker exited without being asked: out of routing now,
    /// reported, and a restart is on its way (unless a recycle's new worker
    /// already is: it takes the slot when ready).
    pub(super) fn current_exited(&mut self, st: &mut State, status: ExitStatus) {
        let Some((inst, delay)) = self.lose_current(st) else {
            return;
        };
        let recycling = st.recycling();
        let restart_in = if recycling { Duration::ZERO } else { delay };
        if recycling {
            tracing::info!(
                worker = self.id,
                pid = inst.pid,
                "The worker being recycled died: its replacement, booting, takes the slot when ready."
            );
        }
        if let Some(Replacement {
            purpose: Purpose::Reload(t),
            ..
        }) = &st.replacement
        {
            tracing::info!(
                worker = self.id,
                pid = inst.pid,
                generation = t.spec.generation,
                "The worker died while a reload prepares its successor: restarting the current generation meanwhile; the new one takes over on the reload's go."
            );
        }
        self.shared
            .retiring
            .spawn(inst.died(status, Some(restart_in), "serving"));
    }

    /// The serving worker is hung: out of routing now, aborted (stack dump,
    /// kill) in the background, and a restart is on its way.
    pub(super) fn abort_current(&mut self, st: &mut State, reason: String, request: String) {
        let Some((inst, _)) = self.lose_current(st) else {
            return;
        };
        let abort_timeout = self.spec.abort_timeout;
        self.shared.retiring.spawn(async move {
            inst.abort(abort_timeout, &reason, &request).await;
        });
    }
}
