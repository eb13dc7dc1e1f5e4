//! Writes about a running job, each fenced by its lease token (heartbeat,
//! start marks, complete, snooze, fail, release), and the rescue of jobs
//! whose processor is gone.

use sqlx::{Row, Sqlite};

use super::SqliteStore;
use crate::error::StoreError;
use crate::model::{FailOutcome, now_ms};
use crate::ops::{self, RescueScope, Rescued, distinct_queues, fail_outcome, rescued};

impl SqliteStore {
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

    /// Marks every run of `jobs` succeeded in one write transaction (one
    /// statement), each fenced by its own token; returns the ids written.
    pub(crate) async fn complete_many(
        &self,
        jobs: &[(i64, String)],
    ) -> Result<Vec<i64>, StoreError> {
        let pairs =
            serde_json::to_string(jobs).map_err(|e| StoreError::invalid("jobs", e.to_string()))?;
        // One statement: its own write transaction (see `writer_turn`).
        let _turn = self.writer_turn().await;
        complete_many_query(&pairs, now_ms())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn snooze(
        &self,
        id: i64,
        token: &str,
        run_at: i64,
    ) -> Result<bool, StoreError> {
        self.fenced_write(
            sqlx::query(
                "UPDATE jobs SET
                     state = CASE WHEN cancel_requested_at IS NULL THEN 'queued' ELSE 'cancelled' END,
                     finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE ?4 END,
                     attempt = max(attempt - 1, 0), run_at = ?3,
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

    /// Ends a run whose cancel was requested: `cancelled`, lease cleared.
    pub(crate) async fn finish_cancelled(&self, id: i64, token: &str) -> Result<bool, StoreError> {
        self.fenced_write(
            sqlx::query(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?3, updated_at = ?3,
                     lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
                 WHERE id = ?1 AND state = 'running' AND lease_token = ?2",
            )
            .bind(id)
            .bind(token)
            .bind(now_ms()),
        )
        .await
    }

    /// The running jobs of `owner` with a cancel request (index
    /// `jobs_cancel_requested`: only such rows).
    pub(crate) async fn cancel_requested(&self, owner: &str) -> Result<Vec<i64>, StoreError> {
        // INDEXED BY: statistics of a small table (PRAGMA optimize at close)
        // can make SQLite prefer a scan; this index holds only pending
        // requests, so it is always the cheapest.
        sqlx::query_scalar(
            "SELECT id FROM jobs INDEXED BY jobs_cancel_requested
             WHERE cancel_requested_at IS NOT NULL AND state = 'running' AND lease_owner = ?1
             ORDER BY id",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))
    }

    /// Runs one fenced UPDATE; true when it matched the job.
    pub(super) async fn fenced_write(
        &self,
        query: sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<bool, StoreError> {
        // One statement: its own write transaction (see `writer_turn`).
        let _turn = self.writer_turn().await;
        let done = query.execute(&self.pool).await.map_err(|e| self.err(e))?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn fail(
        &self,
        id: i64,
        token: &str,
        error: &str,
        retry_at: i64,
    ) -> Result<FailOutcome, StoreError> {
        // One statement: its own write transaction (see `writer_turn`).
        let _turn = self.writer_turn().await;
        let row = sqlx::query(
            "UPDATE jobs SET
                 state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
                     WHEN attempt >= max_attempts THEN 'dead' ELSE 'failed' END,
                 run_at = CASE WHEN attempt >= max_attempts OR cancel_requested_at IS NOT NULL
                     THEN run_at ELSE ?4 END,
                 finished_at = CASE WHEN attempt >= max_attempts OR cancel_requested_at IS NOT NULL
                     THEN ?5 ELSE NULL END,
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
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        fail_outcome(&self.name, row.as_ref())
    }

    pub(crate) async fn release(
        &self,
        jobs: &[(i64, String)],
        reason: &str,
    ) -> Result<Vec<Rescued>, StoreError> {
        let pairs =
            serde_json::to_string(jobs).map_err(|e| StoreError::invalid("jobs", e.to_string()))?;
        // One statement: its own write transaction (see `writer_turn`).
        let turn = self.writer_turn().await;
        let rows = sqlx::query(
            "UPDATE jobs SET
                 state = CASE WHEN cancel_requested_at IS NULL THEN 'queued' ELSE 'cancelled' END,
                 finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE ?3 END,
                 attempt = max(attempt - 1, 0),
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
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        drop(turn);
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
                RescueScope::OtherBoots {
                    own,
                    node_prefix,
                    live,
                } => {
                    sqlx::query(
                        "SELECT id, lease_token, lease_owner FROM jobs
                         WHERE state = 'running' AND lease_owner <> ?1
                           AND substr(lease_owner, 1, length(?2)) = ?2
                           AND lease_owner NOT IN (SELECT value FROM json_each(?3))",
                    )
                    .bind(own)
                    .bind(node_prefix)
                    .bind(live)
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
                     state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
                         WHEN started_at IS NOT NULL AND crashes + 1 > ?2
                         THEN 'dead' ELSE 'queued' END,
                     last_error = CASE
                         WHEN started_at IS NULL THEN ?6 || lease_owner || ?7
                         WHEN crashes + 1 > ?2
                         THEN 'interrupted by processor crashes ' || (crashes + 1) || ' times'
                         ELSE ?3 || lease_owner || ?4 END,
                     finished_at = CASE WHEN cancel_requested_at IS NOT NULL
                           OR (started_at IS NOT NULL AND crashes + 1 > ?2)
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
}

/// `complete_many`'s statement: `pairs` is the JSON array of `[id, token]`.
/// `+state`: look each job up by its id (the primary key), not by the
/// state index.
pub(super) fn complete_many_query(
    pairs: &str,
    now: i64,
) -> sqlx::query::QueryScalar<'_, Sqlite, i64, sqlx::sqlite::SqliteArguments> {
    sqlx::query_scalar(
        "UPDATE jobs SET state = 'succeeded', finished_at = ?2, updated_at = ?2,
             lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
         FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS token
               FROM json_each(?1)) AS r
         WHERE jobs.id = r.id AND jobs.lease_token = r.token AND +jobs.state = 'running'
         RETURNING jobs.id",
    )
    .bind(pairs)
    .bind(now)
}
