//! Enqueue and claim: jobs in, and out to a processor with a lease.

use sqlx::Row;

use super::PgStore;
use crate::error::StoreError;
use crate::model::{Enqueued, Job};
use crate::validate::ValidJob;

impl PgStore {
    pub(crate) async fn enqueue(&self, job: ValidJob) -> Result<Enqueued, StoreError> {
        let row =
            sqlx::query(self.sql(
                "SELECT job_id, created FROM {s}.enqueue_ms($1, $2, $3::jsonb, $4, $5, $6, $7)",
            ))
            .bind(&job.queue)
            .bind(&job.kind)
            .bind(&job.payload)
            .bind(job.priority)
            .bind(job.run_at)
            .bind(job.max_attempts)
            .bind(&job.idempotency_key)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(Enqueued {
            id: row.try_get("job_id").map_err(|e| self.err(e))?,
            created: row.try_get("created").map_err(|e| self.err(e))?,
        })
    }

    pub(crate) async fn claim(
        &self,
        queue: &str,
        limit: u32,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Vec<Job>, StoreError> {
        // The CTE fences the LIMIT: the planner cannot turn it into a join
        // that locks more rows than asked for.
        let rows = sqlx::query(self.sql(
            "WITH picked AS (
                 SELECT id FROM {s}.jobs
                 WHERE state IN ('queued', 'failed') AND queue = $1 AND run_at <= {s}.now_ms()
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
             RETURNING j.*",
        ))
        .bind(queue)
        .bind(i64::from(limit))
        .bind(owner)
        .bind(lease_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        self.jobs(&rows)
    }
}
