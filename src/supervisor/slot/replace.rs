//! The replacement lane: a recycle (`max_requests`, `max_memory`) or a
//! reload boots a new worker beside the serving one; a recycle switches as
//! soon as it is ready, a reload on its batch's `go`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::super::backoff::Backoff;
use super::super::instance::Instance;
use super::super::reaper::ExitStatus;
use super::super::{BootError, WorkerSpec};
use super::boot::{Booted, Stage};
use super::{Slot, State};

pub(super) enum Purpose {
    Recycle { reason: String },
    Reload(Ticket),
}

pub(super) struct Replacement {
    pub(super) purpose: Purpose,
    pub(super) stage: Stage,
}

/// A reload's request to this slot (see [`SlotCommand::Prepare`]).
pub(super) struct Ticket {
    pub(super) spec: Arc<WorkerSpec>,
    /// Answered once the new worker is ready or could not boot.
    pub(super) ready: Option<oneshot::Sender<Result<(), BootError>>>,
    /// The batch's verdict; `None` once received.
    pub(super) go: Option<oneshot::Receiver<bool>>,
    /// `go` said yes while a new worker was booting (the prepared one had
    /// died): switch as soon as it is ready.
    pub(super) committed: bool,
    pub(super) done: Option<oneshot::Sender<bool>>,
}

impl Ticket {
    pub(super) fn finish(&mut self, switched: bool) {
        if let Some(d) = self.done.take() {
            let _ = d.send(switched);
        }
    }
}

impl Slot {
    /// Replace the serving worker `uid` (max_requests, max_memory), unless a
    /// replacement is under way already (it replaces it anyway).
    pub(super) fn recycle(&mut self, st: &mut State, uid: u64, reason: String) {
        let Some(inst) = st.current.as_ref().filter(|i| i.uid == uid) else {
            return;
        };
        if st.replacement.is_some() {
            tracing::info!(
                worker = self.id,
                pid = inst.pid,
                reason,
                "Recycle merged into the replacement already under way."
            );
            return;
        }
        tracing::info!(
            worker = self.id,
            pid = inst.pid,
            reason,
            "Recycling worker: starting its replacement."
        );
        st.replacement = Some(Replacement {
            purpose: Purpose::Recycle { reason },
            stage: self.boot(self.spec.clone(), true),
        });
    }

    /// The replacement lane's boot ended.
    pub(super) fn replaced(&mut self, st: &mut State, booted: Booted) {
        let Some(mut r) = st.replacement.take() else {
            return;
        };
        match (&mut r.purpose, booted) {
            (Purpose::Recycle { .. }, Ok(new)) => {
                self.backoff = Backoff::default();
                self.take_over(st, new, "recycled");
            }
            (Purpose::Recycle { .. }, Err(f)) => {
                if !f.stopped {
                    tracing::warn!(worker = self.id, error = %f.error, "Replacement failed to boot; keeping the current worker.");
                }
                self.restart_later(st);
            }
            (Purpose::Reload(t), Ok(new)) => {
                if let Some(ready) = t.ready.take() {
                    let _ = ready.send(Ok(()));
                }
                if t.committed {
                    self.switch_to_reload(st, t, new);
                } else {
                    r.stage = Stage::Prepared(new);
                    st.replacement = Some(r);
                }
            }
            (Purpose::Reload(t), Err(f)) => {
                match t.ready.take() {
                    Some(ready) => {
                        let _ = ready.send(Err(f.error));
                    }
                    None if !f.stopped => {
                        tracing::warn!(worker = self.id, generation = t.spec.generation, error = %f.error, "Reload: the new worker that was to replace a dead prepared one failed to boot; this slot keeps its current generation.");
                    }
                    None => {}
                }
                t.finish(false);
                self.restart_later(st);
            }
        }
    }

    /// A reload's new worker takes over: the slot now belongs to its
    /// generation (restarts use its spec).
    pub(super) fn switch_to_reload(&mut self, st: &mut State, t: &mut Ticket, new: Instance) {
        let old_spec = std::mem::replace(&mut self.spec, t.spec.clone());
        if self.take_over(st, new, "reload") {
            self.backoff = Backoff::default();
            t.finish(true);
        } else {
            self.spec = old_spec;
            tracing::warn!(
                worker = self.id,
                generation = t.spec.generation,
                "Reload: the new worker died just before the switch; this slot keeps its current generation."
            );
            t.finish(false);
        }
    }

    /// A reload's prepared worker died before `go`: boot another one of the
    /// same generation at once (its readiness was reported already; `go`
    /// switches to the new one when it is ready).
    pub(super) fn prepared_exited(&mut self, st: &mut State, status: ExitStatus) {
        let Some(r) = st.replacement.as_mut() else {
            return;
        };
        let Purpose::Reload(t) = &r.purpose else {
            return;
        };
        let stage = std::mem::replace(&mut r.stage, self.boot(t.spec.clone(), true));
        tracing::info!(
            worker = self.id,
            generation = t.spec.generation,
            "Reload: the prepared worker died before the switch; booting another."
        );
        if let Stage::Prepared(inst) = stage {
            self.shared.retiring.spawn(inst.died(
                status,
                Some(Duration::ZERO),
                "prepared for a reload",
            ));
        }
    }

    /// The reload batch said go (switch) or not (discard the new worker).
    pub(super) fn verdict(&mut self, st: &mut State, go: bool) {
        let Some(mut r) = st.replacement.take() else {
            return;
        };
        let Purpose::Reload(t) = &mut r.purpose else {
            st.replacement = Some(r);
            return;
        };
        t.go = None;
        if go {
            match r.stage {
                Stage::Prepared(new) => self.switch_to_reload(st, t, new),
                stage => {
                    // Still booting (the prepared one died): switch when ready.
                    t.committed = true;
                    st.replacement = Some(Replacement {
                        purpose: r.purpose,
                        stage,
                    });
                }
            }
        } else {
            self.discard(r.stage, "reload aborted");
            t.finish(false);
        }
    }

    /// Reload, phase one: boot a worker of `spec` beside the serving one.
    pub(super) fn prepare(
        &mut self,
        st: &mut State,
        spec: Arc<WorkerSpec>,
        ready: oneshot::Sender<Result<(), BootError>>,
        go: oneshot::Receiver<bool>,
        done: oneshot::Sender<bool>,
    ) {
        let generation = spec.generation;
        if self.spec.generation >= generation {
            let _ = ready.send(Ok(()));
            let _ = done.send(true);
            return;
        }
        if let Some(old) = st.replacement.take() {
            match old.purpose {
                Purpose::Recycle { reason } => tracing::info!(
                    worker = self.id,
                    generation,
                    recycle = reason,
                    "Reload: the recycle under way is superseded (the reload replaces the worker)."
                ),
                Purpose::Reload(mut t) => {
                    tracing::info!(
                        worker = self.id,
                        generation,
                        superseded = t.spec.generation,
                        "Reload: an earlier reload's new worker is discarded."
                    );
                    t.finish(false);
                }
            }
            self.discard(old.stage, "superseded by a reload");
        }
        // A recycle's worker was to take an empty slot (its worker died):
        // the reload's may not before `go`, so the slot restarts its own.
        if st.current.is_none() && st.restart.is_none() {
            st.restart = Some(self.boot(self.spec.clone(), false));
        }
        st.replacement = Some(Replacement {
            purpose: Purpose::Reload(Ticket {
                spec: spec.clone(),
                ready: Some(ready),
                go: Some(go),
                committed: false,
                done: Some(done),
            }),
            stage: self.boot(spec, true),
        });
    }
}
