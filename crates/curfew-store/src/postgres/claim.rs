//! Enqueue and claim: jobs in, and out to a processor with a lease.

use std::sync::LazyLock;

use sqlx::Row;

use super::lease::COMPLETE_MANY;

use super::PgStore;
use crate::error::StoreError;
use crate::model::Enqueued;
use crate::row::ClaimedRows;
use crate::validate::ValidJob;

impl PgStore {
    pub(crate) async fn enqueue(&self, job: ValidJob) -> Result<Enqueued, StoreError> {
        let row = self
            .enqueue_query(&job)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        self.enqueued(&row)
    }

    /// `enqueue` and then a claim of one job of the job's queue, in one
    /// transaction: one commit where the two apart take two. The claim sees
    /// the new job (a statement of its own, after the insert), so it takes
    /// the new job or one ahead of it in claim order.
    ///
    /// One statement, so one round trip: `enqueue_and_claim_ms` (migration
    /// 0008) runs `enqueue_ms` and the claim of [`COMPLETE_AND_CLAIM`] for
    /// one job, and sends a NOTIFY for a job it created only when the job
    /// it claimed is another one, or none: a job taken by its own enqueue
    /// wakes no processor.
    pub(crate) async fn enqueue_and_claim(
        &self,
        job: ValidJob,
        owner: &str,
        lease_ms: i64,
    ) -> Result<(Enqueued, ClaimedRows), StoreError> {
        let sql = self.sql(
            "SELECT r.job_id, r.created, (r.claimed).*
             FROM {s}.enqueue_and_claim_ms($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, $11, $12) AS r",
        );
        let row = bind_job(sqlx::query(sql), &job)
            .bind(owner)
            .bind(lease_ms)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        let claimed = self.claimed(self.claim_rows(std::slice::from_ref(&row))?);
        Ok((self.enqueued(&row)?, claimed))
    }

    /// The rows of [`COMPLETE_AND_CLAIM`] or of `enqueue_and_claim_ms` that
    /// hold a claimed job: both stand for "no claim" with a row of NULLs.
    fn claim_rows<'r>(
        &self,
        rows: &'r [sqlx::postgres::PgRow],
    ) -> Result<impl Iterator<Item = &'r sqlx::postgres::PgRow> + Clone, StoreError> {
        let mut with_job = Vec::with_capacity(rows.len());
        for row in rows {
            let id: Option<i64> = row.try_get("id").map_err(|e| self.err(e))?;
            if id.is_some() {
                with_job.push(row);
            }
        }
        Ok(with_job.into_iter())
    }

    /// A claimed row that cannot be read, out of play (`Store::claimed`):
    /// dead, or cancelled if asked, with `reason` as its last error. The
    /// state written, or `None` if `token` no longer holds the row.
    pub(crate) async fn bury(
        &self,
        id: i64,
        token: &str,
        reason: &str,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(self.sql(
            "UPDATE {s}.jobs SET
                 state = CASE WHEN cancel_requested_at IS NULL THEN 'dead' ELSE 'cancelled' END,
                 finished_at = {s}.now_ms(), last_error = $3, updated_at = {s}.now_ms(),
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
             WHERE id = $1 AND lease_token = $2 AND state = 'running'
             RETURNING state",
        ))
        .bind(id)
        .bind(token)
        .bind(reason)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))
    }

    fn enqueue_query<'q>(
        &self,
        job: &'q ValidJob,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let sql = self.sql(
            "SELECT job_id, created
                 FROM {s}.enqueue_ms($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10)",
        );
        bind_job(sqlx::query(sql), job)
    }

    fn enqueued(&self, row: &sqlx::postgres::PgRow) -> Result<Enqueued, StoreError> {
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

    /// The claim loop's claim: [`PgStore::complete_and_claim`] with
    /// nothing to complete (one statement for both keeps one copy of the
    /// claim's SQL).
    pub(crate) async fn claim(
        &self,
        queue: &str,
        limit: u32,
        owner: &str,
        lease_ms: i64,
    ) -> Result<ClaimedRows, StoreError> {
        let (_, claimed) = self
            .complete_and_claim(&[], queue, limit, owner, lease_ms)
            .await?;
        Ok(claimed)
    }

    /// `complete_many`'s update and `claim`'s in one statement: one round
    /// trip and one commit (one WAL flush) for both, where a transaction
    /// around the two statements takes four round trips (BEGIN, two
    /// statements, COMMIT). The two updates touch disjoint rows (the
    /// completions `running` ones, the claim `queued`/`failed` ones), so
    /// that they share one snapshot changes nothing. Always one row at
    /// least: the completed ids as an array beside the first claimed job,
    /// or beside NULLs when nothing was claimed.
    pub(crate) async fn complete_and_claim(
        &self,
        done: &[(i64, String)],
        queue: &str,
        limit: u32,
        owner: &str,
        lease_ms: i64,
    ) -> Result<(Vec<i64>, ClaimedRows), StoreError> {
        let (ids, tokens) = super::lease::id_token_arrays(done);
        let rows = self
            .complete_and_claim_query(&ids, &tokens, queue, limit, owner, lease_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        self.completed_and_claimed(&rows)
    }

    fn complete_and_claim_query<'q>(
        &self,
        ids: &'q [i64],
        tokens: &'q [&'q str],
        queue: &'q str,
        limit: u32,
        owner: &'q str,
        lease_ms: i64,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(self.sql(&COMPLETE_AND_CLAIM))
            .bind(ids)
            .bind(tokens)
            .bind(queue)
            .bind(i64::from(limit))
            .bind(owner)
            .bind(lease_ms)
    }

    /// The rows of [`COMPLETE_AND_CLAIM`]: the completed ids (on the first
    /// row) and the claimed jobs (the rows with a job).
    fn completed_and_claimed(
        &self,
        rows: &[sqlx::postgres::PgRow],
    ) -> Result<(Vec<i64>, ClaimedRows), StoreError> {
        let completed = match rows.first() {
            Some(row) => row
                .try_get::<Option<Vec<i64>>, _>("completed_ids")
                .map_err(|e| self.err(e))?
                .unwrap_or_default(),
            None => Vec::new(),
        };
        Ok((completed, self.claimed(self.claim_rows(rows)?)))
    }
}

/// A job's ten arguments of `enqueue_ms` (and the first ten of
/// `enqueue_and_claim_ms`), bound in their order: every enqueue from Rust
/// (one job, one that claims, a periodic instant's).
pub(super) fn bind_job<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    job: &'q ValidJob,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&job.queue)
        .bind(&job.kind)
        .bind(&job.payload)
        .bind(job.priority)
        .bind(job.run_at)
        .bind(job.max_attempts)
        .bind(&job.idempotency_key)
        .bind(job.unique_key())
        .bind(job.unique_scope())
        .bind(job.unique_window_ms())
}

/// [`COMPLETE_MANY`] (`$1`, `$2`), then the claim: up to `$4` claimable
/// jobs of queue `$3` to running for owner `$5` with a lease of `$6` ms, a
/// fresh token each ([`crate::Store`] puts them in claim order). The
/// `picked` CTE fences the LIMIT:
/// the planner cannot turn it into a join that locks more rows than asked
/// for. A LEFT JOIN keeps one row when nothing is claimed. The claim for
/// one job is also in migration 0008's `enqueue_and_claim_ms` (one round
/// trip for an enqueue that claims): keep the two in step.
static COMPLETE_AND_CLAIM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH done AS ({COMPLETE_MANY}),
         picked AS (
             SELECT id FROM {{s}}.jobs
             WHERE state IN ('queued', 'failed') AND queue = $3 AND run_at <= {{s}}.now_ms()
               AND NOT EXISTS (SELECT 1 FROM {{s}}.paused_queues WHERE queue = $3)
             ORDER BY priority, run_at, id
             LIMIT $4
             FOR UPDATE SKIP LOCKED
         ),
         claimed AS (
             UPDATE {{s}}.jobs AS j SET
                 state = 'running',
                 attempt = j.attempt + 1,
                 lease_owner = $5,
                 lease_token = gen_random_uuid()::text,
                 lease_expires_at = {{s}}.now_ms() + $6,
                 started_at = {{s}}.now_ms(),
                 updated_at = {{s}}.now_ms()
             FROM picked
             WHERE j.id = picked.id
             RETURNING j.*
         )
         SELECT d.completed_ids, c.*
         FROM (SELECT array_agg(id) AS completed_ids FROM done) AS d
         LEFT JOIN claimed AS c ON true"
    )
});
