//! Test fixtures shared by the store's conformance suite and curfew's
//! end-to-end tests (cargo feature `testing`; never in a release build).
//!
//! PostgreSQL: `CURFEW_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test` (trust auth). Each test works in
//! a fresh schema of its own ([`fresh_schema`]) and drops it at the end
//! ([`drop_schemas`]), so tests run in parallel on one database.

use sqlx::{AssertSqlSafe, Connection};

/// The test database when `CURFEW_TEST_PG_URL` is not set.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL URL of the tests.
pub fn pg_url() -> String {
    std::env::var("CURFEW_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// 12 random hex digits, for names no other test uses.
pub fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A schema name nobody has used: `prefix` and a random suffix.
pub fn fresh_schema(prefix: &str) -> String {
    format!("{prefix}{}", random_suffix())
}

/// Drops `schemas` (and all they hold) from the database at `url`. Runs on
/// a thread and runtime of its own, so it also works from a `Drop` inside a
/// test's runtime. Waits at most 10 s for a lock.
pub fn drop_schemas(url: &str, schemas: Vec<String>) -> Result<(), sqlx::Error> {
    if schemas.is_empty() {
        return Ok(());
    }
    let url = url.to_owned();
    let dropping = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            sqlx::query("SET lock_timeout = '10s'")
                .execute(&mut conn)
                .await?;
            for schema in schemas {
                sqlx::query(AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                )))
                .execute(&mut conn)
                .await?;
            }
            Ok(())
        })
    });
    dropping
        .join()
        .unwrap_or_else(|_| Err(sqlx::Error::Protocol("the schema drop panicked".into())))
}
