//! The draining phase: the request drain and, beside it, the job drain.

use super::*;

/// Waits for `work` while answering stop signals (a repeated SIGTERM is
/// ignored and the wait goes on); `None` when a signal ended the draining
/// phase (an immediate stop).
pub(super) async fn while_draining<F: std::future::Future>(
    run: &mut Run,
    work: F,
) -> Option<F::Output> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return Some(out),
            sig = run.next_stop() => {
                run.on_signal(sig);
                if run.machine.phase() != Phase::Draining {
                    return None;
                }
            }
        }
    }
}

pub(super) async fn drain(run: &mut Run) {
    let started = Instant::now();
    // The copies kept for an upgrade go first: an open copy would keep
    // the socket listening (connections queued, then reset at exit)
    // instead of refused once the listeners close.
    run.sockets = upgrade::Sockets::default();
    run.front.stop_accepting().await;
    let graceful = crate::config::duration::bounded(run.cfg.graceful_timeout);
    let deadline = tokio::time::Instant::now() + graceful;
    if let Ok(mut d) = run.status.drain.lock() {
        *d = Some((started, started + graceful));
    }
    // Jobs drain beside the requests, until the cut-off that keeps
    // `release_reserve` of the budget for handing the rest back.
    let mut job_drain = run.jobs.clone().map(|jobs| {
        let cut_at = deadline
            .checked_sub(jobs.config().release_reserve)
            .unwrap_or(deadline);
        tokio::spawn(async move { jobs.drain(cut_at, deadline).await })
    });
    let in_flight = run.front.router.requests().len();
    tracing::info!(
        in_flight,
        graceful_timeout_ms = run.cfg.graceful_timeout.as_millis() as u64,
        "Draining: listeners closed; waiting for in-flight requests."
    );
    let front = run.front.clone();
    let Some(drained) = while_draining(run, front.drain(deadline)).await else {
        return;
    };
    if let Some(handle) = job_drain.as_mut() {
        let jobs_running = run.jobs.as_ref().map_or(0, |j| j.running().len());
        if jobs_running > 0 {
            tracing::info!(jobs_running, "Waiting for running jobs.");
        }
        let Some(report) = while_draining(run, handle).await else {
            return;
        };
        match report {
            Ok(report) => {
                report_incomplete(run, &report);
                run.jobs_reported = true;
            }
            Err(e) => tracing::error!(error = %e, "The job drain task failed."),
        }
    }
    if drained {
        crate::events::DrainFinished::Drained {
            duration: started.elapsed(),
        }
        .emit(&run.sinks());
        run.apply(Event::Drained);
    } else {
        let cut: Vec<_> = run
            .front
            .router
            .requests()
            .into_iter()
            .map(|r| crate::events::CutRequest {
                age_ms: r.age().as_millis() as u64,
                method: r.method.to_string(),
                path: r.path,
                worker: r.worker,
            })
            .collect();
        run.aborted = cut.len();
        crate::events::DrainFinished::Expired {
            duration: started.elapsed(),
            graceful_timeout: run.cfg.graceful_timeout,
            cut,
        }
        .emit(&run.sinks());
        run.front.abort_all().await;
        run.apply(Event::GraceExpired);
    }
}
