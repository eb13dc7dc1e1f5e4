//! What the orchestrator writes to the log beyond single events: the
//! SIGUSR1 status report and the jobs handed back at the cut-off.

use super::*;

/// Logs the jobs handed back at the cut-off and tells the `on_incomplete`
/// hook.
pub(super) fn report_incomplete(run: &Run, report: &crate::processor::DrainReport) {
    if report.released.is_empty() && report.unreleased.is_empty() {
        return;
    }
    for r in &report.released {
        tracing::info!(job_id = r.id, queue = %r.queue, kind = %r.kind, attempt = r.attempt, age_ms = r.age_ms, "Job still running at the cut-off: stopped and handed back to its queue (it runs again; the attempt is not counted as a failure).");
    }
    for r in &report.unreleased {
        tracing::error!(job_id = r.id, queue = %r.queue, kind = %r.kind, attempt = r.attempt, age_ms = r.age_ms, "Job still running at the cut-off could not be handed back (store unreachable): it runs again when its lease expires or when this node starts again.");
    }
    tracing::warn!(
        released = report.released.len(),
        unreleased = report.unreleased.len(),
        finished = report.finished,
        "Jobs were still running at the shutdown's cut-off (graceful_timeout minus jobs.release_reserve)."
    );
    let list = |v: &[crate::processor::Running]| serde_json::to_value(v).unwrap_or_default();
    run.hooks.fire(
        HookEvent::OnIncomplete,
        serde_json::json!({
            "released": list(&report.released),
            "unreleased": list(&report.unreleased),
        }),
    );
}

/// SIGUSR1: a status report in the log (the same as `curfew status`).
pub(super) async fn log_status(status: &StatusSource) {
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
