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

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Interval, MissedTickBehavior, Sleep};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::instance::{Boot, Instance, note_forced};
use super::reaper::ExitStatus;
use super::{BootError, BoxFuture, ReadyWorker, Shared, SlotCommand, SlotOutcome, WorkerSpec};
use crate::config::Liveness;

/// How often `max_memory` is checked.
const MEMORY_CHECK: Duration = Duration::from_secs(3);

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

/// A boot that did not give a ready worker.
struct Failed {
    error: BootError,
    /// Already logged (a spawn error, or a kill or crash during boot).
    logged: bool,
    /// curfew stopped it (shutdown, or the boot was cancelled).
    stopped: bool,
}

type Booted = Result<Instance, Failed>;

/// Where a new worker is.
enum Stage {
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

/// A reload's request to this slot (see [`SlotCommand::Prepare`]).
struct Ticket {
    spec: Arc<WorkerSpec>,
    /// Answered once the new worker is ready or could not boot.
    ready: Option<oneshot::Sender<Result<(), BootError>>>,
    /// The batch's verdict; `None` once received.
    go: Option<oneshot::Receiver<bool>>,
    /// `go` said yes while a new worker was booting (the prepared one had
    /// died): switch as soon as it is ready.
    committed: bool,
    done: Option<oneshot::Sender<bool>>,
}

impl Ticket {
    fn finish(&mut self, switched: bool) {
        if let Some(d) = self.done.take() {
            let _ = d.send(switched);
        }
    }
}

enum Purpose {
    Recycle { reason: String },
    Reload(Ticket),
}

struct Replacement {
    purpose: Purpose,
    stage: Stage,
}

/// Health checks of the serving worker.
struct Watch {
    memory: Interval,
    live: Option<Live>,
}

struct Live {
    cfg: Liveness,
    tick: Interval,
    failures: u32,
    probe: Option<BoxFuture<'static, Result<(), String>>>,
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
            Event::LiveTick => {
                if let (Some(inst), Some(Watch { live: Some(l), .. })) =
                    (&st.current, &mut st.watch)
                    && l.probe.is_none()
                {
                    l.probe = Some(self.shared.backends.liveness(
                        inst.addr.clone(),
                        l.cfg.path.clone(),
                        l.cfg.timeout,
                    ));
                }
            }
            Event::Live(result) => self.liveness_result(st, result),
            Event::MemoryTick => {
                if let (Some(inst), Some(limit)) = (&st.current, self.spec.max_memory) {
                    let rss = inst.rss_bytes();
                    if rss > limit {
                        let reason = format!("RSS {} MiB > {} MiB", rss >> 20, limit >> 20);
                        let uid = inst.uid;
                        self.recycle(st, uid, reason);
                    }
                }
            }
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

    /// Start a worker of `spec`; it is ready when the stage's future says so.
    fn boot(&self, spec: Arc<WorkerSpec>, replacement: bool) -> Stage {
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

    /// Hand a ready instance to the router and make it addressable.
    fn route(&self, inst: &Instance) {
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

    fn unroute(&self, inst: &Instance) {
        self.shared.unregister(inst.uid);
        self.shared.backends.remove(inst.uid);
    }

    /// `new` (ready) becomes the serving worker. A worker serving until now
    /// is removed from routing, drained and stopped in the background; a
    /// restart under way is called off. `false` (nothing changed but a
    /// restart scheduled if the slot is empty) if `new` died since it was
    /// found ready: a dead worker is never routed.
    fn take_over(&mut self, st: &mut State, mut new: Instance, replaced: &'static str) -> bool {
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

    /// The serving worker exited without being asked: out of routing now,
    /// reported, and a restart is on its way (unless a recycle's new worker
    /// already is: it takes the slot when ready).
    fn current_exited(&mut self, st: &mut State, status: ExitStatus) {
        let Some(inst) = st.current.take() else {
            return;
        };
        st.watch = None;
        self.unroute(&inst);
        self.restarts += 1;
        let delay = self.backoff.next_delay(inst.started.elapsed());
        let recycling = st.recycling();
        let restart_in = if recycling { Duration::ZERO } else { delay };
        if recycling {
            tracing::info!(
                worker = self.id,
                pid = inst.pid,
                "The worker being recycled died: its replacement, booting, takes the slot when ready."
            );
        } else if st.restart.is_none() {
            st.restart = Some(Stage::Delay(Box::pin(tokio::time::sleep(delay))));
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

    /// The restart lane's boot ended.
    async fn restarted(&mut self, st: &mut State, booted: Booted) -> Option<SlotOutcome> {
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
                        stderr = %one_line(&f.error.stderr),
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
    fn restart_later(&mut self, st: &mut State) {
        if st.current.is_none() && st.restart.is_none() {
            let delay = self.backoff.next_delay(Duration::ZERO);
            st.restart = Some(Stage::Delay(Box::pin(tokio::time::sleep(delay))));
        }
    }

    /// The replacement lane's boot ended.
    fn replaced(&mut self, st: &mut State, booted: Booted) {
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
    fn switch_to_reload(&mut self, st: &mut State, t: &mut Ticket, new: Instance) {
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
    fn prepared_exited(&mut self, st: &mut State, status: ExitStatus) {
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
    fn verdict(&mut self, st: &mut State, go: bool) {
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

    fn liveness_result(&mut self, st: &mut State, result: Result<(), String>) {
        let Some(Watch { live: Some(l), .. }) = &mut st.watch else {
            return;
        };
        l.probe = None;
        let Some(inst) = &st.current else { return };
        match result {
            Ok(()) => l.failures = 0,
            Err(e) => {
                l.failures += 1;
                tracing::info!(worker = self.id, pid = inst.pid, failures = l.failures, of = l.cfg.failures, error = %e, "Liveness probe failed.");
                if l.failures >= l.cfg.failures {
                    let reason = format!("liveness probe failed {} times: {e}", l.failures);
                    let requests = self.shared.backends.requests_on(inst.uid).join(", ");
                    self.abort_current(st, reason, requests);
                }
            }
        }
    }

    /// The serving worker is hung: out of routing now, aborted (stack dump,
    /// kill) in the background, and a restart is on its way.
    fn abort_current(&mut self, st: &mut State, reason: String, request: String) {
        let Some(inst) = st.current.take() else {
            return;
        };
        st.watch = None;
        self.unroute(&inst);
        self.restarts += 1;
        let delay = self.backoff.next_delay(inst.started.elapsed());
        if !st.recycling() && st.restart.is_none() {
            st.restart = Some(Stage::Delay(Box::pin(tokio::time::sleep(delay))));
        }
        let abort_timeout = self.spec.abort_timeout;
        self.shared.retiring.spawn(async move {
            inst.abort(abort_timeout, &reason, &request).await;
        });
    }

    /// Replace the serving worker `uid` (max_requests, max_memory), unless a
    /// replacement is under way already (it replaces it anyway).
    fn recycle(&mut self, st: &mut State, uid: u64, reason: String) {
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

    /// Reload, phase one: boot a worker of `spec` beside the serving one.
    fn prepare(
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

    /// Drop a lane's worker: a boot is cancelled (it stops its worker), a
    /// prepared worker is stopped; both in the background.
    fn discard(&self, stage: Stage, why: &'static str) {
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
    fn drain_and_stop(&self, mut old: Instance, replaced: &'static str) {
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
    async fn retire(self, mut st: State) -> SlotOutcome {
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
    async fn shutdown(self, mut st: State) -> SlotOutcome {
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

impl Watch {
    fn new(spec: &WorkerSpec) -> Watch {
        let mut memory = tokio::time::interval(MEMORY_CHECK);
        memory.set_missed_tick_behavior(MissedTickBehavior::Delay);
        memory.reset();
        let live = spec.liveness.clone().map(|cfg| {
            let mut tick = tokio::time::interval(cfg.interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tick.reset(); // the first probe one interval after it became ready
            Live {
                cfg,
                tick,
                failures: 0,
                probe: None,
            }
        });
        Watch { memory, live }
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

async fn watch_progress(watch: &mut Option<Watch>) -> Event {
    let Some(w) = watch else {
        return std::future::pending().await;
    };
    let live = async {
        match &mut w.live {
            Some(Live {
                probe: Some(probe), ..
            }) => Event::Live(probe.await),
            Some(Live { tick, .. }) => {
                tick.tick().await;
                Event::LiveTick
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        e = live => e,
        _ = w.memory.tick() => Event::MemoryTick,
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
            let boot_ms = inst.started.elapsed().as_millis() as u64;
            let (pid, generation) = (inst.pid, inst.generation);
            if replacement {
                tracing::info!(
                    worker = id,
                    pid,
                    generation,
                    boot_ms,
                    "Replacement worker ready."
                );
            } else {
                tracing::info!(worker = id, pid, generation, boot_ms, "Worker ready.");
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
            let f = inst.boot_failure(boot, spec.boot_timeout).await;
            Err(failed(f.reason, inst.tail.last(12), f.logged, false))
        }
    }
}

/// Multi-line text as one log field.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}
