//! Small types both backends use to report what a write found, and the
//! decoding of the rows those writes return.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::error::StoreError;
use super::model::{FailOutcome, JobState};

/// A job a rescue, a reclaim or a release put back (or parked as dead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rescued {
    pub id: i64,
    pub queue: String,
    pub dead: bool,
    /// A cancel had been requested: it ended `cancelled`.
    pub cancelled: bool,
    pub crashes: i32,
    /// Whether the interrupted run's delivery had started (so a crash was
    /// counted); `false`: claimed, never delivered.
    pub delivered: bool,
    /// The lease owner it was taken from, when known.
    pub owner: Option<String>,
}

/// What a state-changing operation on one job found.
pub(crate) enum Outcome<T> {
    Done(T),
    Missing,
    InState(JobState),
    Corrupt(String),
}

impl<T> Outcome<T> {
    /// `Ok(Ok(done))`, `Ok(Err(state))` for the wrong state, `Err` for a
    /// missing or unreadable job.
    pub(crate) fn into_result(
        self,
        store: &str,
        id: i64,
    ) -> Result<Result<T, JobState>, StoreError> {
        match self {
            Outcome::Done(value) => Ok(Ok(value)),
            Outcome::InState(state) => Ok(Err(state)),
            Outcome::Missing => Err(StoreError::NotFound { id }),
            Outcome::Corrupt(reason) => Err(StoreError::Corrupt {
                store: store.to_owned(),
                id,
                reason,
            }),
        }
    }

    /// From the `state` column of the job, read after the operation matched
    /// nothing.
    pub(crate) fn from_state(state: Option<String>) -> Self {
        match state {
            None => Outcome::Missing,
            Some(state) => match state.parse::<JobState>() {
                Ok(state) => Outcome::InState(state),
                Err(e) => Outcome::Corrupt(e.to_string()),
            },
        }
    }
}

/// Which running jobs a rescue takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RescueScope<'a> {
    /// Lease expired.
    Expired,
    /// Owned by `node/<any boot but ours>`: `own` is `node/boot`,
    /// `node_prefix` is `node/`; owners in `live` (JSON array of strings:
    /// the boots of this node that still run, an upgrade's predecessors)
    /// are left alone.
    OtherBoots {
        own: &'a str,
        node_prefix: &'a str,
        live: &'a str,
    },
}

impl RescueScope<'_> {
    /// `last_error` of a rescued job that is not dead is `prefix`, the lease
    /// owner, `suffix`.
    pub(crate) fn reason(self) -> (&'static str, &'static str) {
        match self {
            RescueScope::Expired => ("lease of ", " expired; its processor is presumed dead"),
            RescueScope::OtherBoots { .. } => ("interrupted: its processor ", " restarted"),
        }
    }
}

/// `last_error` of a rescued job whose delivery never started is
/// `prefix`, the lease owner, `suffix`.
pub(crate) const UNDELIVERED_REASON: (&str, &str) = (
    "claimed by ",
    ", which stopped before delivering it (not counted as a crash)",
);

/// The queues that got claimable jobs back, each once.
pub(crate) fn distinct_queues(rescued: &[Rescued]) -> Vec<&str> {
    let mut queues: Vec<&str> = rescued
        .iter()
        .filter(|r| !r.dead && !r.cancelled)
        .map(|r| r.queue.as_str())
        .collect();
    queues.sort_unstable();
    queues.dedup();
    queues
}

/// Rows `id, queue, state, crashes, delivered` returned by a rescue or release, with
/// the owners read before (by id).
pub(crate) fn rescued<'r, R>(
    store: &str,
    rows: &'r [R],
    owners: &[(i64, String)],
) -> Result<Vec<Rescued>, StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    let db = |e| StoreError::from_sqlx(store, e);
    rows.iter()
        .map(|r| {
            let id: i64 = r.try_get("id").map_err(db)?;
            let state: String = r.try_get("state").map_err(db)?;
            let owner = match owners.iter().find(|(owner_id, _)| *owner_id == id) {
                Some((_, owner)) => Some(owner.clone()),
                None => r.try_get::<Option<String>, _>("owner").ok().flatten(),
            };
            Ok(Rescued {
                id,
                queue: r.try_get("queue").map_err(db)?,
                dead: state == JobState::Dead.as_str(),
                cancelled: state == JobState::Cancelled.as_str(),
                crashes: r.try_get("crashes").map_err(db)?,
                delivered: r.try_get("delivered").map_err(db)?,
                owner,
            })
        })
        .collect()
}

/// `fail`'s answer from the row its UPDATE returned (`state`, `run_at`), or
/// from no row when the fence did not match.
pub(crate) fn fail_outcome<'r, R>(
    store: &str,
    row: Option<&'r R>,
) -> Result<FailOutcome, StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    let Some(row) = row else {
        return Ok(FailOutcome::LostLease);
    };
    let db = |e| StoreError::from_sqlx(store, e);
    let state: String = row.try_get("state").map_err(db)?;
    if state == JobState::Dead.as_str() {
        Ok(FailOutcome::Dead)
    } else if state == JobState::Cancelled.as_str() {
        Ok(FailOutcome::Cancelled)
    } else {
        Ok(FailOutcome::Retry {
            run_at: row.try_get("run_at").map_err(db)?,
        })
    }
}

/// Logs each job a rescue took back (queued again, or parked dead) and
/// returns their ids.
pub(crate) fn log_rescued(rescued: &[Rescued], why: &'static str) -> Vec<i64> {
    for job in rescued {
        let owner = job.owner.as_deref().unwrap_or("?");
        if job.cancelled {
            tracing::info!(
                job_id = job.id,
                queue = %job.queue,
                owner,
                why,
                "job cancelled: a cancel was requested before its processor stopped"
            );
        } else if !job.delivered {
            tracing::info!(
                job_id = job.id,
                queue = %job.queue,
                owner,
                why,
                "job taken back from a stopped processor that had claimed it but not delivered it; queued again, no crash counted"
            );
        } else if job.dead {
            tracing::warn!(
                job_id = job.id,
                queue = %job.queue,
                owner,
                crashes = job.crashes,
                why,
                "job parked as dead: its processor died while running it too many times"
            );
        } else {
            tracing::warn!(
                job_id = job.id,
                queue = %job.queue,
                owner,
                crashes = job.crashes,
                why,
                "job rescued from a dead processor and queued again"
            );
        }
    }
    rescued.iter().map(|r| r.id).collect()
}
