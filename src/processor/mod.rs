//! The job processor: claims jobs from the store ([`curfew_store`]) per
//! queue, delivers them to the app ([`deliver`]), records each verdict
//! ([`verdict`]), and follows curfew's lifecycle.
//!
//! - **Wake-ups, not polling.** Each queue's loop sleeps until a wake-up: a
//!   `NOTIFY` (PostgreSQL) or an in-process enqueue (SQLite) through
//!   [`Store::listen`], an enqueue through [`Processor::enqueue`], a freed
//!   slot, the next scheduled `run_at`, or the fallback `poll_interval`.
//! - **Group commit.** Successful runs are written together, each fenced by
//!   its lease token ([`complete`]); their slots come back together, so the
//!   next claim takes them in one statement.
//! - **Leases.** A running job's lease is renewed every lease/3 for as long as
//!   its delivery runs. A renewal that finds the lease lost (the job was
//!   rescued elsewhere) abandons the delivery: the job is someone else's.
//! - **Lifecycle.** [`Processor::stop_claiming`] at the stop request;
//!   [`Processor::drain`] lets running jobs finish until the cut-off
//!   (`graceful_timeout - release_reserve`), then stops the rest and hands
//!   them back in one statement; [`Processor::finish`] does the hand-back at
//!   once (immediate stop). On start, the jobs of this node's previous run are
//!   reclaimed at once; a rescue loop takes back jobs whose lease expired.
//! - **Retention.** Every `retention.interval` a prune pass deletes finished
//!   jobs past `[jobs.retention]` in batches (one processor at a time per
//!   PostgreSQL store).
//! - **Periodic jobs.** A scheduler enqueues each `[jobs.periodic]`
//!   instant, exactly once across the processors sharing the store
//!   ([`periodic`]).
//! - **A store that goes away** is retried with backoff and reported once;
//!   web traffic does not depend on it.

pub mod api;
mod boot;
mod cancel;
mod complete;
pub mod gate;
mod health;
mod loops;
mod operate;
pub mod periodic;
mod report;
mod run;
pub mod store_ops;

use health::{RetryPause, StoreHealth};
use report::Counters;
pub use report::{JobsReport, QueueReport};
pub mod deliver;
pub mod verdict;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::jobs::{Delivery, JobsConfig, QueueConfig};
use crate::proxy::dispatch::Dispatcher;
use crate::supervisor::reaper::Reaper;
use curfew_store::{Enqueued, NewJob, Store, StoreError, StoreOptions, lease_owner};

/// After the cut-off, how long stopped deliveries get to wind down before the
/// hand-back.
const CUT_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("unknown queue {queue:?}: the queues are {}", known.join(", "))]
    UnknownQueue { queue: String, known: Vec<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime stopped while the enqueue was being written: whether
    /// the job was stored is unknown (an idempotency key makes a retry
    /// safe).
    #[error(
        "curfew is shutting down: the job may or may not have been stored; retry with the same idempotency key"
    )]
    ShuttingDown,
}

pub use crate::protocol::jobs::Running;

/// A running job's entry: what is shown, its lease token, and what stops
/// the run when an operator cancels it.
struct Entry {
    info: Running,
    token: String,
    started: Instant,
    cancel: CancellationToken,
}

/// The end of a drain.
#[derive(Debug, Default, Clone)]
pub struct DrainReport {
    /// Finished (any verdict) while draining.
    pub finished: usize,
    /// Still running at the cut-off, handed back to their queues.
    pub released: Vec<Running>,
    /// Could not be handed back (store unreachable): they are rescued when
    /// their lease expires or at this node's next start.
    pub unreleased: Vec<Running>,
}

struct QueueState {
    cfg: QueueConfig,
    wake: Notify,
    slots: Arc<Semaphore>,
    counters: Counters,
}

struct Inner {
    cfg: JobsConfig,
    store: Store,
    node: String,
    boot: String,
    owner: String,
    /// Lease owners of this node that still run (an upgrade's
    /// predecessors): their runs are not reclaimed at start.
    live_predecessors: Mutex<Vec<String>>,
    /// Sent with every HTTP delivery (`X-Curfew-Job-Token`) and given to
    /// the workers (`CURFEW_JOB_TOKEN`): a request carrying it came from
    /// curfew. The front removes the header from client requests.
    token: String,
    dispatcher: Arc<Dispatcher>,
    reaper: Reaper,
    chdir: Option<PathBuf>,
    queues: HashMap<String, Arc<QueueState>>,
    /// Set by [`Processor::begin`]: from then on an enqueue may claim for
    /// a free slot (before, nothing would record a run's success).
    begun: AtomicBool,
    /// Cancelled at the stop request: no new claims.
    stop_claiming: CancellationToken,
    /// Cancelled at the cut-off: deliveries still running are stopped.
    cut: CancellationToken,
    running: Mutex<HashMap<i64, Entry>>,
    /// Queue loops, the listener, the rescue loop and the prune loop.
    loops: TaskTracker,
    /// One task per running job.
    runs: TaskTracker,
    /// The hand-back's report, once made: [`Processor::finish`] runs once
    /// (a stop that escalates mid-drain calls it from two places).
    finished: tokio::sync::Mutex<Option<DrainReport>>,
    health: StoreHealth,
    /// The job API's and the status report's share of the store.
    gate: gate::Gate,
    /// `[jobs.periodic]`, followed by the scheduler (`periodic`).
    periodic: periodic::Schedules,
    /// Successful runs to the group commit (`complete`).
    successes: complete::Successes,
    /// The group commit's end of `successes`, until [`Processor::begin`]
    /// starts it.
    completions: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<complete::Success>>>,
}

/// The job processor; cheap to clone.
#[derive(Clone)]
pub struct Processor {
    inner: Arc<Inner>,
}

impl Processor {
    /// Opens the store (applying migrations). An unreachable store is an
    /// error here: curfew does not start half-configured.
    pub async fn open_store(cfg: &JobsConfig) -> Result<Store, StoreError> {
        let total: usize = cfg.queues.iter().map(|q| q.concurrency).sum();
        let options = StoreOptions {
            pg_schema: cfg.pg_schema.clone(),
            max_payload_bytes: cfg.max_payload,
            // The queues' runs, 5 for the loops (claims, rescue, prune,
            // the listener's reconnects, SQLite's checkpoints), and the
            // job API's own turns (`gate`), which it never exceeds.
            max_connections: ((total + 5).min(33) + gate::API_STORE_CALLS) as u32,
            // Fail calls fast while the database is away: the loops retry
            // with their own backoff, so recovery is seen within seconds.
            acquire_timeout: Duration::from_secs(3),
        };
        Store::open_with(&cfg.store, options).await
    }

    /// The processor over an open store; it starts at [`Processor::begin`].
    pub fn new(
        cfg: JobsConfig,
        store: Store,
        dispatcher: Arc<Dispatcher>,
        reaper: Reaper,
        chdir: Option<PathBuf>,
    ) -> Processor {
        let health = StoreHealth::new(store.name());
        let boot = boot::new_boot();
        let owner = lease_owner(&cfg.node, &boot);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let (successes, completions) = tokio::sync::mpsc::unbounded_channel();
        let queues = cfg
            .queues
            .iter()
            .map(|q| {
                (
                    q.name.clone(),
                    Arc::new(QueueState {
                        cfg: q.clone(),
                        wake: Notify::new(),
                        slots: Arc::new(Semaphore::new(q.concurrency)),
                        counters: Counters::default(),
                    }),
                )
            })
            .collect();
        Processor {
            inner: Arc::new(Inner {
                node: cfg.node.clone(),
                cfg,
                store,
                boot,
                owner,
                live_predecessors: Mutex::new(Vec::new()),
                token,
                dispatcher,
                reaper,
                chdir,
                queues,
                begun: AtomicBool::new(false),
                stop_claiming: CancellationToken::new(),
                cut: CancellationToken::new(),
                running: Mutex::new(HashMap::new()),
                loops: TaskTracker::new(),
                runs: TaskTracker::new(),
                finished: tokio::sync::Mutex::new(None),
                health,
                gate: gate::Gate::new(),
                periodic: tokio::sync::watch::Sender::new(Arc::new(Vec::new())),
                successes,
                completions: Mutex::new(Some(completions)),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// A job-API request's turn at the store (see `gate`): hold it while
    /// the request uses the store. 503 after `gate::API_WAIT`.
    pub async fn api_turn(&self, with_payloads: bool) -> Result<gate::ApiTurn, api::ApiError> {
        self.inner.gate.turn(with_payloads).await
    }

    /// This processor's lease owner (`node/boot`).
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Lease owners of this node that are still running (an upgrade's
    /// predecessor and, in a chain of upgrades, its own): the reclaim at
    /// [`Processor::begin`] leaves their runs to them. Call before `begin`.
    pub fn set_live_predecessors(&self, owners: Vec<String>) {
        *self
            .inner
            .live_predecessors
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = owners;
    }

    /// See [`Processor::set_live_predecessors`].
    pub fn live_predecessors(&self) -> Vec<String> {
        self.inner
            .live_predecessors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The delivery token (see `CURFEW_JOB_TOKEN`).
    pub fn token(&self) -> &str {
        &self.inner.token
    }

    pub fn config(&self) -> &JobsConfig {
        &self.inner.cfg
    }

    /// Starts processing (once the workers are ready): reclaims this node's
    /// previous run, then listens, claims and rescues until
    /// [`Processor::stop_claiming`].
    pub fn begin(&self) {
        let inner = self.inner.clone();
        tracing::info!(
            store = %inner.store.name(),
            owner = %inner.owner,
            queues = %inner.cfg.queues.iter().map(|q| format!("{} ({})", q.name, q.concurrency)).collect::<Vec<_>>().join(", "),
            "Processing jobs."
        );
        // Not one of `loops`: it serves the runs until the last one ends,
        // past the stop request and the drain.
        let completions = inner
            .completions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rx) = completions {
            tokio::spawn(complete::complete_loop(Arc::downgrade(&inner), rx));
        }
        let first = inner.clone();
        self.inner.loops.spawn(async move {
            first.reclaim_previous().await;
            for q in first.queues.values() {
                q.wake.notify_one();
            }
        });
        self.inner.loops.spawn(inner.clone().listen_loop());
        self.inner.loops.spawn(inner.clone().rescue_loop());
        self.inner.loops.spawn(inner.clone().cancel_loop());
        if inner.cfg.retention != curfew_store::Retention::KEEP {
            self.inner.loops.spawn(inner.clone().prune_loop());
        }
        for q in inner.queues.values() {
            self.inner.loops.spawn(inner.clone().queue_loop(q.clone()));
        }
        self.inner.loops.spawn(inner.clone().periodic_loop());
        self.inner.loops.close();
        self.inner.begun.store(true, Ordering::Release);
    }

    /// Adds a job through curfew (the CLI, the HTTP API): the queue must be
    /// one of the configured ones; its `max_attempts` is the default.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, EnqueueError> {
        let job = self.with_queue_defaults(job)?;
        let Some(q) = self.inner.queues.get(&job.queue).cloned() else {
            // with_queue_defaults let only this curfew's queues through.
            return Ok(self.inner.store.enqueue(job).await?);
        };
        // A free slot of the queue: claim in the enqueue's own commit, so
        // that a job into an idle processor starts without a second one.
        // The slot is taken first, so the claim loop cannot count it
        // meanwhile. Not before `begin` (no group commit yet to record a
        // success) nor after the stop request.
        let due = job.run_at.is_none_or(|at| at <= curfew_store::now_ms());
        let slot = (due
            && self.inner.begun.load(Ordering::Acquire)
            && !self.inner.stop_claiming.is_cancelled())
        .then(|| q.slots.clone().try_acquire_owned().ok())
        .flatten();
        let Some(slot) = slot else {
            let enqueued = self.inner.store.enqueue(job).await?;
            q.wake.notify_one();
            return Ok(enqueued);
        };
        // In a task of its own: a caller that goes away (a client that
        // disconnects) must not leave a committed claim without its run.
        let inner = self.inner.clone();
        let write = tokio::spawn(async move {
            let written = inner
                .store
                .enqueue_and_claim(job, &inner.owner, inner.cfg.lease)
                .await;
            let (enqueued, claimed) = match written {
                Ok(w) => w,
                Err(e) => {
                    drop(slot);
                    // Whether it committed is unknown: let the loop look.
                    q.wake.notify_one();
                    return Err(e);
                }
            };
            let took_new = claimed.as_ref().is_some_and(|c| c.job.id == enqueued.id);
            match claimed {
                Some(c) => inner.start_claimed(&q, vec![c], vec![slot]).await,
                None => drop(slot),
            }
            if !took_new {
                // The new job waits (behind the one claimed, or not due yet).
                q.wake.notify_one();
            }
            Ok(enqueued)
        });
        match write.await {
            Ok(result) => Ok(result?),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only at the runtime's shutdown.
            Err(_) => Err(EnqueueError::ShuttingDown),
        }
    }

    /// The job with its queue's defaults (`max_attempts`), if the queue is
    /// one of this curfew's.
    fn with_queue_defaults(&self, mut job: NewJob) -> Result<NewJob, EnqueueError> {
        let Some(q) = self.inner.queues.get(&job.queue) else {
            return Err(EnqueueError::UnknownQueue {
                queue: job.queue,
                known: self
                    .inner
                    .cfg
                    .queue_names()
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            });
        };
        if job.max_attempts.is_none() {
            job.max_attempts = Some(q.cfg.max_attempts);
        }
        Ok(job)
    }

    /// The stop request: claim nothing more. Running jobs go on.
    pub fn stop_claiming(&self) {
        if !self.inner.stop_claiming.is_cancelled() {
            let running = self.inner.lock_running().len();
            if running > 0 {
                tracing::info!(
                    running,
                    "Jobs: no new claims; waiting for the running jobs."
                );
            }
        }
        self.inner.stop_claiming.cancel();
    }

    /// An immediate stop: no new claims, every delivery stopped now (the
    /// hand-back follows in [`Processor::finish`]).
    pub fn cut_now(&self) {
        self.inner.stop_claiming.cancel();
        self.inner.cut.cancel();
    }

    /// Jobs running in this processor now.
    pub fn running(&self) -> Vec<Running> {
        self.inner.running_snapshot()
    }

    /// Waits for running jobs until `cut_at`, then stops the rest and hands
    /// them back ([`Processor::finish`], which must be done by `deadline`).
    pub async fn drain(
        &self,
        cut_at: tokio::time::Instant,
        deadline: tokio::time::Instant,
    ) -> DrainReport {
        self.stop_claiming();
        let inner = &self.inner;
        let before = inner.lock_running().len();
        inner.runs.close();
        tokio::select! {
            _ = inner.runs.wait() => {}
            _ = tokio::time::sleep_until(cut_at) => {}
        }
        // Also after an immediate stop cut the deliveries short: whatever is
        // still marked running is handed back here.
        let mut report = self.finish(deadline).await;
        report.finished = before.saturating_sub(report.released.len() + report.unreleased.len());
        report
    }

    /// Stops every running delivery now and hands the jobs back to their
    /// queues in one statement (retried until `deadline` if the store is
    /// unreachable). Runs once: a later (or concurrent) call waits for the
    /// first and gets its report — two hand-backs of the same jobs would
    /// race, and the loser's fenced release would find none of them.
    pub async fn finish(&self, deadline: tokio::time::Instant) -> DrainReport {
        let inner = &self.inner;
        inner.stop_claiming.cancel();
        inner.cut.cancel();
        let mut finished = inner.finished.lock().await;
        if let Some(report) = &*finished {
            return report.clone();
        }
        let report = self.hand_back(deadline).await;
        *finished = Some(report.clone());
        report
    }

    async fn hand_back(&self, deadline: tokio::time::Instant) -> DrainReport {
        let inner = &self.inner;
        inner.runs.close();
        // A command job gets its SIGTERM now and its SIGKILL after its
        // grace: its run ends (and only then may it be handed back, so it
        // never runs beside its next run) once it is gone.
        let commands = inner.lock_running().values().any(|e| {
            inner
                .queues
                .get(&e.info.queue)
                .is_some_and(|q| matches!(q.cfg.delivery, Delivery::Command(_)))
        });
        let wind_down = if commands {
            deliver::COMMAND_GRACE + CUT_GRACE
        } else {
            CUT_GRACE
        };
        let grace = (tokio::time::Instant::now() + wind_down).min(deadline);
        let _ = tokio::time::timeout_at(grace, inner.runs.wait()).await;
        let left = inner.running_tokens();
        if left.is_empty() {
            return DrainReport::default();
        }
        let pairs: Vec<(i64, String)> = left.iter().map(|(r, t)| (r.id, t.clone())).collect();
        let mut pause = RetryPause::new();
        let released = loop {
            match inner
                .store
                .release(
                    &pairs,
                    "interrupted by shutdown (curfew stopped before the job finished)",
                )
                .await
            {
                Ok(ids) => break Some(ids),
                Err(e)
                    if e.is_retryable()
                        && tokio::time::Instant::now() + pause.peek() < deadline =>
                {
                    tracing::warn!(error = %e, "Could not hand the running jobs back yet; retrying.");
                    tokio::time::sleep(pause.next()).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "Could not hand the running jobs back: they run again when their lease expires or at this node's next start.");
                    break None;
                }
            }
        };
        let mut report = DrainReport::default();
        for (r, _) in left {
            inner.lock_running().remove(&r.id);
            match &released {
                Some(ids) if ids.contains(&r.id) => {
                    if let Some(q) = inner.queues.get(&r.queue) {
                        q.counters.released.fetch_add(1, Ordering::Relaxed);
                    }
                    report.released.push(r);
                }
                // Finished (or lost) in the meantime: nothing to hand back.
                Some(_) => {}
                None => report.unreleased.push(r),
            }
        }
        report
    }

    /// Closes the store.
    pub async fn close(&self) {
        self.inner.store.close().await;
    }
}

impl Inner {
    fn lock_running(&self) -> MutexGuard<'_, HashMap<i64, Entry>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn running_snapshot(&self) -> Vec<Running> {
        self.running_tokens().into_iter().map(|(r, _)| r).collect()
    }

    /// The running jobs with their lease tokens, by id.
    fn running_tokens(&self) -> Vec<(Running, String)> {
        let mut v: Vec<(Running, String)> = self
            .lock_running()
            .values()
            .map(|e| {
                let info = Running {
                    age_ms: e.started.elapsed().as_millis() as u64,
                    cancelling: e.cancel.is_cancelled(),
                    ..e.info.clone()
                };
                (info, e.token.clone())
            })
            .collect();
        v.sort_by_key(|(r, _)| r.id);
        v
    }
}
