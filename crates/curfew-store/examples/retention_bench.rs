//! Retention and stats cost against a large history.
//!
//! `cargo run --release -p curfew-store --example retention_bench -- URL [FINISHED]`
//! (URL: `sqlite:///tmp/bench.db` or `postgres://…`; PostgreSQL uses a fresh
//! schema `curfew_bench_<random>`, dropped at the end). Inserts FINISHED
//! (default 100,000) succeeded jobs finished two days ago plus 1,000 queued
//! ones, then times `stats()` and `prune()` batch by batch.

use std::time::{Duration, Instant};

use curfew_store::testing::{drop_schemas, fresh_schema};
use curfew_store::{PruneOutcome, Retention, Store, StoreOptions, now_ms};
use sqlx::{AssertSqlSafe, Connection};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: retention_bench URL [FINISHED]")?;
    let finished: i64 = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);
    let pg = url.starts_with("postgres");
    let schema = pg.then(|| fresh_schema("curfew_bench_"));
    let options = StoreOptions {
        pg_schema: schema.clone().unwrap_or_else(|| "curfew".into()),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&url, options).await?;
    let old = now_ms() - 2 * 86_400_000;
    let insert = |n: i64, state: &str, finished_at: &str| {
        let cols = "(queue, kind, payload, run_at, state, created_at, updated_at, finished_at)";
        match &schema {
            Some(s) => format!(
                "INSERT INTO {s}.jobs {cols} SELECT 'q', 'k', '{{}}', {old}, '{state}', {old}, {old}, {finished_at} FROM generate_series(1, {n})"
            ),
            None => format!(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n})
                 INSERT INTO jobs {cols} SELECT 'q', 'k', '{{}}', {old}, '{state}', {old}, {old}, {finished_at} FROM c"
            ),
        }
    };
    let stats_time = |store: Store| async move {
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            store.stats().await.expect("stats");
            best = best.min(t.elapsed());
        }
        best
    };
    let t = Instant::now();
    exec(&url, &insert(1_000, "queued", "NULL")).await?;
    exec(&url, &insert(10, "succeeded", &old.to_string())).await?;
    let small = stats_time(store.clone()).await;
    exec(&url, &insert(finished, "succeeded", &old.to_string())).await?;
    if pg {
        exec(
            &url,
            &format!("ANALYZE {}.jobs", schema.as_deref().unwrap_or("curfew")),
        )
        .await?;
    }
    eprintln!(
        "inserted {finished} finished jobs in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let large = stats_time(store.clone()).await;
    println!(
        "stats() with 10 finished jobs: {:.2} ms; with {finished}: {:.2} ms",
        ms(small),
        ms(large)
    );

    let t = Instant::now();
    let (mut batches, mut deleted, mut slowest) = (0, 0u64, Duration::ZERO);
    loop {
        let b = Instant::now();
        match store.prune(&Retention::DEFAULT, 1_000).await? {
            PruneOutcome::Deleted { pruned, more } => {
                slowest = slowest.max(b.elapsed());
                batches += 1;
                deleted += pruned.total();
                if !more {
                    break;
                }
            }
            PruneOutcome::Busy => return Err("busy".into()),
        }
    }
    let took = t.elapsed();
    println!(
        "prune: {deleted} rows in {batches} batches of 1,000, {:.0} ms in all ({:.1} ms a batch on average, slowest {:.1} ms; {:.0} rows/s)",
        ms(took),
        ms(took) / f64::from(batches),
        ms(slowest),
        deleted as f64 / took.as_secs_f64()
    );
    store.close().await;
    if let Some(s) = schema {
        drop_schemas(&url, vec![s])?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn exec(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await?;
        sqlx::query(AssertSqlSafe(sql.to_owned()))
            .execute(&mut c)
            .await?;
        c.close().await
    } else {
        let path = url.trim_start_matches("sqlite://");
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{path}")).await?;
        sqlx::query(AssertSqlSafe(sql.to_owned()))
            .execute(&mut c)
            .await?;
        c.close().await
    }
}
