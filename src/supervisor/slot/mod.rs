//! One worker slot (`CURFEW_WORKER_ID` = its id): a task that keeps one
//! ready worker process in it. It starts the worker and waits until it is
//! ready, hands it to the router, restarts it with backoff when it dies,
//! aborts it when hung, replaces it (start the new one, wait until ready,
//! switch, then drain and stop the old one) for recycling and reloads, and
//! stops it when told to.
//!
//! The slot is an event loop that never waits on one thing alone: whatever it
//! is doing, it watches its serving worker, so a worker that dies is removed
//! from routing and reported the moment the reaper sees it, in every state of
//! the slot. Besides the serving worker (`current`) it has two lanes:
//!
//! - **restart**: the slot has no serving worker (it died or hung): wait out
//!   the backoff, boot one with the slot's own spec, route it;
//! - **replacement**: a recycle (`max_requests`, `max_memory`) or a reload
//!   boots a new worker beside the serving one. A recycle switches as soon as
//!   its worker is ready. A reload reports "ready" to [`super::Supervisor::reload`]
//!   and switches only on the batch's `go`, so a reload that fails anywhere
//!   leaves the old generation serving everywhere; if the serving worker
//!   dies in the meantime, the restart lane boots the old generation beside
//!   it (the slot is never left without a worker on its way), and the new
//!   worker still takes over only on `go`.
//!
//! Overlaps: a reload supersedes a recycle under way (the reload replaces
//! the worker anyway) and an older reload's leftovers; a recycle asked for
//! while a replacement is under way is merged into it; a scale-down cancels
//! both lanes. Each is logged at INFO.
//!
//! Workers that leave (replaced, cancelled, aborted) are drained and stopped
//! by background tasks that watch their exit too: one that dies while
//! draining is reported as the exit it was, never as "stopped by curfew".

mod boot;
mod leave;
mod replace;
mod serving;
mod watch;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::instance::Instance;
use super::reaper::ExitStatus;
use super::{BootError, Shared, SlotCommand, SlotOutcome, WorkerSpec};
use boot::{Booted, Stage};
use replace::{Purpose, Replacement};
use watch::{Watch, watch_progress};

pub struct Slot {
    pub shared: Arc<Shared>,
    pub id: usize,
    pub stop: CancellationToken,
    pub cmds: mpsc::UnboundedReceiver<SlotCommand>,
    pub cmd_tx: mpsc::UnboundedSender<SlotCommand>,
    pub first_boot: Option<oneshot::Sender<Result<usize, BootError>>>,
    pub backoff: Backoff,
    /// Times this slot's worker died or hung and was restarted.
    pub restarts: u32,
    /// What this slot's workers start from: the supervisor's spec when the
    /// slot was made, a reload's once this slot switched to it.
    pub spec: Arc<WorkerSpec>,
}

#[derive(Default)]
struct State {
    /// The routed worker.
    current: Option<Instance>,
    restart: Option<Stage>,
    replacement: Option<Replacement>,
    watch: Option<Watch>,
}

impl State {
    fn recycling(&self) -> bool {
        matches!(
            self.replacement,
            Some(Replacement {
                purpose: Purpose::Recycle { .. },
                ..
            })
        )
    }
}

enum Event {
    /// The serving worker exited.
    Exited(ExitStatus),
    RestartDue,
    Restarted(Booted),
    Replaced(Booted),
    /// A reload's prepared (ready, unrouted) worker exited.
    PreparedExited(ExitStatus),
    /// The reload batch's `go`.
    Verdict(bool),
    LiveTick,
    Live(Result<(), String>),
    MemoryTick,
    Cmd(SlotCommand),
    Stop,
}

impl Slot {
    pub async fn run(mut self) -> SlotOutcome {
        let mut st = State {
            restart: Some(self.boot(self.spec.clone(), false)),
            ..State::default()
        };
        loop {
            match self.next_event(&mut st).await {
                Event::Stop => return self.shutdown(st).await,
                Event::Cmd(SlotCommand::Retire) => return self.retire(st).await,
                event => {
                    if let Some(outcome) = self.handle(&mut st, event).await {
                        return outcome;
                    }
                }
            }
        }
    }

    /// The next thing that happened: a worker exited, a boot ended, a timer
    /// fired, a command came. Everything is watched at once.
    async fn next_event(&mut self, st: &mut State) -> Event {
        let State {
            current,
            restart,
            replacement,
            watch,
        } = st;
        tokio::select! {
            status = exit_of(current) => Event::Exited(status),
            e = restart_progress(restart) => e,
            e = replacement_progress(replacement) => e,
            e = watch_progress(watch) => e,
            Some(cmd) = self.cmds.recv() => Event::Cmd(cmd),
            _ = self.stop.cancelled() => Event::Stop,
        }
    }

    /// Act on one event. `Some` when the slot is done.
    async fn handle(&mut self, st: &mut State, event: Event) -> Option<SlotOutcome> {
        match event {
            Event::Exited(status) => self.current_exited(st, status),
            Event::RestartDue => st.restart = Some(self.boot(self.spec.clone(), false)),
            Event::Restarted(booted) => return self.restarted(st, booted).await,
            Event::Replaced(booted) => self.replaced(st, booted),
            Event::PreparedExited(status) => self.prepared_exited(st, status),
            Event::Verdict(go) => self.verdict(st, go),
            Event::LiveTick => self.live_tick(st),
            Event::Live(result) => self.liveness_result(st, result),
            Event::MemoryTick => self.memory_tick(st),
            Event::Cmd(SlotCommand::Abort {
                uid,
                reason,
                request,
            }) => {
                if st.current.as_ref().is_some_and(|i| i.uid == uid) {
                    self.abort_current(st, reason, request);
                }
            }
            Event::Cmd(SlotCommand::Recycle { uid, reason }) => self.recycle(st, uid, reason),
            Event::Cmd(SlotCommand::Prepare {
                spec,
                ready,
                go,
                done,
            }) => self.prepare(st, spec, ready, go, done),
            // Handled by the loop.
            Event::Cmd(SlotCommand::Retire) | Event::Stop => {}
        }
        None
    }

    fn new_uid(&self) -> u64 {
        self.shared.next_uid.fetch_add(1, Ordering::Relaxed)
    }
}

/// The exit of the serving worker (never, without one).
async fn exit_of(current: &mut Option<Instance>) -> ExitStatus {
    match current {
        Some(inst) => inst.wait_exit().await,
        None => std::future::pending().await,
    }
}

async fn restart_progress(restart: &mut Option<Stage>) -> Event {
    match restart {
        Some(Stage::Delay(sleep)) => {
            sleep.as_mut().await;
            Event::RestartDue
        }
        Some(Stage::Booting { fut, .. }) => Event::Restarted(fut.await),
        // The restart lane never holds a prepared worker.
        Some(Stage::Prepared(_)) | None => std::future::pending().await,
    }
}

async fn replacement_progress(replacement: &mut Option<Replacement>) -> Event {
    let Some(r) = replacement else {
        return std::future::pending().await;
    };
    let go = match &mut r.purpose {
        Purpose::Reload(t) => t.go.as_mut(),
        Purpose::Recycle { .. } => None,
    };
    let verdict = async {
        match go {
            // A reload that went away without a verdict is a "no".
            Some(go) => go.await.unwrap_or(false),
            None => std::future::pending().await,
        }
    };
    let stage = async {
        match &mut r.stage {
            Stage::Booting { fut, .. } => Event::Replaced(fut.await),
            Stage::Prepared(inst) => Event::PreparedExited(inst.wait_exit().await),
            // The replacement lane has no backoff.
            Stage::Delay(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        v = verdict => Event::Verdict(v),
        e = stage => e,
    }
}
