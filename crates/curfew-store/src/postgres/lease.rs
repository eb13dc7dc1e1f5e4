//! Writes about a running job, each fenced by its lease token (heartbeat,
//! start marks, complete, snooze, fail, release), and the rescue of jobs
//! whose processor is gone.

use super::PgStore;
use crate::error::StoreError;
use crate::model::FailOutcome;
use crate::ops::{self, RescueScope, Rescued, distinct_queues, fail_outcome, rescued};

/// The rows of `$1` (ids) and `$2` (their tokens) that these runs still
/// hold, as `j`: the `FROM … WHERE` of every write by `(id, token)` pairs
/// ([`COMPLETE_MANY`], `release`).
///
/// The rows are found by id, token and the other two lease columns set,
/// with no `state = 'running'` beside them. Those say it already: a row
/// whose lease owner, token and expiry are all set is running (the check
/// `jobs_lease_iff_running`), and every move out of `running` clears all
/// three, so the token of a run that has ended matches nothing. Naming the
/// state as well lets the planner read the running rows off the
/// `(state, …)` index and hash-join them with the pairs when its
/// statistics say few jobs run, and that index keeps an entry for every
/// row version that once ran until vacuum removes it: in the job benchmark
/// each group commit read ~3,000 such entries to complete 16 jobs, a tenth
/// of PostgreSQL's CPU. By id, each pair is one probe of the primary key
/// (no index has the other lease columns first).
macro_rules! by_lease_pairs {
    () => {
        "FROM unnest($1::bigint[], $2::text[]) AS r(id, token)
         WHERE j.id = r.id AND j.lease_token = r.token
           AND j.lease_owner IS NOT NULL AND j.lease_expires_at IS NOT NULL"
    };
}

impl PgStore {
    pub(crate) async fn heartbeat(
        &self,
        id: i64,
        token: &str,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql(
            "UPDATE {s}.jobs SET lease_expires_at = {s}.now_ms() + $3, updated_at = {s}.now_ms()
             WHERE id = $1 AND state = 'running' AND lease_token = $2",
        ))
        .bind(id)
        .bind(token)
        .bind(lease_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn set_started(
        &self,
        id: i64,
        token: &str,
        started: bool,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql(
            "UPDATE {s}.jobs SET started_at = CASE WHEN $3 THEN {s}.now_ms() END,
                 updated_at = {s}.now_ms()
             WHERE id = $1 AND state = 'running' AND lease_token = $2",
        ))
        .bind(id)
        .bind(token)
        .bind(started)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn complete(&self, id: i64, token: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql(
            "UPDATE {s}.jobs SET state = 'succeeded', finished_at = {s}.now_ms(),
                 updated_at = {s}.now_ms(),
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
             WHERE id = $1 AND state = 'running' AND lease_token = $2",
        ))
        .bind(id)
        .bind(token)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks every run of `jobs` succeeded in one statement, each fenced
    /// by its own token; returns the ids written (a stale token writes
    /// nothing, the others still do).
    pub(crate) async fn complete_many(
        &self,
        jobs: &[(i64, String)],
    ) -> Result<Vec<i64>, StoreError> {
        let (ids, tokens) = id_token_arrays(jobs);
        sqlx::query_scalar(self.sql(COMPLETE_MANY))
            .bind(&ids)
            .bind(&tokens)
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
        let done = sqlx::query(self.sql(
            "UPDATE {s}.jobs SET
                 state = CASE WHEN cancel_requested_at IS NULL THEN 'queued' ELSE 'cancelled' END,
                 finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE {s}.now_ms() END,
                 attempt = greatest(attempt - 1, 0), run_at = $3,
                 updated_at = {s}.now_ms(),
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
             WHERE id = $1 AND state = 'running' AND lease_token = $2",
        ))
        .bind(id)
        .bind(token)
        .bind(run_at)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a run whose cancel was requested: `cancelled`, lease cleared.
    pub(crate) async fn finish_cancelled(&self, id: i64, token: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql(
            "UPDATE {s}.jobs SET state = 'cancelled', finished_at = {s}.now_ms(),
                 updated_at = {s}.now_ms(),
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
             WHERE id = $1 AND state = 'running' AND lease_token = $2",
        ))
        .bind(id)
        .bind(token)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// The running jobs of `owner` with a cancel request (index
    /// `jobs_cancel_requested`: only such rows).
    pub(crate) async fn cancel_requested(&self, owner: &str) -> Result<Vec<i64>, StoreError> {
        sqlx::query_scalar(self.sql(
            "SELECT id FROM {s}.jobs
             WHERE cancel_requested_at IS NOT NULL AND state = 'running' AND lease_owner = $1
             ORDER BY id",
        ))
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))
    }

    pub(crate) async fn fail(
        &self,
        id: i64,
        token: &str,
        error: &str,
        retry_at: i64,
    ) -> Result<FailOutcome, StoreError> {
        let row = sqlx::query(self.sql(
            "UPDATE {s}.jobs SET
                 state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
                     WHEN attempt >= max_attempts THEN 'dead' ELSE 'failed' END,
                 run_at = CASE WHEN attempt >= max_attempts OR cancel_requested_at IS NOT NULL
                     THEN run_at ELSE $4 END,
                 finished_at = CASE WHEN attempt >= max_attempts OR cancel_requested_at IS NOT NULL
                     THEN {s}.now_ms() ELSE NULL END,
                 last_error = $3, updated_at = {s}.now_ms(),
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
             WHERE id = $1 AND state = 'running' AND lease_token = $2
             RETURNING state, run_at",
        ))
        .bind(id)
        .bind(token)
        .bind(error)
        .bind(retry_at)
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
        let (ids, tokens) = id_token_arrays(jobs);
        let rows = sqlx::query(self.sql(concat!(
            "UPDATE {s}.jobs AS j SET
                 state = CASE WHEN j.cancel_requested_at IS NULL THEN 'queued' ELSE 'cancelled' END,
                 finished_at = CASE WHEN j.cancel_requested_at IS NULL THEN NULL
                     ELSE {s}.now_ms() END,
                 attempt = greatest(j.attempt - 1, 0),
                 releases = j.releases + 1, last_error = $3, updated_at = {s}.now_ms(),
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL ",
            by_lease_pairs!(),
            " RETURNING j.id, j.queue, j.state, j.crashes, j.started_at IS NOT NULL AS delivered",
        )))
        .bind(&ids)
        .bind(&tokens)
        .bind(reason)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let released = rescued(&self.name, &rows, &[])?;
        self.notify(&distinct_queues(&released)).await;
        Ok(released)
    }

    /// One statement: the candidates are read and locked (`FOR UPDATE SKIP
    /// LOCKED`: a row another transaction is completing right now is left
    /// for the next sweep), then only rows whose state and token are still
    /// the ones read are written.
    pub(crate) async fn rescue(
        &self,
        scope: RescueScope<'_>,
        max_crashes: i32,
    ) -> Result<Vec<Rescued>, StoreError> {
        let condition = match scope {
            RescueScope::Expired => "lease_expires_at < {s}.now_ms()",
            RescueScope::OtherBoots { .. } => {
                "lease_owner <> $6 AND substr(lease_owner, 1, length($7)) = $7
                 AND lease_owner NOT IN (SELECT jsonb_array_elements_text($8::jsonb))"
            }
        };
        let sql = format!(
            "WITH candidate AS (
                 SELECT id, lease_token, lease_owner FROM {{s}}.jobs
                 WHERE state = 'running' AND {condition}
                 ORDER BY id
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE {{s}}.jobs AS j SET
                 crashes = j.crashes + (j.started_at IS NOT NULL)::int,
                 attempt = greatest(j.attempt - 1, 0),
                 state = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                     WHEN j.started_at IS NOT NULL AND j.crashes + 1 > $1
                     THEN 'dead' ELSE 'queued' END,
                 last_error = CASE
                     WHEN j.started_at IS NULL THEN $4 || j.lease_owner || $5
                     WHEN j.crashes + 1 > $1
                     THEN 'interrupted by processor crashes ' || (j.crashes + 1) || ' times'
                     ELSE $2 || j.lease_owner || $3 END,
                 finished_at = CASE WHEN j.cancel_requested_at IS NOT NULL
                       OR (j.started_at IS NOT NULL AND j.crashes + 1 > $1)
                     THEN {{s}}.now_ms() ELSE NULL END,
                 updated_at = {{s}}.now_ms(),
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
             FROM candidate AS c
             WHERE j.id = c.id AND j.lease_token = c.lease_token AND j.state = 'running'
             RETURNING j.id, j.queue, j.state, j.crashes, c.lease_owner AS owner,
                 j.started_at IS NOT NULL AS delivered"
        );
        let (prefix, suffix) = scope.reason();
        let (undelivered_prefix, undelivered_suffix) = ops::UNDELIVERED_REASON;
        let mut query = sqlx::query(self.sql(&sql))
            .bind(max_crashes)
            .bind(prefix)
            .bind(suffix)
            .bind(undelivered_prefix)
            .bind(undelivered_suffix);
        if let RescueScope::OtherBoots {
            own,
            node_prefix,
            live,
        } = scope
        {
            query = query.bind(own).bind(node_prefix).bind(live);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        let rescued = rescued(&self.name, &rows, &[])?;
        self.notify(&distinct_queues(&rescued)).await;
        Ok(rescued)
    }
}

/// `complete_many`'s statement: `$1` the ids, `$2` their tokens.
pub(super) const COMPLETE_MANY: &str = concat!(
    "UPDATE {s}.jobs AS j SET state = 'succeeded', finished_at = {s}.now_ms(),
         updated_at = {s}.now_ms(),
         lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL ",
    by_lease_pairs!(),
    " RETURNING j.id"
);

/// `(id, token)` pairs as the two arrays `COMPLETE_MANY` takes.
pub(super) fn id_token_arrays(jobs: &[(i64, String)]) -> (Vec<i64>, Vec<&str>) {
    jobs.iter().map(|(id, token)| (*id, token.as_str())).unzip()
}
