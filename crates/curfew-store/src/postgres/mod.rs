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
//!   `<schema>.enqueue` in their own transactions), except a job that
//!   [`crate::Store::enqueue_and_claim`] claimed in the same transaction;
//!   releases, rescues and retries notify too. Notifications are wake-up
//!   hints, never the truth.

mod claim;
mod lease;
mod manage;
mod periodic;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Row};

use super::error::StoreError;
use super::model::Job;
use super::target::redact;
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

/// A WARN when credentials and payloads may cross the network in clear.
fn warn_if_plaintext_possible(connect: &PgConnectOptions, url: &str) {
    if plaintext_possible(connect) {
        tracing::warn!(store = %redact(url), "The job store is on another host and its sslmode allows plaintext: add ?sslmode=require (or verify-full with sslrootcert) to the store URL.");
    }
}

/// A TCP host that is not loopback, with an `sslmode` that allows
/// plaintext (`disable`, `allow`, or the default `prefer`, which falls back
/// to it when the server does not offer TLS).
fn plaintext_possible(connect: &PgConnectOptions) -> bool {
    use sqlx::postgres::PgSslMode;
    if connect.get_socket().is_some() {
        return false;
    }
    let host = connect.get_host();
    let loopback = host == "localhost"
        || host.starts_with('/')
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let may_be_plain = matches!(
        connect.get_ssl_mode(),
        PgSslMode::Disable | PgSslMode::Allow | PgSslMode::Prefer
    );
    !loopback && may_be_plain
}

impl PgStore {
    pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        validate_schema(&options.pg_schema)?;
        let mut connect = PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
            url: redact(url),
            reason: e.to_string(),
        })?;
        // "curfew" in pg_stat_activity, unless the URL names the application.
        if connect.get_application_name().is_none() {
            connect = connect.application_name("curfew");
        }
        warn_if_plaintext_possible(&connect, url);
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
            .map_err(|source| StoreError::from_migration(&self.name, &MIGRATOR, source))?;
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

    /// A row's payload ([`row::Payload`]): jsonb that serde cannot hold (a
    /// number beyond a 64-bit float, nesting past serde's limit) is this
    /// row's fault alone. Any other failure (a missing column, a type this
    /// code does not expect) would fail every row alike: the store's fault.
    fn payload(&self, row: &PgRow) -> row::Payload {
        match row.try_get::<Json<serde_json::Value>, _>("payload") {
            Ok(Json(payload)) => Ok(Ok(payload)),
            Err(sqlx::Error::ColumnDecode { source, .. })
                if source.downcast_ref::<serde_json::Error>().is_some() =>
            {
                Ok(Err(format!("its payload cannot be read: {source}")))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    /// A row read for an operator (get, list): a payload that cannot be
    /// read is shown as such ([`Job::payload_error`]), not an error for
    /// the whole read.
    fn job(&self, row: &PgRow) -> Result<Job, StoreError> {
        row::job(&self.name, row, self.payload(row)?)
    }

    /// The rows of a claim, those that cannot be read set apart.
    fn claimed<'r>(&self, rows: impl IntoIterator<Item = &'r PgRow> + Clone) -> row::ClaimedRows {
        row::claimed(&self.name, rows, |r| self.payload(r))
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
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    #[test]
    fn plaintext_is_flagged_only_off_host_without_required_tls() {
        let opts = |u: &str| PgConnectOptions::from_str(u).expect("url");
        assert!(plaintext_possible(&opts("postgres://u@db.example/app")));
        assert!(plaintext_possible(&opts(
            "postgres://u@10.0.0.5/app?sslmode=disable"
        )));
        assert!(!plaintext_possible(&opts(
            "postgres://u@db.example/app?sslmode=require"
        )));
        assert!(!plaintext_possible(&opts(
            "postgres://u@db.example/app?sslmode=verify-full"
        )));
        assert!(!plaintext_possible(&opts("postgres://u@127.0.0.1/app")));
        assert!(!plaintext_possible(&opts("postgres://u@localhost/app")));
    }
}
