//! Conformance suite of the job store: every test runs against both backends,
//! each on a fresh database (a SQLite file in a temporary directory; a
//! PostgreSQL schema `curfew_t_<random>`, dropped at the end), real
//! databases, no mocks.
//!
//! PostgreSQL: `CURFEW_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test` (trust auth). If it is down:
//! `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use curfew_store::testing::{fresh_schema, pg_url, random_suffix};
use curfew_store::{
    FailOutcome, JobState, ListFilter, NewJob, PruneOutcome, Pruned, Retention, Store, StoreError,
    StoreOptions, backoff, now_ms,
};
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection};

const LEASE: Duration = Duration::from_secs(60);
const OWNER: &str = "node-a/boot-1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// One fresh store, and what it takes to open it again (a second process or
/// host on the same database).
struct Harness {
    backend: Backend,
    store: Store,
    url: String,
    options: StoreOptions,
    dir: tempfile::TempDir,
    /// PostgreSQL schemas to drop when the test ends.
    schemas: Mutex<Vec<String>>,
}

impl Harness {
    async fn new(backend: Backend) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, options, schemas) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("jobs.db").display()),
                StoreOptions::default(),
                vec![],
            ),
            Backend::Postgres => {
                let schema = fresh_schema("curfew_t_");
                let options = StoreOptions {
                    pg_schema: schema.clone(),
                    // Fail fast with a clear error when PostgreSQL is down.
                    acquire_timeout: Duration::from_secs(3),
                    ..StoreOptions::default()
                };
                (pg_url(), options, vec![schema])
            }
        };
        let harness_schemas = Mutex::new(schemas);
        let store = match Store::open_with(&url, options.clone()).await {
            Ok(store) => store,
            Err(e) => {
                // Drop the schema even though the test goes no further.
                drop(Harness::drop_schemas(&url, &harness_schemas));
                panic!("open {url}: {e}");
            }
        };
        Harness {
            backend,
            store,
            url,
            options,
            dir,
            schemas: harness_schemas,
        }
    }

    /// A second, independent store on the same database.
    async fn open_again(&self) -> Store {
        self.open_again_with(self.options.clone()).await
    }

    async fn open_again_with(&self, options: StoreOptions) -> Store {
        Store::open_with(&self.url, options)
            .await
            .expect("open again")
    }

    /// A URL and options naming a database nobody has opened yet.
    fn fresh_target(&self) -> (String, StoreOptions) {
        match self.backend {
            Backend::Sqlite => (
                format!(
                    "sqlite://{}",
                    self.dir
                        .path()
                        .join(format!("{}.db", random_suffix()))
                        .display()
                ),
                StoreOptions::default(),
            ),
            Backend::Postgres => {
                let schema = fresh_schema("curfew_t_");
                self.schemas.lock().expect("lock").push(schema.clone());
                (
                    self.url.clone(),
                    StoreOptions {
                        pg_schema: schema,
                        ..StoreOptions::default()
                    },
                )
            }
        }
    }

    fn schema(&self) -> &str {
        &self.options.pg_schema
    }

    fn drop_schemas(url: &str, schemas: &Mutex<Vec<String>>) -> Result<(), sqlx::Error> {
        let schemas = std::mem::take(&mut *schemas.lock().unwrap_or_else(|e| e.into_inner()));
        curfew_store::testing::drop_schemas(url, schemas)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Err(e) = Harness::drop_schemas(&self.url, &self.schemas) {
            eprintln!("could not drop the test schemas of {}: {e}", self.url);
        }
    }
}

/// Declares each listed `async fn name(h: &Harness)` as a test per backend:
/// `sqlite::name` and `postgres::name`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::run(super::Backend::Sqlite, super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::run(super::Backend::Postgres, super::$name).await;
                }
            )*
        }
    };
}

async fn run(backend: Backend, test: impl AsyncFnOnce(&Harness)) {
    let harness = Harness::new(backend).await;
    test(&harness).await;
    harness.store.close().await;
    // Dropping the harness drops its PostgreSQL schemas (also when a test
    // panics) and deletes the SQLite directory.
}

conformance!(
    enqueue_get_list_stats,
    idempotency_key_returns_the_existing_job,
    claim_follows_priority_then_run_at_then_id,
    concurrent_claimers_get_each_job_exactly_once,
    stale_tokens_are_fenced_off,
    a_batch_claim_gives_each_job_its_own_lease,
    a_batch_of_completions_is_fenced_job_by_job,
    completions_and_the_next_claim_commit_together,
    an_enqueue_claims_the_queues_next_job_in_its_commit,
    fail_retries_then_dies_at_max_attempts,
    snooze_gives_the_attempt_back,
    release_hands_back_only_running_jobs_with_their_token,
    rescue_expired_takes_jobs_whose_lease_ran_out,
    crash_cap_parks_the_job_as_dead,
    a_job_claimed_but_never_delivered_is_not_charged_a_crash,
    reclaim_own_previous_touches_only_this_nodes_other_boots,
    reclaim_leaves_the_runs_of_live_predecessors,
    retry_cancel_delete_follow_the_state_rules,
    invalid_input_names_the_field,
    payload_limit_is_enforced,
    listen_wakes_on_enqueue,
    an_enqueue_that_claims_its_own_job_wakes_no_one,
    concurrent_opens_migrate_once,
    a_store_a_newer_curfew_migrated_is_refused_by_name,
    retention_prunes_only_finished_jobs_past_their_period,
    retention_deletes_in_bounded_batches,
    stats_count_only_jobs_in_play,
    enqueue_many_is_one_transaction_all_or_nothing,
    a_paused_queue_is_not_claimed_by_any_processor,
    a_running_job_is_cancelled_through_its_processor,
    every_end_of_a_run_with_a_cancel_request_is_cancelled,
    unique_scopes_hold_the_key_while_documented,
    concurrent_unique_enqueues_make_one_job_per_key_and_scope,
    unique_keys_in_a_batch_and_with_idempotency_keys,
    periodic_instants_are_enqueued_once_across_processors,
    claims_bury_a_row_that_cannot_be_read_and_hand_out_the_rest,
);

mod cancel_unique;
use cancel_unique::*;
mod unreadable;
use unreadable::*;

// ---------------------------------------------------------------------------
// Helpers

/// Runs one statement on the harness's database, beside the store (`{s}`:
/// the jobs table's schema prefix, empty on SQLite).
async fn exec_sql(h: &Harness, template: &str) {
    match h.backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&h.url)
                .await
                .expect("sqlite connection");
            sqlx::query(AssertSqlSafe(template.replace("{s}", "")))
                .execute(&mut conn)
                .await
                .expect("statement");
            conn.close().await.expect("close");
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&h.url)
                .await
                .expect("pg connection");
            sqlx::query(AssertSqlSafe(
                template.replace("{s}", &format!("{}.", h.schema())),
            ))
            .execute(&mut conn)
            .await
            .expect("statement");
            conn.close().await.expect("close");
        }
    }
}

/// Moves the job's `finished_at` back by `age`, as if it had finished then.
async fn age_finished(h: &Harness, id: i64, age: Duration) {
    exec_sql(
        h,
        &format!(
            "UPDATE {{s}}jobs SET finished_at = finished_at - {} WHERE id = {id}",
            age.as_millis()
        ),
    )
    .await;
}

/// A job run to the end: succeeded, or dead (one attempt, failed).
async fn finished_job(h: &Harness, queue: &str, key: Option<&str>, succeed: bool) -> i64 {
    let id = enqueue(
        h,
        NewJob {
            max_attempts: Some(1),
            idempotency_key: key.map(str::to_owned),
            ..new_job(queue)
        },
    )
    .await;
    let (claimed, token) = claim_one(h, queue, OWNER, LEASE).await;
    assert_eq!(claimed, id);
    if succeed {
        assert!(h.store.complete(id, &token).await.expect("complete"));
    } else {
        assert_eq!(
            h.store
                .fail(id, &token, "boom", now_ms())
                .await
                .expect("fail"),
            FailOutcome::Dead
        );
    }
    id
}

async fn exists(h: &Harness, id: i64) -> bool {
    h.store.get(id).await.expect("get").is_some()
}

const DAY: Duration = Duration::from_secs(24 * 3600);

fn new_job(queue: &str) -> NewJob {
    NewJob::new(queue, "test.kind", json!({"n": 1}))
}

async fn enqueue(h: &Harness, job: NewJob) -> i64 {
    let enqueued = h.store.enqueue(job).await.expect("enqueue");
    assert!(enqueued.created);
    enqueued.id
}

async fn get(h: &Harness, id: i64) -> curfew_store::Job {
    h.store.get(id).await.expect("get").expect("job exists")
}

fn field_of<T: std::fmt::Debug>(result: Result<T, StoreError>) -> (&'static str, String) {
    match result {
        Err(e @ StoreError::InvalidInput { field, .. }) => (field, e.to_string()),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

fn assert_wrong_state<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    expected: JobState,
) -> String {
    match result {
        Err(e @ StoreError::WrongState { state, .. }) if state == expected => e.to_string(),
        other => panic!("expected WrongState({expected}), got {other:?}"),
    }
}

/// Claims exactly one job of `queue` and returns (id, token).
async fn claim_one(h: &Harness, queue: &str, owner: &str, lease: Duration) -> (i64, String) {
    let mut claimed = h.store.claim(queue, 1, owner, lease).await.expect("claim");
    assert_eq!(claimed.len(), 1, "expected one claimable job in {queue}");
    let c = claimed.remove(0);
    (c.job.id, c.token)
}

// ---------------------------------------------------------------------------
// The suite

async fn retention_prunes_only_finished_jobs_past_their_period(h: &Harness) {
    // Finished long ago, each state: due (succeeded and cancelled after a
    // day, dead after 14).
    let old_done = finished_job(h, "q", Some("key-old"), true).await;
    age_finished(h, old_done, DAY * 2).await;
    let old_cancelled = enqueue(h, new_job("q")).await;
    h.store.cancel(old_cancelled).await.expect("cancel");
    age_finished(h, old_cancelled, DAY * 2).await;
    let old_dead = finished_job(h, "q", None, false).await;
    age_finished(h, old_dead, DAY * 15).await;
    // Kept: finished recently, or dead for less than 14 days.
    let fresh_done = finished_job(h, "q", Some("key-fresh"), true).await;
    let recent_dead = finished_job(h, "q", None, false).await;
    age_finished(h, recent_dead, DAY * 2).await;
    // Kept: jobs in play, however old.
    let queued = enqueue(
        h,
        NewJob {
            idempotency_key: Some("key-queued".into()),
            ..new_job("r")
        },
    )
    .await;
    exec_sql(
        h,
        &format!(
            "UPDATE {{s}}jobs SET created_at = created_at - {0}, run_at = run_at - {0} WHERE id = {queued}",
            (DAY * 30).as_millis()
        ),
    )
    .await;
    let running = enqueue(h, new_job("s")).await;
    let (_, running_token) = claim_one(h, "s", OWNER, LEASE).await;
    let failed = enqueue(h, new_job("t")).await;
    let (_, token) = claim_one(h, "t", OWNER, LEASE).await;
    h.store
        .fail(failed, &token, "later", now_ms() + 60_000)
        .await
        .expect("fail");

    // Keeping everything deletes nothing.
    assert_eq!(
        h.store.prune(&Retention::KEEP, 100).await.expect("prune"),
        PruneOutcome::Deleted {
            pruned: Pruned::default(),
            more: false
        }
    );
    assert_eq!(
        h.store
            .prune(&Retention::DEFAULT, 100)
            .await
            .expect("prune"),
        PruneOutcome::Deleted {
            pruned: Pruned {
                succeeded: 1,
                cancelled: 1,
                dead: 1
            },
            more: false
        }
    );
    for gone in [old_done, old_cancelled, old_dead] {
        assert!(!exists(h, gone).await, "job {gone} pruned");
    }
    for kept in [fresh_done, recent_dead, queued, running, failed] {
        assert!(exists(h, kept).await, "job {kept} kept");
    }
    assert!(
        h.store
            .heartbeat(running, &running_token, LEASE)
            .await
            .expect("hb")
    );
    // Nothing more is due.
    assert_eq!(
        h.store
            .prune(&Retention::DEFAULT, 100)
            .await
            .expect("prune"),
        PruneOutcome::Deleted {
            pruned: Pruned::default(),
            more: false
        }
    );

    // The key went with its job: it enqueues a new one now. Kept jobs keep
    // theirs.
    let again = h
        .store
        .enqueue(NewJob {
            idempotency_key: Some("key-old".into()),
            ..new_job("q")
        })
        .await
        .expect("enqueue");
    assert!(again.created && again.id != old_done, "{again:?}");
    for (key, id) in [("key-fresh", fresh_done), ("key-queued", queued)] {
        let e = h
            .store
            .enqueue(NewJob {
                idempotency_key: Some(key.into()),
                ..new_job("q")
            })
            .await
            .expect("enqueue");
        assert_eq!((e.id, e.created), (id, false));
    }

    // A short period prunes the fresh ones too; per state.
    let only_dead = Retention {
        dead: Some(Duration::from_millis(1)),
        ..Retention::KEEP
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        h.store.prune(&only_dead, 100).await.expect("prune"),
        PruneOutcome::Deleted {
            pruned: Pruned {
                dead: 1,
                ..Pruned::default()
            },
            more: false
        }
    );
    assert!(exists(h, fresh_done).await && !exists(h, recent_dead).await);

    let e = h.store.prune(&Retention::DEFAULT, 0).await;
    assert_eq!(field_of(e).0, "batch");
}

async fn enqueue_many_is_one_transaction_all_or_nothing(h: &Harness) {
    let mut listener = h.store.listen().await.expect("listen");
    let existing = enqueue(
        h,
        NewJob {
            idempotency_key: Some("k-old".into()),
            ..new_job("q")
        },
    )
    .await;
    expect_wakeup(&mut listener, "q").await;
    let keyed = |key: &str| NewJob {
        idempotency_key: Some(key.into()),
        ..new_job("bulk")
    };
    let out = h
        .store
        .enqueue_many(vec![
            new_job("bulk"),
            keyed("k-new"),
            keyed("k-new"),
            keyed("k-old"),
            NewJob {
                priority: 5,
                run_at: Some(now_ms() + 60_000),
                ..new_job("bulk")
            },
        ])
        .await
        .expect("enqueue_many");
    assert_eq!(
        out.iter().map(|e| e.created).collect::<Vec<_>>(),
        vec![true, true, false, false, true]
    );
    assert_eq!(out[2].id, out[1].id, "the key repeated in the batch");
    assert_eq!(out[3].id, existing, "the key known before");
    assert!(out[0].id < out[1].id && out[1].id < out[4].id, "in order");
    assert_eq!(get(h, out[4].id).await.priority, 5);
    expect_wakeup(&mut listener, "bulk").await;

    // One bad item (or two) and nothing is stored; each is named by index.
    let before = h
        .store
        .list(ListFilter::default())
        .await
        .expect("list")
        .len();
    let e = h
        .store
        .enqueue_many(vec![
            new_job("bulk"),
            new_job("bad queue"),
            new_job("bulk"),
            NewJob {
                max_attempts: Some(0),
                ..new_job("bulk")
            },
        ])
        .await
        .expect_err("bad items");
    match &e {
        StoreError::InvalidBatch { errors } => {
            let named: Vec<(usize, &str)> = errors
                .iter()
                .map(|(i, e)| match e {
                    StoreError::InvalidInput { field, .. } => (*i, *field),
                    other => panic!("expected InvalidInput, got {other:?}"),
                })
                .collect();
            assert_eq!(named, vec![(1, "queue"), (3, "max_attempts")]);
        }
        other => panic!("expected InvalidBatch, got {other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("job 1: invalid queue") && text.contains("job 3: invalid max_attempts"),
        "{text}"
    );
    assert_eq!(
        job_count(h).await,
        before,
        "nothing of the bad batch stored"
    );
    assert_eq!(
        h.store.enqueue_many(Vec::new()).await.expect("empty"),
        vec![]
    );
    let e = h
        .store
        .enqueue_many(vec![new_job("bulk"); curfew_store::MAX_BATCH + 1])
        .await;
    assert_eq!(field_of(e).0, "jobs");

    // The largest batch, at once.
    let t = std::time::Instant::now();
    let out = h
        .store
        .enqueue_many(
            (0..curfew_store::MAX_BATCH)
                .map(|i| NewJob::new("big", "k", json!({"i": i})))
                .collect(),
        )
        .await
        .expect("10,000 jobs");
    let took = t.elapsed();
    assert_eq!(out.len(), curfew_store::MAX_BATCH);
    assert!(out.iter().all(|e| e.created));
    assert!(out.windows(2).all(|w| w[0].id < w[1].id));
    eprintln!(
        "{:?}: 10,000 jobs in one batch in {} ms ({:.0} jobs/s)",
        h.backend,
        took.as_millis(),
        10_000.0 / took.as_secs_f64()
    );
}

async fn a_paused_queue_is_not_claimed_by_any_processor(h: &Harness) {
    // (SQLite's wake-ups are in-process: listen where the writes happen.)
    let other = h.open_again().await;
    let mut listener = h.store.listen().await.expect("listen");
    let a = enqueue(h, new_job("mail")).await;
    enqueue(h, new_job("mail")).await;
    let sms = enqueue(h, new_job("sms")).await;
    expect_wakeup(&mut listener, "mail").await;
    let (running, token) = claim_one(h, "mail", OWNER, LEASE).await;
    assert_eq!(running, a);

    assert!(h.store.pause("mail").await.expect("pause"));
    assert!(
        !h.store.pause("mail").await.expect("pause again"),
        "already paused"
    );
    assert!(
        h.store
            .pause("not-yet-used")
            .await
            .expect("pause an empty queue")
    );
    assert_eq!(
        other.paused().await.expect("paused"),
        vec!["mail".to_owned(), "not-yet-used".to_owned()]
    );
    // Neither store claims from it; other queues go on; the running job
    // finishes normally.
    for store in [&h.store, &other] {
        assert!(
            store
                .claim("mail", 10, OWNER, LEASE)
                .await
                .expect("claim")
                .is_empty()
        );
    }
    let (got, _) = claim_one(h, "sms", OWNER, LEASE).await;
    assert_eq!(got, sms);
    assert!(h.store.complete(running, &token).await.expect("complete"));
    // Nothing to look again for while paused (a due job there must not
    // bring its claim loop back every few milliseconds).
    assert_eq!(
        other.next_run_at("mail").await.expect("next_run_at"),
        None,
        "a paused queue has nothing due"
    );

    // Resume: claimable again, and listeners hear of it.
    assert!(h.store.resume("mail").await.expect("resume"));
    assert!(!other.resume("mail").await.expect("resume again"));
    expect_wakeup(&mut listener, "mail").await;
    assert!(
        h.store
            .next_run_at("mail")
            .await
            .expect("next_run_at")
            .is_some(),
        "due again once resumed"
    );
    assert_eq!(
        h.store
            .claim("mail", 10, OWNER, LEASE)
            .await
            .expect("claim")
            .len(),
        1
    );
    assert_eq!(field_of(h.store.pause("bad queue").await).0, "queue");
    other.close().await;
}

async fn retention_deletes_in_bounded_batches(h: &Harness) {
    let mut ids = Vec::new();
    for _ in 0..25 {
        ids.push(finished_job(h, "q", None, true).await);
    }
    exec_sql(
        h,
        &format!(
            "UPDATE {{s}}jobs SET finished_at = finished_at - {}",
            (DAY * 2).as_millis()
        ),
    )
    .await;
    let mut batches = Vec::new();
    loop {
        match h.store.prune(&Retention::DEFAULT, 10).await.expect("prune") {
            PruneOutcome::Deleted { pruned, more } => {
                batches.push(pruned.succeeded);
                if !more {
                    break;
                }
            }
            PruneOutcome::Busy => panic!("nobody else prunes"),
        }
        assert!(batches.len() < 10, "{batches:?}");
    }
    assert_eq!(batches, vec![10, 10, 5], "oldest first, 10 at a time");
    for id in ids {
        assert!(!exists(h, id).await);
    }

    // PostgreSQL: one processor prunes at a time. While another session
    // holds the store's prune lock, a prune does nothing and says so.
    if h.backend == Backend::Postgres {
        let old = finished_job(h, "q", None, true).await;
        age_finished(h, old, DAY * 2).await;
        let mut other = sqlx::PgConnection::connect(&h.url)
            .await
            .expect("pg connection");
        let mut tx = other.begin().await.expect("begin");
        let key = format!("curfew.prune.\"{}\"", h.schema());
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(&key)
                .fetch_one(&mut *tx)
                .await
                .expect("lock");
        assert!(got);
        assert_eq!(
            h.store.prune(&Retention::DEFAULT, 10).await.expect("prune"),
            PruneOutcome::Busy
        );
        assert!(exists(h, old).await);
        tx.rollback().await.expect("rollback");
        assert!(matches!(
            h.store.prune(&Retention::DEFAULT, 10).await.expect("prune"),
            PruneOutcome::Deleted {
                pruned: Pruned { succeeded: 1, .. },
                ..
            }
        ));
        other.close().await.expect("close");
    }
}

async fn stats_count_only_jobs_in_play(h: &Harness) {
    // A queue with nothing in play is not listed; dead jobs are counted.
    finished_job(h, "done", None, true).await;
    let dead = finished_job(h, "q", None, false).await;
    enqueue(h, new_job("q")).await;
    let stats = h.store.stats().await.expect("stats");
    assert_eq!(
        stats.iter().map(|s| s.queue.as_str()).collect::<Vec<_>>(),
        vec!["q"]
    );
    assert_eq!((stats[0].queued, stats[0].dead), (1, 1), "{:?}", stats[0]);
    let _ = dead;

    // The count reads the state index's ranges, not the table; a prune
    // batch walks `jobs_finished` in order (no sort of the history).
    let plan = explain(
        h,
        "SELECT queue, count(*) FROM {s}jobs
         WHERE state IN ('queued', 'failed', 'running', 'dead') GROUP BY queue",
    )
    .await;
    assert!(
        plan.contains("jobs_state_queue_priority_run_at_id"),
        "{plan}"
    );
    let plan = explain(
        h,
        "SELECT id FROM {s}jobs WHERE state = 'succeeded' AND finished_at < 5
         ORDER BY finished_at LIMIT 1000",
    )
    .await;
    assert!(
        plan.contains("jobs_finished") && !plan.contains("TEMP B-TREE") && !plan.contains("Sort"),
        "{plan}"
    );
}

/// The query plan of `template` (`{s}`: the schema prefix). PostgreSQL:
/// with sequential scans off, as a large table would plan it.
async fn explain(h: &Harness, template: &str) -> String {
    match h.backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&h.url)
                .await
                .expect("sqlite connection");
            let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(AssertSqlSafe(format!(
                "EXPLAIN QUERY PLAN {}",
                template.replace("{s}", "")
            )))
            .fetch_all(&mut conn)
            .await
            .expect("explain");
            conn.close().await.expect("close");
            rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&h.url)
                .await
                .expect("pg connection");
            let mut tx = conn.begin().await.expect("begin");
            sqlx::query("SET LOCAL enable_seqscan = off")
                .execute(&mut *tx)
                .await
                .expect("set");
            let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                "EXPLAIN {}",
                template.replace("{s}", &format!("{}.", h.schema()))
            )))
            .fetch_all(&mut *tx)
            .await
            .expect("explain");
            tx.rollback().await.expect("rollback");
            rows.join("\n")
        }
    }
}

async fn enqueue_get_list_stats(h: &Harness) {
    let before = now_ms();
    let a = enqueue(h, new_job("mail")).await;
    let b = enqueue(
        h,
        NewJob {
            priority: 3,
            max_attempts: Some(5),
            ..NewJob::new("mail", "mail.send", json!({"to": "a@b.c", "tags": [1, 2]}))
        },
    )
    .await;
    let later = enqueue(
        h,
        NewJob {
            run_at: Some(now_ms() + 60_000),
            ..new_job("mail")
        },
    )
    .await;
    let sms = enqueue(h, new_job("sms")).await;
    assert!(a < b && b < later && later < sms, "ids grow");

    let job = get(h, b).await;
    assert_eq!(job.queue, "mail");
    assert_eq!(job.kind, "mail.send");
    assert_eq!(job.payload, json!({"to": "a@b.c", "tags": [1, 2]}));
    assert_eq!((job.priority, job.attempt, job.max_attempts), (3, 0, 5));
    assert_eq!(job.state, JobState::Queued);
    assert_eq!((job.crashes, job.releases), (0, 0));
    assert!(
        job.lease_owner.is_none() && job.lease_token.is_none() && job.lease_expires_at.is_none()
    );
    assert!(job.last_error.is_none() && job.started_at.is_none() && job.finished_at.is_none());
    assert!((before - 5_000..=now_ms() + 5_000).contains(&job.created_at));
    assert!((before - 5_000..=now_ms() + 5_000).contains(&job.run_at));
    assert_eq!(get(h, a).await.max_attempts, 20, "default max_attempts");
    assert!(h.store.get(sms + 1000).await.expect("get").is_none());

    let all = h.store.list(ListFilter::default()).await.expect("list");
    assert_eq!(
        all.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![a, b, later, sms]
    );
    let mail = h
        .store
        .list(ListFilter {
            queue: Some("mail".into()),
            ..ListFilter::default()
        })
        .await
        .expect("list mail");
    assert_eq!(mail.len(), 3);
    let page = h
        .store
        .list(ListFilter {
            state: Some(JobState::Queued),
            limit: 2,
            after_id: Some(a),
            ..ListFilter::default()
        })
        .await
        .expect("page");
    assert_eq!(
        page.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![b, later]
    );
    // Newest first, the cursor going down.
    let newest = h
        .store
        .list(ListFilter {
            limit: 2,
            newest_first: true,
            ..ListFilter::default()
        })
        .await
        .expect("newest first");
    assert_eq!(
        newest.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![sms, later]
    );
    let older = h
        .store
        .list(ListFilter {
            state: Some(JobState::Queued),
            after_id: Some(later),
            newest_first: true,
            ..ListFilter::default()
        })
        .await
        .expect("next page down");
    assert_eq!(older.iter().map(|j| j.id).collect::<Vec<_>>(), vec![b, a]);
    // Without payloads: the same page, every other field, payload null.
    let light = h
        .store
        .list(ListFilter {
            with_payload: false,
            ..ListFilter::default()
        })
        .await
        .expect("list without payloads");
    assert_eq!(light.len(), all.len());
    for (l, full) in light.iter().zip(&all) {
        assert_eq!(l.payload, serde_json::Value::Null, "job {}", l.id);
        assert_eq!(
            (l.id, &l.kind, l.state, l.run_at),
            (full.id, &full.kind, full.state, full.run_at)
        );
    }
    assert_eq!(all[1].payload, json!({"to": "a@b.c", "tags": [1, 2]}));

    let (claimed, _token) = claim_one(h, "mail", OWNER, LEASE).await;
    assert_eq!(claimed, a, "priority 0 before priority 3");
    let running = h.store.running_jobs().await.expect("running");
    assert_eq!(running.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a]);
    assert_eq!(
        h.store
            .list(ListFilter {
                state: Some(JobState::Running),
                ..ListFilter::default()
            })
            .await
            .expect("list running")
            .len(),
        1
    );

    let stats = h.store.stats().await.expect("stats");
    assert_eq!(
        stats.iter().map(|s| s.queue.as_str()).collect::<Vec<_>>(),
        vec!["mail", "sms"]
    );
    let m = &stats[0];
    assert_eq!((m.queued, m.scheduled, m.running), (1, 1, 1), "{m:?}");
    assert_eq!((m.failed, m.dead), (0, 0), "{m:?}");
    assert!(m.oldest_queued_age_ms.is_some_and(|age| age >= 0), "{m:?}");
    assert_eq!((stats[1].queued, stats[1].running), (1, 0));

    let next = h.store.next_run_at("mail").await.expect("next_run_at");
    assert_eq!(next, Some(get(h, b).await.run_at), "earliest waiting job");
    assert_eq!(
        h.store.next_run_at("nothing").await.expect("next_run_at"),
        None
    );
}

async fn idempotency_key_returns_the_existing_job(h: &Harness) {
    let keyed = |payload| NewJob {
        idempotency_key: Some("order-42".into()),
        ..NewJob::new("orders", "order.confirm", payload)
    };
    let first = h
        .store
        .enqueue(keyed(json!({"v": 1})))
        .await
        .expect("first");
    assert!(first.created);
    let again = h
        .store
        .enqueue(keyed(json!({"v": 2})))
        .await
        .expect("again");
    assert_eq!(again.id, first.id);
    assert!(!again.created);
    assert_eq!(
        get(h, first.id).await.payload,
        json!({"v": 1}),
        "the first one wins"
    );
    assert_eq!(
        get(h, first.id).await.idempotency_key.as_deref(),
        Some("order-42")
    );

    // Without a key, or with another key: new jobs.
    let other = h
        .store
        .enqueue(NewJob {
            idempotency_key: Some("order-43".into()),
            ..new_job("orders")
        })
        .await
        .expect("other key");
    assert!(other.created && other.id != first.id);
    assert!(
        h.store
            .enqueue(new_job("orders"))
            .await
            .expect("no key")
            .created
    );
    assert!(
        h.store
            .enqueue(new_job("orders"))
            .await
            .expect("no key")
            .created
    );

    // Racing enqueues of one key: one job, one `created`.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .enqueue(NewJob {
                    idempotency_key: Some("race".into()),
                    ..new_job("orders")
                })
                .await
                .expect("racing enqueue")
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    let ids: HashSet<i64> = results.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    assert_eq!(
        results.iter().filter(|r| r.created).count(),
        1,
        "{results:?}"
    );
    let all = h.store.list(ListFilter::default()).await.expect("list");
    assert_eq!(all.len(), 5);
}

async fn claim_follows_priority_then_run_at_then_id(h: &Harness) {
    let now = now_ms();
    let at = |priority, run_at| NewJob {
        priority,
        run_at: Some(run_at),
        ..new_job("q")
    };
    let low = enqueue(h, at(5, now - 30_000)).await;
    let newer = enqueue(h, at(0, now - 10_000)).await;
    let older = enqueue(h, at(0, now - 20_000)).await;
    let tie_1 = enqueue(h, at(1, now - 5_000)).await;
    let tie_2 = enqueue(h, at(1, now - 5_000)).await;
    let future = enqueue(h, at(-10, now + 60_000)).await;
    let elsewhere = enqueue(
        h,
        NewJob {
            queue: "other".into(),
            ..at(-10, now - 60_000)
        },
    )
    .await;
    let urgent = enqueue(h, at(-1, now - 1_000)).await;

    let claimed = h.store.claim("q", 10, OWNER, LEASE).await.expect("claim");
    let ids: Vec<i64> = claimed.iter().map(|c| c.job.id).collect();
    assert_eq!(ids, vec![urgent, older, newer, tie_1, tie_2, low]);
    assert!(!ids.contains(&future) && !ids.contains(&elsewhere));

    let tokens: HashSet<&str> = claimed.iter().map(|c| c.token.as_str()).collect();
    assert_eq!(tokens.len(), claimed.len(), "a token per job");
    let before = now_ms();
    for c in &claimed {
        let job = &c.job;
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.attempt, 1);
        assert_eq!(job.lease_owner.as_deref(), Some(OWNER));
        assert_eq!(job.lease_token.as_deref(), Some(c.token.as_str()));
        assert!(
            job.lease_expires_at.is_some_and(|t| t > before + 50_000),
            "{job:?}"
        );
        assert!(job.started_at.is_some(), "a claim presumes delivery starts");
        // A UUID v4.
        let uuid = uuid::Uuid::parse_str(&c.token).expect("token is a UUID");
        assert_eq!(uuid.get_version_num(), 4, "{}", c.token);
        assert_eq!(
            get(h, job.id).await,
            *job,
            "the returned job is the stored one"
        );
    }
    assert!(
        h.store
            .claim("q", 10, OWNER, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );

    // A limit takes the first n.
    let a = enqueue(h, at(2, now - 1)).await;
    let b = enqueue(h, at(1, now - 1)).await;
    let claimed = h.store.claim("q", 1, OWNER, LEASE).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![b]
    );
    assert!(
        h.store
            .claim("q", 0, OWNER, LEASE)
            .await
            .expect("claim 0")
            .is_empty()
    );
    let claimed = h.store.claim("q", 5, OWNER, LEASE).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![a]
    );
}

async fn concurrent_claimers_get_each_job_exactly_once(h: &Harness) {
    const JOBS: usize = 500;
    const CLAIMERS: usize = 8;
    let mut enqueued = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        let job = NewJob {
            priority: (i % 3) as i32,
            ..new_job("bulk")
        };
        enqueued.push(enqueue(h, job).await);
    }
    // Half the claimers on a second, independent store: another process
    // (SQLite) or host (PostgreSQL).
    let other = h.open_again().await;
    let mut tasks = Vec::new();
    for i in 0..CLAIMERS {
        let store = if i % 2 == 0 {
            h.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            let owner = format!("node-{i}/boot");
            let mut got = Vec::new();
            loop {
                let claimed = store.claim("bulk", 7, &owner, LEASE).await.expect("claim");
                if claimed.is_empty() {
                    return got;
                }
                for c in claimed {
                    assert!(store.complete(c.job.id, &c.token).await.expect("complete"));
                    got.push((c.job.id, c.token));
                }
            }
        }));
    }
    let mut all = Vec::new();
    let mut per_claimer = Vec::new();
    for task in tasks {
        let got = task.await.expect("claimer");
        per_claimer.push(got.len());
        all.extend(got);
    }
    let ids: Vec<i64> = all.iter().map(|(id, _)| *id).collect();
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), JOBS, "claims per claimer: {per_claimer:?}");
    assert_eq!(unique.len(), JOBS, "a job was claimed twice");
    assert_eq!(unique, enqueued.iter().copied().collect::<HashSet<_>>());
    let tokens: HashSet<&String> = all.iter().map(|(_, token)| token).collect();
    assert_eq!(tokens.len(), JOBS, "tokens are unique");
    assert!(
        per_claimer.iter().filter(|n| **n > 0).count() > 1,
        "the claimers actually competed: {per_claimer:?}"
    );
    let succeeded = h
        .store
        .list(ListFilter {
            state: Some(JobState::Succeeded),
            limit: ListFilter::MAX_LIMIT,
            ..ListFilter::default()
        })
        .await
        .expect("list succeeded");
    assert_eq!(succeeded.len(), JOBS);
    let stats = h.store.stats().await.expect("stats");
    assert!(stats.iter().all(|s| s.running + s.queued == 0), "{stats:?}");
    other.close().await;
}

async fn stale_tokens_are_fenced_off(h: &Harness) {
    let id = enqueue(h, new_job("q")).await;
    let (_, stale) = claim_one(h, "q", "node-a/boot-1", Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(h.store.rescue_expired(5).await.expect("rescue"), vec![id]);
    let (_, fresh) = claim_one(h, "q", "node-b/boot-1", LEASE).await;
    assert_ne!(stale, fresh);
    let job = get(h, id).await;
    assert_eq!(
        (job.attempt, job.crashes),
        (1, 1),
        "the crashed attempt was given back"
    );

    // The first processor wakes up: every write it tries is a no-op.
    assert!(
        !h.store
            .heartbeat(id, &stale, LEASE)
            .await
            .expect("heartbeat")
    );
    assert!(!h.store.complete(id, &stale).await.expect("complete"));
    assert_eq!(
        h.store
            .fail(id, &stale, "late", now_ms())
            .await
            .expect("fail"),
        FailOutcome::LostLease
    );
    assert!(!h.store.snooze(id, &stale, now_ms()).await.expect("snooze"));
    assert!(
        !h.store
            .mark_started(id, &stale)
            .await
            .expect("mark started")
    );
    assert!(
        !h.store
            .mark_waiting(id, &stale)
            .await
            .expect("mark waiting")
    );
    assert_eq!(
        h.store
            .release(&[(id, stale.clone())], "shutdown")
            .await
            .expect("release")
            .len(),
        0
    );
    assert_eq!(get(h, id).await, job, "nothing changed");

    // The holder of the fresh token is unaffected.
    let expires = job.lease_expires_at.expect("leased");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        h.store
            .heartbeat(id, &fresh, Duration::from_secs(120))
            .await
            .expect("heartbeat")
    );
    assert!(get(h, id).await.lease_expires_at.expect("leased") > expires);
    assert!(h.store.complete(id, &fresh).await.expect("complete"));
    let done = get(h, id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert!(done.finished_at.is_some() && done.lease_token.is_none() && done.lease_owner.is_none());
    // A finished job's token is dead too.
    assert!(!h.store.complete(id, &fresh).await.expect("complete twice"));
    assert!(
        !h.store
            .heartbeat(id, &fresh, LEASE)
            .await
            .expect("heartbeat after")
    );
    assert!(
        !h.store
            .complete(id + 1000, &fresh)
            .await
            .expect("unknown job")
    );
}

/// One claim statement for many jobs: each gets a lease of its own, and
/// a token fences only its own job.
async fn a_batch_claim_gives_each_job_its_own_lease(h: &Harness) {
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(enqueue(h, new_job("q")).await);
    }
    let claimed = h.store.claim("q", 4, OWNER, LEASE).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        ids,
        "all four, in claim order"
    );
    let (a, b) = (&claimed[0], &claimed[1]);
    // Another job's token is no lease on this one.
    assert!(
        !h.store
            .heartbeat(a.job.id, &b.token, LEASE)
            .await
            .expect("heartbeat")
    );
    assert!(
        !h.store
            .complete(a.job.id, &b.token)
            .await
            .expect("complete")
    );
    assert!(
        h.store
            .complete_many(&[(a.job.id, b.token.clone()), (b.job.id, a.token.clone())])
            .await
            .expect("complete_many")
            .is_empty(),
        "crossed tokens write nothing"
    );
    assert_eq!(
        h.store
            .release(&[(a.job.id, b.token.clone())], "crossed")
            .await
            .expect("release")
            .len(),
        0
    );
    for c in &claimed {
        let job = get(h, c.job.id).await;
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.lease_token.as_deref(), Some(c.token.as_str()));
        assert!(
            h.store
                .heartbeat(c.job.id, &c.token, LEASE)
                .await
                .expect("heartbeat")
        );
    }
    // One job's lease lost (expired and rescued) leaves the others held.
    let short = enqueue(h, new_job("short")).await;
    let (_, short_token) = claim_one(h, "short", OWNER, Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        h.store.rescue_expired(5).await.expect("rescue"),
        vec![short]
    );
    assert!(
        !h.store
            .heartbeat(short, &short_token, LEASE)
            .await
            .expect("heartbeat")
    );
    for c in &claimed {
        assert_eq!(get(h, c.job.id).await.state, JobState::Running);
    }
}

/// A group commit of successful runs: one statement, each job fenced by
/// its own token. A stale token in the batch writes nothing; the others in
/// the same batch are written.
async fn a_batch_of_completions_is_fenced_job_by_job(h: &Harness) {
    assert!(
        h.store
            .complete_many(&[])
            .await
            .expect("empty batch")
            .is_empty()
    );
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(enqueue(h, new_job("q")).await);
    }
    let claimed = h.store.claim("q", 5, OWNER, LEASE).await.expect("claim");
    assert_eq!(claimed.len(), 5);
    let pair = |i: usize| (claimed[i].job.id, claimed[i].token.clone());
    // 0, 1: held, completed in the batch. 2: held, but the batch carries a
    // wrong token. 3: finished before the batch. 4: handed back before the
    // batch (queued again). ids[5]: never claimed.
    let (finished, finished_token) = pair(3);
    assert!(
        h.store
            .complete(finished, &finished_token)
            .await
            .expect("complete")
    );
    let finished_before = get(h, finished).await;
    let (released, released_token) = pair(4);
    assert_eq!(
        h.store
            .release(&[(released, released_token.clone())], "handed back")
            .await
            .expect("release"),
        vec![released]
    );
    let released_before = get(h, released).await;
    let wrong = (claimed[2].job.id, "stale-token".to_owned());
    let held_before = get(h, claimed[2].job.id).await;
    let never = (ids[5], "not-a-token".to_owned());
    let batch = vec![
        pair(0),
        wrong,
        pair(1),
        (finished, finished_token.clone()),
        (released, released_token.clone()),
        never,
        pair(0), // the same run twice: written once
        (i64::MAX, "unknown".to_owned()),
    ];
    let before = now_ms();
    let mut written = h.store.complete_many(&batch).await.expect("complete_many");
    written.sort_unstable();
    let mut expect = vec![claimed[0].job.id, claimed[1].job.id];
    expect.sort_unstable();
    assert_eq!(written, expect);
    for id in &expect {
        let job = get(h, *id).await;
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.attempt, 1);
        assert!(
            job.finished_at.is_some_and(|t| t >= before - 1_000),
            "{job:?}"
        );
        assert!(
            job.lease_owner.is_none()
                && job.lease_token.is_none()
                && job.lease_expires_at.is_none(),
            "{job:?}"
        );
    }
    assert_eq!(
        get(h, claimed[2].job.id).await,
        held_before,
        "a stale token writes nothing"
    );
    assert_eq!(get(h, finished).await, finished_before);
    assert_eq!(get(h, released).await, released_before);
    assert_eq!(get(h, ids[5]).await.state, JobState::Queued);
    // The batch's tokens are spent; the held job's own token still works.
    assert!(
        h.store
            .complete_many(&[pair(0), pair(1)])
            .await
            .expect("again")
            .is_empty()
    );
    assert_eq!(
        h.store
            .complete_many(&[pair(2)])
            .await
            .expect("the held one"),
        vec![claimed[2].job.id]
    );

    // A run rescued from a dead processor and claimed again elsewhere: the
    // old token in a batch does not finish the new run; the new one does.
    let id = enqueue(h, new_job("r")).await;
    let (_, stale) = claim_one(h, "r", "node-a/boot-1", Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(h.store.rescue_expired(5).await.expect("rescue"), vec![id]);
    let (_, fresh) = claim_one(h, "r", "node-b/boot-1", LEASE).await;
    let other = enqueue(h, new_job("r")).await;
    let (_, other_token) = claim_one(h, "r", "node-a/boot-1", LEASE).await;
    assert_eq!(
        h.store
            .complete_many(&[(id, stale), (other, other_token)])
            .await
            .expect("complete_many"),
        vec![other]
    );
    let job = get(h, id).await;
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.lease_token.as_deref(), Some(fresh.as_str()));
    assert_eq!(
        h.store
            .complete_many(&[(id, fresh)])
            .await
            .expect("complete_many"),
        vec![id]
    );
    let stats = h.store.stats().await.expect("stats");
    assert!(stats.iter().all(|s| s.running == 0), "{stats:?}");
}

/// The group commit's write that also claims for the slots it frees:
/// completions fenced job by job exactly as `complete_many`, and a claim
/// exactly as `claim` (order, fresh tokens, the lease, paused queues), in
/// one transaction.
async fn completions_and_the_next_claim_commit_together(h: &Harness) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(enqueue(h, new_job("q")).await);
    }
    let first = h.store.claim("q", 2, OWNER, LEASE).await.expect("claim");
    assert_eq!(
        first.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        ids[..2].to_vec()
    );
    let (a, b) = (&first[0], &first[1]);
    let b_before = get(h, b.job.id).await;
    let before = now_ms();
    let (done, claimed) = h
        .store
        .complete_and_claim(
            &[
                (a.job.id, a.token.clone()),
                (b.job.id, "stale-token".to_owned()),
            ],
            "q",
            2,
            OWNER,
            LEASE,
        )
        .await
        .expect("complete_and_claim");
    assert_eq!(done, vec![a.job.id], "fenced job by job");
    let job = get(h, a.job.id).await;
    assert_eq!(job.state, JobState::Succeeded);
    assert!(
        job.lease_token.is_none() && job.lease_owner.is_none(),
        "{job:?}"
    );
    assert_eq!(
        get(h, b.job.id).await,
        b_before,
        "a stale token writes nothing"
    );
    assert_eq!(
        claimed.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        ids[2..4].to_vec(),
        "claimed in claim order, no more than asked"
    );
    let mut tokens: Vec<&str> = vec![&a.token, &b.token];
    for c in &claimed {
        assert_running_first_attempt(h, c, before).await;
        assert!(
            !tokens.contains(&c.token.as_str()),
            "a fresh token per claim"
        );
        tokens.push(&c.token);
    }

    // Nothing to claim for: completions only. Nothing to complete: a claim.
    let (done, none) = h
        .store
        .complete_and_claim(&[(b.job.id, b.token.clone())], "q", 0, OWNER, LEASE)
        .await
        .expect("limit 0");
    assert_eq!((done, none.len()), (vec![b.job.id], 0));
    let (done, last) = h
        .store
        .complete_and_claim(&[], "q", 5, OWNER, LEASE)
        .await
        .expect("no completions");
    assert!(done.is_empty());
    assert_eq!(
        last.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![ids[4]]
    );

    // A paused queue is not claimed from; the completions still commit.
    let waiting = enqueue(h, new_job("q")).await;
    assert!(h.store.pause("q").await.expect("pause"));
    let (done, none) = h
        .store
        .complete_and_claim(
            &[(claimed[0].job.id, claimed[0].token.clone())],
            "q",
            3,
            OWNER,
            LEASE,
        )
        .await
        .expect("paused");
    assert_eq!((done, none.len()), (vec![claimed[0].job.id], 0));
    assert_eq!(get(h, waiting).await.state, JobState::Queued);

    // Bad input names its field and writes nothing.
    let held = (claimed[1].job.id, claimed[1].token.clone());
    assert_eq!(
        field_of(
            h.store
                .complete_and_claim(std::slice::from_ref(&held), "bad queue!", 1, OWNER, LEASE)
                .await
        )
        .0,
        "queue"
    );
    assert_eq!(get(h, held.0).await.state, JobState::Running);
    assert_eq!(
        h.store
            .complete_many(std::slice::from_ref(&held))
            .await
            .expect("the held one"),
        vec![held.0]
    );
}

/// The enqueue of a processor with a free slot: the job stored exactly as
/// `enqueue` stores it, and a claim of one job exactly as `claim` claims
/// (claim order, a fresh token, the lease, paused queues, `run_at`), in
/// one transaction.
async fn an_enqueue_claims_the_queues_next_job_in_its_commit(h: &Harness) {
    // Nothing ahead: the new job itself, running under a lease.
    let before = now_ms();
    let (first, claimed) = h
        .store
        .enqueue_and_claim(new_job("q"), OWNER, LEASE)
        .await
        .expect("enqueue_and_claim");
    assert!(first.created);
    let claimed = claimed.expect("the new job claimed");
    assert_eq!(claimed.job.id, first.id);
    assert_running_first_attempt(h, &claimed, before).await;

    // A job ahead in claim order is claimed instead; the new one waits.
    let ahead = enqueue(h, new_job("q")).await;
    let (second, claimed) = h
        .store
        .enqueue_and_claim(new_job("q"), OWNER, LEASE)
        .await
        .expect("behind another");
    assert_eq!(claimed.map(|c| c.job.id), Some(ahead));
    assert_eq!(get(h, second.id).await.state, JobState::Queued);
    // ... unless the new job's priority puts it first.
    let mut urgent = new_job("q");
    urgent.priority = -1;
    let (third, claimed) = h
        .store
        .enqueue_and_claim(urgent, OWNER, LEASE)
        .await
        .expect("urgent");
    assert_eq!(claimed.map(|c| c.job.id), Some(third.id));
    assert_ne!(
        claimed_token(h, third.id).await,
        claimed_token(h, ahead).await
    );

    // A failed job due for its retry is ahead of a new one too.
    let failed = enqueue(h, new_job("retrying")).await;
    let (id, token) = claim_one(h, "retrying", OWNER, LEASE).await;
    assert_eq!(id, failed);
    h.store
        .fail(id, &token, "boom", now_ms())
        .await
        .expect("fail with a retry due now");
    assert_eq!(get(h, failed).await.state, JobState::Failed);
    let (after_failed, claimed) = h
        .store
        .enqueue_and_claim(new_job("retrying"), OWNER, LEASE)
        .await
        .expect("behind a retry");
    assert_eq!(claimed.map(|c| c.job.id), Some(failed));
    assert_eq!(get(h, after_failed.id).await.state, JobState::Queued);

    // Only its own queue; nothing due, nothing claimed.
    let (other, claimed) = h
        .store
        .enqueue_and_claim(new_job("other"), OWNER, LEASE)
        .await
        .expect("other queue");
    assert_eq!(claimed.map(|c| c.job.id), Some(other.id));
    let mut later = new_job("later");
    later.run_at = Some(now_ms() + 60_000);
    let (later, claimed) = h
        .store
        .enqueue_and_claim(later, OWNER, LEASE)
        .await
        .expect("not due");
    assert!(claimed.is_none());
    assert_eq!(get(h, later.id).await.state, JobState::Queued);

    // A paused queue stores the job and claims nothing.
    assert!(h.store.pause("paused").await.expect("pause"));
    let (held, claimed) = h
        .store
        .enqueue_and_claim(new_job("paused"), OWNER, LEASE)
        .await
        .expect("paused");
    assert!(claimed.is_none());
    assert_eq!(get(h, held.id).await.state, JobState::Queued);

    // An idempotency key answers with the existing job.
    let mut keyed = new_job("keyed");
    keyed.idempotency_key = Some("k-1".to_owned());
    let (a, _) = h
        .store
        .enqueue_and_claim(keyed.clone(), OWNER, LEASE)
        .await
        .expect("keyed");
    let (b, claimed) = h
        .store
        .enqueue_and_claim(keyed, OWNER, LEASE)
        .await
        .expect("keyed again");
    assert_eq!((b.id, b.created, claimed.is_none()), (a.id, false, true));

    // Bad input names its field and stores nothing.
    let count = job_count(h).await;
    assert_eq!(
        field_of(
            h.store
                .enqueue_and_claim(new_job("bad queue!"), OWNER, LEASE)
                .await
        )
        .0,
        "queue"
    );
    assert_eq!(
        field_of(h.store.enqueue_and_claim(new_job("q"), "", LEASE).await).0,
        "owner"
    );
    assert_eq!(job_count(h).await, count);
}

/// The claimed job as the store holds it: running its first attempt for
/// `OWNER` under the claim's token, a lease of `LEASE` from a claim made
/// after `before`, and started.
async fn assert_running_first_attempt(h: &Harness, c: &curfew_store::Claimed, before: i64) {
    let job = get(h, c.job.id).await;
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.attempt, 1);
    assert_eq!(job.lease_owner.as_deref(), Some(OWNER));
    assert_eq!(job.lease_token.as_deref(), Some(c.token.as_str()));
    assert!(
        job.lease_expires_at
            .is_some_and(|t| t >= before + LEASE.as_millis() as i64 - 1_000),
        "{job:?}"
    );
    assert!(job.started_at.is_some(), "{job:?}");
}

/// How many jobs the store holds (up to a default page).
async fn job_count(h: &Harness) -> usize {
    h.store
        .list(ListFilter::default())
        .await
        .expect("list")
        .len()
}

async fn claimed_token(h: &Harness, id: i64) -> Option<String> {
    get(h, id).await.lease_token
}

async fn fail_retries_then_dies_at_max_attempts(h: &Harness) {
    // A failure with the real backoff: failed, not claimable for ~16 s.
    let id = enqueue(h, new_job("q")).await;
    let (_, token) = claim_one(h, "q", OWNER, LEASE).await;
    let now = now_ms();
    let retry_at = backoff::retry_at(1, now);
    assert!(retry_at >= now + 14_000 && retry_at <= now + 18_000);
    assert_eq!(
        h.store
            .fail(id, &token, "boom: connection reset", retry_at)
            .await
            .expect("fail"),
        FailOutcome::Retry { run_at: retry_at }
    );
    let job = get(h, id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!((job.run_at, job.attempt), (retry_at, 1));
    assert_eq!(job.last_error.as_deref(), Some("boom: connection reset"));
    assert!(job.lease_token.is_none() && job.finished_at.is_none());
    assert!(
        h.store
            .claim("q", 10, OWNER, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(
        h.store.next_run_at("q").await.expect("next"),
        Some(retry_at)
    );
    let stats = h.store.stats().await.expect("stats");
    assert_eq!(
        (stats[0].failed, stats[0].scheduled, stats[0].queued),
        (1, 1, 0)
    );

    // Once its retry time has come, a failed job is claimable again, with
    // the next attempt number; the last attempt's failure makes it dead.
    let id = enqueue(
        h,
        NewJob {
            max_attempts: Some(2),
            ..new_job("r")
        },
    )
    .await;
    let (_, token) = claim_one(h, "r", OWNER, LEASE).await;
    assert!(matches!(
        h.store
            .fail(id, &token, "first", now_ms() - 1)
            .await
            .expect("fail"),
        FailOutcome::Retry { .. }
    ));
    let (again, token) = claim_one(h, "r", OWNER, LEASE).await;
    assert_eq!(again, id);
    assert_eq!(get(h, id).await.attempt, 2);
    assert_eq!(
        h.store
            .fail(id, &token, "second", now_ms() + 60_000)
            .await
            .expect("fail"),
        FailOutcome::Dead
    );
    let job = get(h, id).await;
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.last_error.as_deref(), Some("second"));
    assert!(job.finished_at.is_some() && job.lease_owner.is_none());
    assert!(
        h.store
            .claim("r", 10, OWNER, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(
        h.store.next_run_at("r").await.expect("next"),
        None,
        "dead jobs never run"
    );

    // A long error is cut, not refused.
    let id = enqueue(h, new_job("s")).await;
    let (_, token) = claim_one(h, "s", OWNER, LEASE).await;
    let huge = "x".repeat(100_000);
    h.store
        .fail(id, &token, &huge, now_ms())
        .await
        .expect("fail with a huge error");
    let stored = get(h, id).await.last_error.expect("last_error");
    assert!(stored.len() < 17_000 && stored.ends_with("[truncated]"));
}

async fn snooze_gives_the_attempt_back(h: &Harness) {
    let id = enqueue(h, new_job("q")).await;
    let (_, token) = claim_one(h, "q", OWNER, LEASE).await;
    let later = now_ms() + 60_000;
    assert!(h.store.snooze(id, &token, later).await.expect("snooze"));
    let job = get(h, id).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!((job.attempt, job.run_at), (0, later));
    assert!(
        job.lease_token.is_none() && job.lease_owner.is_none() && job.lease_expires_at.is_none()
    );
    assert!(
        h.store
            .claim("q", 1, OWNER, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(
        !h.store
            .snooze(id, &token, now_ms())
            .await
            .expect("snooze with an old token")
    );

    // Snoozed into the past: claimable at once, still attempt 1.
    let other = enqueue(h, new_job("p")).await;
    let (_, token) = claim_one(h, "p", OWNER, LEASE).await;
    assert!(
        h.store
            .snooze(other, &token, now_ms() - 1)
            .await
            .expect("snooze")
    );
    let (again, _) = claim_one(h, "p", OWNER, LEASE).await;
    assert_eq!(again, other);
    assert_eq!(get(h, other).await.attempt, 1);
}

async fn release_hands_back_only_running_jobs_with_their_token(h: &Harness) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(enqueue(h, new_job("q")).await);
    }
    let claimed = h.store.claim("q", 3, OWNER, LEASE).await.expect("claim");
    assert_eq!(claimed.len(), 3);
    let pairs: Vec<(i64, String)> = claimed
        .iter()
        .map(|c| (c.job.id, c.token.clone()))
        .collect();
    let (finished, finished_token) = pairs[2].clone();
    assert!(
        h.store
            .complete(finished, &finished_token)
            .await
            .expect("complete")
    );
    let queued = ids[4];

    let mut handback = pairs.clone();
    handback.push((queued, "not-a-token".into())); // queued, never claimed
    handback.push((pairs[0].0, "stale-token".into())); // running, wrong token
    let released = h
        .store
        .release(&handback, "interrupted by shutdown")
        .await
        .expect("release");
    assert_eq!(released.len(), 2);
    for (id, _) in &pairs[..2] {
        let job = get(h, *id).await;
        assert_eq!(job.state, JobState::Queued);
        assert_eq!((job.attempt, job.releases, job.crashes), (0, 1, 0));
        assert_eq!(job.last_error.as_deref(), Some("interrupted by shutdown"));
        assert!(
            job.lease_owner.is_none()
                && job.lease_token.is_none()
                && job.lease_expires_at.is_none()
        );
    }
    assert_eq!(get(h, finished).await.state, JobState::Succeeded);
    let untouched = get(h, queued).await;
    assert_eq!((untouched.state, untouched.releases), (JobState::Queued, 0));
    assert!(untouched.last_error.is_none());
    assert_eq!(
        h.store
            .release(&[], "nothing")
            .await
            .expect("empty release")
            .len(),
        0
    );
    // Released again: the same tokens are spent.
    assert_eq!(
        h.store
            .release(&pairs, "again")
            .await
            .expect("release again")
            .len(),
        0
    );

    // Put back at the head of the line, attempt restored.
    let claimed = h.store.claim("q", 2, OWNER, LEASE).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![pairs[0].0, pairs[1].0]
    );
    assert!(
        claimed
            .iter()
            .all(|c| c.job.attempt == 1 && c.job.releases == 1)
    );
}

async fn rescue_expired_takes_jobs_whose_lease_ran_out(h: &Harness) {
    let short_a = enqueue(h, new_job("q")).await;
    let short_b = enqueue(h, new_job("other")).await;
    let long = enqueue(h, new_job("q")).await;
    let beating = enqueue(h, new_job("q")).await;
    let tiny = Duration::from_millis(1);
    claim_one(h, "q", "node-a/boot-1", tiny).await;
    claim_one(h, "other", "node-a/boot-1", tiny).await;
    claim_one(h, "q", "node-b/boot-1", LEASE).await;
    let (_, token) = claim_one(h, "q", "node-c/boot-1", tiny).await;
    // A heartbeat renews the lease in time.
    assert!(
        h.store
            .heartbeat(beating, &token, LEASE)
            .await
            .expect("heartbeat")
    );
    tokio::time::sleep(Duration::from_millis(20)).await;

    let mut rescued = h.store.rescue_expired(3).await.expect("rescue");
    rescued.sort_unstable();
    assert_eq!(rescued, vec![short_a, short_b]);
    for id in [short_a, short_b] {
        let job = get(h, id).await;
        assert_eq!(job.state, JobState::Queued);
        assert_eq!((job.attempt, job.crashes, job.releases), (0, 1, 0));
        let error = job.last_error.expect("last_error");
        assert!(
            error.contains("node-a/boot-1") && error.contains("expired"),
            "{error}"
        );
        assert!(job.lease_owner.is_none() && job.lease_token.is_none());
    }
    for id in [long, beating] {
        assert_eq!(get(h, id).await.state, JobState::Running);
    }
    assert!(
        h.store
            .rescue_expired(3)
            .await
            .expect("rescue again")
            .is_empty()
    );
    let (again, _) = claim_one(h, "q", "node-d/boot-1", LEASE).await;
    assert_eq!(again, short_a, "a rescued job is claimable at once");
}

async fn crash_cap_parks_the_job_as_dead(h: &Harness) {
    let id = enqueue(h, new_job("poison")).await;
    for crash in 1..=3 {
        claim_one(
            h,
            "poison",
            &format!("node/boot-{crash}"),
            Duration::from_millis(1),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(h.store.rescue_expired(2).await.expect("rescue"), vec![id]);
        let job = get(h, id).await;
        assert_eq!(job.crashes, crash);
        assert_eq!(job.attempt, 0, "crashes do not spend attempts");
        if crash <= 2 {
            assert_eq!(job.state, JobState::Queued);
        } else {
            assert_eq!(job.state, JobState::Dead);
            assert_eq!(
                job.last_error.as_deref(),
                Some("interrupted by processor crashes 3 times")
            );
            assert!(job.finished_at.is_some());
        }
    }
    assert!(
        h.store
            .claim("poison", 1, OWNER, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
    // max_crashes 0: the first crash parks it.
    let id = enqueue(h, new_job("fragile")).await;
    claim_one(h, "fragile", "node/boot", Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(h.store.rescue_expired(0).await.expect("rescue"), vec![id]);
    assert_eq!(get(h, id).await.state, JobState::Dead);
}

async fn a_job_claimed_but_never_delivered_is_not_charged_a_crash(h: &Harness) {
    let waiting = enqueue(h, new_job("q")).await;
    let delivered = enqueue(h, new_job("q")).await;
    let max_crashes = 2;
    // Both claimed by each boot. `waiting` is marked as waiting for a
    // worker; `delivered` waited too but got one. Well past max_crashes
    // processor deaths, the waiting job is never charged.
    for boot in 1..=5 {
        let owner = format!("node/boot-{boot}");
        let claimed = h.store.claim("q", 10, &owner, LEASE).await.expect("claim");
        let tokens: HashMap<i64, String> =
            claimed.into_iter().map(|c| (c.job.id, c.token)).collect();
        assert!(tokens.contains_key(&waiting), "boot {boot}: {tokens:?}");
        for (id, token) in &tokens {
            assert!(get(h, *id).await.started_at.is_some(), "claimed: started");
            assert!(
                h.store
                    .mark_waiting(*id, token)
                    .await
                    .expect("mark waiting")
            );
            assert_eq!(get(h, *id).await.started_at, None);
        }
        if let Some(token) = tokens.get(&delivered) {
            assert!(h.store.mark_started(delivered, token).await.expect("mark"));
            assert!(get(h, delivered).await.started_at.is_some());
        }
        let next = format!("boot-{}", boot + 1);
        let mut rescued = h
            .store
            .reclaim_own_previous("node", &next, max_crashes)
            .await
            .expect("reclaim");
        rescued.sort_unstable();
        let mut expected = tokens.keys().copied().collect::<Vec<_>>();
        expected.sort_unstable();
        assert_eq!(rescued, expected, "boot {boot}");

        let job = get(h, waiting).await;
        assert_eq!(job.state, JobState::Queued, "boot {boot}");
        assert_eq!((job.attempt, job.crashes), (0, 0), "boot {boot}");
        let error = job.last_error.expect("last_error");
        assert!(
            error.contains(&owner) && error.contains("before delivering"),
            "{error}"
        );
        let job = get(h, delivered).await;
        let charged = boot.min(max_crashes + 1);
        assert_eq!(job.crashes, charged, "boot {boot}");
        assert_eq!(
            job.state,
            if boot <= max_crashes {
                JobState::Queued
            } else {
                JobState::Dead
            },
            "boot {boot}"
        );
    }
    // Marks on a lost run change nothing.
    let (id, token) = claim_one(h, "q", "node/boot-9", LEASE).await;
    assert_eq!(id, waiting);
    h.store
        .reclaim_own_previous("node", "boot-10", max_crashes)
        .await
        .expect("reclaim");
    let before = get(h, id).await;
    assert!(!h.store.mark_waiting(id, &token).await.expect("mark"));
    assert!(!h.store.mark_started(id, &token).await.expect("mark"));
    assert_eq!(get(h, id).await, before);
}

async fn reclaim_own_previous_touches_only_this_nodes_other_boots(h: &Harness) {
    let mut by_owner = Vec::new();
    for owner in [
        "web-1/boot-a",
        "web-1/boot-b",
        "web-10/boot-a",
        "web-2/boot-a",
        "web-1/boot-c",
    ] {
        let id = enqueue(h, new_job("q")).await;
        let (claimed, _) = claim_one(h, "q", owner, LEASE).await;
        assert_eq!(claimed, id);
        by_owner.push((owner, id));
    }
    let mut reclaimed = h
        .store
        .reclaim_own_previous("web-1", "boot-b", 5)
        .await
        .expect("reclaim");
    reclaimed.sort_unstable();
    assert_eq!(
        reclaimed,
        vec![by_owner[0].1, by_owner[4].1],
        "web-1's boots a and c"
    );
    for (owner, id) in &by_owner {
        let job = get(h, *id).await;
        if *owner == "web-1/boot-a" || *owner == "web-1/boot-c" {
            assert_eq!(job.state, JobState::Queued, "{owner}");
            assert_eq!((job.attempt, job.crashes), (0, 1), "{owner}");
            let error = job.last_error.expect("last_error");
            assert!(
                error.contains(owner) && error.contains("restarted"),
                "{error}"
            );
        } else {
            assert_eq!(job.state, JobState::Running, "{owner}");
        }
    }
    assert!(
        h.store
            .reclaim_own_previous("web-1", "boot-b", 5)
            .await
            .expect("again")
            .is_empty()
    );
    let (field, _) = field_of(h.store.reclaim_own_previous("web/1", "boot", 5).await);
    assert_eq!(field, "node");
    let (field, _) = field_of(h.store.reclaim_own_previous("web-1", "", 5).await);
    assert_eq!(field, "boot");
}

/// An upgrade's new curfew (boot c) starts while its predecessor (boot b)
/// still runs jobs: b's runs are left to b (and, in a chain of upgrades, a
///'s to a); only the boot named in no live list (d, dead) is reclaimed.
async fn reclaim_leaves_the_runs_of_live_predecessors(h: &Harness) {
    let mut by_owner = Vec::new();
    for owner in ["n/boot-a", "n/boot-b", "n/boot-d"] {
        let id = enqueue(h, new_job("q")).await;
        let (claimed, token) = claim_one(h, "q", owner, LEASE).await;
        assert_eq!(claimed, id);
        by_owner.push((owner, id, token));
    }
    let live = vec!["n/boot-b".to_owned(), "n/boot-a".to_owned()];
    let reclaimed = h
        .store
        .reclaim_own_previous_except("n", "boot-c", &live, 5)
        .await
        .expect("reclaim");
    assert_eq!(reclaimed, vec![by_owner[2].1], "only the dead boot d");
    for (owner, id, token) in &by_owner[..2] {
        let job = get(h, *id).await;
        assert_eq!(job.state, JobState::Running, "{owner}");
        assert_eq!(job.lease_owner.as_deref(), Some(*owner));
        // Its own processor still finishes it, fenced by its token.
        assert!(
            h.store.complete(*id, token).await.expect("complete"),
            "{owner}"
        );
    }
    let (field, _) = field_of(
        h.store
            .reclaim_own_previous_except("n", "boot-c", &[String::new()], 5)
            .await,
    );
    assert_eq!(field, "live");
}

async fn retry_cancel_delete_follow_the_state_rules(h: &Harness) {
    let missing = 987_654;
    for result in [
        h.store.retry(missing).await,
        h.store.cancel(missing).await.map(|_| ()),
        h.store.delete(missing).await,
    ] {
        assert!(
            matches!(result, Err(StoreError::NotFound { id }) if id == missing),
            "{result:?}"
        );
    }

    // Queued: cancel yes, retry no.
    let queued = enqueue(h, new_job("q")).await;
    let message = assert_wrong_state(h.store.retry(queued).await, JobState::Queued);
    assert!(
        message.contains(&format!("job {queued}")) && message.contains("queued"),
        "{message}"
    );
    assert_eq!(
        h.store.cancel(queued).await.expect("cancel queued"),
        curfew_store::CancelOutcome::Cancelled
    );
    let job = get(h, queued).await;
    assert_eq!(job.state, JobState::Cancelled);
    assert!(job.finished_at.is_some());
    assert_wrong_state(h.store.cancel(queued).await, JobState::Cancelled);
    assert!(
        h.store
            .claim("q", 10, OWNER, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
    // Cancelled → retry → queued and claimable.
    h.store.retry(queued).await.expect("retry cancelled");
    let job = get(h, queued).await;
    assert_eq!(
        (job.state, job.attempt, job.finished_at),
        (JobState::Queued, 0, None)
    );

    // Running: not deleted or retried; a cancel is only requested (see
    // `cancel_unique::a_running_job_is_cancelled_through_its_processor`),
    // and a success wins over it.
    let (running, token) = claim_one(h, "q", OWNER, LEASE).await;
    assert_wrong_state(h.store.delete(running).await, JobState::Running);
    assert_wrong_state(h.store.retry(running).await, JobState::Running);
    assert_eq!(get(h, running).await.state, JobState::Running);

    // Succeeded: not retried; deletable.
    assert!(h.store.complete(running, &token).await.expect("complete"));
    assert_wrong_state(h.store.retry(running).await, JobState::Succeeded);
    assert_wrong_state(h.store.cancel(running).await, JobState::Succeeded);
    h.store.delete(running).await.expect("delete succeeded");
    assert!(h.store.get(running).await.expect("get").is_none());
    assert!(matches!(
        h.store.delete(running).await,
        Err(StoreError::NotFound { .. })
    ));

    // Dead: retry gives it a clean slate.
    let dead = enqueue(
        h,
        NewJob {
            max_attempts: Some(1),
            ..new_job("d")
        },
    )
    .await;
    let (_, token) = claim_one(h, "d", OWNER, LEASE).await;
    assert_eq!(
        h.store
            .fail(dead, &token, "x", now_ms())
            .await
            .expect("fail"),
        FailOutcome::Dead
    );
    h.store.retry(dead).await.expect("retry dead");
    let job = get(h, dead).await;
    assert_eq!(
        (job.state, job.attempt, job.crashes),
        (JobState::Queued, 0, 0)
    );
    assert!(job.finished_at.is_none());
    let (again, _) = claim_one(h, "d", OWNER, LEASE).await;
    assert_eq!(again, dead);

    // Failed (waiting for a retry): cancel and retry both allowed.
    let failed = enqueue(h, new_job("f")).await;
    let (_, token) = claim_one(h, "f", OWNER, LEASE).await;
    h.store
        .fail(failed, &token, "x", now_ms() + 60_000)
        .await
        .expect("fail");
    h.store.retry(failed).await.expect("retry failed now");
    let job = get(h, failed).await;
    assert!(job.state == JobState::Queued && job.run_at <= now_ms() + 1_000);
    let (_, token) = claim_one(h, "f", OWNER, LEASE).await;
    h.store
        .fail(failed, &token, "x", now_ms() + 60_000)
        .await
        .expect("fail");
    h.store.cancel(failed).await.expect("cancel failed");
    assert_eq!(get(h, failed).await.state, JobState::Cancelled);
}

async fn invalid_input_names_the_field(h: &Harness) {
    let cases: Vec<(NewJob, &str)> = vec![
        (new_job(""), "queue"),
        (new_job("has space"), "queue"),
        (new_job(&"q".repeat(201)), "queue"),
        (new_job("q/1"), "queue"),
        (NewJob::new("q", "", json!({})), "kind"),
        (NewJob::new("q", "kind;drop", json!({})), "kind"),
        (
            NewJob {
                max_attempts: Some(0),
                ..new_job("q")
            },
            "max_attempts",
        ),
        (
            NewJob {
                idempotency_key: Some(String::new()),
                ..new_job("q")
            },
            "idempotency_key",
        ),
        (NewJob::new("q", "k", json!({"s": "nul\u{0}"})), "payload"),
    ];
    for (job, expected) in cases {
        let (field, message) = field_of(h.store.enqueue(job.clone()).await);
        assert_eq!(field, expected, "{job:?}");
        assert!(
            message.starts_with(&format!("invalid {expected}: ")),
            "{message}"
        );
    }
    assert!(
        h.store.enqueue(new_job(&"q".repeat(200))).await.is_ok(),
        "200 characters is fine"
    );
    assert!(h.store.enqueue(new_job("a-Z_0.9:x")).await.is_ok());

    assert_eq!(
        field_of(h.store.claim("bad queue", 1, OWNER, LEASE).await).0,
        "queue"
    );
    assert_eq!(field_of(h.store.claim("q", 1, "", LEASE).await).0, "owner");
    assert_eq!(
        field_of(h.store.claim("q", 1, OWNER, Duration::ZERO).await).0,
        "lease"
    );
    assert_eq!(
        field_of(h.store.heartbeat(1, "t", Duration::from_micros(10)).await).0,
        "lease"
    );
    assert_eq!(
        field_of(
            h.store
                .list(ListFilter {
                    limit: 0,
                    ..ListFilter::default()
                })
                .await
        )
        .0,
        "limit"
    );
    assert_eq!(
        field_of(
            h.store
                .list(ListFilter {
                    queue: Some("x y".into()),
                    ..ListFilter::default()
                })
                .await
        )
        .0,
        "queue"
    );
    assert_eq!(field_of(h.store.next_run_at("").await).0, "queue");
    assert_eq!(field_of(h.store.rescue_expired(-1).await).0, "max_crashes");
    // Nothing invalid got in.
    assert_eq!(job_count(h).await, 2);
}

async fn payload_limit_is_enforced(h: &Harness) {
    let small = h
        .open_again_with(StoreOptions {
            max_payload_bytes: 64,
            ..h.options.clone()
        })
        .await;
    let fits = json!({"text": "x".repeat(40)});
    assert!(serde_json::to_string(&fits).expect("json").len() <= 64);
    small
        .enqueue(NewJob::new("q", "k", fits))
        .await
        .expect("fits");
    let too_big = json!({"text": "x".repeat(100)});
    match small.enqueue(NewJob::new("q", "k", too_big)).await {
        Err(e @ StoreError::PayloadTooLarge { size, limit: 64 }) => {
            assert!(size > 64);
            let message = e.to_string();
            assert!(
                message.contains("payload") && message.contains("64"),
                "{message}"
            );
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    // The default limit is 1 MiB.
    let big = json!({"text": "x".repeat(1024 * 1024)});
    assert!(matches!(
        h.store.enqueue(NewJob::new("q", "k", big)).await,
        Err(StoreError::PayloadTooLarge {
            limit: 1_048_576,
            ..
        })
    ));
    let under = json!({"text": "x".repeat(1000 * 1000)});
    let id = enqueue(h, NewJob::new("q", "k", under.clone())).await;
    assert_eq!(get(h, id).await.payload, under);
    small.close().await;
}

async fn listen_wakes_on_enqueue(h: &Harness) {
    let mut listener = h.store.listen().await.expect("listen");
    let queue = format!("wake-{}", random_suffix());
    enqueue(h, new_job(&queue)).await;
    expect_wakeup(&mut listener, &queue).await;
    // A release wakes the queue too: another instance can take the job.
    let (id, token) = claim_one(h, &queue, OWNER, LEASE).await;
    assert_eq!(
        h.store
            .release(&[(id, token)], "shutdown")
            .await
            .expect("release")
            .len(),
        1
    );
    expect_wakeup(&mut listener, &queue).await;
}

async fn an_enqueue_that_claims_its_own_job_wakes_no_one(h: &Harness) {
    let mut listener = h.store.listen().await.expect("listen");
    let queue = format!("own-{}", random_suffix());
    // Taken by its own enqueue: nobody else has anything to claim.
    let (own, claimed) = h
        .store
        .enqueue_and_claim(new_job(&queue), OWNER, LEASE)
        .await
        .expect("enqueue_and_claim");
    assert_eq!(claimed.map(|c| c.job.id), Some(own.id));
    assert!(
        !woken_before_a_marker(h, &mut listener, &queue).await,
        "a job its own enqueue claimed woke the queue"
    );
    // A job ahead is claimed instead: the new one waits, and the queue is
    // woken for it.
    let ahead = enqueue(h, new_job(&queue)).await;
    expect_wakeup(&mut listener, &queue).await;
    let (behind, claimed) = h
        .store
        .enqueue_and_claim(new_job(&queue), OWNER, LEASE)
        .await
        .expect("behind another");
    assert_eq!(claimed.map(|c| c.job.id), Some(ahead));
    assert_eq!(get(h, behind.id).await.state, JobState::Queued);
    assert!(
        woken_before_a_marker(h, &mut listener, &queue).await,
        "the job left queued did not wake its queue"
    );
}

/// Whether a wake-up of `queue` arrives before that of a job enqueued now
/// in a queue of its own (wake-ups arrive in commit order, so this needs
/// no timeout to tell that none came).
async fn woken_before_a_marker(
    h: &Harness,
    listener: &mut curfew_store::JobListener,
    queue: &str,
) -> bool {
    let marker = format!("marker-{}", random_suffix());
    enqueue(h, new_job(&marker)).await;
    let mut woken = false;
    let wait = async {
        loop {
            let got = listener.recv().await.expect("recv");
            if got == marker {
                return;
            }
            woken |= got == queue;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| panic!("no wake-up for {marker}"));
    woken
}

/// Waits (at most 5 s) for a wake-up of `queue`, skipping others (the
/// PostgreSQL channel is shared by every test running at the same time).
async fn expect_wakeup(listener: &mut curfew_store::JobListener, queue: &str) {
    let wait = async {
        loop {
            if listener.recv().await.expect("recv") == queue {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| panic!("no wake-up for {queue}"));
}

/// Asserts that no wake-up of `queue` arrives within `within`.
async fn expect_no_wakeup(listener: &mut curfew_store::JobListener, queue: &str, within: Duration) {
    let wait = async {
        loop {
            if listener.recv().await.expect("recv") == queue {
                return;
            }
        }
    };
    assert!(
        tokio::time::timeout(within, wait).await.is_err(),
        "unexpected wake-up for {queue}"
    );
}

async fn concurrent_opens_migrate_once(h: &Harness) {
    let (url, options) = h.fresh_target();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (url, options) = (url.clone(), options.clone());
        tasks.push(tokio::spawn(async move {
            Store::open_with(&url, options).await
        }));
    }
    let mut stores = Vec::new();
    for task in tasks {
        stores.push(task.await.expect("task").expect("concurrent open"));
    }
    let id = stores[0].enqueue(new_job("q")).await.expect("enqueue").id;
    assert!(
        stores[3].get(id).await.expect("get").is_some(),
        "one database"
    );
    for store in stores {
        store.close().await;
    }
    // Reopening an up-to-date database is a no-op.
    Store::open_with(&url, options)
        .await
        .expect("reopen")
        .close()
        .await;
}

/// A rollback to an older curfew after a newer one migrated the store: the
/// open is refused with an error that says so and what to do, and the
/// schema is left as it is.
async fn a_store_a_newer_curfew_migrated_is_refused_by_name(h: &Harness) {
    // A migration from the future, as a newer curfew would have recorded it.
    exec_sql(
        h,
        "INSERT INTO {s}_sqlx_migrations (version, description, success, checksum, execution_time)
         SELECT 99990001, 'from a newer curfew', true, checksum, 1
         FROM {s}_sqlx_migrations WHERE version = 1",
    )
    .await;
    let err = Store::open_with(&h.url, h.options.clone())
        .await
        .map(|_| ())
        .expect_err("an older curfew opened a newer schema");
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::NewerSchema { applied: 99990001, known, .. } if known > 0 && known < 99990001),
        "{err:?}"
    );
    assert!(
        text.contains("migrated by a newer curfew")
            && text.contains("99990001")
            && text.contains("restore the store from a backup"),
        "{text}"
    );
    // Still usable by the curfew that opened it first.
    let id = enqueue(h, new_job("q")).await;
    assert_eq!(get(h, id).await.id, id);
}

// ---------------------------------------------------------------------------
// PostgreSQL only

/// A payload number beyond a 64-bit float, which curfew could never read
/// back, is refused by the SQL API with the field and the fix (migration
/// 0009); one just inside the range is stored and read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_sql_enqueue_refuses_a_payload_number_no_reader_holds() {
    run(
        Backend::Postgres,
        sql_enqueue_refuses_a_payload_number_no_reader_holds,
    )
    .await;
}

async fn sql_enqueue_refuses_a_payload_number_no_reader_holds(h: &Harness) {
    let schema = h.schema();
    let mut app = sqlx::PgConnection::connect(&h.url)
        .await
        .expect("app connection");
    let queue = format!("nums-{}", random_suffix());
    for payload in [r#"{"n": 1e400}"#, r#"{"a": [{"b": -2e308}]}"#, "1e999"] {
        let err = sqlx::query(AssertSqlSafe(format!(
            "SELECT {schema}.enqueue($1, 'k', $2::jsonb)"
        )))
        .bind(&queue)
        .bind(payload)
        .execute(&mut app)
        .await
        .expect_err(payload);
        let db = err.as_database_error().expect("a database error");
        assert_eq!(db.code().as_deref(), Some("22023"), "{payload}: {db}");
        assert!(db.message().contains("invalid payload"), "{db}");
    }
    let batch = sqlx::query(AssertSqlSafe(format!(
        "SELECT * FROM {schema}.enqueue_many($1::jsonb)"
    )))
    .bind(format!(
        r#"[{{"queue": "{queue}", "kind": "k", "payload": {{"n": 1}}}},
            {{"queue": "{queue}", "kind": "k", "payload": {{"n": 1e400}}}}]"#
    ))
    .execute(&mut app)
    .await
    .expect_err("a batch with one such payload is refused whole");
    let db = batch.as_database_error().expect("a database error");
    assert_eq!(db.code().as_deref(), Some("22023"), "{db}");
    assert!(db.message().contains("invalid payload"), "{db}");
    let none: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}.jobs WHERE queue = $1"
    )))
    .bind(&queue)
    .fetch_one(&mut app)
    .await
    .expect("count");
    assert_eq!(none, 0, "nothing of the refused writes stored");
    let id: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT {schema}.enqueue($1, 'k', '{{\"n\": 1e300, \"s\": \"1e400\"}}')"
    )))
    .bind(&queue)
    .fetch_one(&mut app)
    .await
    .expect("inside the range");
    assert_eq!(get(h, id).await.payload, json!({"n": 1e300, "s": "1e400"}));
    assert_eq!(get(h, id).await.state, JobState::Queued);
}

/// A claim that fails for a reason of the store's, not of one row's,
/// buries nothing (PostgreSQL: its column types can be changed by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_payload_column_of_another_type_buries_nothing() {
    run(
        Backend::Postgres,
        a_payload_column_of_another_type_buries_nothing,
    )
    .await;
}

/// `enqueue_and_claim_ms` (migration 0008) turns the NOTIFY of its own
/// enqueue off and puts the setting back: an enqueue after it in the same
/// transaction still wakes its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_an_enqueue_that_claims_leaves_later_enqueues_their_wakeup() {
    run(
        Backend::Postgres,
        an_enqueue_that_claims_leaves_later_enqueues_their_wakeup,
    )
    .await;
}

async fn an_enqueue_that_claims_leaves_later_enqueues_their_wakeup(h: &Harness) {
    {
        let schema = h.schema();
        let mut listener = h.store.listen().await.expect("listen");
        let mut app = sqlx::PgConnection::connect(&h.url)
            .await
            .expect("app connection");
        let (taken, later) = (
            format!("taken-{}", random_suffix()),
            format!("later-{}", random_suffix()),
        );
        let mut tx = app.begin().await.expect("begin");
        let (id, claimed): (i64, Option<i64>) = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT r.job_id, (r.claimed).id FROM {schema}.enqueue_and_claim_ms(
                     $1, 'k', '{{}}'::jsonb, 0, NULL, 20, NULL, NULL, NULL, NULL, 'app', 60000) AS r"
            )))
            .bind(&taken)
            .fetch_one(&mut *tx)
            .await
            .expect("enqueue_and_claim_ms");
        assert_eq!(claimed, Some(id), "the new job is the queue's next");
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {schema}.enqueue($1, 'k', '{{}}')"
        )))
        .bind(&later)
        .execute(&mut *tx)
        .await
        .expect("enqueue after it");
        tx.commit().await.expect("commit");
        expect_wakeup(&mut listener, &later).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_sql_enqueue_follows_the_applications_transaction() {
    run(
        Backend::Postgres,
        sql_enqueue_follows_the_applications_transaction,
    )
    .await;
}

async fn sql_enqueue_follows_the_applications_transaction(h: &Harness) {
    {
        let schema = h.schema();
        let mut listener = h.store.listen().await.expect("listen");
        let mut app = sqlx::PgConnection::connect(&h.url)
            .await
            .expect("app connection");
        let rolled_back = format!("rb-{}", random_suffix());
        let committed = format!("ok-{}", random_suffix());

        // Rolled back: no job, no wake-up.
        let mut tx = app.begin().await.expect("begin");
        let id: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT {schema}.enqueue($1, 'send_email', '{{\"to\":\"a@b.c\"}}')"
        )))
        .bind(&rolled_back)
        .fetch_one(&mut *tx)
        .await
        .expect("enqueue in a transaction");
        tx.rollback().await.expect("rollback");
        assert!(h.store.get(id).await.expect("get").is_none());
        expect_no_wakeup(&mut listener, &rolled_back, Duration::from_millis(300)).await;

        // Committed: the job exists, and the listener hears of it only then.
        let mut tx = app.begin().await.expect("begin");
        let id: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT {schema}.enqueue($1, 'send_email', '{{\"to\":\"a@b.c\"}}')"
        )))
        .bind(&committed)
        .fetch_one(&mut *tx)
        .await
        .expect("enqueue in a transaction");
        expect_no_wakeup(&mut listener, &committed, Duration::from_millis(200)).await;
        assert!(
            h.store.get(id).await.expect("get").is_none(),
            "invisible before commit"
        );
        tx.commit().await.expect("commit");
        expect_wakeup(&mut listener, &committed).await;
        let job = get(h, id).await;
        assert_eq!(job.queue, committed);
        assert_eq!(job.kind, "send_email");
        assert_eq!(job.payload, json!({"to": "a@b.c"}));
        assert_eq!(
            (job.priority, job.max_attempts, job.state),
            (0, 20, JobState::Queued)
        );
        assert!((job.run_at - now_ms()).abs() < 5_000);
        let (claimed, _) = claim_one(h, &committed, OWNER, LEASE).await;
        assert_eq!(claimed, id);

        // Named parameters, scheduling and idempotency through SQL.
        let enqueue_later = format!(
            "SELECT {schema}.enqueue('later', 'digest', '{{}}', priority => 2,
                 run_at => now() + interval '1 hour', idempotency_key => 'digest-1')"
        );
        let first: i64 = sqlx::query_scalar(AssertSqlSafe(enqueue_later.clone()))
            .fetch_one(&mut app)
            .await
            .expect("enqueue later");
        let second: i64 = sqlx::query_scalar(AssertSqlSafe(enqueue_later))
            .fetch_one(&mut app)
            .await
            .expect("enqueue later again");
        assert_eq!(first, second);
        let job = get(h, first).await;
        assert_eq!(job.priority, 2);
        assert!(
            (job.run_at - now_ms() - 3_600_000).abs() < 5_000,
            "{}",
            job.run_at
        );
        // The table's checks apply to SQL callers too: the name rule at
        // its edges, for the queue and the kind.
        let long = "a".repeat(200);
        let too_long = "a".repeat(201);
        for bad in ["bad queue", "", "é", "a\n", "a/b", too_long.as_str()] {
            for (queue, kind, constraint) in [
                (bad, "k", "jobs_queue_format"),
                ("q", bad, "jobs_kind_format"),
            ] {
                let err = sqlx::query(AssertSqlSafe(format!(
                    "SELECT {schema}.enqueue($1, $2, '{{}}')"
                )))
                .bind(queue)
                .bind(kind)
                .execute(&mut app)
                .await
                .expect_err(&format!("queue {queue:?}, kind {kind:?} refused"));
                assert!(err.to_string().contains(constraint), "{err}");
            }
        }
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {schema}.enqueue($1, $1, '{{}}')"
        )))
        .bind(format!("{}A-z_0.9:-", &long[..191]))
        .execute(&mut app)
        .await
        .expect("a name of 200 characters from the whole set is taken");
        app.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_sql_enqueue_many_is_one_statement_in_the_applications_transaction() {
    run(Backend::Postgres, sql_enqueue_many).await;
}

async fn sql_enqueue_many(h: &Harness) {
    let schema = h.schema();
    let mut app = sqlx::PgConnection::connect(&h.url)
        .await
        .expect("app connection");
    let call = format!(
        r#"SELECT job_id, created FROM {schema}.enqueue_many('[
            {{"queue": "mail", "kind": "send_email", "payload": {{"to": "a@b.c"}}}},
            {{"kind": "digest", "run_at": "2100-01-01T00:00:00Z", "idempotency_key": "d-1",
              "priority": 3, "max_attempts": 2}},
            {{"kind": "digest", "idempotency_key": "d-1"}}
        ]')"#
    );
    // Rolled back: nothing.
    let mut tx = app.begin().await.expect("begin");
    let rows: Vec<(i64, bool)> = sqlx::query_as(AssertSqlSafe(call.clone()))
        .fetch_all(&mut *tx)
        .await
        .expect("enqueue_many");
    tx.rollback().await.expect("rollback");
    assert!(h.store.get(rows[0].0).await.expect("get").is_none());
    // Committed.
    let rows: Vec<(i64, bool)> = sqlx::query_as(AssertSqlSafe(call))
        .fetch_all(&mut app)
        .await
        .expect("enqueue_many");
    assert_eq!(
        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![true, true, false]
    );
    assert_eq!(rows[2].0, rows[1].0);
    let mail = get(h, rows[0].0).await;
    assert_eq!(
        (mail.queue.as_str(), mail.kind.as_str()),
        ("mail", "send_email")
    );
    assert_eq!(mail.payload, json!({"to": "a@b.c"}));
    let digest = get(h, rows[1].0).await;
    assert_eq!(digest.queue, "default");
    assert_eq!((digest.priority, digest.max_attempts), (3, 2));
    assert_eq!(digest.run_at, 4_102_444_800_000);
    // A bad item fails the statement (and so the transaction): nothing.
    let before = h
        .store
        .list(ListFilter::default())
        .await
        .expect("list")
        .len();
    let bad = sqlx::query(AssertSqlSafe(format!(
        r#"SELECT * FROM {schema}.enqueue_many('[{{"kind": "ok"}}, {{"kind": "bad kind"}}]')"#
    )))
    .execute(&mut app)
    .await;
    assert!(bad.is_err());
    assert_eq!(job_count(h).await, before);
    app.close().await.expect("close");
}

#[tokio::test]
async fn open_errors_name_the_url() {
    let e = Store::open("mysql://u@h/db").await.expect_err("mysql");
    assert!(matches!(e, StoreError::InvalidUrl { .. }), "{e:?}");
    assert!(e.to_string().contains("mysql://u@h/db"), "{e}");

    let e = Store::open("sqlite:///no/such/dir/jobs.db")
        .await
        .expect_err("missing dir");
    assert!(e.to_string().contains("/no/such/dir"), "{e}");

    let e = Store::open_with(
        &pg_url(),
        StoreOptions {
            pg_schema: "Bad-Schema".into(),
            ..StoreOptions::default()
        },
    )
    .await
    .expect_err("bad schema");
    assert_eq!(field_of::<()>(Err(e)).0, "pg_schema");

    let e = Store::open_with(
        "postgres://curfew:hunter2@127.0.0.1:1/jobs",
        StoreOptions {
            acquire_timeout: Duration::from_secs(1),
            ..StoreOptions::default()
        },
    )
    .await
    .expect_err("nothing listens on port 1");
    assert!(e.is_retryable(), "{e:?}");
    let message = e.to_string();
    assert!(
        message.contains("postgres://curfew:***@127.0.0.1:1/jobs"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn a_new_sqlite_store_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("private.db");
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    store
        .enqueue(NewJob::new("default", "k", json!({"secret": 1})))
        .await
        .expect("enqueue");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "the database file");
    let wal = dir.path().join("private.db-wal");
    assert!(wal.exists(), "WAL mode");
    assert_eq!(
        mode(&wal),
        0o600,
        "the WAL file follows the database's mode"
    );
    store.close().await;
}

/// Commits never checkpoint (a checkpoint inside a commit made that write
/// wait milliseconds for the copy and its fsyncs); a task does, after a
/// run of writes and shortly after the last write of a quiet store: the
/// database file holds the jobs while the store is still open, and the WAL
/// stays bounded instead of growing with every write.
#[tokio::test]
async fn sqlite_checkpoints_run_beside_the_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ckpt.db");
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let empty = size(&path);
    let payload = json!({"pad": "x".repeat(2000)});
    for _ in 0..3_000 {
        store
            .enqueue(NewJob::new("default", "k", payload.clone()))
            .await
            .expect("enqueue");
    }
    let wal = dir.path().join("ckpt.db-wal");
    // 3,000 jobs of 2 KB grew the WAL past 100 MB while checkpoints ran
    // beside the writes but never let it be rewound.
    assert!(
        size(&wal) < 32 << 20,
        "WAL of {} bytes after 3,000 writes: checkpoints are not running",
        size(&wal)
    );
    // Within a second of the last write the rest is folded in too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while size(&path) < empty + (6 << 20) {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file is {} bytes with the store open: no checkpoint after the writes",
            size(&path)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    store.close().await;
}

#[tokio::test]
async fn a_plain_path_is_a_sqlite_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plain.db");
    let store = Store::open(path.to_str().expect("utf-8 path"))
        .await
        .expect("open");
    assert!(matches!(store, Store::Sqlite(_)));
    store.enqueue(new_job("q")).await.expect("enqueue");
    store.close().await;
    assert!(path.exists());
    let mode: String = {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connect");
        sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .expect("journal_mode")
    };
    assert_eq!(mode, "wal");
}

/// Four processors (stores) race for each of 15 instants of one schedule:
/// each instant becomes exactly one job; an instant at or before the
/// schedule's position changes nothing, also once its job was pruned.
async fn periodic_instants_are_enqueued_once_across_processors(h: &Harness) {
    use curfew_store::PeriodicOutcome;
    let mut stores = vec![h.store.clone()];
    for _ in 0..3 {
        stores.push(h.open_again().await);
    }
    assert!(h.store.periodic_start("tick", 1_000).await.expect("start"));
    assert!(
        !stores[1]
            .periodic_start("tick", 5_000)
            .await
            .expect("start"),
        "known already: its position is kept"
    );
    let job = |instant: i64| NewJob {
        run_at: Some(instant),
        ..new_job("periodic")
    };
    let mut ids = Vec::new();
    for n in 1..=15i64 {
        let instant = 1_000 + n * 1_000;
        let mut racers = tokio::task::JoinSet::new();
        for store in &stores {
            let store = store.clone();
            let job = job(instant);
            racers.spawn(async move { store.periodic_advance("tick", instant, Some(job)).await });
        }
        let outcomes: Vec<PeriodicOutcome> = racers
            .join_all()
            .await
            .into_iter()
            .map(|r| r.expect("advance"))
            .collect();
        let enqueued: Vec<i64> = outcomes
            .iter()
            .filter_map(|o| match o {
                PeriodicOutcome::Enqueued(id) => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(enqueued.len(), 1, "instant {instant}: {outcomes:?}");
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == PeriodicOutcome::AlreadyDone)
                .count(),
            3,
            "{outcomes:?}"
        );
        assert_eq!(get(h, enqueued[0]).await.run_at, instant);
        ids.push(enqueued[0]);
    }
    let states = stores[2].periodic_states().await.expect("states");
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].name, "tick");
    assert_eq!(states[0].last_instant, 16_000);
    assert_eq!(states[0].last_job_id, ids.last().copied());
    // Every job gone (as retention would do): an old instant is still done.
    for id in &ids {
        h.store.cancel(*id).await.expect("cancel");
        h.store.delete(*id).await.expect("delete");
    }
    for instant in [2_000, 16_000] {
        assert_eq!(
            h.store
                .periodic_advance("tick", instant, Some(job(instant)))
                .await
                .expect("advance"),
            PeriodicOutcome::AlreadyDone
        );
    }
    // Passing an instant over (catch_up = "none") moves without a job.
    assert_eq!(
        h.store
            .periodic_advance("tick", 20_000, None)
            .await
            .expect("pass"),
        PeriodicOutcome::Passed
    );
    let states = h.store.periodic_states().await.expect("states");
    assert_eq!(
        (states[0].last_instant, states[0].last_job_id),
        (20_000, None)
    );
    assert!(
        h.store
            .list(ListFilter::default())
            .await
            .expect("list")
            .is_empty()
    );
    // A schedule never started is created by its first advance.
    assert!(matches!(
        h.store
            .periodic_advance("other", 7_000, Some(job(7_000)))
            .await
            .expect("advance"),
        PeriodicOutcome::Enqueued(_)
    ));
    assert_eq!(
        field_of(h.store.periodic_start("bad name", 0).await).0,
        "schedule"
    );
    for s in stores.into_iter().skip(1) {
        s.close().await;
    }
}
