//! Decoding a `jobs` row into a [`Job`], for either backend. Only the payload
//! differs (TEXT in SQLite, jsonb in PostgreSQL); the backend decodes it and
//! hands it in.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::error::StoreError;
use super::model::{Job, JobState, QueueStats};

/// A claimed row whose payload no JSON reader of curfew's holds (a number
/// beyond a 64-bit float, nesting deeper than serde's limit, text that is
/// not UTF-8: written into the table by SQL, which SQLite never refuses and
/// PostgreSQL refused only from migration 0009). It is left out of the
/// claim and buried (`Store::claimed`) so that the queue's other jobs still
/// run; one such row used to fail every claim that took it, and then sat
/// `running` until its lease ran out, blamed on a dead processor.
#[derive(Debug)]
pub(crate) struct Unreadable {
    pub id: i64,
    pub token: String,
    pub queue: String,
    pub reason: String,
}

/// The `last_error` of jobs handed back because their claim could not be
/// read at all.
pub(crate) const CLAIM_UNREADABLE: &str =
    "claimed, but curfew could not read the claimed rows back; handed back";

/// The rows a claim took: the jobs, and the rows that cannot be read; or,
/// when they could not be read at all, why, and the `(id, lease_token)`
/// of each to hand back (`Store::claimed` does both).
#[derive(Debug, Default)]
pub(crate) struct ClaimedRows {
    pub jobs: Vec<Job>,
    pub unreadable: Vec<Unreadable>,
    pub failed: Option<(StoreError, Vec<(i64, String)>)>,
}

/// A payload as a backend decodes it: a store fault (the column is missing,
/// the connection broke) fails the whole read; a value no reader holds is
/// this row's alone (`Ok(Err(reason))`).
pub(crate) type Payload = Result<Result<serde_json::Value, String>, StoreError>;

/// Claimed rows into jobs, setting apart each row whose payload cannot be
/// read. Any other column that cannot be read fails the whole claim
/// ([`ClaimedRows::failed`]): that is a fault of the store (or of this
/// code), not of one row, and burying every job it took would lose them;
/// they are handed back instead.
pub(crate) fn claimed<'r, R>(
    store: &str,
    rows: impl IntoIterator<Item = &'r R> + Clone,
    payload: impl Fn(&'r R) -> Payload,
) -> ClaimedRows
where
    R: Row + 'r,
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    let db = |e| StoreError::from_sqlx(store, e);
    let read = || {
        let mut out = ClaimedRows::default();
        for row in rows.clone() {
            match payload(row)? {
                Ok(value) => out.jobs.push(job(store, row, Ok(value))?),
                Err(reason) => out.unreadable.push(Unreadable {
                    id: row.try_get("id").map_err(db)?,
                    token: row.try_get("lease_token").map_err(db)?,
                    queue: row.try_get("queue").map_err(db)?,
                    reason,
                }),
            }
        }
        Ok(out)
    };
    read().unwrap_or_else(|e| ClaimedRows {
        failed: Some((e, leases(rows))),
        ..ClaimedRows::default()
    })
}

/// The `(id, lease_token)` of each claimed row whose two columns can be
/// read: what a claim that failed as a whole hands back.
fn leases<'r, R>(rows: impl IntoIterator<Item = &'r R>) -> Vec<(i64, String)>
where
    R: Row + 'r,
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    rows.into_iter()
        .filter_map(|row| Some((row.try_get("id").ok()?, row.try_get("lease_token").ok()?)))
        .collect()
}

/// A row into a [`Job`]; a payload that cannot be read (`Err(reason)`)
/// becomes a null payload with its [`Job::payload_error`].
pub(crate) fn job<'r, R>(
    store: &str,
    row: &'r R,
    payload: Result<serde_json::Value, String>,
) -> Result<Job, StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    let db = |e| StoreError::from_sqlx(store, e);
    let (payload, payload_error) = match payload {
        Ok(value) => (value, None),
        Err(reason) => (serde_json::Value::Null, Some(reason)),
    };
    let id: i64 = row.try_get("id").map_err(db)?;
    let state: String = row.try_get("state").map_err(db)?;
    let state = state.parse::<JobState>().map_err(|e| StoreError::Corrupt {
        store: store.to_owned(),
        id,
        reason: e.to_string(),
    })?;
    Ok(Job {
        id,
        queue: row.try_get("queue").map_err(db)?,
        kind: row.try_get("kind").map_err(db)?,
        payload,
        payload_error,
        priority: row.try_get("priority").map_err(db)?,
        run_at: row.try_get("run_at").map_err(db)?,
        attempt: row.try_get("attempt").map_err(db)?,
        max_attempts: row.try_get("max_attempts").map_err(db)?,
        state,
        lease_owner: row.try_get("lease_owner").map_err(db)?,
        lease_token: row.try_get("lease_token").map_err(db)?,
        lease_expires_at: row.try_get("lease_expires_at").map_err(db)?,
        crashes: row.try_get("crashes").map_err(db)?,
        releases: row.try_get("releases").map_err(db)?,
        last_error: row.try_get("last_error").map_err(db)?,
        idempotency_key: row.try_get("idempotency_key").map_err(db)?,
        created_at: row.try_get("created_at").map_err(db)?,
        updated_at: row.try_get("updated_at").map_err(db)?,
        started_at: row.try_get("started_at").map_err(db)?,
        finished_at: row.try_get("finished_at").map_err(db)?,
        cancel_requested_at: row.try_get("cancel_requested_at").map_err(db)?,
        unique_key: row.try_get("unique_key").map_err(db)?,
        unique_scope: row.try_get("unique_scope").map_err(db)?,
        unique_until: row.try_get("unique_until").map_err(db)?,
    })
}

/// One row of the stats query.
pub(crate) fn stats<'r, R>(row: &'r R) -> Result<QueueStats, sqlx::Error>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(QueueStats {
        queue: row.try_get("queue")?,
        queued: row.try_get("queued")?,
        scheduled: row.try_get("scheduled")?,
        running: row.try_get("running")?,
        failed: row.try_get("failed")?,
        dead: row.try_get("dead")?,
        oldest_queued_age_ms: row.try_get("oldest_queued_age_ms")?,
    })
}

/// The hint of a [`StoreError::WrongState`] for `action` on a job in `state`.
pub(crate) fn wrong_state(id: i64, action: &'static str, state: JobState) -> StoreError {
    let hint = match (action, state) {
        ("delete", JobState::Running) => "; wait until it finishes or is released",
        ("retry", JobState::Running) => "; it is being worked on",
        ("retry", JobState::Queued) => "; it is already waiting to run",
        ("retry", JobState::Succeeded) => "; only dead, failed or cancelled jobs can be retried",
        ("cancel", _) => "; only queued, failed or running jobs can be cancelled",
        _ => "",
    };
    StoreError::WrongState {
        id,
        action,
        state,
        hint,
    }
}
