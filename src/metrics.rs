//! Prometheus metrics, served as OpenMetrics text on the admin endpoint's
//! `/metrics`. This module owns the registry and every metric handle; the
//! rest of curfew only calls methods on the shared [`Metrics`]
//! (`request_done`, `worker_exit`, …), so the proxy stays free of process
//! code and the supervisor free of HTTP.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `curfew_http_requests_total` | counter | `code_class` = `1xx`…`5xx` |
//! | `curfew_http_request_duration_seconds` | histogram (arrival → response headers) | |
//! | `curfew_http_requests_in_flight` | gauge (at scrape time) | |
//! | `curfew_http_queue_length` | gauge (at scrape time) | |
//! | `curfew_workers` | gauge: ready workers (at scrape time) | |
//! | `curfew_workers_wanted` | gauge (at scrape time) | |
//! | `curfew_worker_exits_total` | counter | `reason` |
//! | `curfew_reloads_total` | counter | `result` = `ok`, `failed` |
//! | `curfew_drain_duration_seconds` | histogram | |
//! | `curfew_phase` | gauge: 1 for the current phase, 0 for the others | `phase` |
//! | `curfew_jobs` | gauge: jobs in the store (all processors; at scrape time) | `queue`, `state` = `queued`, `scheduled`, `running`, `failed`, `dead` |
//! | `curfew_jobs_oldest_queued_age_seconds` | gauge: how long the oldest claimable job has waited | `queue` |
//! | `curfew_jobs_running_here` | gauge: jobs this curfew is running | `queue` |
//! | `curfew_jobs_processed_total` | counter: verdicts recorded by this curfew | `queue`, `outcome` = `succeeded`, `failed`, `dead`, `snoozed`, `released`, `lost`, `cancelled` (a running job stopped by a cancel) |
//! | `curfew_jobs_store_up` | gauge: 1 when the job store answered the scrape | |
//!
//! `reason` of a worker exit is [`ExitClass::reason`](crate::supervisor::classify::ExitClass::reason),
//! except that a worker stopped because it was replaced counts as `recycled`
//! (max_requests, max_memory) or `reload`, a hung worker aborted counts as
//! `hung`, and a worker that failed to boot as `boot_failed`. Each exit is
//! counted once.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::lifecycle::Phase;
use crate::protocol::status::Status;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every phase, for `curfew_phase`.
const PHASES: [Phase; 6] = [
    Phase::Starting,
    Phase::Serving,
    Phase::LameDuck,
    Phase::Draining,
    Phase::Stopping,
    Phase::Stopped,
];

/// Request durations: 5 ms … 30 s.
const REQUEST_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
];

/// Drain durations: 10 ms … 10 min.
const DRAIN_BUCKETS: [f64; 13] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeClass {
    code_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadResult {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueState {
    queue: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueOutcome {
    queue: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

/// The registry and the metric handles (shared as `Arc<Metrics>`).
pub struct Metrics {
    registry: Registry,
    requests: Family<CodeClass, Counter>,
    /// `requests`' counters for 2xx, 3xx, 4xx and 5xx, taken once: a
    /// request increments its class without the family's lock and label
    /// hashing (the same counters the scrape reads).
    request_classes: [Counter; 4],
    request_duration: Histogram,
    in_flight: Gauge,
    queue_length: Gauge,
    workers: Gauge,
    workers_wanted: Gauge,
    worker_exits: Family<Reason, Counter>,
    reloads: Family<ReloadResult, Counter>,
    drain_duration: Histogram,
    phase: Family<PhaseLabel, Gauge>,
    jobs: Family<QueueState, Gauge>,
    jobs_oldest: Family<QueueLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    jobs_running_here: Family<QueueLabel, Gauge>,
    jobs_processed: Family<QueueOutcome, Counter>,
    jobs_store_up: Gauge,
    /// Requests answered and the sum of their durations (µs), for the
    /// status page's chart (the histogram does not give its totals back).
    answered: std::sync::atomic::AtomicU64,
    answered_us: std::sync::atomic::AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("curfew");
        let requests = Family::<CodeClass, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP responses sent by the front (proxied, or curfew's own 502/503/504), by status class",
            requests.clone(),
        );
        let request_duration = Histogram::new(REQUEST_BUCKETS);
        registry.register_with_unit(
            "http_request_duration",
            "Time from request arrival to response headers",
            Unit::Seconds,
            request_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "Requests being handled by a worker",
            in_flight.clone(),
        );
        let queue_length = Gauge::default();
        registry.register(
            "http_queue_length",
            "Requests waiting for a free worker",
            queue_length.clone(),
        );
        let workers = Gauge::default();
        registry.register("workers", "Ready workers (routed to)", workers.clone());
        let workers_wanted = Gauge::default();
        registry.register(
            "workers_wanted",
            "Configured number of workers",
            workers_wanted.clone(),
        );
        let worker_exits = Family::<Reason, Counter>::default();
        registry.register(
            "worker_exits",
            "Worker process exits, by reason",
            worker_exits.clone(),
        );
        let reloads = Family::<ReloadResult, Counter>::default();
        registry.register("reloads", "Reloads, by result", reloads.clone());
        let drain_duration = Histogram::new(DRAIN_BUCKETS);
        registry.register_with_unit(
            "drain_duration",
            "Time from the start of draining to drained or graceful_timeout",
            Unit::Seconds,
            drain_duration.clone(),
        );
        let phase = Family::<PhaseLabel, Gauge>::default();
        registry.register(
            "phase",
            "Lifecycle phase: 1 for the current one, 0 for the others",
            phase.clone(),
        );
        let jobs = Family::<QueueState, Gauge>::default();
        registry.register(
            "jobs",
            "Jobs in the store (all processors), by queue and state",
            jobs.clone(),
        );
        let jobs_oldest = Family::<QueueLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register_with_unit(
            "jobs_oldest_queued_age",
            "How long the oldest claimable job of the queue has waited",
            Unit::Seconds,
            jobs_oldest.clone(),
        );
        let jobs_running_here = Family::<QueueLabel, Gauge>::default();
        registry.register(
            "jobs_running_here",
            "Jobs this curfew is running",
            jobs_running_here.clone(),
        );
        let jobs_processed = Family::<QueueOutcome, Counter>::default();
        registry.register(
            "jobs_processed",
            "Job runs ended by this curfew, by queue and outcome",
            jobs_processed.clone(),
        );
        let jobs_store_up = Gauge::default();
        registry.register(
            "jobs_store_up",
            "1 when the job store answered at scrape time",
            jobs_store_up.clone(),
        );
        // Known label values start at 0, so rates work from the first scrape.
        let request_classes = ["2xx", "3xx", "4xx", "5xx"].map(|class| {
            requests
                .get_or_create(&CodeClass { code_class: class })
                .clone()
        });
        for result in ["ok", "failed"] {
            let _ = reloads.get_or_create(&ReloadResult { result });
        }
        let m = Metrics {
            registry,
            requests,
            request_classes,
            request_duration,
            in_flight,
            queue_length,
            workers,
            workers_wanted,
            worker_exits,
            reloads,
            drain_duration,
            phase,
            jobs,
            jobs_oldest,
            jobs_running_here,
            jobs_processed,
            jobs_store_up,
            answered: Default::default(),
            answered_us: Default::default(),
        };
        m.set_phase(Phase::Starting.as_str());
        m
    }

    /// A response's headers were produced.
    pub fn request_done(&self, status: u16, elapsed: Duration) {
        let class = match status {
            100..=199 => None,
            200..=299 => Some(0),
            300..=399 => Some(1),
            400..=499 => Some(2),
            _ => Some(3),
        };
        match class {
            Some(i) => self.request_classes[i].inc(),
            // Rare (a final 1xx is a 101 upgrade): looked up in the family.
            None => self
                .requests
                .get_or_create(&CodeClass { code_class: "1xx" })
                .inc(),
        };
        self.request_duration.observe(elapsed.as_secs_f64());
        use std::sync::atomic::Ordering::Relaxed;
        self.answered.fetch_add(1, Relaxed);
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.answered_us.fetch_add(us, Relaxed);
    }

    /// Requests answered and the sum of their durations in seconds, since
    /// start (the status page's rate and latency chart takes differences).
    pub fn request_totals(&self) -> (u64, f64) {
        use std::sync::atomic::Ordering::Relaxed;
        let us = self.answered_us.load(Relaxed);
        (self.answered.load(Relaxed), us as f64 / 1e6)
    }

    /// A worker process ended (`reason`: see the module docs).
    pub fn worker_exit(&self, reason: &'static str) {
        self.worker_exits.get_or_create(&Reason { reason }).inc();
    }

    /// A reload finished.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ReloadResult { result }).inc();
    }

    /// The drain ended (drained, or at graceful_timeout).
    pub fn drain_done(&self, elapsed: Duration) {
        self.drain_duration.observe(elapsed.as_secs_f64());
    }

    fn set_phase(&self, current: &str) {
        for p in PHASES {
            self.phase
                .get_or_create(&PhaseLabel { phase: p.as_str() })
                .set(i64::from(p.as_str() == current));
        }
    }

    fn set_jobs(&self, report: &crate::protocol::jobs::JobsReport) {
        self.jobs_store_up.set(i64::from(report.store_up));
        for q in &report.queues {
            let queue = || QueueLabel {
                queue: q.queue.clone(),
            };
            self.jobs_running_here
                .get_or_create(&queue())
                .set(q.running_here as i64);
            if let Some(s) = &q.store {
                for (state, n) in [
                    ("queued", s.queued),
                    ("scheduled", s.scheduled),
                    ("running", s.running),
                    ("failed", s.failed),
                    ("dead", s.dead),
                ] {
                    self.jobs
                        .get_or_create(&QueueState {
                            queue: q.queue.clone(),
                            state,
                        })
                        .set(n);
                }
                self.jobs_oldest
                    .get_or_create(&queue())
                    .set(s.oldest_queued_age_ms.unwrap_or(0) as f64 / 1000.0);
            }
            for (outcome, n) in [
                ("succeeded", q.succeeded),
                ("failed", q.failed),
                ("dead", q.dead),
                ("snoozed", q.snoozed),
                ("released", q.released),
                ("lost", q.lost),
                ("cancelled", q.cancelled),
            ] {
                let c = self.jobs_processed.get_or_create(&QueueOutcome {
                    queue: q.queue.clone(),
                    outcome,
                });
                // The processor keeps the totals; the counter follows them.
                c.inc_by(n.saturating_sub(c.get()));
            }
        }
    }

    /// Set the scrape-time gauges and encode everything (OpenMetrics text).
    /// The metrics text, with the scrape-time gauges set from `now` (the
    /// status report: the same numbers `/status` shows).
    pub fn encode(&self, now: &Status) -> String {
        let gauge = |g: &Gauge, v: usize| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.in_flight, now.requests_in_flight);
        gauge(&self.queue_length, now.requests_queued);
        gauge(&self.workers, now.workers.len());
        gauge(&self.workers_wanted, now.workers_wanted);
        self.set_phase(&now.phase);
        if let Some(report) = &now.jobs {
            self.set_jobs(report);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape() -> Status {
        let worker = crate::protocol::status::WorkerReport::default();
        Status {
            requests_in_flight: 3,
            requests_queued: 1,
            workers: vec![worker.clone(), worker],
            workers_wanted: 4,
            phase: Phase::Serving.to_string(),
            ..Status::default()
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{text}"))
    }

    fn value(text: &str, prefix: &str) -> f64 {
        let l = line(text, prefix);
        l.rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad line {l:?}"))
    }

    #[test]
    fn encodes_observations_with_labels() {
        let m = Metrics::new();
        m.request_done(200, Duration::from_millis(3));
        m.request_done(204, Duration::from_millis(30));
        m.request_done(503, Duration::from_millis(1));
        m.request_done(502, Duration::from_secs(2));
        m.request_done(404, Duration::from_millis(7));
        m.request_done(101, Duration::from_millis(7));
        m.worker_exit("crashed");
        m.worker_exit("crashed");
        m.worker_exit("recycled");
        m.reload(true);
        m.drain_done(Duration::from_millis(1500));
        let t = m.encode(&scrape());
        let (answered, seconds) = m.request_totals();
        assert_eq!(answered, 6);
        assert!((seconds - 2.048).abs() < 1e-9, "{seconds}");

        let v = |p: &str| value(&t, p);
        assert_eq!(v("curfew_http_requests_total{code_class=\"2xx\"}"), 2.0);
        assert_eq!(v("curfew_http_requests_total{code_class=\"5xx\"}"), 2.0);
        assert_eq!(v("curfew_http_requests_total{code_class=\"4xx\"}"), 1.0);
        assert_eq!(v("curfew_http_requests_total{code_class=\"3xx\"}"), 0.0);
        assert_eq!(v("curfew_http_requests_total{code_class=\"1xx\"}"), 1.0);
        assert_eq!(v("curfew_http_request_duration_seconds_count"), 6.0);
        assert_eq!(
            v("curfew_http_request_duration_seconds_bucket{le=\"0.005\"}"),
            2.0
        );
        assert_eq!(
            v("curfew_http_request_duration_seconds_bucket{le=\"+Inf\"}"),
            6.0
        );
        assert_eq!(v("curfew_http_requests_in_flight "), 3.0);
        assert_eq!(v("curfew_http_queue_length "), 1.0);
        assert_eq!(v("curfew_workers "), 2.0);
        assert_eq!(v("curfew_workers_wanted "), 4.0);
        assert_eq!(v("curfew_worker_exits_total{reason=\"crashed\"}"), 2.0);
        assert_eq!(v("curfew_worker_exits_total{reason=\"recycled\"}"), 1.0);
        assert_eq!(v("curfew_reloads_total{result=\"ok\"}"), 1.0);
        assert_eq!(v("curfew_reloads_total{result=\"failed\"}"), 0.0);
        assert_eq!(v("curfew_drain_duration_seconds_count"), 1.0);
        assert_eq!(v("curfew_drain_duration_seconds_sum"), 1.5);
        assert_eq!(v("curfew_phase{phase=\"serving\"}"), 1.0);
        assert_eq!(v("curfew_phase{phase=\"starting\"}"), 0.0);
        assert_eq!(v("curfew_phase{phase=\"lame-duck\"}"), 0.0);
        line(&t, "# TYPE curfew_http_requests counter");
        line(&t, "# TYPE curfew_http_request_duration_seconds histogram");
        line(&t, "# UNIT curfew_http_request_duration_seconds seconds");
        line(&t, "# TYPE curfew_phase gauge");
        assert!(t.ends_with("# EOF\n"), "{t}");
    }

    #[test]
    fn phase_moves() {
        let m = Metrics::new();
        let mut s = scrape();
        s.phase = Phase::Draining.to_string();
        let t = m.encode(&s);
        assert_eq!(value(&t, "curfew_phase{phase=\"draining\"}"), 1.0);
        assert_eq!(value(&t, "curfew_phase{phase=\"serving\"}"), 0.0);
        let ones = t
            .lines()
            .filter(|l| l.starts_with("curfew_phase{") && l.ends_with(" 1"))
            .count();
        assert_eq!(ones, 1, "{t}");
    }
}
