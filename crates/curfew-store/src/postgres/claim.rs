//! Enqueue and claim: jobs in, and out to a processor with a lease.

use sqlx::Row;

use super::PgStore;
use crate::error::StoreError;
use crate::model::{Enqueued, Job};
use crate::validate::ValidJob;

impl PgStore {
    pub(crate) async fn enqueue(&self, job: ValidJob) -> Result<Enqueued, StoreError> {
        let row = sqlx::query(self.sql(
            "SELECT job_id, created
                 FROM {s}.enqueue_ms($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10)",
        ))
        .bind(&job.queue)
        .bind(&job.kind)
        .bind(&job.payload)
        .bind(job.priority)
        .bind(job.run_at)
        .bind(job.max_attempts)
        .bind(&job.idempotency_key)
        .bind(job.unique_key())
        .bind(job.unique_scope())
        .bind(job.unique_window_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(Enqueued {
            id: row.try_get("job_id").map_err(|e| self.err(e))?,
            created: row.try_get("created").map_err(|e| self.err(e))?,
        })
    }

    /// Every job in one statement (one transaction, one round trip): each
    /// row goes through `enqueue_ms`, so idempotency keys (also repeated
    /// within the batch) and NOTIFY work as for one job; PostgreSQL folds
    /// the repeated NOTIFYs of a transaction into one per queue.
    pub(crate) async fn enqueue_many(
        &self,
        jobs: &[ValidJob],
    ) -> Result<Vec<Enqueued>, StoreError> {
        let mut queue = Vec::with_capacity(jobs.len());
        let mut kind = Vec::with_capacity(jobs.len());
        let mut payload = Vec::with_capacity(jobs.len());
        let mut priority = Vec::with_capacity(jobs.len());
        let mut run_at = Vec::with_capacity(jobs.len());
        let mut max_attempts = Vec::with_capacity(jobs.len());
        let mut key = Vec::with_capacity(jobs.len());
        let mut unique_key = Vec::with_capacity(jobs.len());
        let mut unique_scope = Vec::with_capacity(jobs.len());
        let mut unique_ms = Vec::with_capacity(jobs.len());
        for j in jobs {
            queue.push(j.queue.as_str());
            kind.push(j.kind.as_str());
            payload.push(j.payload.as_str());
            priority.push(j.priority);
            run_at.push(j.run_at);
            max_attempts.push(j.max_attempts);
            key.push(j.idempotency_key.as_deref());
            unique_key.push(j.unique_key());
            unique_scope.push(j.unique_scope());
            unique_ms.push(j.unique_window_ms());
        }
        let rows = sqlx::query(self.sql(
            "SELECT e.job_id, e.created
             FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[],
                         $6::int[], $7::text[], $8::text[], $9::text[], $10::bigint[])
                  WITH ORDINALITY AS t(queue, kind, payload, priority, run_at, max_attempts, key,
                                       unique_key, unique_scope, unique_ms, n)
             CROSS JOIN LATERAL {s}.enqueue_ms(t.queue, t.kind, t.payload::jsonb, t.priority,
                                               t.run_at, t.max_attempts, t.key, t.unique_key,
                                               t.unique_scope, t.unique_ms) AS e
             ORDER BY t.n",
        ))
        .bind(&queue)
        .bind(&kind)
        .bind(&payload)
        .bind(&priority)
        .bind(&run_at)
        .bind(&max_attempts)
        .bind(&key)
        .bind(&unique_key)
        .bind(&unique_scope)
        .bind(&unique_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|row| {
                Ok(Enqueued {
                    id: row.try_get("job_id").map_err(|e| self.err(e))?,
                    created: row.try_get("created").map_err(|e| self.err(e))?,
                })
            })
            .collect()
    }

    pub(crate) async fn claim(
        &self,
        queue: &str,
        limit: u32,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(self.sql(CLAIM))
            .bind(queue)
            .bind(i64::from(limit))
            .bind(owner)
            .bind(lease_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        self.jobs(&rows)
    }

    /// `complete_many`'s statement and then `claim`'s in one transaction:
    /// one commit (one WAL flush) for both.
    pub(crate) async fn complete_and_claim(
        &self,
        done: &[(i64, String)],
        queue: &str,
        limit: u32,
        owner: &str,
        lease_ms: i64,
    ) -> Result<(Vec<i64>, Vec<Job>), StoreError> {
        let (ids, tokens) = super::lease::id_token_arrays(done);
        let run = async {
            let mut tx = self.pool.begin().await?;
            let completed: Vec<i64> = if done.is_empty() {
                Vec::new()
            } else {
                sqlx::query_scalar(self.sql(super::lease::COMPLETE_MANY))
                    .bind(&ids)
                    .bind(&tokens)
                    .fetch_all(&mut *tx)
                    .await?
            };
            let rows = sqlx::query(self.sql(CLAIM))
                .bind(queue)
                .bind(i64::from(limit))
                .bind(owner)
                .bind(lease_ms)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>((completed, rows))
        };
        let (completed, rows) = run.await.map_err(|e| self.err(e))?;
        Ok((completed, self.jobs(&rows)?))
    }
}

/// The claim: up to `$2` claimable jobs of queue `$1` to running for owner
/// `$3` with a lease of `$4` ms, a fresh token each. The CTE fences the
/// LIMIT: the planner cannot turn it into a join that locks more rows than
/// asked for.
const CLAIM: &str = "WITH picked AS (
         SELECT id FROM {s}.jobs
         WHERE state IN ('queued', 'failed') AND queue = $1 AND run_at <= {s}.now_ms()
           AND NOT EXISTS (SELECT 1 FROM {s}.paused_queues WHERE queue = $1)
         ORDER BY priority, run_at, id
         LIMIT $2
         FOR UPDATE SKIP LOCKED
     )
     UPDATE {s}.jobs AS j SET
         state = 'running',
         attempt = j.attempt + 1,
         lease_owner = $3,
         lease_token = gen_random_uuid()::text,
         lease_expires_at = {s}.now_ms() + $4,
         started_at = {s}.now_ms(),
         updated_at = {s}.now_ms()
     FROM picked
     WHERE j.id = picked.id
     RETURNING j.*";
