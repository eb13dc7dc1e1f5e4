//! The status report: one snapshot of a running curfew (phase, workers,
//! requests, job queues), as the control socket, `/status` and SIGUSR1
//! give it.

use serde::{Deserialize, Serialize};

use super::jobs::JobsReport;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
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

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
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
