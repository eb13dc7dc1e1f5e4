//! One job's run: delivery, lease heartbeats, and the verdict written back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::verdict::{self, Verdict};
use super::{Entry, Inner, QueueState, RetryPause, Running, deliver};
use crate::config::jobs::Delivery;
use crate::supervisor::command::AbortOnDrop;
use curfew_store::{Claimed, FailOutcome, backoff, now_ms};

/// Keeps the store's `started_at` true to the run: a claim presumes the
/// delivery starts at once; a job that has to wait for a free worker is
/// marked waiting before it waits ([`curfew_store::Store::mark_waiting`])
/// and started again once it has one, so a death of this processor while
/// it waits is never charged to the job as a crash. A job that finds a
/// worker at once (the common case) costs no write.
pub(super) struct StartMark<'a> {
    inner: &'a Inner,
    id: i64,
    token: &'a str,
    lost: &'a CancellationToken,
    /// What the store says: `started_at` set.
    started: bool,
}

impl<'a> StartMark<'a> {
    fn new(inner: &'a Inner, id: i64, token: &'a str, lost: &'a CancellationToken) -> Self {
        StartMark {
            inner,
            id,
            token,
            lost,
            started: true,
        }
    }

    /// Before waiting for a worker. `false`: the lease was lost (the run is
    /// abandoned through `lost`); do not deliver.
    pub(super) async fn waiting(&mut self) -> bool {
        if self.started {
            self.write(false).await;
        }
        !self.lost.is_cancelled()
    }

    /// Once the job has a worker. `false`: the lease was lost.
    pub(super) async fn started(&mut self) -> bool {
        if !self.started {
            self.write(true).await;
        }
        !self.lost.is_cancelled()
    }

    async fn write(&mut self, started: bool) {
        self.started = started;
        let t = self.inner.health.tick();
        let store = &self.inner.store;
        let written = if started {
            store.mark_started(self.id, self.token).await
        } else {
            store.mark_waiting(self.id, self.token).await
        };
        match written {
            Ok(true) => self.inner.health.ok(),
            Ok(false) => self.lost.cancel(),
            // The store is away: go on (the verdict write retries for a
            // lease). Only the crash count is at stake, should this
            // processor die before the store returns.
            Err(e) => {
                self.inner
                    .health
                    .failed("record whether a job is waiting for a worker", &e, t)
            }
        }
    }
}

impl Inner {
    /// One job, from claim to recorded verdict.
    pub(super) async fn run(
        self: Arc<Self>,
        q: Arc<QueueState>,
        claimed: Claimed,
        permit: OwnedSemaphorePermit,
    ) {
        let Claimed { job, token } = claimed;
        let cancel = CancellationToken::new();
        self.lock_running().insert(
            job.id,
            Entry {
                info: Running {
                    id: job.id,
                    queue: job.queue.clone(),
                    kind: job.kind.clone(),
                    attempt: job.attempt,
                    age_ms: 0,
                    cancelling: false,
                },
                token: token.clone(),
                started: Instant::now(),
                cancel: cancel.clone(),
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
            let (cut, lost, cancel) = (self.cut.clone(), lost.clone(), cancel.clone());
            async move {
                tokio::select! {
                    _ = cut.cancelled() => {}
                    _ = lost.cancelled() => {}
                    _ = cancel.cancelled() => {}
                }
            }
        };
        let http = matches!(q.cfg.delivery, Delivery::Http { .. });
        let delivery = async {
            let mut mark = StartMark::new(&self, job.id, &token, &lost);
            match &q.cfg.delivery {
                // A cancel ends the run below; the delivery itself is
                // dropped (async workers) or left to finish (sync workers).
                Delivery::Http { path } => Some(
                    deliver::http(
                        &self.dispatcher,
                        path,
                        &job,
                        &self.token,
                        q.cfg.timeout,
                        &mut mark,
                    )
                    .await,
                ),
                // A cancel stops the command (SIGTERM, SIGKILL after the
                // grace) and the run ends once it is gone.
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
        // Boxed: kept past the select for a sync worker, dropped (its
        // connection closed) right after it otherwise.
        let mut delivery = Box::pin(delivery);
        let verdict = tokio::select! {
            v = &mut delivery => v,
            // A command is stopped by its own `stop` (SIGTERM, then SIGKILL
            // after its grace) on a cancel, the cut-off or a lost lease, and
            // ends through `delivery`: the run (and its slot) lasts until the
            // command is gone, so it never runs beside its own next run.
            _ = cancel.cancelled(), if http => None,
            _ = self.cut.cancelled(), if http => None,
            _ = lost.cancelled(), if http => None,
        };
        drop(_heartbeat);
        // A cancelled HTTP delivery to a sync worker (one request at a time)
        // keeps its connection and slot until the worker answers (or its
        // timeout): closing it would not stop the handler, and the freed
        // slot would route the next request behind it, to wait and perhaps
        // get the worker declared hung. Async workers take other work
        // meanwhile: theirs is dropped (the connection closes) at once.
        let drain_sync = (http
            && verdict.is_none()
            && cancel.is_cancelled()
            && !lost.is_cancelled()
            && self.dispatcher.one_at_a_time())
        .then_some(delivery);
        if lost.is_cancelled() {
            q.counters.lost.fetch_add(1, Ordering::Relaxed);
            self.lock_running().remove(&job.id);
            tracing::warn!(job_id = job.id, queue = %job.queue, kind = %job.kind, "Job abandoned: its lease was lost (another processor rescued it after this one could not renew it); it will run again there.");
            return;
        }
        let verdict = match verdict {
            // A success that came first stands.
            Some(Verdict::Done) => Some(Verdict::Done),
            // Whatever a cancelled run ended with, it was stopped on purpose.
            _ if cancel.is_cancelled() => Some(Verdict::Cancelled),
            other => other,
        };
        let Some(verdict) = verdict else {
            // Cut off by the shutdown: stays in `running` for the hand-back.
            return;
        };
        if self.cut.is_cancelled() && !matches!(verdict, Verdict::Done | Verdict::Cancelled) {
            // A failure caused by the shutdown itself (workers stopping) is
            // not the job's: hand it back with the others.
            return;
        }
        let verdict = match verdict {
            Verdict::Interrupted { why } => verdict::interrupted(why, job.releases),
            other => other,
        };
        if matches!(verdict, Verdict::Done) {
            self.record_success(&q, &job, &token, started.elapsed(), permit)
                .await;
        } else {
            self.record(&q, &job, &token, verdict, started.elapsed())
                .await;
        }
        if let Some(delivery) = drain_sync {
            tokio::select! {
                _ = delivery => {}
                _ = self.cut.cancelled() => {}
            }
        }
        self.lock_running().remove(&job.id);
    }

    /// Renews the lease every lease/3; cancels `lost` when the job is no
    /// longer ours.
    pub(super) async fn heartbeat(
        self: Arc<Self>,
        id: i64,
        token: String,
        lost: CancellationToken,
    ) {
        let every = self.cfg.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let t = self.health.tick();
            match self.store.heartbeat(id, &token, self.cfg.lease).await {
                Ok(true) => self.health.ok(),
                Ok(false) => {
                    lost.cancel();
                    return;
                }
                Err(e) => self.health.failed("renew a job's lease", &e, t),
            }
        }
    }

    /// Writes a success through the group commit (`complete`), which gives
    /// the queue slot back once it has committed.
    async fn record_success(
        &self,
        q: &Arc<QueueState>,
        job: &curfew_store::Job,
        token: &str,
        took: Duration,
        permit: OwnedSemaphorePermit,
    ) {
        let (id, queue, kind, attempt) = (job.id, &job.queue, &job.kind, job.attempt);
        let took_ms = took.as_millis() as u64;
        match self.complete_batched(id, token, q, permit).await {
            Some(Ok(true)) => {
                q.counters.succeeded.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(job_id = id, queue = %queue, kind = %kind, attempt, took_ms, "Job succeeded.");
            }
            Some(Ok(false)) => {
                q.counters.lost.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(job_id = id, queue = %queue, kind = %kind, "Job result not recorded: its lease was lost meanwhile (it was rescued or handed back); it will run again.");
            }
            Some(Err(e)) => {
                tracing::error!(job_id = id, queue = %queue, error = %e, "Could not record the job's result: it will run again once its lease expires.");
            }
            // No group commit (the processor is going away): alone.
            None => self.record(q, job, token, Verdict::Done, took).await,
        }
    }

    /// Writes the verdict, retrying an unreachable store for up to one lease
    /// (after that the job may be rescued elsewhere anyway).
    pub(super) async fn record(
        &self,
        q: &QueueState,
        job: &curfew_store::Job,
        token: &str,
        verdict: Verdict,
        took: Duration,
    ) {
        let give_up = Instant::now() + self.cfg.lease;
        let mut pause = RetryPause::new();
        let took_ms = took.as_millis() as u64;
        loop {
            let t = self.health.tick();
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
                Verdict::Cancelled => self
                    .store
                    .finish_cancelled(job.id, token)
                    .await
                    .map(|ok| ok.then_some(None)),
                Verdict::Interrupted { why } => self
                    .store
                    .release(&[(job.id, token.to_owned())], why)
                    .await
                    .map(|ids| (!ids.is_empty()).then_some(None)),
                Verdict::Fail { error } => self
                    .store
                    .fail(
                        job.id,
                        token,
                        error,
                        backoff::retry_at_scaled(
                            job.attempt,
                            now_ms(),
                            q.cfg.retry_backoff.as_secs_f64() / backoff::BASE.as_secs_f64(),
                        ),
                    )
                    .await
                    .map(|o| match o {
                        FailOutcome::LostLease => None,
                        other => Some(Some(other)),
                    }),
            };
            match written {
                Ok(Some(outcome)) => {
                    self.health.ok();
                    if !matches!(verdict, Verdict::Done | Verdict::Cancelled) {
                        // The job is claimable again (now, or at its retry
                        // time): the queue's loop may be asleep until its
                        // poll, not knowing of this run_at.
                        q.wake.notify_one();
                    }
                    let (id, queue, kind, attempt) = (job.id, &job.queue, &job.kind, job.attempt);
                    match (&verdict, outcome) {
                        (Verdict::Done, _) => {
                            q.counters.succeeded.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(job_id = id, queue = %queue, kind = %kind, attempt, took_ms, "Job succeeded.");
                        }
                        (Verdict::Cancelled, _) => {
                            q.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(job_id = id, queue = %queue, kind = %kind, attempt, took_ms, "Job cancelled while running, as requested; it will not be retried.");
                        }
                        (Verdict::Interrupted { why }, _) => {
                            q.counters.released.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(job_id = id, queue = %queue, kind = %kind, attempt, took_ms, why = %why, "Job interrupted by curfew and handed back to its queue (the attempt is not counted as a failure).");
                        }
                        (Verdict::Snooze { after, why }, _) => {
                            q.counters.snoozed.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(job_id = id, queue = %queue, kind = %kind, retry_in_ms = after.as_millis() as u64, why = %why, "Job postponed (back-pressure); no attempt spent.");
                        }
                        (Verdict::Fail { .. }, Some(FailOutcome::Cancelled)) => {
                            q.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(job_id = id, queue = %queue, kind = %kind, attempt, took_ms, "Job cancelled, as requested, as its attempt ended; it will not be retried.");
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
                Err(e) if e.is_retryable() && Instant::now() + pause.peek() < give_up => {
                    self.health.failed("record a job's result", &e, t);
                    tokio::time::sleep(pause.next()).await;
                }
                Err(e) => {
                    tracing::error!(job_id = job.id, queue = %job.queue, error = %e, "Could not record the job's result: it will run again once its lease expires.");
                    return;
                }
            }
        }
    }
}
