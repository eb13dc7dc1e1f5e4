//! Enqueue and claim: jobs in, and out to a processor with a lease.

use super::SqliteStore;
use crate::error::StoreError;
use crate::model::{Enqueued, now_ms};
use crate::row::ClaimedRows;
use crate::validate::ValidJob;

impl SqliteStore {
    pub(crate) async fn enqueue(&self, job: ValidJob) -> Result<Enqueued, StoreError> {
        let mut enqueued = self.enqueue_many(std::slice::from_ref(&job)).await?;
        // One job in, one answer out.
        enqueued.pop().ok_or_else(|| StoreError::Corrupt {
            store: self.name.to_string(),
            id: 0,
            reason: "an enqueue returned no job".to_owned(),
        })
    }

    /// Every job in one write transaction (all or nothing), in order.
    pub(crate) async fn enqueue_many(
        &self,
        jobs: &[ValidJob],
    ) -> Result<Vec<Enqueued>, StoreError> {
        let now = now_ms();
        let mut w = self.begin_write().await?;
        let result = async {
            let mut out = Vec::with_capacity(jobs.len());
            for job in jobs {
                out.push(Self::insert(&mut w.tx, job, now).await?);
            }
            Ok(out)
        }
        .await;
        let enqueued = w.finish(&self.name, result).await?;
        let mut woken: Vec<&str> = Vec::new();
        for (job, e) in jobs.iter().zip(&enqueued) {
            if e.created && !woken.contains(&job.queue.as_str()) {
                woken.push(&job.queue);
                self.wake(&job.queue);
            }
        }
        Ok(enqueued)
    }

    /// One insert inside the caller's write transaction. A conflict on the
    /// idempotency key or the unique key (a partial unique index on
    /// `unique_holder`) returns the job holding it; the write lock is held,
    /// so that job is there (maybe inserted earlier in this same batch).
    pub(super) async fn insert(
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        job: &ValidJob,
        now: i64,
    ) -> Result<Enqueued, sqlx::Error> {
        if job.unique_key().is_some() {
            // A window over gives the key up to the next job, whatever that
            // job's scope (one key space).
            sqlx::query(
                "UPDATE jobs SET unique_holder = NULL
                 WHERE unique_holder = ?1 AND unique_until <= ?2",
            )
            .bind(job.unique_key())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO jobs (queue, kind, payload, priority, run_at, max_attempts,
                               idempotency_key, created_at, updated_at,
                               unique_key, unique_scope, unique_until, unique_holder)
             VALUES (?1, ?2, ?3, ?4, coalesce(?5, ?8), ?6, ?7, ?8, ?8, ?9, ?10, ?8 + ?11, ?9)
             ON CONFLICT DO NOTHING
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
        .bind(job.unique_key())
        .bind(job.unique_scope())
        .bind(job.unique_window_ms())
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(id) = inserted {
            return Ok(Enqueued { id, created: true });
        }
        let id: i64 = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE idempotency_key = ?1
             UNION ALL
             SELECT id FROM jobs WHERE unique_holder = ?2
             LIMIT 1",
        )
        .bind(&job.idempotency_key)
        .bind(job.unique_key())
        .fetch_one(&mut **tx)
        .await?;
        Ok(Enqueued { id, created: false })
    }

    /// `enqueue` and then a claim of one job of the job's queue, in one
    /// write transaction: the new job or one ahead of it in claim order.
    pub(crate) async fn enqueue_and_claim(
        &self,
        job: ValidJob,
        owner: &str,
        lease_ms: i64,
    ) -> Result<(Enqueued, ClaimedRows), StoreError> {
        let now = now_ms();
        let mut w = self.begin_write().await?;
        let result = async {
            let enqueued = Self::insert(&mut w.tx, &job, now).await?;
            let rows = claim_query(&job.queue, 1, owner, lease_ms, now)
                .fetch_all(&mut *w.tx)
                .await?;
            Ok((enqueued, rows))
        }
        .await;
        let (enqueued, rows) = w.finish(&self.name, result).await?;
        let claimed = self.claimed(&rows);
        // Other processors of this file: the new job waits if the claim
        // took another one.
        let took_it = claimed.jobs.iter().any(|j| j.id == enqueued.id)
            || claimed.unreadable.iter().any(|u| u.id == enqueued.id);
        if enqueued.created && !took_it {
            self.wake(&job.queue);
        }
        Ok((enqueued, claimed))
    }

    pub(crate) async fn claim(
        &self,
        queue: &str,
        limit: u32,
        owner: &str,
        lease_ms: i64,
    ) -> Result<ClaimedRows, StoreError> {
        // One statement: its own write transaction (see `writer_turn`).
        let _turn = self.writer_turn().await;
        let rows = claim_query(queue, limit, owner, lease_ms, now_ms())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(self.claimed(&rows))
    }

    /// As PostgreSQL's `bury`: dead (or cancelled) with `reason`, if
    /// `token` still holds the row; the state written.
    pub(crate) async fn bury(
        &self,
        id: i64,
        token: &str,
        reason: &str,
    ) -> Result<Option<String>, StoreError> {
        // One statement: its own write transaction (see `writer_turn`).
        let _turn = self.writer_turn().await;
        sqlx::query_scalar(
            "UPDATE jobs SET
                 state = CASE WHEN cancel_requested_at IS NULL THEN 'dead' ELSE 'cancelled' END,
                 finished_at = ?4, last_error = ?3, updated_at = ?4,
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
             WHERE id = ?1 AND lease_token = ?2 AND state = 'running'
             RETURNING state",
        )
        .bind(id)
        .bind(token)
        .bind(reason)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))
    }

    /// `complete_many`'s statement and then `claim`'s in one write
    /// transaction.
    pub(crate) async fn complete_and_claim(
        &self,
        done: &[(i64, String)],
        queue: &str,
        limit: u32,
        owner: &str,
        lease_ms: i64,
    ) -> Result<(Vec<i64>, ClaimedRows), StoreError> {
        let pairs =
            serde_json::to_string(done).map_err(|e| StoreError::invalid("jobs", e.to_string()))?;
        let now = now_ms();
        let mut w = self.begin_write().await?;
        let result = async {
            let ids = if done.is_empty() {
                Vec::new()
            } else {
                super::lease::complete_many_query(&pairs, now)
                    .fetch_all(&mut *w.tx)
                    .await?
            };
            let rows = claim_query(queue, limit, owner, lease_ms, now)
                .fetch_all(&mut *w.tx)
                .await?;
            Ok((ids, rows))
        }
        .await;
        let (ids, rows) = w.finish(&self.name, result).await?;
        Ok((ids, self.claimed(&rows)))
    }
}

/// The claim: up to `limit` claimable jobs of `queue` to running, with a
/// fresh token each.
///
/// INDEXED BY: walk the claim index in claim order and stop after `limit`
/// rows. Left to itself (no statistics) SQLite prefers the (queue, run_at)
/// index and sorts every ready job of the queue.
///
/// `CAST(?5 AS INTEGER)`: a bare `LIMIT ?5` lets SQLite plan with the bound
/// value, which marks the prepared statement to be parsed and planned
/// again whenever the limit is bound anew (every claim: a tenth of the
/// processor's CPU in a profile); an expression is evaluated at run time
/// and the cached statement is reused.
fn claim_query<'q>(
    queue: &'q str,
    limit: u32,
    owner: &'q str,
    lease_ms: i64,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(concat!(
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
              AND NOT EXISTS (SELECT 1 FROM paused_queues WHERE queue = ?4)
            ORDER BY priority, run_at, id
            LIMIT CAST(?5 AS INTEGER)
         )
         RETURNING *"
    ))
    .bind(owner)
    .bind(now)
    .bind(lease_ms)
    .bind(queue)
    .bind(i64::from(limit))
}
