//! The PostgreSQL backend: a queue shared by several curfew instances on
//! several hosts.
//!
//! - Every object lives in one schema (default `curfew`), named explicitly
//!   in every statement (no reliance on `search_path`, which poolers such as
//!   PgBouncer in transaction mode do not keep). The migrations run with
//!   `search_path` set to that schema alone, on a connection of their own.
//! - "Now" is the database clock (`<schema>.now_ms()`), so hosts whose clocks
//!   disagree still agree on when a lease expires.
//! - Claims lock rows with `FOR UPDATE SKIP LOCKED`: concurrent claimers
//!   skip each other's rows instead of waiting, and never take the same row.
//! - A new job sends `NOTIFY curfew_jobs, '<queue>'` (from
//!   `<schema>.enqueue_ms`, so also for applications calling
//!   `<schema>.enqueue` in their own transactions); releases, rescues and
//!   retries notify too. Notifications are wake-up hints, never the truth.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Row};

use super::error::StoreError;
use super::model::{Enqueued, FailOutcome, Job, ListFilter, QueueStats};
use super::ops::{self, Outcome, RescueScope, Rescued, distinct_queues, fail_outcome, rescued};
use super::target::redact;
use super::validate::ValidJob;
use super::{StoreOptions, row};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The NOTIFY channel; the payload is the queue name.
pub const CHANNEL: &str = "curfew_jobs";

/// A job store in a PostgreSQL schema.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The URL, password redacted, and the schema: for errors and logs.
    name: Arc<str>,
    /// The schema as a quoted identifier, e.g. `"curfew"`.
    schema: Arc<str>,
    max_payload_bytes: usize,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore").field("name", &self.name).finish()
    }
}

/// A valid schema name: lower-case letters, digits and `_`, not starting
/// with a digit, at most 63 bytes (PostgreSQL's identifier limit).
pub(crate) fn validate_schema(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && !schema.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "pg_schema",
            format!(
                "{schema:?}; use 1 to 63 lower-case letters, digits and _, not starting with a digit or pg_"
            ),
        ))
    }
}

impl PgStore {
    pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        validate_schema(&options.pg_schema)?;
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl {
                url: redact(url),
                reason: e.to_string(),
            })?
            .application_name("curfew");
        let name: Arc<str> = format!("{} (schema {})", redact(url), options.pg_schema).into();
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::from_sqlx(&name, e))?;
        let store = PgStore {
            pool,
            name,
            schema: format!("\"{}\"", options.pg_schema).into(),
            max_payload_bytes: options.max_payload_bytes,
        };
        store.migrate(&options.pg_schema).await?;
        Ok(store)
    }

    /// Creates the schema if missing and applies the migrations in it, on a
    /// connection taken out of the pool for good (its `search_path` is
    /// changed). An advisory lock per schema serialises instances starting
    /// together; sqlx's own migration lock covers the rest.
    async fn migrate(&self, schema: &str) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.err(e))?.detach();
        let lock_key = format!("curfew.migrate.{schema}");
        let prepared = async {
            sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
                .bind(&lock_key)
                .execute(&mut conn)
                .await?;
            sqlx::query(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                self.schema
            )))
            .execute(&mut conn)
            .await?;
            sqlx::query(AssertSqlSafe(format!("SET search_path TO {}", self.schema)))
                .execute(&mut conn)
                .await?;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        prepared.map_err(|e| self.err(e))?;
        // `run_direct`: see the SQLite backend's `migrate`.
        MIGRATOR
            .run_direct(None, &mut conn, false)
            .await
            .map_err(|source| StoreError::Migration {
                store: self.name.to_string(),
                source,
            })?;
        // Closing the session releases the advisory lock.
        let _ = sqlx::Connection::close(conn).await;
        Ok(())
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

    /// The statement with `{s}` replaced by the quoted schema.
    fn sql(&self, template: &str) -> AssertSqlSafe<String> {
        AssertSqlSafe(template.replace("{s}", &self.schema))
    }

    fn job(&self, row: &PgRow) -> Result<Job, StoreError> {
        let Json(payload): Json<serde_json::Value> =
            row.try_get("payload").map_err(|e| self.err(e))?;
        row::job(&self.name, row, payload)
    }

    fn jobs(&self, rows: &[PgRow]) -> Result<Vec<Job>, StoreError> {
        rows.iter().map(|r| self.job(r)).collect()
    }

    /// Best effort: the state change is committed already, a lost wake-up
    /// only costs a poll interval.
    async fn notify(&self, queues: &[&str]) {
        if queues.is_empty() {
            return;
        }
        let result = sqlx::query("SELECT pg_notify($1, q) FROM unnest($2::text[]) AS q")
            .bind(CHANNEL)
            .bind(queues)
            .execute(&self.pool)
            .await;
        if let Err(e) = result {
            tracing::debug!(store = %self.name, error = %e, "NOTIFY failed; listeners will poll");
        }
    }

    pub(crate) async fn listen(&self) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        listener.listen(CHANNEL).await.map_err(|e| self.err(e))?;
        Ok(listener)
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

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

    pub(crate) async fn snooze(
        &self,
        id: i64,
        token: &str,
        run_at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql(
            "UPDATE {s}.jobs SET state = 'queued', attempt = greatest(attempt - 1, 0), run_at = $3,
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

    pub(crate) async fn fail(
        &self,
        id: i64,
        token: &str,
        error: &str,
        retry_at: i64,
    ) -> Result<FailOutcome, StoreError> {
        let row = sqlx::query(self.sql(
            "UPDATE {s}.jobs SET
                 state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'failed' END,
                 run_at = CASE WHEN attempt >= max_attempts THEN run_at ELSE $4 END,
                 finished_at = CASE WHEN attempt >= max_attempts THEN {s}.now_ms() ELSE NULL END,
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
        let ids: Vec<i64> = jobs.iter().map(|(id, _)| *id).collect();
        let tokens: Vec<&str> = jobs.iter().map(|(_, token)| token.as_str()).collect();
        let rows = sqlx::query(self.sql(
            "UPDATE {s}.jobs AS j SET
                 state = 'queued', attempt = greatest(j.attempt - 1, 0),
                 releases = j.releases + 1, last_error = $3, updated_at = {s}.now_ms(),
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
             FROM unnest($1::bigint[], $2::text[]) AS r(id, token)
             WHERE j.id = r.id AND j.lease_token = r.token AND j.state = 'running'
             RETURNING j.id, j.queue, j.state, j.crashes, j.started_at IS NOT NULL AS delivered",
        ))
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
                "lease_owner <> $6 AND substr(lease_owner, 1, length($7)) = $7"
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
                 state = CASE WHEN j.started_at IS NOT NULL AND j.crashes + 1 > $1
                     THEN 'dead' ELSE 'queued' END,
                 last_error = CASE
                     WHEN j.started_at IS NULL THEN $4 || j.lease_owner || $5
                     WHEN j.crashes + 1 > $1
                     THEN 'interrupted by processor crashes ' || (j.crashes + 1) || ' times'
                     ELSE $2 || j.lease_owner || $3 END,
                 finished_at = CASE WHEN j.started_at IS NOT NULL AND j.crashes + 1 > $1
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
        if let RescueScope::OtherBoots { own, node_prefix } = scope {
            query = query.bind(own).bind(node_prefix);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        let rescued = rescued(&self.name, &rows, &[])?;
        self.notify(&distinct_queues(&rescued)).await;
        Ok(rescued)
    }

    pub(crate) async fn get(&self, id: i64) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(self.sql("SELECT * FROM {s}.jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        row.as_ref().map(|r| self.job(r)).transpose()
    }

    pub(crate) async fn list(&self, filter: &ListFilter) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(self.sql(
            "SELECT * FROM {s}.jobs
             WHERE ($1::text IS NULL OR queue = $1) AND ($2::text IS NULL OR state = $2)
               AND id > $3
             ORDER BY id
             LIMIT $4",
        ))
        .bind(&filter.queue)
        .bind(filter.state.map(|s| s.as_str()))
        .bind(filter.after_id.unwrap_or(0))
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
            "SELECT min(run_at) FROM {s}.jobs WHERE queue = $1 AND state IN ('queued', 'failed')",
        ))
        .bind(queue)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))
    }

    pub(crate) async fn stats(&self) -> Result<Vec<QueueStats>, StoreError> {
        let rows = sqlx::query(self.sql(
            "SELECT queue,
                 count(*) FILTER (WHERE state IN ('queued', 'failed') AND run_at <= n.now) AS queued,
                 count(*) FILTER (WHERE state IN ('queued', 'failed') AND run_at > n.now) AS scheduled,
                 count(*) FILTER (WHERE state = 'running') AS running,
                 count(*) FILTER (WHERE state = 'failed') AS failed,
                 count(*) FILTER (WHERE state = 'dead') AS dead,
                 count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
                 count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
                 n.now - min(run_at) FILTER (WHERE state IN ('queued', 'failed') AND run_at <= n.now)
                     AS oldest_queued_age_ms
             FROM {s}.jobs CROSS JOIN (SELECT {s}.now_ms() AS now) AS n
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

    pub(crate) async fn retry(
        &self,
        id: i64,
    ) -> Result<Result<String, super::JobState>, StoreError> {
        let queue: Option<String> = sqlx::query_scalar(self.sql(
            "UPDATE {s}.jobs SET state = 'queued', run_at = {s}.now_ms(), attempt = 0, crashes = 0,
                 finished_at = NULL, updated_at = {s}.now_ms()
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

    pub(crate) async fn cancel(&self, id: i64) -> Result<Result<(), super::JobState>, StoreError> {
        let done: Option<i64> = sqlx::query_scalar(self.sql(
            "UPDATE {s}.jobs SET state = 'cancelled', finished_at = {s}.now_ms(),
                 updated_at = {s}.now_ms()
             WHERE id = $1 AND state IN ('queued', 'failed')
             RETURNING id",
        ))
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

    pub(crate) async fn delete(&self, id: i64) -> Result<Result<(), super::JobState>, StoreError> {
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

    /// Why a state-changing statement matched nothing. (Read after it, so
    /// the state reported is the latest, which is what the caller needs.)
    async fn state_of<T>(&self, id: i64) -> Result<Outcome<T>, StoreError> {
        let state: Option<String> =
            sqlx::query_scalar(self.sql("SELECT state FROM {s}.jobs WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        Ok(Outcome::from_state(state))
    }
}
