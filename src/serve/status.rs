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
    /// While draining: when it started and its deadline (for the progress
    /// in the systemd status line).
    pub drain: Arc<std::sync::Mutex<Option<(Instant, Instant)>>>,
    /// Jobs due in the store, as last counted (the status line reads it;
    /// `None` before the first count or while the store is unreachable).
    pub jobs_queued: Arc<std::sync::Mutex<Option<i64>>>,
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

impl StatusSource {
    /// One line for `systemctl status` (systemd's `STATUS=`): the phase,
    /// workers ready of wanted, requests in flight and queued, jobs running
    /// and queued, and while draining its progress.
    pub fn line(&self) -> String {
        // Counts only: not `snapshot`, which reads every worker's RSS.
        let router = &self.front.router;
        let requests = router.requests();
        let s = Counts {
            workers: router.workers().len(),
            workers_wanted: self.workers_wanted.load(Ordering::Relaxed),
            requests_in_flight: requests.iter().filter(|r| r.worker.is_some()).count(),
            requests_queued: requests.iter().filter(|r| r.worker.is_none()).count(),
        };
        let phase = *self.phase.borrow();
        let mut line = match phase {
            Phase::Starting => {
                format!("Starting: {}/{} workers ready", s.workers, s.workers_wanted)
            }
            Phase::Serving => format!(
                "Serving: {}/{} workers ready, {} requests in flight, {} queued",
                s.workers, s.workers_wanted, s.requests_in_flight, s.requests_queued
            ),
            Phase::LameDuck => format!(
                "Stopping (lame duck: not ready, still serving): {} requests in flight, {} queued",
                s.requests_in_flight, s.requests_queued
            ),
            Phase::Draining => {
                let progress = self.drain.lock().ok().and_then(|d| *d).map(|(from, to)| {
                    let now = Instant::now();
                    format!(
                        ", {}s of {}s of graceful_timeout left",
                        to.saturating_duration_since(now).as_secs(),
                        to.saturating_duration_since(from).as_secs()
                    )
                });
                format!(
                    "Draining: {} requests in flight{}",
                    s.requests_in_flight + s.requests_queued,
                    progress.unwrap_or_default()
                )
            }
            Phase::Stopping => {
                "Stopping workers (SIGTERM, SIGKILL after worker_stop_timeout)".to_owned()
            }
            Phase::Stopped => "Stopped".to_owned(),
        };
        if let Some(jobs) = &self.jobs {
            line.push_str(&format!("; jobs: {} running", jobs.running().len()));
            if let Some(q) = self.jobs_queued.lock().ok().and_then(|q| *q) {
                line.push_str(&format!(", {q} queued"));
            }
        }
        line.push('.');
        line
    }

    /// Counts the jobs due in the store (at most 1 s) for [`StatusSource::line`].
    pub async fn count_jobs_queued(&self) {
        let Some(jobs) = &self.jobs else { return };
        let report = jobs.report(std::time::Duration::from_secs(1)).await;
        let queued = report.store_up.then(|| {
            report
                .queues
                .iter()
                .filter_map(|q| q.store.as_ref().map(|s| s.queued))
                .sum()
        });
        if let Ok(mut q) = self.jobs_queued.lock() {
            *q = queued;
        }
    }
}

/// What the status line counts.
struct Counts {
    workers: usize,
    workers_wanted: usize,
    requests_in_flight: usize,
    requests_queued: usize,
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
