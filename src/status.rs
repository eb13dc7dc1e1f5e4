//! The status report: one JSON-serialisable snapshot of a running curfew,
//! served by the control socket (`curfew status`), the admin endpoint
//! (`/status`) and written to the log on SIGUSR1.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::lifecycle::Phase;
use crate::processor::{JobsReport, Processor};
use crate::proxy::Front;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub phase: String,
    pub pid: u32,
    pub uptime_s: u64,
    pub generation: u64,
    /// Workers configured (slots).
    pub workers_wanted: usize,
    pub requests_in_flight: usize,
    pub requests_queued: usize,
    pub requests_completed: u64,
    pub workers: Vec<WorkerReport>,
    /// The job processor, with a `[jobs]` section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<JobsReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerReport {
    pub id: usize,
    pub pid: u32,
    pub generation: u64,
    pub state: String,
    pub age_s: u64,
    pub requests_served: u64,
    pub in_flight: usize,
    pub rss_bytes: u64,
    /// Times this worker slot restarted a dead or hung worker.
    pub restarts: u32,
}

/// Where a status report is read from; cheap to clone.
#[derive(Clone)]
pub struct StatusSource {
    pub front: Arc<Front>,
    pub phase: watch::Receiver<Phase>,
    pub generation: Arc<AtomicU64>,
    pub workers_wanted: Arc<AtomicUsize>,
    pub started: Instant,
    pub jobs: Option<Processor>,
}

impl StatusSource {
    pub fn snapshot(&self) -> Status {
        let router = &self.front.router;
        let workers = router
            .workers()
            .into_iter()
            .map(|w| WorkerReport {
                id: w.id,
                pid: w.pid,
                generation: w.generation,
                state: "serving".into(),
                age_s: w.since.elapsed().as_secs(),
                requests_served: w.served,
                in_flight: w.in_flight,
                rss_bytes: crate::supervisor::group_rss_bytes(w.pid as i32),
                restarts: w.restarts,
            })
            .collect();
        let requests = router.requests();
        Status {
            phase: self.phase.borrow().to_string(),
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs(),
            generation: self.generation.load(Ordering::Relaxed),
            workers_wanted: self.workers_wanted.load(Ordering::Relaxed),
            requests_in_flight: requests.iter().filter(|r| r.worker.is_some()).count(),
            requests_queued: requests.iter().filter(|r| r.worker.is_none()).count(),
            requests_completed: router.completed(),
            workers,
            jobs: None,
        }
    }

    /// [`StatusSource::snapshot`] with the job queues' counts (which asks
    /// the store, for at most 2 s).
    pub async fn full(&self) -> Status {
        let mut status = self.snapshot();
        if let Some(jobs) = &self.jobs {
            status.jobs = Some(jobs.report(std::time::Duration::from_secs(2)).await);
        }
        status
    }
}

impl Status {
    /// A human-readable table (for `curfew status`).
    pub fn table(&self) -> String {
        let mut out = format!(
            "phase {}  pid {}  uptime {}s  generation {}  workers {}/{}  in flight {}  queued {}  completed {}\n",
            self.phase,
            self.pid,
            self.uptime_s,
            self.generation,
            self.workers.len(),
            self.workers_wanted,
            self.requests_in_flight,
            self.requests_queued,
            self.requests_completed
        );
        out.push_str(&format!(
            "{:>4} {:>8} {:>4} {:>8} {:>8} {:>10} {:>9} {:>9} {:>8}\n",
            "ID", "PID", "GEN", "STATE", "AGE", "REQUESTS", "IN FLIGHT", "RSS MiB", "RESTARTS"
        ));
        for w in &self.workers {
            out.push_str(&format!(
                "{:>4} {:>8} {:>4} {:>8} {:>7}s {:>10} {:>9} {:>9} {:>8}\n",
                w.id,
                w.pid,
                w.generation,
                w.state,
                w.age_s,
                w.requests_served,
                w.in_flight,
                w.rss_bytes >> 20,
                w.restarts
            ));
        }
        if let Some(jobs) = &self.jobs {
            out.push_str(&jobs.table());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_every_worker() {
        let s = Status {
            phase: "serving".into(),
            pid: 7,
            uptime_s: 3,
            generation: 2,
            workers_wanted: 2,
            requests_in_flight: 1,
            requests_queued: 0,
            requests_completed: 10,
            workers: vec![
                WorkerReport {
                    id: 0,
                    pid: 11,
                    generation: 2,
                    state: "serving".into(),
                    age_s: 1,
                    requests_served: 5,
                    in_flight: 1,
                    rss_bytes: 30 << 20,
                    restarts: 0,
                },
                WorkerReport {
                    id: 1,
                    pid: 12,
                    generation: 2,
                    state: "serving".into(),
                    age_s: 1,
                    requests_served: 5,
                    in_flight: 0,
                    rss_bytes: 31 << 20,
                    restarts: 3,
                },
            ],
            jobs: None,
        };
        let t = s.table();
        assert_eq!(t.lines().count(), 4);
        assert!(t.contains("generation 2") && t.contains("31"));
        let json = serde_json::to_string(&s).expect("json");
        assert_eq!(serde_json::from_str::<Status>(&json).expect("back"), s);
    }
}
