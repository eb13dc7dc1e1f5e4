//! The job model shared by both backends: one row of the `jobs` table and the
//! values the store's API takes and returns. Timestamps are unix
//! milliseconds (`i64`) everywhere.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Default `max_attempts` of a job (as Oban; Sidekiq and River use 25).
pub const DEFAULT_MAX_ATTEMPTS: i32 = 20;

/// Where a job is in its life.
///
/// ```text
///            claim              complete
///  queued ─────────► running ─────────────► succeeded
///    ▲ ▲  ◄─────────  │  │ fail (attempts left)
///    │ │  release,    │  └──────────────────► failed ──(run_at)──► claimable again
///    │ │  snooze,     │ fail (attempt >= max_attempts),
///    │ │  rescue      │ rescue past the crash cap
///    │ │              └────────────────────► dead
///    │ └── retry ◄── dead / failed / cancelled
///    └───── cancel ──► cancelled (from queued / failed)
///
///  running ── cancel ──► running with `cancel_requested_at` set ──►
///             cancelled (its processor stops the run; a fail, snooze,
///             release or rescue of such a run also ends `cancelled`)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its `run_at`, then for a claimer.
    Queued,
    /// Claimed: a processor holds a lease on it.
    Running,
    /// Done.
    Succeeded,
    /// A failed attempt; the job waits for its retry at `run_at` and is
    /// claimable again from then on.
    Failed,
    /// Out of attempts, or parked after killing its processor too often.
    /// Stays until retried or deleted.
    Dead,
    /// Cancelled: before it ran, or stopped while running at an
    /// operator's request. Never retried unless retried by hand.
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The name stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of [`JobState::from_str`]: the unknown name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {0:?} (known: queued, running, succeeded, failed, dead, cancelled)")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// One job, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    pub queue: String,
    pub kind: String,
    /// Null when [`payload_error`](Job::payload_error) is set.
    pub payload: serde_json::Value,
    /// Why the stored payload cannot be read (written through SQL with a
    /// value curfew's JSON reader does not hold); shown by the reads
    /// ([`Store::get`](super::Store::get), [`Store::list`](super::Store::list))
    /// so an operator can see and mend the job. Such a job is never
    /// delivered: a claim marks it dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_error: Option<String>,
    /// Lower runs first.
    pub priority: i32,
    /// Not claimable before this time.
    pub run_at: i64,
    /// Attempts that count toward `max_attempts` (a crash, a release or a
    /// snooze gives its attempt back).
    pub attempt: i32,
    pub max_attempts: i32,
    pub state: JobState,
    /// `node/boot` of the processor holding the lease; set only while running.
    pub lease_owner: Option<String>,
    /// The fencing token of the current lease; set only while running. Not
    /// serialized: whoever holds it can complete the job.
    #[serde(skip_serializing, default)]
    pub lease_token: Option<String>,
    pub lease_expires_at: Option<i64>,
    /// Times the job was rescued after its processor died.
    pub crashes: i32,
    /// Times a graceful shutdown handed the job back.
    pub releases: i32,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// When the latest run's delivery started: its claim, or
    /// [`Store::mark_started`](super::Store::mark_started) after a wait for a
    /// worker; `None` while a claimed job waits for one.
    pub started_at: Option<i64>,
    /// Set when the job reached succeeded, dead or cancelled.
    pub finished_at: Option<i64>,
    /// When a cancel was requested while the job ran: pending while it is
    /// still `running`, history afterwards. Cleared by a retry.
    #[serde(default)]
    pub cancel_requested_at: Option<i64>,
    /// The unique key the job was enqueued with.
    #[serde(default)]
    pub unique_key: Option<String>,
    /// `queued`, `queued+running` or `window`.
    #[serde(default)]
    pub unique_scope: Option<String>,
    /// The end of a `window` scope (enqueue time + window).
    #[serde(default)]
    pub unique_until: Option<i64>,
}

/// A job to enqueue. `priority` 0, `run_at` now and `max_attempts`
/// [`DEFAULT_MAX_ATTEMPTS`] unless given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewJob {
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub priority: i32,
    pub run_at: Option<i64>,
    pub max_attempts: Option<i32>,
    /// At most one job ever exists per key (until it is deleted); enqueueing
    /// the same key again returns the existing job.
    pub idempotency_key: Option<String>,
    /// At most one job per key within a scope: enqueueing the key again
    /// while a job holds it returns that job.
    pub unique: Option<Unique>,
}

/// A unique key and how long a job holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unique {
    /// 1 to [`MAX_NAME_CHARS`](crate::MAX_NAME_CHARS) characters, no NUL.
    /// One key space for every queue and kind.
    pub key: String,
    pub scope: UniqueScope,
}

/// While a job holds its unique key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UniqueScope {
    /// Until it is claimed: one job per key waiting to run (a job that ran
    /// and waits for its retry does not hold the key).
    Queued,
    /// Until it finishes (succeeded, dead or cancelled): one job per key
    /// waiting, running or waiting for a retry.
    #[default]
    QueuedRunning,
    /// For this long from its enqueue, whatever its state: one job per key
    /// per window (the next enqueue after the window starts a new one).
    Window(Duration),
}

impl UniqueScope {
    /// The name stored in the `unique_scope` column.
    pub fn as_str(self) -> &'static str {
        match self {
            UniqueScope::Queued => "queued",
            UniqueScope::QueuedRunning => "queued+running",
            UniqueScope::Window(_) => "window",
        }
    }

    /// The window's length in milliseconds (`None` for the other scopes).
    pub(crate) fn window_ms(self) -> Option<i64> {
        match self {
            UniqueScope::Window(d) => Some(duration_ms(d)),
            _ => None,
        }
    }
}

/// What [`Store::cancel`](super::Store::cancel) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was queued or failed: it is `cancelled` now.
    Cancelled,
    /// The job is running: the cancel is requested (`cancel_requested_at`)
    /// and the processor running it stops it and finishes it `cancelled`
    /// (within a second or so).
    Requested,
}

impl NewJob {
    pub fn new(
        queue: impl Into<String>,
        kind: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        NewJob {
            queue: queue.into(),
            kind: kind.into(),
            payload,
            ..NewJob::default()
        }
    }
}

/// The answer to an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub id: i64,
    /// false: a job with the same idempotency key existed; `id` is that job.
    pub created: bool,
}

/// A job handed to a claimer, with the fencing token every later write about
/// this run must present.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub job: Job,
    pub token: String,
}

/// What `fail` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// The job is `failed` and becomes claimable again at `run_at`.
    Retry { run_at: i64 },
    /// Out of attempts: the job is `dead`.
    Dead,
    /// A cancel was requested while it ran: the job is `cancelled`, not
    /// retried.
    Cancelled,
    /// The token no longer holds the job (rescued, released, finished):
    /// nothing was written.
    LostLease,
}

/// A page of `list`: jobs with `id > after_id`, by id (or, with
/// `newest_first`, jobs with `id < after_id`, newest first: the cursor
/// follows the listing's direction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    /// 1 ..= [`ListFilter::MAX_LIMIT`].
    pub limit: u32,
    pub after_id: Option<i64>,
    /// Read the payloads too (`false`: each job's payload is `null`, so a
    /// page of large payloads costs nothing to list).
    pub with_payload: bool,
    /// By id descending: the most recent jobs first (the status page's
    /// recent failures).
    pub newest_first: bool,
}

impl ListFilter {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 10_000;
}

impl Default for ListFilter {
    fn default() -> Self {
        ListFilter {
            queue: None,
            state: None,
            limit: ListFilter::DEFAULT_LIMIT,
            after_id: None,
            with_payload: true,
            newest_first: false,
        }
    }
}

/// Counts of one queue, from the jobs still in play: `queued + scheduled +
/// running` is the queue's active work; `failed` is a subset of `queued +
/// scheduled`. Finished history (succeeded, cancelled) is not counted here:
/// counting it would read every row retention keeps, on every scrape. (A
/// processor counts its own verdicts instead.) `dead` is counted: those
/// jobs need an operator, and retention bounds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct QueueStats {
    pub queue: String,
    /// Claimable now: state queued or failed with `run_at <= now` (the queue
    /// depth).
    pub queued: i64,
    /// Waiting for a future `run_at`: state queued or failed, `run_at > now`.
    pub scheduled: i64,
    pub running: i64,
    /// Waiting for a retry (state failed), whether due or not.
    pub failed: i64,
    pub dead: i64,
    /// How long the longest-waiting claimable job has been claimable
    /// (`now - run_at`); `None` when none is.
    pub oldest_queued_age_ms: Option<i64>,
}

/// How long finished jobs are kept, per state, counted from `finished_at`
/// (see [`Store::prune`](super::Store::prune)). `None` keeps them for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub succeeded: Option<Duration>,
    pub cancelled: Option<Duration>,
    pub dead: Option<Duration>,
}

impl Retention {
    /// Succeeded and cancelled jobs for a day, dead ones for 14 days (long
    /// enough to notice, look and retry after a holiday).
    pub const DEFAULT: Retention = Retention {
        succeeded: Some(Duration::from_secs(24 * 3600)),
        cancelled: Some(Duration::from_secs(24 * 3600)),
        dead: Some(Duration::from_secs(14 * 24 * 3600)),
    };

    /// Keeps everything.
    pub const KEEP: Retention = Retention {
        succeeded: None,
        cancelled: None,
        dead: None,
    };

    /// The finished states with a retention period, each with it.
    pub(crate) fn periods(&self) -> impl Iterator<Item = (JobState, Duration)> {
        [
            (JobState::Succeeded, self.succeeded),
            (JobState::Cancelled, self.cancelled),
            (JobState::Dead, self.dead),
        ]
        .into_iter()
        .filter_map(|(state, keep)| keep.map(|k| (state, k)))
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention::DEFAULT
    }
}

/// What one [`Store::prune`](super::Store::prune) batch deleted, per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Pruned {
    pub succeeded: u64,
    pub cancelled: u64,
    pub dead: u64,
}

impl Pruned {
    pub fn total(&self) -> u64 {
        self.succeeded + self.cancelled + self.dead
    }

    pub(crate) fn add(&mut self, state: JobState, n: u64) {
        match state {
            JobState::Succeeded => self.succeeded += n,
            JobState::Cancelled => self.cancelled += n,
            JobState::Dead => self.dead += n,
            // Never passed: only finished states are pruned.
            JobState::Queued | JobState::Running | JobState::Failed => {}
        }
    }
}

/// The answer of [`Store::prune`](super::Store::prune).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneOutcome {
    /// This batch: at most the batch size per state. A state that used its
    /// whole batch may have more due: call again.
    Deleted { pruned: Pruned, more: bool },
    /// Another processor is pruning this store right now (PostgreSQL); try
    /// at the next interval.
    Busy,
}

/// The local clock in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
            assert_eq!(state.to_string(), state.as_str());
        }
        assert!("done".parse::<JobState>().is_err());
    }

    #[test]
    fn the_lease_token_is_not_serialized() {
        let job = Job {
            id: 1,
            queue: "q".into(),
            kind: "k".into(),
            payload: serde_json::json!({}),
            payload_error: None,
            priority: 0,
            run_at: 0,
            attempt: 1,
            max_attempts: 20,
            state: JobState::Running,
            lease_owner: Some("n/b".into()),
            lease_token: Some("secret".into()),
            lease_expires_at: Some(1),
            crashes: 0,
            releases: 0,
            last_error: None,
            idempotency_key: None,
            created_at: 0,
            updated_at: 0,
            started_at: None,
            finished_at: None,
            cancel_requested_at: None,
            unique_key: None,
            unique_scope: None,
            unique_until: None,
        };
        let json = serde_json::to_string(&job).expect("serializes");
        assert!(!json.contains("secret"), "{json}");
        assert!(json.contains("\"state\":\"running\""), "{json}");
    }
}
