//! The status report: one JSON-serialisable snapshot of a running curfew,
//! served by the control socket (`curfew status`), the admin endpoint
//! (`/status`, and `/metrics`, which encodes it) and written to the log on
//! SIGUSR1. The orchestrator owns it: it is read from the front, the
//! lifecycle phase, the supervisor's counts and the job processor, which
//! only the orchestrator holds together.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::watch;

use crate::admin::StatusView;
use crate::lifecycle::Phase;
use crate::processor::Processor;
use crate::protocol::status::{Status, WorkerReport};
use crate::proxy::Front;
use crate::supervisor::BoxFuture;

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

impl StatusView for StatusSource {
    fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    fn ready(&self) -> bool {
        self.phase().is_ready() && self.front.router.ready_workers() > 0
    }

    fn report(&self) -> BoxFuture<'_, Status> {
        Box::pin(self.full())
    }
}
