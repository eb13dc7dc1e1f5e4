//! The `curfew jobs` operations that need only the store (list, show,
//! retry, cancel, delete, pause, resume, prune, periodic): a running curfew
//! answers them with [`operate`] ([`super::Processor::operate`]), and so
//! does `curfew jobs` when no curfew is running (it opens the store
//! itself). One code path, so the two give the same messages and data.

use std::time::Duration;

use curfew_store::{PruneOutcome, Pruned, Retention, Store, now_ms};

use super::api::{self, ApiError, JobsRequest};
use crate::config::periodic::PeriodicConfig;
use crate::protocol::jobs::{JobsReply, PruneReply};

/// Rows per finished state in one `curfew jobs prune` transaction.
const PRUNE_BATCH: u32 = super::loops::PRUNE_BATCH;
/// How long `curfew jobs prune` waits for another pruner (PostgreSQL).
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// What the operations need besides the store.
pub struct StoreContext<'a> {
    /// `[jobs.retention]`, for `prune`.
    pub retention: &'a Retention,
    /// `[jobs.periodic]`, for `periodic`.
    pub periodic: &'a [PeriodicConfig],
}

/// Answers a store-only request: a message and, for list, show, periodic
/// and prune, the data. An enqueue needs a running curfew (its queues).
pub async fn operate(
    store: &Store,
    cx: &StoreContext<'_>,
    req: JobsRequest,
) -> Result<(String, Option<JobsReply>), ApiError> {
    match req {
        JobsRequest::Enqueue { .. } | JobsRequest::EnqueueMany { .. } => Err(ApiError::bad(
            "enqueueing goes through a running curfew (it knows the queues): start it, or use POST /jobs or curfew.enqueue() in SQL",
        )),
        JobsRequest::List {
            queue,
            state,
            limit,
            after,
            payload,
        } => {
            let filter = curfew_store::ListFilter {
                queue,
                state: state.as_deref().map(api::parse_state).transpose()?,
                limit: limit.unwrap_or(curfew_store::ListFilter::DEFAULT_LIMIT),
                after_id: after,
                with_payload: payload,
                newest_first: false,
            };
            let jobs = store.list(filter).await?;
            Ok((format!("{} jobs", jobs.len()), Some(JobsReply::Jobs(jobs))))
        }
        JobsRequest::Show { id } => {
            let job = store.get(id).await?.ok_or_else(|| ApiError {
                status: 404,
                message: format!("job {id} not found"),
            })?;
            Ok((format!("job {id}"), Some(JobsReply::Job(Box::new(job)))))
        }
        JobsRequest::Retry { id } => {
            // The store wakes the job's queue (NOTIFY / in-process).
            store.retry(id).await?;
            Ok((format!("job {id} queued again"), None))
        }
        JobsRequest::Cancel { id } => Ok((cancel_message(id, store.cancel(id).await?), None)),
        JobsRequest::Delete { id } => {
            store.delete(id).await?;
            Ok((format!("job {id} deleted"), None))
        }
        JobsRequest::Pause { queue } => {
            let msg = if store.pause(&queue).await? {
                tracing::info!(
                    queue,
                    "Queue paused: no processor sharing the store claims from it."
                );
                format!(
                    "queue {queue} paused: no new jobs are claimed from it on any curfew sharing the store; running jobs go on"
                )
            } else {
                format!("queue {queue} was paused already")
            };
            Ok((msg, None))
        }
        JobsRequest::Resume { queue } => {
            let msg = if store.resume(&queue).await? {
                tracing::info!(queue, "Queue resumed.");
                format!("queue {queue} resumed")
            } else {
                format!("queue {queue} was not paused")
            };
            Ok((msg, None))
        }
        JobsRequest::Periodic => {
            let states = store.periodic_states().await?;
            let reply = super::periodic::report(cx.periodic, states, jiff::Timestamp::now());
            Ok((
                format!("{} schedules", reply.schedules.len()),
                Some(JobsReply::Periodic(reply)),
            ))
        }
        JobsRequest::Prune => {
            let pruned = prune_all(store, cx.retention).await?;
            let retention = describe(cx.retention);
            let msg = format!(
                "pruned {} finished jobs (succeeded {}, cancelled {}, dead {}) past retention: {retention}",
                pruned.total(),
                pruned.succeeded,
                pruned.cancelled,
                pruned.dead
            );
            tracing::info!(
                succeeded = pruned.succeeded,
                cancelled = pruned.cancelled,
                dead = pruned.dead,
                "Pruned finished jobs by request."
            );
            Ok((
                msg,
                Some(JobsReply::Pruned(PruneReply { pruned, retention })),
            ))
        }
    }
}

/// Every due batch, one transaction each; waits up to [`BUSY_WAIT`] for
/// another pruner (PostgreSQL) to finish first.
async fn prune_all(store: &Store, retention: &Retention) -> Result<Pruned, ApiError> {
    let mut total = Pruned::default();
    let started = now_ms();
    loop {
        match store.prune(retention, PRUNE_BATCH).await? {
            PruneOutcome::Deleted { pruned, more } => {
                total.succeeded += pruned.succeeded;
                total.cancelled += pruned.cancelled;
                total.dead += pruned.dead;
                if !more {
                    return Ok(total);
                }
            }
            PruneOutcome::Busy if now_ms() - started < BUSY_WAIT.as_millis() as i64 => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            PruneOutcome::Busy => {
                return Err(ApiError {
                    status: 503,
                    message: format!(
                        "another curfew has been pruning this store for {} s; try again later ({} jobs pruned meanwhile)",
                        BUSY_WAIT.as_secs(),
                        total.total()
                    ),
                });
            }
        }
    }
}

/// `succeeded 1d, cancelled 1d, dead 14d` (`kept` for a state kept for ever).
pub fn describe(r: &Retention) -> String {
    let one = |d: Option<Duration>| match d {
        None => "kept".to_owned(),
        Some(d) => {
            let s = d.as_secs();
            if s % 86_400 == 0 {
                format!("{}d", s / 86_400)
            } else if s % 3_600 == 0 {
                format!("{}h", s / 3_600)
            } else if s % 60 == 0 {
                format!("{}m", s / 60)
            } else {
                format!("{s}s")
            }
        }
    };
    format!(
        "succeeded {}, cancelled {}, dead {}",
        one(r.succeeded),
        one(r.cancelled),
        one(r.dead)
    )
}

/// What `curfew jobs cancel` says, online or offline.
pub fn cancel_message(id: i64, outcome: curfew_store::CancelOutcome) -> String {
    match outcome {
        curfew_store::CancelOutcome::Cancelled => format!("job {id} cancelled"),
        curfew_store::CancelOutcome::Requested => format!(
            "job {id} is running: cancel requested; the curfew running it stops it (within a second or so) and it ends cancelled"
        ),
    }
}
