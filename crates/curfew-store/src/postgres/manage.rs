//! Reads (get, list, running jobs, next run, stats), the operator's
//! actions on a job that is not running (retry, cancel, delete) and
//! retention (prune).

use super::PgStore;
use crate::error::StoreError;
use crate::model::{
    CancelOutcome, Job, JobState, ListFilter, PruneOutcome, Pruned, QueueStats, Retention,
    duration_ms,
};
use crate::ops::Outcome;
use crate::row;

/// A page of jobs, by id: the columns, `{payload}` being `payload` or
/// `'null'::jsonb`, `{cursor}` `>` (oldest first) or `<` (newest first) and
/// `{order}` `ASC` or `DESC`.
const LIST: &str = "SELECT id, queue, kind, {payload} AS payload, priority, run_at, attempt, max_attempts, state, lease_owner, lease_token, lease_expires_at, crashes, releases, last_error, idempotency_key, created_at, updated_at, started_at, finished_at, cancel_requested_at, unique_key, unique_scope, unique_until FROM {s}.jobs
     WHERE ($1::text IS NULL OR queue = $1) AND ($2::text IS NULL OR state = $2)
       AND id {cursor} $3
     ORDER BY id {order}
     LIMIT $4";

impl PgStore {
    pub(crate) async fn get(&self, id: i64) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(self.sql("SELECT * FROM {s}.jobs WHERE id = $1"))
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
            "'null'::jsonb"
        };
        let (cursor, order, start) = if filter.newest_first {
            ("<", "DESC", i64::MAX)
        } else {
            (">", "ASC", 0)
        };
        // Every part is a literal above: nothing from the caller.
        let sql = LIST
            .replace("{payload}", payload)
            .replace("{cursor}", cursor)
            .replace("{order}", order);
        let rows = sqlx::query(self.sql(&sql))
            .bind(&filter.queue)
            .bind(filter.state.map(|s| s.as_str()))
            .bind(filter.after_id.unwrap_or(start))
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        self.jobs(&rows)
    }

    pub(crate) async fn running_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let rows =
            sqlx::query(self.sql("SELECT * FROM {s}.jobs WHERE state = 'running' ORDER BY id"))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        self.jobs(&rows)
    }

    pub(crate) async fn next_run_at(&self, queue: &str) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(self.sql(
            "SELECT min(run_at) FROM {s}.jobs WHERE queue = $1 AND state IN ('queued', 'failed')
               AND NOT EXISTS (SELECT 1 FROM {s}.paused_queues WHERE queue = $1)",
        ))
        .bind(queue)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))
    }

    /// Counts from the active states and dead only (index ranges of the
    /// general index on `state`), never the finished history.
    pub(crate) async fn stats(&self) -> Result<Vec<QueueStats>, StoreError> {
        let rows = sqlx::query(self.sql(
            "SELECT queue,
                 count(*) FILTER (WHERE state IN ('queued', 'failed') AND run_at <= n.now) AS queued,
                 count(*) FILTER (WHERE state IN ('queued', 'failed') AND run_at > n.now) AS scheduled,
                 count(*) FILTER (WHERE state = 'running') AS running,
                 count(*) FILTER (WHERE state = 'failed') AS failed,
                 count(*) FILTER (WHERE state = 'dead') AS dead,
                 n.now - min(run_at) FILTER (WHERE state IN ('queued', 'failed') AND run_at <= n.now)
                     AS oldest_queued_age_ms
             FROM {s}.jobs CROSS JOIN (SELECT {s}.now_ms() AS now) AS n
             WHERE state IN ('queued', 'failed', 'running', 'dead')
             GROUP BY queue, n.now
             ORDER BY queue",
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| row::stats(r).map_err(|e| self.err(e)))
            .collect()
    }

    /// One batch per state with a retention period, in one transaction that
    /// first takes the store's prune lock (a transaction-level advisory
    /// lock, so it cannot outlive the batch): if another processor holds
    /// it, nothing is done ([`PruneOutcome::Busy`]). Rows are locked `SKIP
    /// LOCKED`, so a job being retried at this moment is left alone.
    pub(crate) async fn prune(
        &self,
        retention: &Retention,
        batch: u32,
    ) -> Result<PruneOutcome, StoreError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let leader: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("curfew.prune.{}", self.schema))
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        if !leader {
            // Nothing written: the rollback at drop only ends the transaction.
            return Ok(PruneOutcome::Busy);
        }
        let mut pruned = Pruned::default();
        let mut more = false;
        for (state, keep) in retention.periods() {
            // Walks the partial index `jobs_finished` in finished_at order.
            // The state is a literal so the planner sees its statistics.
            let sql = format!(
                "DELETE FROM {{s}}.jobs WHERE id IN (
                     SELECT id FROM {{s}}.jobs
                     WHERE state = '{state}' AND finished_at < {{s}}.now_ms() - $1
                     ORDER BY finished_at
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED)",
                state = state.as_str()
            );
            let done = sqlx::query(self.sql(&sql))
                .bind(duration_ms(keep))
                .bind(i64::from(batch))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?
                .rows_affected();
            pruned.add(state, done);
            more |= done >= u64::from(batch);
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(PruneOutcome::Deleted { pruned, more })
    }

    pub(crate) async fn retry(&self, id: i64) -> Result<Result<String, JobState>, StoreError> {
        let queue: Option<String> = sqlx::query_scalar(self.sql(
            "UPDATE {s}.jobs SET state = 'queued', run_at = {s}.now_ms(), attempt = 0, crashes = 0,
                 finished_at = NULL, cancel_requested_at = NULL, updated_at = {s}.now_ms()
             WHERE id = $1 AND state IN ('dead', 'failed', 'cancelled')
             RETURNING queue",
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let outcome = match queue {
            Some(queue) => Outcome::Done(queue),
            None => self.state_of(id).await?,
        };
        if let Outcome::Done(queue) = &outcome {
            self.notify(&[queue]).await;
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
        let state: Option<String> = sqlx::query_scalar(self.sql(
            "UPDATE {s}.jobs SET
                 state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
                 finished_at = CASE WHEN state = 'running' THEN finished_at ELSE {s}.now_ms() END,
                 cancel_requested_at = CASE WHEN state = 'running'
                     THEN coalesce(cancel_requested_at, {s}.now_ms()) ELSE cancel_requested_at END,
                 updated_at = {s}.now_ms()
             WHERE id = $1 AND state IN ('queued', 'failed', 'running')
             RETURNING state",
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let outcome = match state.as_deref() {
            Some("running") => Outcome::Done(CancelOutcome::Requested),
            Some(_) => Outcome::Done(CancelOutcome::Cancelled),
            None => self.state_of(id).await?,
        };
        outcome.into_result(&self.name, id)
    }

    pub(crate) async fn delete(&self, id: i64) -> Result<Result<(), JobState>, StoreError> {
        let done: Option<i64> = sqlx::query_scalar(
            self.sql("DELETE FROM {s}.jobs WHERE id = $1 AND state <> 'running' RETURNING id"),
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let outcome = match done {
            Some(_) => Outcome::Done(()),
            None => self.state_of(id).await?,
        };
        outcome.into_result(&self.name, id)
    }

    /// `true` when the queue was not paused before.
    pub(crate) async fn pause(&self, queue: &str) -> Result<bool, StoreError> {
        sqlx::query(self.sql(
            "INSERT INTO {s}.paused_queues (queue, paused_at) VALUES ($1, {s}.now_ms())
             ON CONFLICT (queue) DO NOTHING",
        ))
        .bind(queue)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(|e| self.err(e))
    }

    /// `true` when the queue was paused; every listener is woken.
    pub(crate) async fn resume(&self, queue: &str) -> Result<bool, StoreError> {
        let resumed = sqlx::query(self.sql("DELETE FROM {s}.paused_queues WHERE queue = $1"))
            .bind(queue)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() > 0)
            .map_err(|e| self.err(e))?;
        if resumed {
            self.notify(&[queue]).await;
        }
        Ok(resumed)
    }

    pub(crate) async fn paused(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(self.sql("SELECT queue FROM {s}.paused_queues ORDER BY queue"))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))
    }

    /// Why a state-changing statement matched nothing. (Read after it, so
    /// the state reported is the latest, which is what the caller needs.)
    pub(super) async fn state_of<T>(&self, id: i64) -> Result<Outcome<T>, StoreError> {
        let state: Option<String> =
            sqlx::query_scalar(self.sql("SELECT state FROM {s}.jobs WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        Ok(Outcome::from_state(state))
    }
}
