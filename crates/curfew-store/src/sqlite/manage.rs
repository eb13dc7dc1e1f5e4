//! Reads (get, list, running jobs, next run, stats), the operator's
//! actions on a job that is not running (retry, cancel, delete) and
//! retention (prune).

use sqlx::{AssertSqlSafe, Sqlite, Transaction};

use super::SqliteStore;
use crate::error::StoreError;
use crate::model::{
    CancelOutcome, Job, JobState, ListFilter, PruneOutcome, Pruned, QueueStats, Retention,
    duration_ms, now_ms,
};
use crate::ops::Outcome;
use crate::row;

impl SqliteStore {
    pub(crate) async fn get(&self, id: i64) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        row.as_ref().map(|r| self.job(r)).transpose()
    }

    pub(crate) async fn list(&self, filter: &ListFilter) -> Result<Vec<Job>, StoreError> {
        // Without payloads, a JSON null in their place.
        let payload = if filter.with_payload {
            "payload"
        } else {
            "'null'"
        };
        let (cursor, order, start) = if filter.newest_first {
            ("<", "DESC", i64::MAX)
        } else {
            (">", "ASC", 0)
        };
        let sql = format!(
            "SELECT id, queue, kind, {payload} AS payload, priority, run_at, attempt, max_attempts, state, lease_owner, lease_token, lease_expires_at, crashes, releases, last_error, idempotency_key, created_at, updated_at, started_at, finished_at, cancel_requested_at, unique_key, unique_scope, unique_until FROM jobs
             WHERE (?1 IS NULL OR queue = ?1) AND (?2 IS NULL OR state = ?2) AND id {cursor} ?3
             ORDER BY id {order}
             LIMIT ?4"
        );
        // `payload`, `cursor` and `order` are literals above: nothing from
        // the caller.
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(&filter.queue)
            .bind(filter.state.map(JobState::as_str))
            .bind(filter.after_id.unwrap_or(start))
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
            "SELECT min(run_at) FROM jobs WHERE queue = ?1 AND state IN ('queued', 'failed')
               AND NOT EXISTS (SELECT 1 FROM paused_queues WHERE queue = ?1)",
        )
        .bind(queue)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))
    }

    /// Counts from the active states and dead only (the general index's
    /// `state` ranges), never the finished history.
    pub(crate) async fn stats(&self) -> Result<Vec<QueueStats>, StoreError> {
        let rows = sqlx::query(
            "SELECT queue,
                 count(*) FILTER (WHERE state IN ('queued', 'failed') AND run_at <= ?1) AS queued,
                 count(*) FILTER (WHERE state IN ('queued', 'failed') AND run_at > ?1) AS scheduled,
                 count(*) FILTER (WHERE state = 'running') AS running,
                 count(*) FILTER (WHERE state = 'failed') AS failed,
                 count(*) FILTER (WHERE state = 'dead') AS dead,
                 ?1 - min(run_at) FILTER (WHERE state IN ('queued', 'failed') AND run_at <= ?1)
                     AS oldest_queued_age_ms
             FROM jobs
             WHERE state IN ('queued', 'failed', 'running', 'dead')
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

    /// One batch per state with a retention period, in one write
    /// transaction (a few milliseconds for a batch of 1,000). SQLite has a
    /// single writer, so two processes never prune at once.
    pub(crate) async fn prune(
        &self,
        retention: &Retention,
        batch: u32,
    ) -> Result<PruneOutcome, StoreError> {
        let now = now_ms();
        let mut w = self.begin_write().await?;
        let result = async {
            let mut pruned = Pruned::default();
            let mut more = false;
            for (state, keep) in retention.periods() {
                // `finished_at < ?1` lets SQLite use the partial index
                // `jobs_finished` (finished_at IS NOT NULL), walked in
                // finished_at order: no sort, no scan of the history. The
                // state is a literal so the planner sees its statistics.
                let sql = format!(
                    "DELETE FROM jobs WHERE id IN (
                         SELECT id FROM jobs
                         WHERE state = '{state}' AND finished_at < ?1
                         ORDER BY finished_at
                         LIMIT ?2)",
                    state = state.as_str()
                );
                let done = sqlx::query(AssertSqlSafe(sql))
                    .bind(now.saturating_sub(duration_ms(keep)))
                    .bind(i64::from(batch))
                    .execute(&mut *w.tx)
                    .await?
                    .rows_affected();
                pruned.add(state, done);
                more |= done >= u64::from(batch);
            }
            Ok(PruneOutcome::Deleted { pruned, more })
        }
        .await;
        w.finish(&self.name, result).await
    }

    pub(crate) async fn retry(&self, id: i64) -> Result<Result<String, JobState>, StoreError> {
        let now = now_ms();
        let mut w = self.begin_write().await?;
        let result = async {
            let queue: Option<String> = sqlx::query_scalar(
                "UPDATE jobs SET state = 'queued', run_at = ?2, attempt = 0, crashes = 0,
                     finished_at = NULL, cancel_requested_at = NULL, updated_at = ?2
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

    /// Queued or failed: `cancelled` now. Running: the cancel is requested
    /// (`cancel_requested_at`, the first request's time kept); the
    /// processor running it finishes it.
    pub(crate) async fn cancel(
        &self,
        id: i64,
    ) -> Result<Result<CancelOutcome, JobState>, StoreError> {
        let now = now_ms();
        let mut w = self.begin_write().await?;
        let result = async {
            let state: Option<String> = sqlx::query_scalar(
                "UPDATE jobs SET
                     state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
                     finished_at = CASE WHEN state = 'running' THEN finished_at ELSE ?2 END,
                     cancel_requested_at = CASE WHEN state = 'running'
                         THEN coalesce(cancel_requested_at, ?2) ELSE cancel_requested_at END,
                     updated_at = ?2
                 WHERE id = ?1 AND state IN ('queued', 'failed', 'running')
                 RETURNING state",
            )
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *w.tx)
            .await?;
            match state.as_deref() {
                Some("running") => Ok(Outcome::Done(CancelOutcome::Requested)),
                Some(_) => Ok(Outcome::Done(CancelOutcome::Cancelled)),
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

    /// `true` when the queue was not paused before.
    pub(crate) async fn pause(&self, queue: &str) -> Result<bool, StoreError> {
        let mut w = self.begin_write().await?;
        let result = sqlx::query(
            "INSERT INTO paused_queues (queue, paused_at) VALUES (?1, ?2)
             ON CONFLICT (queue) DO NOTHING",
        )
        .bind(queue)
        .bind(now_ms())
        .execute(&mut *w.tx)
        .await
        .map(|r| r.rows_affected() > 0);
        w.finish(&self.name, result).await
    }

    /// `true` when the queue was paused.
    pub(crate) async fn resume(&self, queue: &str) -> Result<bool, StoreError> {
        let mut w = self.begin_write().await?;
        let result = sqlx::query("DELETE FROM paused_queues WHERE queue = ?1")
            .bind(queue)
            .execute(&mut *w.tx)
            .await
            .map(|r| r.rows_affected() > 0);
        let resumed = w.finish(&self.name, result).await?;
        if resumed {
            self.wake(queue);
        }
        Ok(resumed)
    }

    pub(crate) async fn paused(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT queue FROM paused_queues ORDER BY queue")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))
    }

    /// Why a state-changing statement matched nothing: no such job, or the
    /// state it is in.
    pub(super) async fn state_of<T>(
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
