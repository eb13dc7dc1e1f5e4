//! The SQLite backend: one file, WAL mode, `synchronous=NORMAL`,
//! `busy_timeout` 5 s.
//!
//! SQLite has one writer at a time. Every write here runs in a
//! `BEGIN IMMEDIATE` transaction, which takes the database's write lock
//! before it reads anything, so a read-then-write (claim's subquery, rescue's
//! candidate list, enqueue's idempotency check) can never act on a stale
//! snapshot, also when several processes share the file (they wait for each
//! other up to `busy_timeout`). Inside one process the writers also queue on
//! a mutex first, so they wait in order instead of polling the lock.
//!
//! `synchronous=NORMAL` in WAL mode: a commit survives a crash of the
//! process (SIGKILL included); after a power loss or an OS crash the last
//! commits before it may be rolled back. Use PostgreSQL where that matters.
//!
//! "Now" is the local clock: every process sharing the file is on one host.
//! Wake-ups are in-process only (a broadcast channel); a process that shares
//! the file learns of another's jobs by polling.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard, broadcast};

use super::error::StoreError;
use super::model::{Enqueued, FailOutcome, Job, JobState, ListFilter, QueueStats, now_ms};
use super::ops::{self, Outcome, RescueScope, Rescued, distinct_queues, fail_outcome, rescued};
use super::validate::ValidJob;
use super::{StoreOptions, row};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a writer waits for another process's write lock.
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A random UUID v4 in SQL, evaluated per row (SQLite has no uuid function).
macro_rules! uuid_v4_sql {
    () => {
        "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || \
         substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (random() & 3), 1) || \
         substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))"
    };
}

/// A job store in a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// `sqlite://<path>`, for errors and logs.
    name: Arc<str>,
    write_lock: Arc<Mutex<()>>,
    wake: broadcast::Sender<String>,
    max_payload_bytes: usize,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("name", &self.name)
            .finish()
    }
}

/// A write transaction holding both the in-process writer mutex and
/// SQLite's write lock. Dropped without [`WriteTx::finish`] it rolls back.
struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    _turn: OwnedMutexGuard<()>,
}

impl WriteTx {
    /// Commits when `result` is Ok, rolls back otherwise.
    async fn finish<T>(self, store: &str, result: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                self.tx
                    .commit()
                    .await
                    .map_err(|e| StoreError::from_sqlx(store, e))?;
                Ok(value)
            }
            Err(e) => {
                // Roll back now rather than when the connection is next used,
                // so the write lock is not held meanwhile.
                let _ = self.tx.rollback().await;
                Err(StoreError::from_sqlx(store, e))
            }
        }
    }
}

impl SqliteStore {
    /// Opens the file and migrates it. Processes opening a new file at the
    /// same moment can get `SQLITE_BUSY` without SQLite's busy handler being
    /// consulted (the switch of a fresh file to WAL, or a reader meeting a
    /// WAL recovery in progress): such an open is tried again, for up to
    /// `acquire_timeout`.
    pub(crate) async fn open(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let deadline = tokio::time::Instant::now() + options.acquire_timeout;
        let mut pause = std::time::Duration::from_millis(10);
        loop {
            match SqliteStore::open_once(path, options).await {
                Err(StoreError::Unavailable { source, .. })
                    if is_busy(&source) && tokio::time::Instant::now() + pause < deadline =>
                {
                    tracing::debug!(error = %source, "SQLite store busy while opening; trying again.");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    async fn open_once(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let name: Arc<str> = format!("sqlite://{}", path.display()).into();
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .optimize_on_close(true, 400);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::from_sqlx(&name, e))?;
        let (wake, _) = broadcast::channel(1024);
        let store = SqliteStore {
            pool,
            name,
            write_lock: Arc::new(Mutex::new(())),
            wake,
            max_payload_bytes: options.max_payload_bytes,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Runs the migrations inside one `BEGIN IMMEDIATE` transaction (each
    /// migration becomes a savepoint), so processes opening the same new
    /// file at once apply them exactly once.
    async fn migrate(&self) -> Result<(), StoreError> {
        let w = self.begin_write().await?;
        let mut tx = w.tx;
        // `run_direct` (public, doc-hidden) is `Migrator::run` without its
        // `Acquire` bound, which would make the whole `open` future "not
        // general enough" to be spawned (a known sqlx limitation).
        let result = MIGRATOR.run_direct(None, &mut *tx, false).await;
        match result {
            Ok(()) => tx
                .commit()
                .await
                .map_err(|e| StoreError::from_sqlx(&self.name, e)),
            Err(source) => {
                let _ = tx.rollback().await;
                Err(StoreError::Migration {
                    store: self.name.to_string(),
                    source,
                })
            }
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }

    fn err(&self, e: sqlx::Error) -> StoreError {
        StoreError::from_sqlx(&self.name, e)
    }

    async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let turn = self.write_lock.clone().lock_owned().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.err(e))?;
        Ok(WriteTx { tx, _turn: turn })
    }

    fn job(&self, row: &SqliteRow) -> Result<Job, StoreError> {
        let payload: String = row.try_get("payload").map_err(|e| self.err(e))?;
        let payload = serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
            store: self.name.to_string(),
            id: row.try_get("id").unwrap_or_default(),
            reason: format!("payload is not JSON: {e}"),
        })?;
        row::job(&self.name, row, payload)
    }

    fn jobs(&self, rows: &[SqliteRow]) -> Result<Vec<Job>, StoreError> {
        rows.iter().map(|r| self.job(r)).collect()
    }

    fn wake(&self, queue: &str) {
        // No receiver is fine: nobody is waiting.
        let _ = self.wake.send(queue.to_owned());
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<String> {
        self.wake.subscribe()
    }

    pub(crate) async fn close(&self) {
        // Fold the WAL back into the database file on a clean shutdown.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
        {
            tracing::debug!(store = %self.name, error = %e, "WAL checkpoint at close failed");
        }
        self.pool.close().await;
    }

    pub(crate) async fn enqueue(&self, job: ValidJob) -> Result<Enqueued, StoreError> {
        let now = now_ms();
        let mut w = self.begin_write().await?;
        let result = async {
            let inserted: Option<i64> = sqlx::query_scalar(
                "INSERT INTO jobs (queue, kind, payload, priority, run_at, max_attempts,
                                   idempotency_key, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, coalesce(?5, ?8), ?6, ?7, ?8, ?8)
                 ON CONFLICT (idempotency_key) DO NOTHING
                 RETURNING id",
            )
            .bind(&job.queue)
            .bind(&job.kind)
            .bind(&job.payload)
            .bind(job.priority)
            .bind(job.run_at)
            .bind(job.max_attempts)
            .bind(&job.idempotency_key)
            .bind(now)
            .fetch_optional(&mut *w.tx)
            .await?;
            if let Some(id) = inserted {
                return Ok(Enqueued { id, created: true });
            }
            // The write lock is held: the conflicting row is there.
            let id: i64 = sqlx::query_scalar("SELECT id FROM jobs WHERE idempotency_key = ?1")
                .bind(&job.idempotency_key)
                .fetch_one(&mut *w.tx)
                .await?;
            Ok(Enqueued { id, created: false })
        }
        .await;
        let enqueued = w.finish(&self.name, result).await?;
        if enqueued.created {
            self.wake(&job.queue);
        }
        Ok(enqueued)
    }

    pub(crate) async fn claim(
        &self,
        queue: &str,
        limit: u32,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Vec<Job>, StoreError> {
        let now = now_ms();
        let mut w = self.begin_write().await?;
        // INDEXED BY: walk the claim index in claim order and stop after
        // `limit` rows. Left to itself (no statistics) SQLite prefers the
        // (queue, run_at) index and sorts every ready job of the queue.
        let result = sqlx::query(concat!(
            "UPDATE jobs SET
                state = 'running',
                attempt = attempt + 1,
                lease_owner = ?1,
                lease_token = ",
            uuid_v4_sql!(),
            ",
                lease_expires_at = ?2 + ?3,
                started_at = ?2,
                updated_at = ?2
             WHERE id IN (
                SELECT id FROM jobs INDEXED BY jobs_claim
                WHERE state IN ('queued', 'failed') AND queue = ?4 AND run_at <= ?2
                ORDER BY priority, run_at, id
                LIMIT ?5
             )
             RETURNING *"
        ))
        .bind(owner)
        .bind(now)
        .bind(lease_ms)
        .bind(queue)
        .bind(i64::from(limit))
        .fetch_all(&mut *w.tx)
        .await;
        let rows = w.finish(&self.name, result).await?;
        self.jobs(&rows)
    }

    pub(crate) async fn heartbeat(
        &self,
        id: i64,
        token: &str,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        self.fenced_write(
            sqlx::query(
                "UPDATE jobs SET lease_expires_at = ?3 + ?4, updated_at = ?3
                 WHERE id = ?1 AND state = 'running' AND lease_token = ?2",
            )
            .bind(id)
            .bind(token)
            .bind(now)
            .bind(lease_ms),
        )
        .await
    }

    pub(crate) async fn set_started(
        &self,
        id: i64,
        token: &str,
        started: bool,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        self.fenced_write(
            sqlx::query(
                "UPDATE jobs SET started_at = ?3, updated_at = ?4
                 WHERE id = ?1 AND state = 'running' AND lease_token = ?2",
            )
            .bind(id)
            .bind(token)
            .bind(started.then_some(now))
            .bind(now),
        )
        .await
    }

    pub(crate) async fn complete(&self, id: i64, token: &str) -> Result<bool, StoreError> {
        self.fenced_write(
            sqlx::query(
                "UPDATE jobs SET state = 'succeeded', finished_at = ?3, updated_at = ?3,
                     lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
                 WHERE id = ?1 AND state = 'running' AND lease_token = ?2",
            )
            .bind(id)
            .bind(token)
            .bind(now_ms()),
        )
        .await
    }

    pub(crate) async fn snooze(
        &self,
        id: i64,
        token: &str,
        run_at: i64,
    ) -> Result<bool, StoreError> {
        self.fenced_write(
            sqlx::query(
                "UPDATE jobs SET state = 'queued', attempt = max(attempt - 1, 0), run_at = ?3,
                     updated_at = ?4, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
                 WHERE id = ?1 AND state = 'running' AND lease_token = ?2",
            )
            .bind(id)
            .bind(token)
            .bind(run_at)
            .bind(now_ms()),
        )
        .await
    }

    /// Runs one fenced UPDATE; true when it matched the job.
    async fn fenced_write(
        &self,
        query: sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<bool, StoreError> {
        let mut w = self.begin_write().await?;
        let result = query.execute(&mut *w.tx).await;
        let done = w.finish(&self.name, result).await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn fail(
        &self,
        id: i64,
        token: &str,
        error: &str,
        retry_at: i64,
    ) -> Result<FailOutcome, StoreError> {
        let mut w = self.begin_write().await?;
        let result = sqlx::query(
            "UPDATE jobs SET
                 state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'failed' END,
                 run_at = CASE WHEN attempt >= max_attempts THEN run_at ELSE ?4 END,
                 finished_at = CASE WHEN attempt >= max_attempts THEN ?5 ELSE NULL END,
                 last_error = ?3, updated_at = ?5,
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
             WHERE id = ?1 AND state = 'running' AND lease_token = ?2
             RETURNING state, run_at",
        )
        .bind(id)
        .bind(token)
        .bind(error)
        .bind(retry_at)
        .bind(now_ms())
        .fetch_optional(&mut *w.tx)
        .await;
        let row = w.finish(&self.name, result).await?;
        fail_outcome(&self.name, row.as_ref())
    }

    pub(crate) async fn release(
        &self,
        jobs: &[(i64, String)],
        reason: &str,
    ) -> Result<Vec<Rescued>, StoreError> {
        let pairs =
            serde_json::to_string(jobs).map_err(|e| StoreError::invalid("jobs", e.to_string()))?;
        let mut w = self.begin_write().await?;
        let result = sqlx::query(
            "UPDATE jobs SET state = 'queued', attempt = max(attempt - 1, 0),
                 releases = releases + 1, last_error = ?2, updated_at = ?3,
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
             WHERE state = 'running'
               AND (id, lease_token) IN (
                   SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]')
                   FROM json_each(?1))
             RETURNING id, queue, state, crashes, started_at IS NOT NULL AS delivered",
        )
        .bind(&pairs)
        .bind(reason)
        .bind(now_ms())
        .fetch_all(&mut *w.tx)
        .await;
        let rows = w.finish(&self.name, result).await?;
        let released = rescued(&self.name, &rows, &[])?;
        for queue in distinct_queues(&released) {
            self.wake(queue);
        }
        Ok(released)
    }

    /// Rescue (`lease_expires_at < now`) or reclaim (owner `node/<other
    /// boot>`): read the candidates, then write only the rows whose state
    /// and token are still the ones read. The write lock is held across both,
    /// so nothing can change in between; the fence states the intent.
    pub(crate) async fn rescue(
        &self,
        scope: RescueScope<'_>,
        max_crashes: i32,
    ) -> Result<Vec<Rescued>, StoreError> {
        let now = now_ms();
        let mut w = self.begin_write().await?;
        let result = async {
            let candidates = match scope {
                RescueScope::Expired => {
                    sqlx::query(
                        "SELECT id, lease_token, lease_owner FROM jobs
                         WHERE state = 'running' AND lease_expires_at < ?1",
                    )
                    .bind(now)
                    .fetch_all(&mut *w.tx)
                    .await?
                }
                RescueScope::OtherBoots { own, node_prefix } => {
                    sqlx::query(
                        "SELECT id, lease_token, lease_owner FROM jobs
                         WHERE state = 'running' AND lease_owner <> ?1
                           AND substr(lease_owner, 1, length(?2)) = ?2",
                    )
                    .bind(own)
                    .bind(node_prefix)
                    .fetch_all(&mut *w.tx)
                    .await?
                }
            };
            let mut pairs = Vec::with_capacity(candidates.len());
            let mut owners = Vec::with_capacity(candidates.len());
            for c in &candidates {
                let id: i64 = c.try_get("id")?;
                pairs.push((id, c.try_get::<String, _>("lease_token")?));
                owners.push((id, c.try_get::<String, _>("lease_owner")?));
            }
            if pairs.is_empty() {
                return Ok((Vec::new(), owners));
            }
            let pairs =
                serde_json::to_string(&pairs).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            let (prefix, suffix) = scope.reason();
            let (undelivered_prefix, undelivered_suffix) = ops::UNDELIVERED_REASON;
            let rows = sqlx::query(
                "UPDATE jobs SET
                     crashes = crashes + (started_at IS NOT NULL),
                     attempt = max(attempt - 1, 0),
                     state = CASE WHEN started_at IS NOT NULL AND crashes + 1 > ?2
                         THEN 'dead' ELSE 'queued' END,
                     last_error = CASE
                         WHEN started_at IS NULL THEN ?6 || lease_owner || ?7
                         WHEN crashes + 1 > ?2
                         THEN 'interrupted by processor crashes ' || (crashes + 1) || ' times'
                         ELSE ?3 || lease_owner || ?4 END,
                     finished_at = CASE WHEN started_at IS NOT NULL AND crashes + 1 > ?2
                         THEN ?5 ELSE NULL END,
                     updated_at = ?5,
                     lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
                 WHERE state = 'running'
                   AND (id, lease_token) IN (
                       SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]')
                       FROM json_each(?1))
                 RETURNING id, queue, state, crashes, started_at IS NOT NULL AS delivered",
            )
            .bind(&pairs)
            .bind(max_crashes)
            .bind(prefix)
            .bind(suffix)
            .bind(now)
            .bind(undelivered_prefix)
            .bind(undelivered_suffix)
            .fetch_all(&mut *w.tx)
            .await?;
            Ok((rows, owners))
        }
        .await;
        let (rows, owners) = w.finish(&self.name, result).await?;
        let rescued = rescued(&self.name, &rows, &owners)?;
        for queue in distinct_queues(&rescued) {
            self.wake(queue);
        }
        Ok(rescued)
    }

    pub(crate) async fn get(&self, id: i64) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        row.as_ref().map(|r| self.job(r)).transpose()
    }

    pub(crate) async fn list(&self, filter: &ListFilter) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs
             WHERE (?1 IS NULL OR queue = ?1) AND (?2 IS NULL OR state = ?2) AND id > ?3
             ORDER BY id
             LIMIT ?4",
        )
        .bind(&filter.queue)
        .bind(filter.state.map(JobState::as_str))
        .bind(filter.after_id.unwrap_or(0))
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        self.jobs(&rows)
    }

    pub(crate) async fn running_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query("SELECT * FROM jobs WHERE state = 'running' ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        self.jobs(&rows)
    }

    pub(crate) async fn next_run_at(&self, queue: &str) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT min(run_at) FROM jobs WHERE queue = ?1 AND state IN ('queued', 'failed')",
        )
        .bind(queue)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))
    }

    pub(crate) async fn stats(&self) -> Result<Vec<QueueStats>, StoreError> {
        let rows = sqlx::query(
            "SELECT queue,
                 count(*) FILTER (WHERE state IN ('queued', 'failed') AND run_at <= ?1) AS queued,
                 count(*) FILTER (WHERE state IN ('queued', 'failed') AND run_at > ?1) AS scheduled,
                 count(*) FILTER (WHERE state = 'running') AS running,
                 count(*) FILTER (WHERE state = 'failed') AS failed,
                 count(*) FILTER (WHERE state = 'dead') AS dead,
                 count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
                 count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
                 ?1 - min(run_at) FILTER (WHERE state IN ('queued', 'failed') AND run_at <= ?1)
                     AS oldest_queued_age_ms
             FROM jobs
             GROUP BY queue
             ORDER BY queue",
        )
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| row::stats(r).map_err(|e| self.err(e)))
            .collect()
    }

    pub(crate) async fn retry(&self, id: i64) -> Result<Result<String, JobState>, StoreError> {
        let now = now_ms();
        let mut w = self.begin_write().await?;
        let result = async {
            let queue: Option<String> = sqlx::query_scalar(
                "UPDATE jobs SET state = 'queued', run_at = ?2, attempt = 0, crashes = 0,
                     finished_at = NULL, updated_at = ?2
                 WHERE id = ?1 AND state IN ('dead', 'failed', 'cancelled')
                 RETURNING queue",
            )
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *w.tx)
            .await?;
            match queue {
                Some(queue) => Ok(Outcome::Done(queue)),
                None => self.state_of(&mut w.tx, id).await,
            }
        }
        .await;
        let outcome = w.finish(&self.name, result).await?;
        if let Outcome::Done(queue) = &outcome {
            self.wake(queue);
        }
        outcome.into_result(&self.name, id)
    }

    pub(crate) async fn cancel(&self, id: i64) -> Result<Result<(), JobState>, StoreError> {
        let now = now_ms();
        let mut w = self.begin_write().await?;
        let result = async {
            let done: Option<i64> = sqlx::query_scalar(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?2, updated_at = ?2
                 WHERE id = ?1 AND state IN ('queued', 'failed')
                 RETURNING id",
            )
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *w.tx)
            .await?;
            match done {
                Some(_) => Ok(Outcome::Done(())),
                None => self.state_of(&mut w.tx, id).await,
            }
        }
        .await;
        w.finish(&self.name, result)
            .await?
            .into_result(&self.name, id)
    }

    pub(crate) async fn delete(&self, id: i64) -> Result<Result<(), JobState>, StoreError> {
        let mut w = self.begin_write().await?;
        let result = async {
            let done: Option<i64> = sqlx::query_scalar(
                "DELETE FROM jobs WHERE id = ?1 AND state <> 'running' RETURNING id",
            )
            .bind(id)
            .fetch_optional(&mut *w.tx)
            .await?;
            match done {
                Some(_) => Ok(Outcome::Done(())),
                None => self.state_of(&mut w.tx, id).await,
            }
        }
        .await;
        w.finish(&self.name, result)
            .await?
            .into_result(&self.name, id)
    }

    /// Why a state-changing statement matched nothing: no such job, or the
    /// state it is in.
    async fn state_of<T>(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        id: i64,
    ) -> Result<Outcome<T>, sqlx::Error> {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = ?1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(Outcome::from_state(state))
    }
}

/// SQLITE_BUSY or SQLITE_LOCKED (any extended code).
fn is_busy(e: &sqlx::Error) -> bool {
    matches!(super::error::sqlite_primary_code(e), Some(5 | 6))
}
