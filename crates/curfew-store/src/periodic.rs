//! Periodic schedules in the store: one row per schedule name holding the
//! last instant handled, so each scheduled instant becomes at most one job
//! across every processor sharing the store ([`Store::periodic_advance`]).
//!
//! The row, not an idempotency key, is what makes it exactly once: a key
//! goes with its job, and retention may have pruned the job of an instant
//! long before a late processor looks at that instant again. The row only
//! moves forward (`last_instant` never decreases), in the same transaction
//! as the enqueue.
//!
//! [`Store::periodic_advance`]: crate::Store::periodic_advance

use serde::{Deserialize, Serialize};

/// The stored state of one periodic schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodicState {
    pub name: String,
    /// The latest instant handled (enqueued, or passed over), unix ms.
    pub last_instant: i64,
    /// The job enqueued for `last_instant`; `None` when none was (the
    /// schedule was first seen then, or the instant was passed over).
    pub last_job_id: Option<i64>,
    /// When the row last changed, unix ms.
    pub updated_at: i64,
}

/// The answer of [`Store::periodic_advance`](crate::Store::periodic_advance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodicOutcome {
    /// This call moved the schedule to the instant and enqueued this job.
    Enqueued(i64),
    /// This call moved the schedule to the instant without a job (none was
    /// asked for: a missed instant passed over).
    Passed,
    /// The schedule was at or past the instant already (another processor,
    /// or an earlier call, handled it): nothing changed.
    AlreadyDone,
}
