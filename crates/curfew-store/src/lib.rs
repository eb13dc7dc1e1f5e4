//! The durable job store: where background jobs live between enqueue and
//! completion, with leases, fencing tokens, retries and crash recovery.
//! The store only; the dispatcher that claims and delivers jobs is elsewhere.
//!
//! # Backends
//!
//! [`Store`] has one API over two databases, one job model and one schema
//! (`migrations/sqlite`, `migrations/postgres`, applied on open):
//!
//! - **SQLite** (the default; a file, nothing to install):
//!   `sqlite:///var/lib/app/jobs.db`, `sqlite://relative.db`, or a plain
//!   path. WAL, `synchronous=NORMAL`, `busy_timeout` 5 s; every write takes
//!   the write lock before it reads (a `BEGIN IMMEDIATE` transaction, or one
//!   statement, which SQLite runs as such a transaction), so several
//!   processes may share the file.
//! - **PostgreSQL** (a queue shared by curfew instances on several hosts):
//!   `postgres://user@host/db`. Everything lives in one schema (default
//!   `curfew`, see [`StoreOptions::pg_schema`]), created if missing. Claims
//!   use `FOR UPDATE SKIP LOCKED`; new jobs send `NOTIFY curfew_jobs,
//!   '<queue>'` ([`Store::listen`]); "now" is the database clock.
//!
//! # The job's life
//!
//! `queued → running → succeeded`, with `failed` (a failed attempt waiting
//! for its retry at `run_at`), `dead` and `cancelled`; see [`JobState`].
//! A processor [claims](Store::claim) jobs with a lease, records when a
//! claimed job has to wait for a worker ([`Store::mark_waiting`], then
//! [`Store::mark_started`]) and renews the lease ([`Store::heartbeat`],
//! every lease/3 or so) for as long as the job runs.
//! It ends the run with [`Store::complete`] (or many runs at once, each
//! fenced by its own token: [`Store::complete_many`]; and in the same
//! transaction the next claim: [`Store::complete_and_claim`]), [`Store::fail`] (retry at a time
//! from [`backoff::backoff`], or dead after `max_attempts`), [`Store::snooze`]
//! (back-pressure: retry later without spending an attempt) or, on a graceful
//! shutdown, [`Store::release`]. A processor that died is detected by its
//! expired lease ([`Store::rescue_expired`]) or, faster, by its own next boot
//! ([`Store::reclaim_own_previous`]).
//!
//! # Invariants
//!
//! 1. **A job is `running` exactly when it holds a lease** (`lease_owner`,
//!    `lease_token`, `lease_expires_at` all set). A CHECK constraint enforces
//!    it in both databases.
//! 2. **A job is never handed to two claimers while its lease is alive.** A
//!    claim moves rows out of `queued`/`failed` atomically (row locks with
//!    `SKIP LOCKED` in PostgreSQL, the single writer lock in SQLite), and
//!    only a rescue, which requires an expired lease or a dead previous boot
//!    of the owner, puts a running job back.
//! 3. **Every write about a running job is fenced**: `WHERE id = … AND
//!    state = 'running' AND lease_token = …` (PostgreSQL's batch writes by
//!    `(id, token)` pairs ask for the token and the other two lease
//!    columns set instead, which by invariant 1 means `running`: see
//!    `by_lease_pairs!` in `postgres/lease.rs` for why). Each claim
//!    draws a new random token, so a processor that lost its job (rescued,
//!    released, re-claimed elsewhere) cannot complete, fail, snooze,
//!    heartbeat or release it; it gets `false` / [`FailOutcome::LostLease`]
//!    and must stop.
//! 4. **Recovery never overwrites a finished job** (River #1302): rescue and
//!    reclaim write only rows whose state and token are still the ones they
//!    read, and (PostgreSQL) lock what they read.
//! 5. **`attempt` counts real failures only.** A crash, a release or a snooze
//!    gives its attempt back; crashes and releases are counted in their own
//!    columns. A job whose processor died more than `max_crashes` times
//!    while delivering it is parked as `dead` ("interrupted by processor
//!    crashes N times") so a job that kills its processor cannot kill every
//!    processor in turn. Only a run whose delivery had started counts
//!    (`started_at` set: by the claim, cleared by [`Store::mark_waiting`]
//!    while the processor waits for a free worker, set again by
//!    [`Store::mark_started`]): a job claimed but still waiting for a worker
//!    when its processor died is queued again with no crash charged. Jobs delivered
//!    beside the one that killed the processor are charged too (nothing in
//!    the store tells them apart; Sidekiq Pro's super_fetch does the same).
//! 6. **One job per idempotency key**, for as long as the job exists:
//!    enqueueing the key again returns the existing id with `created: false`.
//!    The key goes with its job: once retention (or a delete) removed the
//!    job, the key enqueues a new one.
//! 7. **Only finished jobs are pruned**, and only by age: [`Store::prune`]
//!    deletes `succeeded`, `cancelled` and `dead` rows whose `finished_at`
//!    is older than their state's [`Retention`], never a job in play.
//! 8. **A paused queue is never claimed from**: the claim itself checks
//!    `paused_queues` ([`Store::pause`]), so every processor sharing the
//!    store obeys from its next claim on, with no cache to go stale.
//! 9. **A run with a pending cancel is never retried.** [`Store::cancel`]
//!    on a running job sets `cancel_requested_at`; from then on every end
//!    of the run but a success ([`Store::finish_cancelled`], `fail`,
//!    `snooze`, `release`, rescue, reclaim, the burial of an unreadable
//!    row) writes `cancelled`. A retry by hand clears the request.
//! 10. **At most one job holds a unique key** ([`Unique`]): the key is
//!     stored in `unique_holder` under a partial unique index, so a duplicate
//!     enqueue conflicts in the database and returns the holder (`created:
//!     false`), race-free across processes and hosts. A trigger on state
//!     changes clears the holder when the job leaves its [`UniqueScope`]
//!     (`Queued`: at the claim; `QueuedRunning`: when it finishes); a
//!     `Window` holder is cleared by the next enqueue of the key after
//!     `unique_until`. A job does not take its key back (a retry, a failed
//!     attempt of a `Queued` job), so no transition can conflict.
//! 11. **A row that cannot be read never blocks its queue.** A claimed
//!     row whose payload no JSON reader of curfew's holds (written into the
//!     table by SQL: SQLite never refuses such values, PostgreSQL only
//!     from migration 0009) is marked `dead` (or `cancelled`, if asked)
//!     with the reason as its `last_error`, fenced by its new token, and
//!     left out of the claim; the claim's other jobs are handed out. A
//!     fault of any other column fails the whole claim: that is the
//!     store's fault, not one row's, and burying every job it took would
//!     lose them, so they are handed back (`release`) instead.
//! 12. **A periodic schedule's instant is enqueued at most once**, across
//!     every processor sharing the store and whatever retention pruned:
//!     [`Store::periodic_advance`] moves the schedule's row forward and
//!     enqueues in one transaction; a row at or past the instant changes
//!     nothing (see `periodic`).
//!
//! Delivery is at least once: a processor that is alive but cut off from the
//! database past its lease loses the job to a rescue and the job runs again.
//! Handlers must be idempotent (the job id and attempt identify a run).
//!
//! Timestamps are unix milliseconds (`i64`) in both databases. `run_at`
//! values passed in (enqueue, `fail`'s `retry_at`, snooze) are absolute
//! times from the caller's clock.
//!
//! # Enqueueing from the application's own transaction (PostgreSQL)
//!
//! The migration creates a SQL function, so an application on the same
//! database can enqueue inside its own transaction: the job exists if and
//! only if the application's data commits (no outbox needed), and curfew is
//! woken by `NOTIFY` at commit.
//!
//! ```sql
//! BEGIN;
//! INSERT INTO users (email) VALUES ('a@b.c');
//! SELECT curfew.enqueue('mail', 'send_email', '{"to":"a@b.c"}');
//! COMMIT;
//!
//! -- all parameters:
//! -- curfew.enqueue(queue text, kind text, payload jsonb,
//! --                priority int DEFAULT 0, run_at timestamptz DEFAULT now(),
//! --                max_attempts int DEFAULT 20, idempotency_key text DEFAULT NULL,
//! --                unique_key text DEFAULT NULL,
//! --                unique_scope text DEFAULT NULL)  -- 'queued', 'queued+running' or '10m'
//! --   RETURNS bigint  -- the job id (the existing one for a known key)
//! SELECT curfew.enqueue('mail', 'digest', '{}', run_at => now() + interval '1 hour');
//! ```
//!
//! Many jobs in one statement (a JSON array; `queue` defaults to
//! `default`, `run_at` is RFC 3339, `unique_key` / `unique_scope` as for
//! `enqueue`; one row per job, in order):
//!
//! ```sql
//! SELECT * FROM curfew.enqueue_many('[{"queue": "mail", "kind": "send_email", "payload": {"to": "a@b.c"}},
//!                                     {"kind": "digest", "idempotency_key": "digest-1"}]');
//! --  job_id | created
//! ```
//!
//! The functions check queue and kind like the API does (CHECK constraints),
//! and refuse a payload number beyond a 64-bit float that no JSON reader
//! of curfew's could read back (a trigger, migration 0009), but not
//! [`StoreOptions::max_payload_bytes`]. It runs with the caller's
//! privileges: the application's role needs `USAGE` on the schema and
//! `INSERT, SELECT` on `curfew.jobs`.
//!
//! # Retention
//!
//! A queue table must not grow for ever. [`Store::prune`] deletes one
//! bounded batch of due rows per finished state (index `jobs_finished`:
//! `(state, finished_at)` over finished rows only, so a batch reads what it
//! deletes) in one short transaction; the caller repeats while
//! [`PruneOutcome::Deleted`] says `more`, pausing in between so claims are
//! not held up. On PostgreSQL a batch first takes a transaction-level
//! advisory lock per schema, so of many processors one prunes at a time
//! ([`PruneOutcome::Busy`] for the others); SQLite has one writer anyway.
//! [`Store::stats`] counts only the states in play (queued, failed,
//! running) and dead, through the `state` index: its cost follows the
//! active work, not the history kept.
//!
//! # Not here
//!
//! When to prune, a registry of live processors, and the dispatcher's
//! polling loop (wake-ups are hints: poll every second or two as well)
//! belong to the layers above.

pub mod backoff;
mod error;
mod listener;
mod model;
mod ops;
mod periodic;
mod postgres;
mod row;
mod sqlite;
pub mod target;
#[cfg(feature = "testing")]
pub mod testing;
mod validate;

use std::time::Duration;

pub use error::StoreError;
pub use model::{
    CancelOutcome, Claimed, DEFAULT_MAX_ATTEMPTS, Enqueued, FailOutcome, Job, JobState, ListFilter,
    NewJob, PruneOutcome, Pruned, QueueStats, Retention, Unique, UniqueScope, UnknownState, now_ms,
};
pub use periodic::{PeriodicOutcome, PeriodicState};
pub use postgres::{CHANNEL, PgStore};
pub use sqlite::SqliteStore;
pub use validate::{MAX_ERROR_BYTES, MAX_NAME_CHARS, MAX_UNIQUE_WINDOW};

pub use listener::JobListener;
use listener::ListenerInner;
use ops::{RescueScope, log_rescued};
use target::Target;

/// The most jobs [`Store::enqueue_many`] takes in one batch.
pub const MAX_BATCH: usize = 10_000;

/// The largest batch [`Store::prune`] accepts (rows per state).
pub const MAX_PRUNE_BATCH: u32 = 100_000;

/// Settings of [`Store::open_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// PostgreSQL schema holding curfew's objects; created if missing.
    /// Lower-case letters, digits and `_`. Default `curfew`.
    pub pg_schema: String,
    /// Largest payload accepted by [`Store::enqueue`], as serialized JSON.
    /// Default 1 MiB.
    pub max_payload_bytes: usize,
    /// Connections in the pool. A [`Store::listen`]er on PostgreSQL holds one
    /// of them for its lifetime. Default 10.
    pub max_connections: u32,
    /// How long to wait for a connection (also at open) before the database
    /// counts as unavailable. Default 10 s.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pg_schema: "curfew".to_owned(),
            max_payload_bytes: 1024 * 1024,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// Checks that `url` names a store this build can open (without opening it).
pub fn check_url(url: &str) -> Result<(), StoreError> {
    target::parse(url).map(|_| ())
}

/// `url` with any password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    target::redact(url)
}

/// The lease owner string of a processor: `node/boot`. `node` names the
/// machine or instance (stable across restarts, unique among the processors
/// sharing a store, without `/`); `boot` is new on every start.
pub fn lease_owner(node: &str, boot: &str) -> String {
    format!("{node}/{boot}")
}

/// A job store: SQLite or PostgreSQL behind one API. Cheap to clone (a
/// connection pool).
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Runs `$body` with `$s` bound to whichever backend `$store` is.
macro_rules! on_backend {
    ($store:expr, $s:ident => $body:expr) => {
        match $store {
            Store::Sqlite($s) => $body,
            Store::Postgres($s) => $body,
        }
    };
}

impl Store {
    /// Opens (creating if needed) the store at `url` with default options and
    /// applies pending migrations. See the module docs for the URL forms.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, StoreOptions::default()).await
    }

    /// [`Store::open`] with options.
    pub async fn open_with(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        if options.max_payload_bytes == 0 {
            return Err(StoreError::invalid(
                "max_payload_bytes",
                "0; it must be at least 1",
            ));
        }
        if options.max_connections == 0 {
            return Err(StoreError::invalid(
                "max_connections",
                "0; it must be at least 1",
            ));
        }
        let store = match target::parse(url)? {
            Target::Sqlite(path) => Store::Sqlite(SqliteStore::open(&path, &options).await?),
            Target::Postgres(url) => Store::Postgres(PgStore::open(&url, &options).await?),
        };
        tracing::info!(store = %store.name(), "job store open");
        Ok(store)
    }

    /// The store's URL (password redacted; PostgreSQL: with the schema), for
    /// logs.
    pub fn name(&self) -> &str {
        on_backend!(self, s => s.name())
    }

    /// Closes the pool (SQLite: after folding the WAL into the database
    /// file). Other clones of this store stop working too.
    pub async fn close(&self) {
        on_backend!(self, s => s.close().await)
    }

    /// Adds a job. With an idempotency key that exists already, or a unique
    /// key another job holds, returns that job's id and `created: false`.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, StoreError> {
        let max = on_backend!(self, s => s.max_payload_bytes());
        let job = validate::new_job(job, max)?;
        let (queue, kind) = (job.queue.clone(), job.kind.clone());
        let enqueued = on_backend!(self, s => s.enqueue(job).await)?;
        tracing::debug!(
            job_id = enqueued.id,
            queue,
            kind,
            created = enqueued.created,
            "job enqueued"
        );
        Ok(enqueued)
    }

    /// [`Store::enqueue`] and a claim of one job of the job's queue
    /// ([`Store::claim`] with a limit of 1) in one transaction: for a
    /// processor with a free slot of the queue, so that a job enqueued into
    /// an idle processor starts after one commit instead of two. The job
    /// claimed is the queue's next in claim order: the new one, or one
    /// ahead of it; none if nothing is claimable (the queue paused, the new
    /// job not due, an idempotency or unique key answering with a job that
    /// is not waiting, or the claimable rows locked by other claimers).
    /// On PostgreSQL both are one statement (`enqueue_and_claim_ms`,
    /// migration 0008), so one round trip and one commit, like the enqueue
    /// alone.
    pub async fn enqueue_and_claim(
        &self,
        job: NewJob,
        owner: &str,
        lease: Duration,
    ) -> Result<(Enqueued, Option<Claimed>), StoreError> {
        let max = on_backend!(self, s => s.max_payload_bytes());
        let job = validate::new_job(job, max)?;
        validate::text("owner", owner)?;
        let lease_ms = validate::lease(lease)?;
        let (queue, kind) = (job.queue.clone(), job.kind.clone());
        let (enqueued, jobs) =
            on_backend!(self, s => s.enqueue_and_claim(job, owner, lease_ms).await)?;
        let claimed = self.claimed(jobs).await?.pop();
        tracing::debug!(
            job_id = enqueued.id,
            queue,
            kind,
            created = enqueued.created,
            claimed = claimed.as_ref().map(|c| c.job.id),
            "job enqueued and claimed"
        );
        Ok((enqueued, claimed))
    }

    /// Checks a job as [`Store::enqueue`] would, without storing it (for a
    /// caller that reports every bad job of a batch along with its own
    /// checks).
    pub fn check(&self, job: &NewJob) -> Result<(), StoreError> {
        let max = on_backend!(self, s => s.max_payload_bytes());
        validate::new_job(job.clone(), max).map(|_| ())
    }

    /// Adds every job of `jobs` in one transaction, all or nothing (at most
    /// [`MAX_BATCH`]), answering in their order. Each is checked as
    /// [`Store::enqueue`] checks one; if any is invalid, nothing is stored
    /// and [`StoreError::InvalidBatch`] names each bad one by its index.
    /// Idempotency keys work as for one job, also between jobs of the batch
    /// (the second gets the first's id, `created: false`).
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, StoreError> {
        if jobs.len() > MAX_BATCH {
            return Err(StoreError::invalid(
                "jobs",
                format!("{} jobs in one batch; at most {MAX_BATCH}", jobs.len()),
            ));
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let max = on_backend!(self, s => s.max_payload_bytes());
        let mut valid = Vec::with_capacity(jobs.len());
        let mut errors = Vec::new();
        for (i, job) in jobs.into_iter().enumerate() {
            match validate::new_job(job, max) {
                Ok(v) => valid.push(v),
                Err(e) => errors.push((i, e)),
            }
        }
        if !errors.is_empty() {
            return Err(StoreError::InvalidBatch { errors });
        }
        let enqueued = on_backend!(self, s => s.enqueue_many(&valid).await)?;
        tracing::debug!(
            jobs = enqueued.len(),
            created = enqueued.iter().filter(|e| e.created).count(),
            "jobs enqueued in a batch"
        );
        Ok(enqueued)
    }

    /// Atomically moves up to `limit` claimable jobs of `queue` (queued or
    /// failed, `run_at <= now`; by priority, run_at, id) to running, each
    /// with attempt + 1, a new token, `owner` and a lease of `lease`.
    /// Returned in claim order.
    pub async fn claim(
        &self,
        queue: &str,
        limit: u32,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        validate::name("queue", queue)?;
        validate::text("owner", owner)?;
        let lease_ms = validate::lease(lease)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let jobs = on_backend!(self, s => s.claim(queue, limit, owner, lease_ms).await)?;
        let claimed = self.claimed(jobs).await?;
        if !claimed.is_empty() {
            tracing::debug!(queue, owner, count = claimed.len(), "jobs claimed");
        }
        Ok(claimed)
    }

    /// [`Store::complete_many`] and [`Store::claim`] in one transaction
    /// (both or neither): the runs of `done` whose tokens still hold their
    /// jobs are marked succeeded, and up to `limit` claimable jobs of
    /// `queue` are claimed for `owner`, typically for the slots the
    /// completed runs free. One commit instead of two: with PostgreSQL's
    /// `synchronous_commit`, one WAL flush per batch instead of two. Returns
    /// the ids written and the jobs claimed (in claim order).
    pub async fn complete_and_claim(
        &self,
        done: &[(i64, String)],
        queue: &str,
        limit: u32,
        owner: &str,
        lease: Duration,
    ) -> Result<(Vec<i64>, Vec<Claimed>), StoreError> {
        validate::name("queue", queue)?;
        validate::text("owner", owner)?;
        let lease_ms = validate::lease(lease)?;
        if limit == 0 {
            return Ok((self.complete_many(done).await?, Vec::new()));
        }
        let (ids, jobs) = on_backend!(self, s => s.complete_and_claim(done, queue, limit, owner, lease_ms).await)?;
        let claimed = self.claimed(jobs).await?;
        if !claimed.is_empty() {
            tracing::debug!(queue, owner, count = claimed.len(), "jobs claimed");
        }
        Ok((ids, claimed))
    }

    /// Claimed rows in claim order, each with its lease token. A row that
    /// cannot be read ([`row::Unreadable`]) is buried (dead, its reason as
    /// its last error) and left out, so the queue's other jobs run: one
    /// such row used to fail every claim that took it. A claim that cannot
    /// be read at all is handed back and its error returned.
    async fn claimed(&self, rows: row::ClaimedRows) -> Result<Vec<Claimed>, StoreError> {
        if let Some((error, held)) = rows.failed {
            // Handed back at once (best effort), rather than left running
            // under a lease nobody renews, to be charged a crash at its
            // rescue.
            if let Err(e) = self.release(&held, row::CLAIM_UNREADABLE).await {
                tracing::debug!(store = self.name(), error = %e, "Handing back a claim that cannot be read failed; its leases run out.");
            }
            return Err(error);
        }
        for u in &rows.unreadable {
            let reason = validate::error_text(&format!(
                "curfew cannot read this job's stored row: {}; mend the row, then retry the job",
                u.reason
            ));
            match on_backend!(self, s => s.bury(u.id, &u.token, &reason).await) {
                Ok(Some(state)) => tracing::warn!(
                    store = self.name(),
                    job_id = u.id,
                    queue = u.queue,
                    state,
                    reason = u.reason,
                    "A claimed job cannot be read; it is taken out of its queue (state dead, or cancelled if a cancel was asked) so that the queue's other jobs run. Mend its row, then retry it."
                ),
                Ok(None) => {} // No longer ours: another writer has it now.
                // Its lease runs out instead, as after a crash.
                Err(e) => tracing::warn!(
                    store = self.name(),
                    job_id = u.id,
                    queue = u.queue,
                    reason = u.reason,
                    error = %e,
                    "A claimed job cannot be read, and taking it out of its queue failed; it is rescued when its lease runs out."
                ),
            }
        }
        let mut jobs = rows.jobs;
        jobs.sort_by_key(|j| (j.priority, j.run_at, j.id));
        jobs.into_iter()
            .map(|job| match job.lease_token.clone() {
                Some(token) => Ok(Claimed { job, token }),
                None => Err(StoreError::Corrupt {
                    store: self.name().to_owned(),
                    id: job.id,
                    reason: "claimed without a lease token".to_owned(),
                }),
            })
            .collect()
    }

    /// Extends the lease to now + `lease`, if `token` still holds the job
    /// (also when the lease has run out but no rescue has taken the job yet).
    /// `false`: the job was lost (rescued, released or finished); stop
    /// working on it.
    pub async fn heartbeat(
        &self,
        id: i64,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let lease_ms = validate::lease(lease)?;
        on_backend!(self, s => s.heartbeat(id, token, lease_ms).await)
    }

    /// Records that the claimed run is waiting for a worker and has not
    /// been delivered (clears `started_at`), if `token` still holds the job.
    /// A claim presumes delivery starts at once; a processor that finds no
    /// free worker calls this before it waits, and [`Store::mark_started`]
    /// when it has one. A run marked waiting is never charged a crash when
    /// its processor dies ([`Store::rescue_expired`]): it cannot be what
    /// killed it. `false`: the job was lost; stop working on it.
    pub async fn mark_waiting(&self, id: i64, token: &str) -> Result<bool, StoreError> {
        on_backend!(self, s => s.set_started(id, token, false).await)
    }

    /// Records that the run's delivery is starting (sets `started_at` to
    /// now) after [`Store::mark_waiting`], if `token` still holds the job.
    pub async fn mark_started(&self, id: i64, token: &str) -> Result<bool, StoreError> {
        on_backend!(self, s => s.set_started(id, token, true).await)
    }

    /// Marks the run succeeded, if `token` still holds the job.
    pub async fn complete(&self, id: i64, token: &str) -> Result<bool, StoreError> {
        on_backend!(self, s => s.complete(id, token).await)
    }

    /// Marks many runs succeeded at once (a group commit: one statement,
    /// one transaction), each only if its own token still holds its job,
    /// as [`Store::complete`] does for one. Returns the ids written; a run
    /// whose token is stale is left out and changes nothing, whatever the
    /// others in the batch. Nothing is written unless the whole batch
    /// commits.
    pub async fn complete_many(&self, jobs: &[(i64, String)]) -> Result<Vec<i64>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        on_backend!(self, s => s.complete_many(jobs).await)
    }

    /// Records a failed attempt, if `token` still holds the job: `dead` when
    /// the attempt was the last (`attempt >= max_attempts`), else `failed`
    /// until `retry_at`. `error` is stored as `last_error` (cut to
    /// [`MAX_ERROR_BYTES`]).
    pub async fn fail(
        &self,
        id: i64,
        token: &str,
        error: &str,
        retry_at: i64,
    ) -> Result<FailOutcome, StoreError> {
        let error = validate::error_text(error);
        on_backend!(self, s => s.fail(id, token, &error, retry_at).await)
    }

    /// Puts the job back to queued until `run_at` without spending the
    /// attempt (429/503 back-pressure), if `token` still holds it.
    pub async fn snooze(&self, id: i64, token: &str, run_at: i64) -> Result<bool, StoreError> {
        on_backend!(self, s => s.snooze(id, token, run_at).await)
    }

    /// Graceful shutdown: hands back the given `(id, token)` runs in one
    /// statement: queued, the interrupted attempt given back, `releases` + 1,
    /// `last_error` = `reason`, lease cleared. Only rows still running under
    /// that token change. Returns their ids.
    pub async fn release(
        &self,
        jobs: &[(i64, String)],
        reason: &str,
    ) -> Result<Vec<i64>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let reason = validate::error_text(reason);
        let released = on_backend!(self, s => s.release(jobs, &reason).await)?;
        for job in &released {
            tracing::debug!(job_id = job.id, queue = %job.queue, reason, "job released back to its queue");
        }
        Ok(released.iter().map(|j| j.id).collect())
    }

    /// Takes back running jobs whose lease expired (their processor stopped
    /// heartbeating): queued again with the attempt given back. A run whose
    /// delivery had started (not [`Store::mark_waiting`]) also gets
    /// `crashes` + 1, or is parked dead once `crashes` would exceed `max_crashes`; a run
    /// that was only claimed is queued again with no crash counted.
    /// Returns their ids.
    pub async fn rescue_expired(&self, max_crashes: i32) -> Result<Vec<i64>, StoreError> {
        validate::max_crashes(max_crashes)?;
        let rescued = on_backend!(self, s => s.rescue(RescueScope::Expired, max_crashes).await)?;
        Ok(log_rescued(&rescued, "lease expired"))
    }

    /// At start-up: takes back at once (as [`Store::rescue_expired`] does)
    /// the running jobs of this node's previous boots, i.e. whose owner is
    /// `node/<any boot but boot>`, without waiting for their leases.
    pub async fn reclaim_own_previous(
        &self,
        node: &str,
        boot: &str,
        max_crashes: i32,
    ) -> Result<Vec<i64>, StoreError> {
        self.reclaim_own_previous_except(node, boot, &[], max_crashes)
            .await
    }

    /// [`Store::reclaim_own_previous`], leaving alone the runs of the
    /// owners (`node/boot`) in `live`: boots of this node that still run
    /// (an upgrade's predecessor, draining beside its successor). Only
    /// provably dead runs are taken back at once; a live owner's runs end
    /// with it (completed or released), or at their lease's expiry if it
    /// dies.
    pub async fn reclaim_own_previous_except(
        &self,
        node: &str,
        boot: &str,
        live: &[String],
        max_crashes: i32,
    ) -> Result<Vec<i64>, StoreError> {
        validate::node(node)?;
        validate::text("boot", boot)?;
        validate::max_crashes(max_crashes)?;
        for owner in live {
            validate::text("live", owner)?;
        }
        let own = lease_owner(node, boot);
        let node_prefix = format!("{node}/");
        let live =
            serde_json::to_string(live).map_err(|e| StoreError::invalid("live", e.to_string()))?;
        let scope = RescueScope::OtherBoots {
            own: &own,
            node_prefix: &node_prefix,
            live: &live,
        };
        let rescued = on_backend!(self, s => s.rescue(scope, max_crashes).await)?;
        Ok(log_rescued(&rescued, "previous boot of this node"))
    }

    /// The job, if it exists.
    pub async fn get(&self, id: i64) -> Result<Option<Job>, StoreError> {
        on_backend!(self, s => s.get(id).await)
    }

    /// Jobs matching `filter`, by id (descending with
    /// `filter.newest_first`), at most `filter.limit`.
    pub async fn list(&self, filter: ListFilter) -> Result<Vec<Job>, StoreError> {
        if let Some(queue) = &filter.queue {
            validate::name("queue", queue)?;
        }
        if filter.limit == 0 || filter.limit > ListFilter::MAX_LIMIT {
            return Err(StoreError::invalid(
                "limit",
                format!(
                    "{}; it must be 1 to {}",
                    filter.limit,
                    ListFilter::MAX_LIMIT
                ),
            ));
        }
        on_backend!(self, s => s.list(&filter).await)
    }

    /// Runs a dead, failed or cancelled job again now, with a clean slate
    /// (attempt 0, crashes 0, no cancel request; `last_error` and `releases`
    /// are kept as history). It does not take its unique key back.
    pub async fn retry(&self, id: i64) -> Result<(), StoreError> {
        match on_backend!(self, s => s.retry(id).await)? {
            Ok(queue) => {
                tracing::info!(job_id = id, queue, "job queued again by request");
                Ok(())
            }
            Err(state) => Err(row::wrong_state(id, "retry", state)),
        }
    }

    /// Cancels a job: a queued or failed one at once
    /// ([`CancelOutcome::Cancelled`]); for a running one the cancel is
    /// requested ([`CancelOutcome::Requested`], `cancel_requested_at`): the
    /// processor running it, on whichever instance, learns of it through
    /// [`Store::cancel_requested`], stops the run and ends it with
    /// [`Store::finish_cancelled`]. Until then any other end of the run but
    /// a success (fail, snooze, release, rescue) makes it `cancelled` too.
    pub async fn cancel(&self, id: i64) -> Result<CancelOutcome, StoreError> {
        let outcome = on_backend!(self, s => s.cancel(id).await)?
            .map_err(|state| row::wrong_state(id, "cancel", state))?;
        match outcome {
            CancelOutcome::Cancelled => tracing::info!(job_id = id, "job cancelled by request"),
            CancelOutcome::Requested => {
                tracing::info!(job_id = id, "cancel of a running job requested")
            }
        }
        Ok(outcome)
    }

    /// The running jobs of lease owner `owner` whose cancel was requested,
    /// by id: what a processor polls for (a read of a partial index holding
    /// only such rows).
    pub async fn cancel_requested(&self, owner: &str) -> Result<Vec<i64>, StoreError> {
        validate::text("owner", owner)?;
        on_backend!(self, s => s.cancel_requested(owner).await)
    }

    /// Ends a run as `cancelled` (lease cleared, never retried), if `token`
    /// still holds the job: the processor's answer to a cancel request.
    pub async fn finish_cancelled(&self, id: i64, token: &str) -> Result<bool, StoreError> {
        on_backend!(self, s => s.finish_cancelled(id, token).await)
    }

    /// Deletes a job that is not running.
    pub async fn delete(&self, id: i64) -> Result<(), StoreError> {
        on_backend!(self, s => s.delete(id).await)?
            .map_err(|state| row::wrong_state(id, "delete", state))
    }

    /// Counts per queue, by queue name: the jobs in play and the dead ones
    /// (see [`QueueStats`]); its cost does not grow with the finished
    /// history.
    pub async fn stats(&self) -> Result<Vec<QueueStats>, StoreError> {
        on_backend!(self, s => s.stats().await)
    }

    /// Deletes finished jobs past their state's retention (`finished_at`
    /// older than now minus the period; a `None` period keeps the state's
    /// jobs): at most `batch` rows per state, in one transaction. Call again
    /// while the answer says `more`. On PostgreSQL only one processor
    /// prunes a store at a time; the others get [`PruneOutcome::Busy`].
    /// Idempotency keys go with their jobs.
    pub async fn prune(
        &self,
        retention: &Retention,
        batch: u32,
    ) -> Result<PruneOutcome, StoreError> {
        if batch == 0 || batch > MAX_PRUNE_BATCH {
            return Err(StoreError::invalid(
                "batch",
                format!("{batch}; it must be 1 to {MAX_PRUNE_BATCH}"),
            ));
        }
        let outcome = on_backend!(self, s => s.prune(retention, batch).await)?;
        if let PruneOutcome::Deleted { pruned, .. } = &outcome
            && pruned.total() > 0
        {
            tracing::debug!(
                succeeded = pruned.succeeded,
                cancelled = pruned.cancelled,
                dead = pruned.dead,
                "finished jobs pruned"
            );
        }
        Ok(outcome)
    }

    /// Pauses a queue for every processor sharing the store: claims skip it
    /// from now on (a claim already under way may still take jobs); running
    /// jobs go on. `true` when it was not paused before. The queue need not
    /// have jobs yet.
    pub async fn pause(&self, queue: &str) -> Result<bool, StoreError> {
        validate::name("queue", queue)?;
        on_backend!(self, s => s.pause(queue).await)
    }

    /// Ends a pause; the queue's listeners are woken. `true` when it was
    /// paused.
    pub async fn resume(&self, queue: &str) -> Result<bool, StoreError> {
        validate::name("queue", queue)?;
        on_backend!(self, s => s.resume(queue).await)
    }

    /// The paused queues, by name.
    pub async fn paused(&self) -> Result<Vec<String>, StoreError> {
        on_backend!(self, s => s.paused().await)
    }

    /// The earliest `run_at` among the queue's queued and failed jobs: when
    /// the dispatcher needs to look again (it may be in the past). `None`
    /// while the queue is paused: nothing there is claimable, and its
    /// `resume` wakes the claim loops.
    pub async fn next_run_at(&self, queue: &str) -> Result<Option<i64>, StoreError> {
        validate::name("queue", queue)?;
        on_backend!(self, s => s.next_run_at(queue).await)
    }

    /// Every running job, by id.
    pub async fn running_jobs(&self) -> Result<Vec<Job>, StoreError> {
        on_backend!(self, s => s.running_jobs().await)
    }

    /// Wake-ups: the queue name of each job enqueued (or put back by a
    /// release, rescue or retry). PostgreSQL: `LISTEN curfew_jobs` on a
    /// dedicated connection, so every instance hears every enqueue, including
    /// the application's `curfew.enqueue()`. SQLite: this process's enqueues
    /// only. Either way a hint, not the truth: keep polling too.
    pub async fn listen(&self) -> Result<JobListener, StoreError> {
        let inner = match self {
            Store::Sqlite(s) => ListenerInner::Local(s.subscribe()),
            Store::Postgres(s) => ListenerInner::Postgres(Box::new(s.listen().await?)),
        };
        Ok(JobListener {
            inner,
            store: self.name().to_owned(),
        })
    }
}

/// Periodic schedules (see [`PeriodicState`]).
impl Store {
    /// Records a schedule first seen at `instant` (its latest instant, not
    /// enqueued: a new schedule starts with its next one) unless the store
    /// knows it already. `true` when it was new.
    pub async fn periodic_start(&self, name: &str, instant: i64) -> Result<bool, StoreError> {
        validate::name("schedule", name)?;
        on_backend!(self, s => s.periodic_start(name, instant).await)
    }

    /// Moves schedule `name` to `instant` and enqueues `job` (`None`: passes
    /// the instant over without a job), in one transaction, if the schedule
    /// is before `instant` (or unknown); otherwise changes nothing
    /// ([`PeriodicOutcome::AlreadyDone`]). Of any number of processors
    /// calling this for one instant, exactly one gets `Enqueued`/`Passed`.
    pub async fn periodic_advance(
        &self,
        name: &str,
        instant: i64,
        job: Option<NewJob>,
    ) -> Result<PeriodicOutcome, StoreError> {
        validate::name("schedule", name)?;
        let max = on_backend!(self, s => s.max_payload_bytes());
        let job = job.map(|j| validate::new_job(j, max)).transpose()?;
        let outcome =
            on_backend!(self, s => s.periodic_advance(name, instant, job.as_ref()).await)?;
        tracing::debug!(
            schedule = name,
            instant,
            ?outcome,
            "periodic schedule advanced"
        );
        Ok(outcome)
    }

    /// Every schedule the store knows, by name.
    pub async fn periodic_states(&self) -> Result<Vec<PeriodicState>, StoreError> {
        on_backend!(self, s => s.periodic_states().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: T) {}

    /// The dispatcher and the HTTP API spawn these futures: they must be
    /// `Send`. (Compiled, never run.)
    #[allow(dead_code)]
    fn every_future_is_send(store: Store, mut listener: JobListener) {
        assert_send(Store::open("jobs.db"));
        assert_send(store.enqueue(NewJob::default()));
        assert_send(store.enqueue_many(Vec::new()));
        assert_send(store.claim("q", 1, "n/b", Duration::from_secs(1)));
        assert_send(store.heartbeat(1, "t", Duration::from_secs(1)));
        assert_send(store.mark_waiting(1, "t"));
        assert_send(store.mark_started(1, "t"));
        assert_send(store.complete(1, "t"));
        assert_send(store.fail(1, "t", "e", 0));
        assert_send(store.snooze(1, "t", 0));
        assert_send(store.release(&[], "r"));
        assert_send(store.rescue_expired(1));
        assert_send(store.reclaim_own_previous("n", "b", 1));
        assert_send(store.get(1));
        assert_send(store.list(ListFilter::default()));
        assert_send(store.retry(1));
        assert_send(store.cancel(1));
        assert_send(store.cancel_requested("n/b"));
        assert_send(store.finish_cancelled(1, "t"));
        assert_send(store.delete(1));
        assert_send(store.stats());
        assert_send(store.pause("q"));
        assert_send(store.resume("q"));
        assert_send(store.paused());
        assert_send(store.prune(&Retention::DEFAULT, 1));
        assert_send(store.next_run_at("q"));
        assert_send(store.running_jobs());
        assert_send(store.periodic_start("p", 0));
        assert_send(store.periodic_advance("p", 0, None));
        assert_send(store.periodic_states());
        assert_send(store.listen());
        assert_send(store.close());
        assert_send(listener.recv());
        assert_send(store);
    }

    #[test]
    fn store_and_listener_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Store>();
        send::<JobListener>();
    }
}
