//! What the orchestrator reports: the SIGUSR1 status report and the jobs
//! handed back at the cut-off.

use super::*;

/// The jobs handed back at the cut-off: their event (log lines and the
/// `on_incomplete` hook).
pub(super) fn report_incomplete(run: &Run, report: &crate::processor::DrainReport) {
    crate::events::JobsHandedBack {
        released: &report.released,
        unreleased: &report.unreleased,
        finished: report.finished,
    }
    .emit(&run.sinks());
}

/// SIGUSR1: a status report in the log (the same as `curfew status`), and
/// the access log file opened again (logrotate's `postrotate`).
pub(super) async fn log_status(status: &StatusSource) {
    if let Some(log) = status.front.access_log() {
        log.reopen();
    }
    let st = status.full().await;
    tracing::info!(
        phase = %st.phase,
        uptime_s = st.uptime_s,
        generation = st.generation,
        workers = st.workers.len(),
        workers_wanted = st.workers_wanted,
        in_flight = st.requests_in_flight,
        queued = st.requests_queued,
        requests_completed = st.requests_completed,
        "Status."
    );
    for w in st.workers {
        tracing::info!(
            worker = w.id,
            pid = w.pid,
            generation = w.generation,
            age_s = w.age_s,
            in_flight = w.in_flight,
            served = w.requests_served,
            rss_mib = w.rss_bytes >> 20,
            "Status: worker."
        );
    }
    if let Some(jobs) = st.jobs {
        for q in jobs.queues {
            let s = q.store.as_ref();
            tracing::info!(
                queue = %q.queue,
                concurrency = q.concurrency,
                running_here = q.running_here,
                queued = s.map(|s| s.queued),
                scheduled = s.map(|s| s.scheduled),
                running = s.map(|s| s.running),
                failed = s.map(|s| s.failed),
                dead = s.map(|s| s.dead),
                oldest_queued_age_ms = s.and_then(|s| s.oldest_queued_age_ms),
                succeeded_here = q.succeeded,
                store_up = jobs.store_up,
                "Status: job queue."
            );
        }
        for r in jobs.running {
            tracing::info!(job_id = r.id, queue = %r.queue, kind = %r.kind, attempt = r.attempt, age_ms = r.age_ms, "Status: running job.");
        }
    }
}
