//! Conformance case for a job row whose payload no JSON reader of curfew's
//! holds (a number beyond a 64-bit float, or on SQLite bytes that are not
//! UTF-8: written into the table by SQL), run on both backends by
//! `conformance!`: every way of claiming sets it apart, buries it and hands
//! out the queue's other jobs.

use curfew_store::{Claimed, JobState, ListFilter, NewJob, Unique, UniqueScope};
use sqlx::{AssertSqlSafe, Connection};

use super::{Backend, Harness, LEASE, OWNER, enqueue, exec_sql, new_job, random_suffix};

/// Makes job `id`'s stored payload one serde cannot read (`1e400`, which
/// both SQLite's `json_valid` and PostgreSQL's jsonb accept).
async fn spoil(h: &Harness, id: i64) {
    if h.backend == Backend::Postgres {
        // As a row stored before migration 0009's check existed.
        exec_sql(
            h,
            "ALTER TABLE {s}jobs DISABLE TRIGGER jobs_payload_numbers",
        )
        .await;
    }
    exec_sql(
        h,
        &format!("UPDATE {{s}}jobs SET payload = '{{\"n\": 1e400}}' WHERE id = {id}"),
    )
    .await;
}

/// A job's state, last error and lease owner, read beside the store.
async fn row_of(h: &Harness, id: i64) -> (String, Option<String>, Option<String>) {
    let sql = "SELECT state, last_error, lease_owner FROM {s}jobs WHERE id = $1";
    match h.backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&h.url)
                .await
                .expect("sqlite connection");
            let row = sqlx::query_as(AssertSqlSafe(sql.replace("{s}", "").replace('$', "?")))
                .bind(id)
                .fetch_one(&mut conn)
                .await
                .expect("the job's row");
            conn.close().await.expect("close");
            row
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&h.url)
                .await
                .expect("pg connection");
            let row = sqlx::query_as(AssertSqlSafe(
                sql.replace("{s}", &format!("{}.", h.schema())),
            ))
            .bind(id)
            .fetch_one(&mut conn)
            .await
            .expect("the job's row");
            conn.close().await.expect("close");
            row
        }
    }
}

/// Dead, saying why, and still readable by an operator: `get` and a
/// listing with payloads show it with its payload's error instead of
/// failing as a whole.
async fn assert_buried(h: &Harness, id: i64) {
    let (state, error, owner) = row_of(h, id).await;
    assert_eq!((state.as_str(), owner), ("dead", None), "job {id}");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("cannot read this job's stored row") && error.contains("payload"),
        "job {id}: {error}"
    );
    let job = h.store.get(id).await.expect("get").expect("the job");
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.payload, serde_json::Value::Null);
    assert!(
        job.payload_error
            .as_deref()
            .is_some_and(|e| e.contains("payload")),
        "{job:?}"
    );
    let listed = h
        .store
        .list(ListFilter {
            queue: Some(job.queue.clone()),
            with_payload: true,
            ..ListFilter::default()
        })
        .await
        .expect("a listing with payloads");
    let shown = listed.iter().find(|j| j.id == id).expect("listed");
    assert!(shown.payload_error.is_some(), "{shown:?}");
    assert!(
        listed
            .iter()
            .filter(|j| j.id != id && j.state != JobState::Dead)
            .all(|j| j.payload_error.is_none() && j.payload == serde_json::json!({"n": 1})),
        "{listed:?}"
    );
}

pub(crate) async fn claims_bury_a_row_that_cannot_be_read_and_hand_out_the_rest(h: &Harness) {
    let queue = format!("odd-{}", random_suffix());
    let key = format!("key-{}", random_suffix());
    let first = enqueue(h, new_job(&queue)).await;
    // It holds a unique key (queued+running): burying it frees the key.
    let odd = enqueue(
        h,
        NewJob {
            unique: Some(Unique {
                key: key.clone(),
                scope: UniqueScope::QueuedRunning,
            }),
            ..new_job(&queue)
        },
    )
    .await;
    let last = enqueue(h, new_job(&queue)).await;
    spoil(h, odd).await;
    // SQLite's `json_valid` passes bytes that are not UTF-8 inside a string.
    let not_utf8 = match h.backend {
        Backend::Sqlite => {
            let id = enqueue(h, new_job(&queue)).await;
            exec_sql(
                h,
                &format!(
                    "UPDATE jobs SET payload = '{{\"a\": \"' || CAST(x'ff' AS TEXT) || '\"}}' WHERE id = {id}"
                ),
            )
            .await;
            Some(id)
        }
        Backend::Postgres => None,
    };

    // A claim of several: the readable ones come out, the odd ones are dead.
    let claimed = claim(h, &queue).await;
    assert_eq!(ids(&claimed), vec![first, last]);
    assert_buried(h, odd).await;
    if let Some(id) = not_utf8 {
        assert_buried(h, id).await;
    }
    let again = h
        .store
        .enqueue(NewJob {
            unique: Some(Unique {
                key,
                scope: UniqueScope::QueuedRunning,
            }),
            ..new_job(&queue)
        })
        .await
        .expect("the key again");
    assert!(again.created, "the buried job still holds its key");
    h.store.delete(again.id).await.expect("delete");

    // The group commit's write: the completion lands and is reported.
    let odd = enqueue(h, new_job(&queue)).await;
    let next = enqueue(h, new_job(&queue)).await;
    spoil(h, odd).await;
    let done = [(claimed[0].job.id, claimed[0].token.clone())];
    let (completed, claimed) = h
        .store
        .complete_and_claim(&done, &queue, 10, OWNER, LEASE)
        .await
        .expect("completions and a claim with an unreadable row in it");
    assert_eq!(completed, vec![first]);
    assert_eq!(ids(&claimed), vec![next]);
    assert_buried(h, odd).await;

    // An enqueue that claims takes the odd job ahead of its own: the odd
    // one is buried, the new one waits for the next claim.
    let odd = enqueue(
        h,
        NewJob {
            priority: -1,
            ..new_job(&queue)
        },
    )
    .await;
    spoil(h, odd).await;
    let (enqueued, claimed) = h
        .store
        .enqueue_and_claim(new_job(&queue), OWNER, LEASE)
        .await
        .expect("an enqueue whose claim takes an unreadable row");
    assert!(claimed.is_none(), "{claimed:?}");
    assert_buried(h, odd).await;
    assert_eq!(ids(&claim(h, &queue).await), vec![enqueued.id]);
}

/// Up to ten jobs of `queue`, claimed.
async fn claim(h: &Harness, queue: &str) -> Vec<Claimed> {
    h.store
        .claim(queue, 10, OWNER, LEASE)
        .await
        .expect("a claim, with or without an unreadable row in it")
}

fn ids(claimed: &[Claimed]) -> Vec<i64> {
    claimed.iter().map(|c| c.job.id).collect()
}

/// A fault of the store rather than of one row (here the payload column is
/// no longer the type this code reads, as after a botched manual change)
/// fails the claim as a whole and buries nothing: every job it took is
/// handed back, none marked dead.
pub(crate) async fn a_payload_column_of_another_type_buries_nothing(h: &Harness) {
    let queue = format!("odd-{}", random_suffix());
    let ids = [
        enqueue(h, new_job(&queue)).await,
        enqueue(h, new_job(&queue)).await,
    ];
    exec_sql(h, "DROP TRIGGER jobs_payload_numbers ON {s}jobs").await;
    exec_sql(h, "ALTER TABLE {s}jobs ALTER COLUMN payload TYPE text").await;
    let claimed = h.store.claim(&queue, 10, OWNER, LEASE).await;
    assert!(claimed.is_err(), "{claimed:?}");
    // Handed back at once, not left running until a rescue charges them a
    // crash: queued, with the reason, no owner.
    for id in ids {
        let (state, error, owner) = row_of(h, id).await;
        assert_eq!((state.as_str(), owner), ("queued", None), "job {id}");
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("could not read the claimed rows back")),
            "job {id}: {error:?}"
        );
    }
}
