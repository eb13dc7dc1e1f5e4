//! Cancelling a running job (`curfew jobs cancel`, `POST /jobs/<id>/cancel`).
//! The store records the request (`cancel_requested_at`); the processor
//! that runs the job, on whichever curfew instance, learns of it from a
//! poll of its own running jobs every [`CANCEL_POLL`] (a read of an index
//! that holds only such rows, made only while it runs jobs), or at once
//! when the request came through this curfew. The run's cancel token then
//! stops the delivery: an HTTP delivery's connection to the worker is
//! dropped (the worker is not judged: no hung verdict, no suspension), a
//! command gets SIGTERM, then SIGKILL after the command grace. The run is
//! then finished `cancelled`, fenced by its lease token like every verdict.

use std::sync::Arc;
use std::time::Duration;

use super::api::ApiError;
use super::{Inner, Processor};
use curfew_store::CancelOutcome;

/// How often a processor running jobs asks the store for cancel requests.
pub(super) const CANCEL_POLL: Duration = Duration::from_millis(500);

impl Processor {
    /// Cancels a job ([`curfew_store::Store::cancel`]). A running one that
    /// runs here is stopped at once; one running on another instance is
    /// stopped by that instance's next poll.
    pub async fn cancel(&self, id: i64) -> Result<CancelOutcome, ApiError> {
        let outcome = self.inner.store.cancel(id).await?;
        if outcome == CancelOutcome::Requested {
            self.inner.stop_cancelled(id);
        }
        Ok(outcome)
    }
}

impl Inner {
    /// Stops the run of job `id` if it runs here (once).
    pub(super) fn stop_cancelled(&self, id: i64) {
        let running = self.lock_running();
        let Some(entry) = running.get(&id) else {
            return;
        };
        if entry.cancel.is_cancelled() {
            return;
        }
        entry.cancel.cancel();
        tracing::info!(
            job_id = id,
            queue = %entry.info.queue,
            kind = %entry.info.kind,
            attempt = entry.info.attempt,
            "Stopping a running job: its cancel was requested."
        );
    }

    /// Polls the store for cancel requests on this processor's running
    /// jobs until the cut-off (deliveries still running during a drain can
    /// be cancelled too).
    pub(super) async fn cancel_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CANCEL_POLL) => {}
                _ = self.cut.cancelled() => return,
            }
            if self.lock_running().is_empty() {
                continue;
            }
            let t = self.health.tick();
            match self.store.cancel_requested(&self.owner).await {
                Ok(ids) => {
                    self.health.ok();
                    for id in ids {
                        self.stop_cancelled(id);
                    }
                }
                Err(e) => self.health.failed("look for cancel requests", &e, t),
            }
        }
    }
}
