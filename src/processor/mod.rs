//! The job processor: claims jobs from the store ([`crate::jobs`]) per
//! queue, delivers them to the app ([`deliver`]), records each verdict
//! ([`verdict`]), and follows curfew's lifecycle.
//!
//! - **Wake-ups, not polling.** Each queue's loop sleeps until a wake-up: a
//!   `NOTIFY` (PostgreSQL) or an in-process enqueue (SQLite) through
//!   [`Store::listen`], an enqueue through [`Processor::enqueue`], a freed
//!   slot, the next scheduled `run_at`, or the fallback `poll_interval`.
//! - **Leases.** A running job's lease is renewed every lease/3 for as long as
//!   its delivery runs. A renewal that finds the lease lost (the job was
//!   rescued elsewhere) abandons the delivery: the job is someone else's.
//! - **Lifecycle.** [`Processor::stop_claiming`] at the stop request;
//!   [`Processor::drain`] lets running jobs finish until the cut-off
//!   (`graceful_timeout - release_reserve`), then stops the rest and hands
//!   them back in one statement; [`Processor::finish`] does the hand-back at
//!   once (immediate stop). On start, the jobs of this node's previous run are
//!   reclaimed at once; a rescue loop takes back jobs whose lease expired.
//! - **A store that goes away** is retried with backoff and reported once;
//!   web traffic does not depend on it.

pub mod api;
pub mod deliver;
pub mod verdict;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::jobs::{Delivery, JobsConfig, QueueConfig};
use crate::jobs::{
    Claimed, Enqueued, FailOutcome, NewJob, QueueStats, Store, StoreError, StoreOptions, backoff,
    lease_owner, now_ms,
};
use crate::proxy::Front;
use crate::supervisor::command::AbortOnDrop;
use crate::supervisor::reaper::Reaper;
use verdict::Verdict;

/// Waits between retries of a store that is unreachable.
const STORE_RETRY_MIN: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(10);
/// After the cut-off, how long stopped deliveries get to wind down before the
/// hand-back.
const CUT_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("unknown queue {queue:?}: the queues are {}", known.join(", "))]
    UnknownQueue { queue: String, known: Vec<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A job running in this processor (for status and the shutdown report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Running {
    pub id: i64,
    pub queue: String,
    pub kind: String,
    pub attempt: i32,
    pub age_ms: u64,
}

/// A running job's entry: what is shown, and its lease token.
struct Entry {
    info: Running,
    token: String,
    started: Instant,
}

/// Counts since this curfew started, per queue.
#[derive(Debug, Default)]
struct Counters {
    succeeded: AtomicU64,
    failed: AtomicU64,
    dead: AtomicU64,
    snoozed: AtomicU64,
    released: AtomicU64,
    lost: AtomicU64,
}

/// One queue's numbers: the store's counts and this processor's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueReport {
    pub queue: String,
    pub concurrency: usize,
    /// Running in this curfew.
    pub running_here: usize,
    /// From the store (all processors); `None` when it is unreachable.
    pub store: Option<QueueStats>,
    pub succeeded: u64,
    pub failed: u64,
    pub dead: u64,
    pub snoozed: u64,
    pub released: u64,
    pub lost: u64,
}

/// What the processor is doing, for `curfew status`, SIGUSR1 and /metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobsReport {
    pub store: String,
    pub store_up: bool,
    pub owner: String,
    pub queues: Vec<QueueReport>,
    pub running: Vec<Running>,
}

/// The end of a drain.
#[derive(Debug, Default)]
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
    front: Arc<Front>,
    reaper: Reaper,
    chdir: Option<PathBuf>,
    queues: HashMap<String, Arc<QueueState>>,
    /// Cancelled at the stop request: no new claims.
    stop_claiming: CancellationToken,
    /// Cancelled at the cut-off: deliveries still running are stopped.
    cut: CancellationToken,
    running: Mutex<HashMap<i64, Entry>>,
    /// Queue loops, the listener and the rescue loop.
    loops: TaskTracker,
    /// One task per running job.
    runs: TaskTracker,
    store_down: AtomicBool,
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
            max_connections: (total + 4).min(32) as u32,
            acquire_timeout: Duration::from_secs(10),
        };
        Store::open_with(&cfg.store, options).await
    }

    /// The processor over an open store; it starts at [`Processor::begin`].
    pub fn new(
        cfg: JobsConfig,
        store: Store,
        front: Arc<Front>,
        reaper: Reaper,
        chdir: Option<PathBuf>,
    ) -> Processor {
        let boot = uuid::Uuid::new_v4().simple().to_string();
        let owner = lease_owner(&cfg.node, &boot);
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
                front,
                reaper,
                chdir,
                queues,
                stop_claiming: CancellationToken::new(),
                cut: CancellationToken::new(),
                running: Mutex::new(HashMap::new()),
                loops: TaskTracker::new(),
                runs: TaskTracker::new(),
                store_down: AtomicBool::new(false),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
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
        let first = inner.clone();
        self.inner.loops.spawn(async move {
            first.reclaim_previous().await;
            for q in first.queues.values() {
                q.wake.notify_one();
            }
        });
        self.inner.loops.spawn(inner.clone().listen_loop());
        self.inner.loops.spawn(inner.clone().rescue_loop());
        for q in inner.queues.values() {
            self.inner.loops.spawn(inner.clone().queue_loop(q.clone()));
        }
        self.inner.loops.close();
    }

    /// Adds a job through curfew (the CLI, the HTTP API): the queue must be
    /// one of the configured ones; its `max_attempts` is the default.
    pub async fn enqueue(&self, mut job: NewJob) -> Result<Enqueued, EnqueueError> {
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
        let enqueued = self.inner.store.enqueue(job).await?;
        q.wake.notify_one();
        Ok(enqueued)
    }

    /// Answers a `curfew enqueue` / `curfew jobs` request: a message and,
    /// for enqueue, list and show, the data as JSON.
    pub async fn operate(
        &self,
        req: api::JobsRequest,
    ) -> Result<(String, Option<serde_json::Value>), api::ApiError> {
        use api::{ApiError, JobsRequest};
        let store = &self.inner.store;
        match req {
            JobsRequest::Enqueue { job } => {
                let job = job.into_new_job(now_ms())?;
                let queue = job.queue.clone();
                let e = self.enqueue(job).await?;
                let reply = api::EnqueueReply {
                    id: e.id,
                    created: e.created,
                    queue: queue.clone(),
                };
                let msg = if e.created {
                    format!("enqueued job {} in queue {queue}", e.id)
                } else {
                    format!(
                        "job {} exists already with this idempotency key (queue {queue}); nothing added",
                        e.id
                    )
                };
                Ok((msg, serde_json::to_value(reply).ok()))
            }
            JobsRequest::List {
                queue,
                state,
                limit,
                after,
            } => {
                let filter = crate::jobs::ListFilter {
                    queue,
                    state: match state {
                        None => None,
                        Some(s) => Some(
                            s.parse()
                                .map_err(|e| ApiError::bad(format!("invalid --state: {e}")))?,
                        ),
                    },
                    limit: limit.unwrap_or(crate::jobs::ListFilter::DEFAULT_LIMIT),
                    after_id: after,
                };
                let jobs = store.list(filter).await?;
                Ok((
                    format!("{} jobs", jobs.len()),
                    serde_json::to_value(jobs).ok(),
                ))
            }
            JobsRequest::Show { id } => match store.get(id).await? {
                Some(job) => Ok((format!("job {id}"), serde_json::to_value(job).ok())),
                None => Err(ApiError {
                    status: 404,
                    message: format!("job {id} not found"),
                }),
            },
            JobsRequest::Retry { id } => {
                store.retry(id).await?;
                for q in self.inner.queues.values() {
                    q.wake.notify_one();
                }
                Ok((format!("job {id} queued again"), None))
            }
            JobsRequest::Cancel { id } => {
                store.cancel(id).await?;
                Ok((format!("job {id} cancelled"), None))
            }
            JobsRequest::Delete { id } => {
                store.delete(id).await?;
                Ok((format!("job {id} deleted"), None))
            }
        }
    }

    /// Wakes a queue's loop (after a retry through curfew, say).
    pub fn wake(&self, queue: &str) {
        if let Some(q) = self.inner.queues.get(queue) {
            q.wake.notify_one();
        }
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
    /// unreachable). Idempotent.
    pub async fn finish(&self, deadline: tokio::time::Instant) -> DrainReport {
        let inner = &self.inner;
        inner.stop_claiming.cancel();
        inner.cut.cancel();
        inner.runs.close();
        let grace = (tokio::time::Instant::now() + CUT_GRACE).min(deadline);
        let _ = tokio::time::timeout_at(grace, inner.runs.wait()).await;
        let left = inner.running_tokens();
        if left.is_empty() {
            return DrainReport::default();
        }
        let pairs: Vec<(i64, String)> = left.iter().map(|(r, t)| (r.id, t.clone())).collect();
        let mut wait = STORE_RETRY_MIN;
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
                Err(e) if e.is_retryable() && tokio::time::Instant::now() + wait < deadline => {
                    tracing::warn!(error = %e, "Could not hand the running jobs back yet; retrying.");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(STORE_RETRY_MAX);
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

    /// Counts per queue: the store's (asked for at most `timeout`) and this
    /// processor's. Queues in the store that this curfew does not process
    /// are listed too, with concurrency 0.
    pub async fn report(&self, timeout: Duration) -> JobsReport {
        let inner = &self.inner;
        let stats = tokio::time::timeout(timeout, inner.store.stats()).await;
        let stats = match stats {
            Ok(Ok(s)) => Some(s),
            _ => None,
        };
        let store_up = stats.is_some() && !inner.store_down.load(Ordering::Relaxed);
        let running = inner.running_snapshot();
        let mut queues: Vec<QueueReport> = inner
            .cfg
            .queues
            .iter()
            .filter_map(|qc| inner.queues.get(&qc.name))
            .map(|q| {
                let c = &q.counters;
                let name = &q.cfg.name;
                QueueReport {
                    queue: name.clone(),
                    concurrency: q.cfg.concurrency,
                    running_here: running.iter().filter(|r| &r.queue == name).count(),
                    store: stats.as_ref().map(|all| {
                        all.iter()
                            .find(|s| &s.queue == name)
                            .cloned()
                            .unwrap_or_else(|| empty_stats(name))
                    }),
                    succeeded: c.succeeded.load(Ordering::Relaxed),
                    failed: c.failed.load(Ordering::Relaxed),
                    dead: c.dead.load(Ordering::Relaxed),
                    snoozed: c.snoozed.load(Ordering::Relaxed),
                    released: c.released.load(Ordering::Relaxed),
                    lost: c.lost.load(Ordering::Relaxed),
                }
            })
            .collect();
        for s in stats.iter().flatten() {
            if !inner.queues.contains_key(&s.queue) {
                queues.push(QueueReport {
                    queue: s.queue.clone(),
                    concurrency: 0,
                    running_here: 0,
                    store: Some(s.clone()),
                    succeeded: 0,
                    failed: 0,
                    dead: 0,
                    snoozed: 0,
                    released: 0,
                    lost: 0,
                });
            }
        }
        queues.sort_by(|a, b| a.queue.cmp(&b.queue));
        JobsReport {
            store: inner.store.name().to_owned(),
            store_up,
            owner: inner.owner.clone(),
            queues,
            running,
        }
    }
}

fn empty_stats(queue: &str) -> QueueStats {
    QueueStats {
        queue: queue.to_owned(),
        queued: 0,
        scheduled: 0,
        running: 0,
        failed: 0,
        dead: 0,
        succeeded: 0,
        cancelled: 0,
        oldest_queued_age_ms: None,
    }
}

impl JobsReport {
    /// A human-readable table (for `curfew status`).
    pub fn table(&self) -> String {
        let mut out = format!(
            "jobs: store {} ({})  owner {}  running here {}\n",
            self.store,
            if self.store_up { "up" } else { "UNREACHABLE" },
            self.owner,
            self.running.len()
        );
        out.push_str(&format!(
            "{:<20} {:>5} {:>7} {:>9} {:>8} {:>7} {:>6} {:>6} {:>10} {:>11}\n",
            "QUEUE",
            "CONC",
            "QUEUED",
            "SCHEDULED",
            "RUNNING",
            "FAILED",
            "DEAD",
            "HERE",
            "SUCCEEDED",
            "OLDEST ms"
        ));
        for q in &self.queues {
            let n = |f: fn(&QueueStats) -> i64| {
                q.store
                    .as_ref()
                    .map_or("?".to_owned(), |s| f(s).to_string())
            };
            out.push_str(&format!(
                "{:<20} {:>5} {:>7} {:>9} {:>8} {:>7} {:>6} {:>6} {:>10} {:>11}\n",
                q.queue,
                q.concurrency,
                n(|s| s.queued),
                n(|s| s.scheduled),
                n(|s| s.running),
                n(|s| s.failed),
                n(|s| s.dead),
                q.running_here,
                n(|s| s.succeeded),
                q.store
                    .as_ref()
                    .and_then(|s| s.oldest_queued_age_ms)
                    .map_or("-".to_owned(), |a| a.to_string()),
            ));
        }
        out
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
                    ..e.info.clone()
                };
                (info, e.token.clone())
            })
            .collect();
        v.sort_by_key(|(r, _)| r.id);
        v
    }

    /// A store call failed: report the first failure of an outage at WARN
    /// (retryable) or every failure at ERROR (not retryable).
    fn store_failed(&self, what: &str, e: &StoreError) {
        if e.is_retryable() {
            if !self.store_down.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "Job store unreachable while trying to {what}: retrying with backoff; web traffic is not affected.");
            } else {
                tracing::debug!(error = %e, "Job store still unreachable ({what}).");
            }
        } else {
            tracing::error!(error = %e, "Job store error while trying to {what}.");
        }
    }

    fn store_ok(&self) {
        if self.store_down.swap(false, Ordering::Relaxed) {
            tracing::info!(store = %self.store.name(), "Job store reachable again.");
        }
    }

    async fn reclaim_previous(&self) {
        let mut wait = STORE_RETRY_MIN;
        loop {
            match self
                .store
                .reclaim_own_previous(&self.node, &self.boot, self.cfg.max_crashes)
                .await
            {
                Ok(ids) => {
                    self.store_ok();
                    if !ids.is_empty() {
                        tracing::info!(
                            jobs = ids.len(),
                            "Reclaimed the jobs this node was running when it last stopped."
                        );
                    }
                    return;
                }
                Err(e) => {
                    self.store_failed("reclaim the previous run's jobs", &e);
                    if !e.is_retryable() {
                        return;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop_claiming.cancelled() => return,
            }
            wait = (wait * 2).min(STORE_RETRY_MAX);
        }
    }

    async fn listen_loop(self: Arc<Self>) {
        let mut wait = STORE_RETRY_MIN;
        while !self.stop_claiming.is_cancelled() {
            let listener = tokio::select! {
                l = self.store.listen() => l,
                _ = self.stop_claiming.cancelled() => return,
            };
            match listener {
                Ok(mut l) => loop {
                    let got = tokio::select! {
                        g = l.recv() => g,
                        _ = self.stop_claiming.cancelled() => return,
                    };
                    match got {
                        Ok(queue) => {
                            wait = STORE_RETRY_MIN;
                            if let Some(q) = self.queues.get(&queue) {
                                q.wake.notify_one();
                            }
                        }
                        Err(e) => {
                            self.store_failed("listen for new jobs", &e);
                            break;
                        }
                    }
                },
                Err(e) => self.store_failed("listen for new jobs", &e),
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop_claiming.cancelled() => return,
            }
            wait = (wait * 2).min(STORE_RETRY_MAX);
        }
    }

    /// Takes back jobs whose processor died (lease expired), every half lease.
    async fn rescue_loop(self: Arc<Self>) {
        let every = (self.cfg.lease / 2).max(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.stop_claiming.cancelled() => return,
            }
            match self.store.rescue_expired(self.cfg.max_crashes).await {
                Ok(ids) if !ids.is_empty() => {
                    self.store_ok();
                    for q in self.queues.values() {
                        q.wake.notify_one();
                    }
                }
                Ok(_) => self.store_ok(),
                Err(e) => self.store_failed("rescue jobs of dead processors", &e),
            }
        }
    }

    async fn queue_loop(self: Arc<Self>, q: Arc<QueueState>) {
        let mut wait = STORE_RETRY_MIN;
        loop {
            if self.stop_claiming.is_cancelled() {
                return;
            }
            let free = q.slots.available_permits();
            let mut sleep_for = self.cfg.poll_interval;
            if free > 0 {
                match self
                    .store
                    .claim(&q.cfg.name, free as u32, &self.owner, self.cfg.lease)
                    .await
                {
                    Ok(claimed) => {
                        self.store_ok();
                        wait = STORE_RETRY_MIN;
                        let got = claimed.len();
                        for c in claimed {
                            let Ok(permit) = q.slots.clone().try_acquire_owned() else {
                                // Cannot happen: only this loop takes permits
                                // and it claimed no more than were free. Hand
                                // the job back rather than overrun the limit.
                                let _ = self
                                    .store
                                    .release(&[(c.job.id, c.token)], "no free slot")
                                    .await;
                                continue;
                            };
                            self.runs.spawn(self.clone().run(q.clone(), c, permit));
                        }
                        if got == free {
                            // Maybe more: claim again as soon as a slot frees.
                            continue;
                        }
                        match self.store.next_run_at(&q.cfg.name).await {
                            Ok(Some(at)) => {
                                let until = Duration::from_millis((at - now_ms()).max(0) as u64);
                                sleep_for = sleep_for.min(until.max(Duration::from_millis(5)));
                            }
                            Ok(None) => {}
                            Err(e) => self.store_failed("look for scheduled jobs", &e),
                        }
                    }
                    Err(e) => {
                        self.store_failed(&format!("claim jobs of queue {}", q.cfg.name), &e);
                        sleep_for = wait;
                        wait = (wait * 2).min(STORE_RETRY_MAX);
                    }
                }
            }
            let slot_free = async {
                if free == 0 {
                    // Wait for a slot (then give it back: the claim takes it).
                    let _ = q.slots.acquire().await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = q.wake.notified() => {}
                _ = slot_free => {}
                _ = tokio::time::sleep(sleep_for) => {}
                _ = self.stop_claiming.cancelled() => return,
            }
        }
    }

    /// One job, from claim to recorded verdict.
    async fn run(
        self: Arc<Self>,
        q: Arc<QueueState>,
        claimed: Claimed,
        _permit: OwnedSemaphorePermit,
    ) {
        let Claimed { job, token } = claimed;
        self.lock_running().insert(
            job.id,
            Entry {
                info: Running {
                    id: job.id,
                    queue: job.queue.clone(),
                    kind: job.kind.clone(),
                    attempt: job.attempt,
                    age_ms: 0,
                },
                token: token.clone(),
                started: Instant::now(),
            },
        );
        tracing::debug!(job_id = job.id, queue = %job.queue, kind = %job.kind, attempt = job.attempt, "Job started.");
        let started = Instant::now();
        let lost = CancellationToken::new();
        let _heartbeat = AbortOnDrop(tokio::spawn(self.clone().heartbeat(
            job.id,
            token.clone(),
            lost.clone(),
        )));
        let stop = {
            let (cut, lost) = (self.cut.clone(), lost.clone());
            async move {
                tokio::select! {
                    _ = cut.cancelled() => {}
                    _ = lost.cancelled() => {}
                }
            }
        };
        let delivery = async {
            match &q.cfg.delivery {
                Delivery::Http { path } => {
                    Some(deliver::http(&self.front, path, &job, q.cfg.timeout).await)
                }
                Delivery::Command(argv) => {
                    deliver::command(
                        &self.reaper,
                        argv,
                        self.chdir.as_deref(),
                        &job,
                        q.cfg.timeout,
                        stop,
                    )
                    .await
                }
            }
        };
        let verdict = tokio::select! {
            v = delivery => v,
            _ = self.cut.cancelled() => None,
            _ = lost.cancelled() => None,
        };
        drop(_heartbeat);
        if lost.is_cancelled() {
            q.counters.lost.fetch_add(1, Ordering::Relaxed);
            self.lock_running().remove(&job.id);
            tracing::warn!(job_id = job.id, queue = %job.queue, kind = %job.kind, "Job abandoned: its lease was lost (another processor rescued it after this one could not renew it); it will run again there.");
            return;
        }
        let Some(verdict) = verdict else {
            // Cut off by the shutdown: stays in `running` for the hand-back.
            return;
        };
        if self.cut.is_cancelled() && !matches!(verdict, Verdict::Done) {
            // A failure caused by the shutdown itself (workers stopping) is
            // not the job's: hand it back with the others.
            return;
        }
        self.record(&q, &job, &token, verdict, started.elapsed())
            .await;
        self.lock_running().remove(&job.id);
    }

    /// Renews the lease every lease/3; cancels `lost` when the job is no
    /// longer ours.
    async fn heartbeat(self: Arc<Self>, id: i64, token: String, lost: CancellationToken) {
        let every = self.cfg.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            match self.store.heartbeat(id, &token, self.cfg.lease).await {
                Ok(true) => self.store_ok(),
                Ok(false) => {
                    lost.cancel();
                    return;
                }
                Err(e) => self.store_failed("renew a job's lease", &e),
            }
        }
    }

    /// Writes the verdict, retrying an unreachable store for up to one lease
    /// (after that the job may be rescued elsewhere anyway).
    async fn record(
        &self,
        q: &QueueState,
        job: &crate::jobs::Job,
        token: &str,
        verdict: Verdict,
        took: Duration,
    ) {
        let give_up = Instant::now() + self.cfg.lease;
        let mut wait = STORE_RETRY_MIN;
        let took_ms = took.as_millis() as u64;
        loop {
            let written = match &verdict {
                Verdict::Done => self
                    .store
                    .complete(job.id, token)
                    .await
                    .map(|ok| ok.then_some(None)),
                Verdict::Snooze { after, .. } => self
                    .store
                    .snooze(job.id, token, now_ms() + after.as_millis() as i64)
                    .await
                    .map(|ok| ok.then_some(None)),
                Verdict::Fail { error } => self
                    .store
                    .fail(
                        job.id,
                        token,
                        error,
                        backoff::retry_at(job.attempt, now_ms()),
                    )
                    .await
                    .map(|o| match o {
                        FailOutcome::LostLease => None,
                        other => Some(Some(other)),
                    }),
            };
            match written {
                Ok(Some(outcome)) => {
                    self.store_ok();
                    let (id, queue, kind, attempt) = (job.id, &job.queue, &job.kind, job.attempt);
                    match (&verdict, outcome) {
                        (Verdict::Done, _) => {
                            q.counters.succeeded.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(job_id = id, queue = %queue, kind = %kind, attempt, took_ms, "Job succeeded.");
                        }
                        (Verdict::Snooze { after, why }, _) => {
                            q.counters.snoozed.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(job_id = id, queue = %queue, kind = %kind, retry_in_ms = after.as_millis() as u64, why = %why, "Job postponed (back-pressure); no attempt spent.");
                        }
                        (Verdict::Fail { error }, Some(FailOutcome::Dead)) => {
                            q.counters.dead.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(job_id = id, queue = %queue, kind = %kind, attempt, max_attempts = job.max_attempts, took_ms, error = %error, "Job failed its last attempt: it is dead (kept until retried or deleted).");
                        }
                        (Verdict::Fail { error }, Some(FailOutcome::Retry { run_at })) => {
                            q.counters.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(job_id = id, queue = %queue, kind = %kind, attempt, max_attempts = job.max_attempts, took_ms, retry_in_ms = (run_at - now_ms()).max(0), error = %error, "Job attempt failed; it will be retried.");
                        }
                        (Verdict::Fail { .. }, _) => {}
                    }
                    return;
                }
                Ok(None) => {
                    q.counters.lost.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(job_id = job.id, queue = %job.queue, kind = %job.kind, "Job result not recorded: its lease was lost meanwhile (it was rescued or handed back); it will run again.");
                    return;
                }
                Err(e) if e.is_retryable() && Instant::now() + wait < give_up => {
                    self.store_failed("record a job's result", &e);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(STORE_RETRY_MAX);
                }
                Err(e) => {
                    tracing::error!(job_id = job.id, queue = %job.queue, error = %e, "Could not record the job's result: it will run again once its lease expires.");
                    return;
                }
            }
        }
    }
}
