//! Conformance cases for cancelling a running job and for unique jobs
//! (issue 13, items 5 and 3), run on both backends by `conformance!`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use curfew_store::{
    CancelOutcome, FailOutcome, JobState, ListFilter, NewJob, Store, StoreError, Unique,
    UniqueScope, now_ms,
};
use sqlx::{AssertSqlSafe, Connection, Row};

use super::{Backend, Harness, LEASE, OWNER, claim_one, enqueue, exec_sql, explain, get, new_job};

fn unique(queue: &str, key: &str, scope: UniqueScope) -> NewJob {
    NewJob {
        unique: Some(Unique {
            key: key.to_owned(),
            scope,
        }),
        ..new_job(queue)
    }
}

/// Enqueues and returns (id, created).
async fn put(store: &Store, job: NewJob) -> (i64, bool) {
    let e = store.enqueue(job).await.expect("enqueue");
    (e.id, e.created)
}

pub async fn a_running_job_is_cancelled_through_its_processor(h: &Harness) {
    let id = enqueue(h, new_job("c")).await;
    let (claimed, token) = claim_one(h, "c", OWNER, LEASE).await;
    assert_eq!(claimed, id);
    assert!(
        h.store
            .cancel_requested(OWNER)
            .await
            .expect("poll")
            .is_empty()
    );

    assert_eq!(
        h.store.cancel(id).await.expect("cancel"),
        CancelOutcome::Requested
    );
    let job = get(h, id).await;
    assert_eq!(
        job.state,
        JobState::Running,
        "still running until its processor stops it"
    );
    let requested_at = job.cancel_requested_at.expect("cancel_requested_at set");
    // Asking again changes nothing (the first request's time is kept).
    assert_eq!(
        h.store.cancel(id).await.expect("cancel again"),
        CancelOutcome::Requested
    );
    assert_eq!(get(h, id).await.cancel_requested_at, Some(requested_at));

    // The owner learns of it, from any store sharing the database (another
    // curfew instance).
    assert_eq!(
        h.store.cancel_requested(OWNER).await.expect("poll"),
        vec![id]
    );
    let other = h.open_again().await;
    assert_eq!(other.cancel_requested(OWNER).await.expect("poll"), vec![id]);
    assert!(
        h.store
            .cancel_requested("node-b/boot-9")
            .await
            .expect("poll")
            .is_empty()
    );
    other.close().await;
    // The poll (every 500 ms per processor running jobs) reads the partial
    // index of pending requests, nothing else.
    let indexed_by = match h.backend {
        Backend::Sqlite => " INDEXED BY jobs_cancel_requested",
        Backend::Postgres => "",
    };
    let plan = explain(
        h,
        &format!(
            "SELECT id FROM {{s}}jobs{indexed_by}
         WHERE cancel_requested_at IS NOT NULL AND state = 'running' AND lease_owner = 'n/b'
         ORDER BY id"
        ),
    )
    .await;
    assert!(plan.contains("jobs_cancel_requested"), "{plan}");

    // Fenced like every verdict.
    assert!(
        !h.store
            .finish_cancelled(id, "stale-token")
            .await
            .expect("fenced")
    );
    assert!(h.store.finish_cancelled(id, &token).await.expect("finish"));
    let job = get(h, id).await;
    assert_eq!(
        (job.state, job.attempt, job.lease_owner.as_deref()),
        (JobState::Cancelled, 1, None)
    );
    assert!(job.finished_at.is_some());
    assert!(
        h.store
            .cancel_requested(OWNER)
            .await
            .expect("poll")
            .is_empty()
    );
    assert!(!h.store.finish_cancelled(id, &token).await.expect("once"));
    // Never retried by itself.
    assert!(
        h.store
            .claim("c", 10, OWNER, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );

    // A retry by hand starts clean: the old request does not stop it.
    h.store.retry(id).await.expect("retry");
    assert_eq!(get(h, id).await.cancel_requested_at, None);
    let (_, token) = claim_one(h, "c", OWNER, LEASE).await;
    assert!(
        h.store
            .cancel_requested(OWNER)
            .await
            .expect("poll")
            .is_empty()
    );
    // A success that comes before the processor acts wins.
    assert_eq!(
        h.store.cancel(id).await.expect("cancel"),
        CancelOutcome::Requested
    );
    assert!(h.store.complete(id, &token).await.expect("complete"));
    assert_eq!(get(h, id).await.state, JobState::Succeeded);
    let message = match h.store.cancel(id).await {
        Err(e @ StoreError::WrongState { .. }) => e.to_string(),
        other => panic!("expected WrongState, got {other:?}"),
    };
    assert!(
        message.contains("only queued, failed or running jobs can be cancelled"),
        "{message}"
    );
}

pub async fn every_end_of_a_run_with_a_cancel_request_is_cancelled(h: &Harness) {
    // fail: cancelled, not failed (no retry), whatever attempts are left.
    let failing = enqueue(h, new_job("f")).await;
    let (_, token) = claim_one(h, "f", OWNER, LEASE).await;
    h.store.cancel(failing).await.expect("cancel");
    assert_eq!(
        h.store
            .fail(failing, &token, "worker broke", now_ms() + 1_000)
            .await
            .expect("fail"),
        FailOutcome::Cancelled
    );
    let job = get(h, failing).await;
    assert_eq!((job.state, job.attempt), (JobState::Cancelled, 1));
    assert!(job.finished_at.is_some());

    // snooze.
    let snoozed = enqueue(h, new_job("s")).await;
    let (_, token) = claim_one(h, "s", OWNER, LEASE).await;
    h.store.cancel(snoozed).await.expect("cancel");
    assert!(
        h.store
            .snooze(snoozed, &token, now_ms())
            .await
            .expect("snooze")
    );
    assert_eq!(get(h, snoozed).await.state, JobState::Cancelled);

    // release (a graceful shutdown hands it back).
    let released = enqueue(h, new_job("r")).await;
    let (_, token) = claim_one(h, "r", OWNER, LEASE).await;
    h.store.cancel(released).await.expect("cancel");
    let ids = h
        .store
        .release(&[(released, token)], "shutdown")
        .await
        .expect("release");
    assert_eq!(ids, vec![released]);
    assert_eq!(get(h, released).await.state, JobState::Cancelled);

    // rescue: its processor died with the request pending.
    let rescued = enqueue(h, new_job("x")).await;
    claim_one(h, "x", OWNER, Duration::from_millis(1)).await;
    h.store.cancel(rescued).await.expect("cancel");
    tokio::time::sleep(Duration::from_millis(20)).await; // the 1 ms lease runs out
    let ids = h.store.rescue_expired(5).await.expect("rescue");
    assert_eq!(ids, vec![rescued]);
    let job = get(h, rescued).await;
    assert_eq!(job.state, JobState::Cancelled);
    assert!(job.finished_at.is_some());

    // reclaim by the next boot of the same node.
    let reclaimed = enqueue(h, new_job("y")).await;
    claim_one(h, "y", "node-a/boot-1", LEASE).await;
    h.store.cancel(reclaimed).await.expect("cancel");
    let ids = h
        .store
        .reclaim_own_previous("node-a", "boot-2", 5)
        .await
        .expect("reclaim");
    assert_eq!(ids, vec![reclaimed]);
    assert_eq!(get(h, reclaimed).await.state, JobState::Cancelled);

    // None of them is ever claimed again.
    for q in ["f", "s", "r", "x", "y"] {
        assert!(
            h.store
                .claim(q, 10, OWNER, LEASE)
                .await
                .expect("claim")
                .is_empty()
        );
    }
}

pub async fn unique_scopes_hold_the_key_while_documented(h: &Harness) {
    let s = &h.store;
    // queued: held until the claim.
    let (a, created) = put(s, unique("u", "k-queued", UniqueScope::Queued)).await;
    assert!(created);
    assert_eq!(
        put(s, unique("u", "k-queued", UniqueScope::Queued)).await,
        (a, false)
    );
    let job = get(h, a).await;
    assert_eq!(
        (
            job.unique_key.as_deref(),
            job.unique_scope.as_deref(),
            job.unique_until
        ),
        (Some("k-queued"), Some("queued"), None)
    );
    let (claimed, token) = claim_one(h, "u", OWNER, LEASE).await;
    assert_eq!(claimed, a);
    let (b, created) = put(s, unique("u", "k-queued", UniqueScope::Queued)).await;
    assert!(
        created && b != a,
        "a running job no longer holds a `queued` key"
    );
    // A's failed attempt waits for its retry without taking the key back
    // (and without a conflict on the unique index).
    assert_eq!(
        s.fail(a, &token, "x", now_ms() + 60_000)
            .await
            .expect("fail"),
        FailOutcome::Retry {
            run_at: get(h, a).await.run_at
        }
    );
    assert_eq!(
        put(s, unique("u", "k-queued", UniqueScope::Queued)).await,
        (b, false)
    );
    // Cancelling the holder frees the key.
    s.cancel(b).await.expect("cancel");
    let (c, created) = put(s, unique("u", "k-queued", UniqueScope::Queued)).await;
    assert!(created && c != b);

    // queued+running (the default): held through running and retries,
    // until the job finishes.
    let (d, _) = put(s, unique("v", "k-qr", UniqueScope::QueuedRunning)).await;
    let (_, token) = claim_one(h, "v", OWNER, LEASE).await;
    assert_eq!(
        put(s, unique("v", "k-qr", UniqueScope::QueuedRunning)).await,
        (d, false)
    );
    s.fail(d, &token, "x", now_ms()).await.expect("fail");
    assert_eq!(get(h, d).await.state, JobState::Failed);
    assert_eq!(
        put(s, unique("v", "k-qr", UniqueScope::QueuedRunning)).await,
        (d, false)
    );
    let (_, token) = claim_one(h, "v", OWNER, LEASE).await;
    // A release (shutdown) and a claim again keep it too.
    s.release(&[(d, token)], "shutdown").await.expect("release");
    assert_eq!(
        put(s, unique("v", "k-qr", UniqueScope::QueuedRunning)).await,
        (d, false)
    );
    let (_, token) = claim_one(h, "v", OWNER, LEASE).await;
    assert!(s.complete(d, &token).await.expect("complete"));
    let (e, created) = put(s, unique("v", "k-qr", UniqueScope::QueuedRunning)).await;
    assert!(created && e != d, "a finished job no longer holds its key");
    // A cancelled job retried by hand does not take its key back.
    s.cancel(e).await.expect("cancel");
    s.retry(e).await.expect("retry");
    assert_eq!(get(h, e).await.state, JobState::Queued);
    let (e2, created) = put(s, unique("v", "k-qr", UniqueScope::QueuedRunning)).await;
    assert!(created && e2 != e);
    assert_eq!(
        put(s, unique("v", "k-qr", UniqueScope::QueuedRunning)).await,
        (e2, false)
    );

    // A window: held from the enqueue for the window, finished or not.
    let hour = UniqueScope::Window(Duration::from_secs(3600));
    let before = now_ms();
    let (f, _) = put(s, unique("w", "k-window", hour)).await;
    let until = get(h, f).await.unique_until.expect("unique_until");
    assert!((before + 3_600_000..=now_ms() + 3_600_000).contains(&until));
    let (_, token) = claim_one(h, "w", OWNER, LEASE).await;
    assert!(s.complete(f, &token).await.expect("complete"));
    assert_eq!(put(s, unique("w", "k-window", hour)).await, (f, false));
    // The window is over (moved back rather than waited for): the next
    // enqueue starts a new one.
    exec_sql(
        h,
        &format!("UPDATE {{s}}jobs SET unique_until = unique_until - 3600001 WHERE id = {f}"),
    )
    .await;
    let (g, created) = put(s, unique("w", "k-window", hour)).await;
    assert!(created && g != f);
    assert_eq!(put(s, unique("w", "k-window", hour)).await, (g, false));
    // One key space: once a window is over, an enqueue of the key with
    // another scope takes it too (it got the old, finished job back).
    let (_, token) = claim_one(h, "w", OWNER, LEASE).await;
    assert!(s.complete(g, &token).await.expect("complete"));
    exec_sql(
        h,
        &format!("UPDATE {{s}}jobs SET unique_until = unique_until - 3600001 WHERE id = {g}"),
    )
    .await;
    for scope in [UniqueScope::Queued, UniqueScope::QueuedRunning] {
        let (n, created) = put(s, unique("w", "k-window", scope)).await;
        assert!(created && n != g, "a new job, not the finished {g}");
        s.delete(n).await.expect("delete");
    }

    // Bad input names the field.
    let long = "k".repeat(curfew_store::MAX_NAME_CHARS + 1);
    match s.enqueue(unique("u", &long, UniqueScope::Queued)).await {
        Err(StoreError::InvalidInput { field, .. }) => assert_eq!(field, "unique_key"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    match s
        .enqueue(unique("u", "k", UniqueScope::Window(Duration::ZERO)))
        .await
    {
        Err(StoreError::InvalidInput { field, .. }) => assert_eq!(field, "unique_scope"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

/// The issue's proof: 8 concurrent enqueuers (each its own store, as
/// separate processes or hosts would be) × 500 attempts on the same few
/// keys of each scope → exactly one job per key.
pub async fn concurrent_unique_enqueues_make_one_job_per_key_and_scope(h: &Harness) {
    const ENQUEUERS: usize = 8;
    const ATTEMPTS: usize = 500;
    let scopes = [
        ("queued", UniqueScope::Queued),
        ("queued+running", UniqueScope::QueuedRunning),
        ("window", UniqueScope::Window(Duration::from_secs(600))),
    ];
    let keys: Vec<(String, UniqueScope)> = scopes
        .iter()
        .flat_map(|(name, scope)| (0..3).map(move |i| (format!("{name}-{i}"), *scope)))
        .collect();
    let mut tasks = Vec::new();
    for e in 0..ENQUEUERS {
        let store = h.open_again().await;
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen: Vec<(String, i64, bool)> = Vec::with_capacity(ATTEMPTS);
            for a in 0..ATTEMPTS {
                let (key, scope) = &keys[(a + e) % keys.len()];
                let (id, created) = put(&store, unique("race", key, *scope)).await;
                seen.push((key.clone(), id, created));
            }
            store.close().await;
            seen
        }));
    }
    let mut ids: HashMap<String, HashSet<i64>> = HashMap::new();
    let mut created: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        for (key, id, new) in t.await.expect("enqueuer") {
            ids.entry(key.clone()).or_default().insert(id);
            *created.entry(key).or_default() += usize::from(new);
        }
    }
    for (key, _) in &keys {
        assert_eq!(ids[key].len(), 1, "{key}: every answer names one job");
        assert_eq!(created[key], 1, "{key}: created exactly once");
    }
    let stored = h
        .store
        .list(ListFilter {
            queue: Some("race".into()),
            limit: 10_000,
            ..ListFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(stored.len(), keys.len(), "one row per key in the store");
}

pub async fn unique_keys_in_a_batch_and_with_idempotency_keys(h: &Harness) {
    let s = &h.store;
    // In a batch, a repeated key gets the first job's id (created: false),
    // as a repeated idempotency key does.
    let batch = s
        .enqueue_many(vec![
            unique("b", "batch-1", UniqueScope::QueuedRunning),
            unique("b", "batch-1", UniqueScope::QueuedRunning),
            unique("b", "batch-2", UniqueScope::Queued),
        ])
        .await
        .expect("batch");
    assert!(batch[0].created && !batch[1].created && batch[2].created);
    assert_eq!(batch[1].id, batch[0].id);

    // The idempotency key decides first; else the unique key's holder.
    let (x, _) = put(s, unique("b", "both", UniqueScope::Queued)).await;
    let with_idem = |idem: &str| NewJob {
        idempotency_key: Some(idem.to_owned()),
        ..unique("b", "both", UniqueScope::Queued)
    };
    assert_eq!(put(s, with_idem("idem-1")).await, (x, false));
    s.cancel(x).await.expect("cancel");
    let (y, created) = put(s, with_idem("idem-1")).await;
    assert!(created && y != x);
    let (z, created) = put(
        s,
        NewJob {
            idempotency_key: Some("idem-1".into()),
            ..new_job("b")
        },
    )
    .await;
    assert_eq!((z, created), (y, false));

    if h.backend == Backend::Postgres {
        sql_functions_take_unique_keys(h).await;
    }
}

/// `curfew.enqueue(…, unique_key, unique_scope)` and `enqueue_many` from
/// the application's own connection.
async fn sql_functions_take_unique_keys(h: &Harness) {
    let schema = h.options.pg_schema.clone();
    let mut conn = sqlx::PgConnection::connect(&h.url).await.expect("connect");
    let one = |scope: &str| {
        format!(
            "SELECT {schema}.enqueue('sql', 'k', '{{}}'::jsonb, unique_key => 'sql-key', unique_scope => {scope})"
        )
    };
    let first: i64 = sqlx::query_scalar(AssertSqlSafe(one("'10m'")))
        .fetch_one(&mut conn)
        .await
        .expect("enqueue");
    let again: i64 = sqlx::query_scalar(AssertSqlSafe(one("'10m'")))
        .fetch_one(&mut conn)
        .await
        .expect("enqueue again");
    assert_eq!(first, again);
    let job = get(h, first).await;
    assert_eq!(job.unique_scope.as_deref(), Some("window"));
    assert_eq!(job.unique_until, Some(job.created_at + 600_000));

    let rows = sqlx::query(AssertSqlSafe(format!(
        r#"SELECT job_id, created FROM {schema}.enqueue_many('[
             {{"queue": "sql", "kind": "k", "unique_key": "many", "unique_scope": "queued"}},
             {{"queue": "sql", "kind": "k", "unique_key": "many", "unique_scope": "queued"}},
             {{"queue": "sql", "kind": "k", "unique_key": "sql-key", "unique_scope": "10m"}}]')"#
    )))
    .fetch_all(&mut conn)
    .await
    .expect("enqueue_many");
    let got: Vec<(i64, bool)> = rows
        .iter()
        .map(|r| (r.get("job_id"), r.get("created")))
        .collect();
    assert!(got[0].1 && !got[1].1 && got[0].0 == got[1].0, "{got:?}");
    assert_eq!(got[2], (first, false));

    for (scope, field) in [("'sometimes'", "unique_scope"), ("'0s'", "unique_scope")] {
        let e = sqlx::query_scalar::<_, i64>(AssertSqlSafe(one(scope)))
            .fetch_one(&mut conn)
            .await
            .expect_err("bad scope");
        assert!(e.to_string().contains(field), "{scope}: {e}");
    }
    conn.close().await.expect("close");
}
