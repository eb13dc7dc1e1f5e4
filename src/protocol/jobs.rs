//! The job processor's wire types: what `curfew status` reports of the
//! queues, the job requests of `curfew enqueue` / `curfew jobs` and
//! `POST /jobs`, and their answers. The checks on a request live with the
//! processor (`processor::api`).

use serde::{Deserialize, Serialize};

use curfew_store::{Job, QueueStats};

/// A job running in this processor (for status and the shutdown report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Running {
    pub id: i64,
    pub queue: String,
    pub kind: String,
    pub attempt: i32,
    pub age_ms: u64,
    /// A cancel was requested and the run is being stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelling: bool,
}

/// One queue's numbers: the store's counts and this processor's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueReport {
    pub queue: String,
    pub concurrency: usize,
    /// Running in this curfew.
    pub running_here: usize,
    /// From the store (all processors); `None` when it is unreachable.
    pub store: Option<QueueStats>,
    /// Paused in the store (`curfew jobs pause`): no processor claims
    /// from it.
    #[serde(default)]
    pub paused: bool,
    pub succeeded: u64,
    pub failed: u64,
    pub dead: u64,
    pub snoozed: u64,
    pub released: u64,
    pub lost: u64,
    /// Runs stopped here because they were cancelled.
    #[serde(default)]
    pub cancelled: u64,
}

/// What the processor is doing, for `curfew status`, SIGUSR1 and /metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobsReport {
    pub store: String,
    pub store_up: bool,
    pub owner: String,
    pub queues: Vec<QueueReport>,
    pub running: Vec<Running>,
}

/// `POST /jobs` body / `curfew enqueue` arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// Default: `default`.
    #[serde(default)]
    pub queue: Option<String>,
    pub kind: String,
    /// Any JSON value; default `{}`.
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    /// Lower runs first; default 0.
    #[serde(default)]
    pub priority: Option<i32>,
    /// When to run: RFC 3339 (`2026-11-21T10:00:00Z`) or unix milliseconds.
    #[serde(default)]
    pub run_at: Option<RunAt>,
    /// Seconds from now (alternative to `run_at`).
    #[serde(default)]
    pub delay_s: Option<f64>,
    /// Default: the queue's `max_attempts`.
    #[serde(default)]
    pub max_attempts: Option<i32>,
    /// At most one job per key: sending it again returns the existing job.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// At most one job per key within `unique_scope`: sending it again
    /// while a job holds the key returns that job (`created: false`).
    #[serde(default)]
    pub unique_key: Option<String>,
    /// `queued` (until the job is claimed), `queued+running` (until it
    /// finishes; the default) or a window such as `"10m"` (from its
    /// enqueue). Only with `unique_key`.
    #[serde(default)]
    pub unique_scope: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RunAt {
    Millis(i64),
    Text(String),
}

/// A job operation from `curfew enqueue` / `curfew jobs` over the control
/// socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobsRequest {
    Enqueue {
        job: EnqueueRequest,
    },
    /// Many jobs in one transaction (all or nothing).
    EnqueueMany {
        jobs: Vec<EnqueueRequest>,
    },
    List {
        #[serde(default)]
        queue: Option<String>,
        #[serde(default)]
        state: Option<String>,
        #[serde(default)]
        limit: Option<u32>,
        #[serde(default)]
        after: Option<i64>,
        /// With each job's payload (a page of them is bounded in bytes by
        /// a running curfew: fewer jobs than `limit` may come back; page
        /// with `after`).
        #[serde(default)]
        payload: bool,
    },
    Show {
        id: i64,
    },
    Retry {
        id: i64,
    },
    Cancel {
        id: i64,
    },
    Delete {
        id: i64,
    },
    /// Pause a queue for every processor sharing the store.
    Pause {
        queue: String,
    },
    Resume {
        queue: String,
    },
    /// The periodic schedules: configured ones and those the store knows.
    Periodic,
    /// Delete the finished jobs past retention now (all due batches).
    Prune,
}

/// The answer to an enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnqueueReply {
    pub id: i64,
    /// false: a job with this idempotency key or unique key existed
    /// already; `id` is that job.
    pub created: bool,
    pub queue: String,
}

/// The answer to a batch enqueue: each job's answer, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnqueueManyReply {
    pub jobs: Vec<EnqueueReply>,
    /// How many were new (the others had a known idempotency key).
    pub created: usize,
}

/// One schedule of `curfew jobs periodic`. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodicReport {
    pub name: String,
    /// `cron "0 3 * * *" Europe/Berlin` or `every 5m`; `None`: the store
    /// knows the schedule but this configuration does not (removed).
    pub schedule: Option<String>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub catch_up: Option<String>,
    /// The next instant after now.
    pub next_run: Option<i64>,
    /// The latest instant handled (enqueued, or passed over), from the store.
    pub last_instant: Option<i64>,
    /// The job enqueued for `last_instant`, if one was.
    pub last_job_id: Option<i64>,
}

/// The answer to `periodic`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodicReply {
    pub schedules: Vec<PeriodicReport>,
}

/// The answer to `prune`: what was deleted, under which retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneReply {
    pub pruned: curfew_store::Pruned,
    /// The periods applied, e.g. `succeeded 1d, cancelled 1d, dead 14d`.
    pub retention: String,
}

/// The data of an answer to a [`JobsRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JobsReply {
    /// `list`.
    Jobs(Vec<Job>),
    /// `show`.
    Job(Box<Job>),
    /// `enqueue`.
    Enqueued(EnqueueReply),
    /// `periodic`.
    Periodic(PeriodicReply),
    /// `prune`.
    Pruned(PruneReply),
    /// `enqueue_many` (last: untagged, it must not shadow the others).
    EnqueuedMany(EnqueueManyReply),
}

impl JobsReport {
    /// A human-readable table (for `curfew status`).
    pub fn table(&self) -> String {
        let mut out = format!(
            "jobs: store {} ({})  owner {}  running here {}\n",
            self.store,
            if self.store_up { "up" } else { "UNREACHABLE" },
            self.owner,
            self.running.len()
        );
        out.push_str(&format!(
            "{:<20} {:>5} {:>7} {:>9} {:>8} {:>7} {:>6} {:>6} {:>10} {:>11}\n",
            "QUEUE",
            "CONC",
            "QUEUED",
            "SCHEDULED",
            "RUNNING",
            "FAILED",
            "DEAD",
            "HERE",
            "DONE HERE",
            "OLDEST ms"
        ));
        for q in &self.queues {
            let n = |f: fn(&QueueStats) -> i64| {
                q.store
                    .as_ref()
                    .map_or("?".to_owned(), |s| f(s).to_string())
            };
            out.push_str(&format!(
                "{:<20} {:>5} {:>7} {:>9} {:>8} {:>7} {:>6} {:>6} {:>10} {:>11}\n",
                if q.paused {
                    format!("{} (paused)", q.queue)
                } else {
                    q.queue.clone()
                },
                q.concurrency,
                n(|s| s.queued),
                n(|s| s.scheduled),
                n(|s| s.running),
                n(|s| s.failed),
                n(|s| s.dead),
                q.running_here,
                q.succeeded,
                q.store
                    .as_ref()
                    .and_then(|s| s.oldest_queued_age_ms)
                    .map_or("-".to_owned(), |a| a.to_string()),
            ));
        }
        out
    }
}
