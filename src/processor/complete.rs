//! Group commit of successful runs.
//!
//! A run that succeeded hands its lease token and its queue slot to the
//! completer and waits for the answer. The completer gathers the successes
//! that arrive together and writes them in one statement
//! ([`curfew_store::Store::complete_many`]), each fenced by its own lease
//! token: a run whose lease was lost meanwhile is left out and learns it,
//! the others in the batch are written.
//!
//! - **No wait when idle.** A batch is written at once when it holds at
//!   least half of the processor's running jobs (so a lone job is written
//!   at once); otherwise it waits up to [`LINGER`] for more. Half, not all:
//!   the other half keeps the app busy while this half is written and its
//!   slots claimed again.
//! - **Slots freed together, after the commit.** The batch's queue slots
//!   are given back only once the write has committed, all at once, so a
//!   queue never has more `running` jobs than its `concurrency` and its
//!   claim loop claims the freed slots in one statement.
//! - **Never done without the write.** A crash before the commit leaves
//!   the runs `running` under their leases: this node's next boot reclaims
//!   them, another node rescues them when the lease expires, and they run
//!   again (at least once). An unreachable store is retried for up to one
//!   lease, as a single write would be.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::{Inner, RetryPause};
use curfew_store::StoreError;

/// The longest a success waits for others to share its commit.
pub(super) const LINGER: Duration = Duration::from_millis(2);
/// The most runs written in one statement.
const MAX_BATCH: usize = 512;

/// What the run learns: written (`true`), its lease lost (`false`), or the
/// store's error after the retries.
pub(super) type Written = Result<bool, Arc<StoreError>>;

/// One successful run, waiting for its commit.
pub(super) struct Success {
    pub(super) id: i64,
    pub(super) token: String,
    /// The run's queue slot, given back after the commit.
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) written: oneshot::Sender<Written>,
}

/// The runs' side of the completer.
pub(super) type Successes = mpsc::UnboundedSender<Success>;

/// The completer's loop: ends when the processor is gone (its sender
/// dropped).
pub(super) async fn complete_loop(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Success>) {
    while let Some(first) = rx.recv().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        loop {
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            if write_now(batch.len(), inner.lock_running().len()) {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        inner.write_successes(batch).await;
    }
}

/// Whether a batch of `batch` successes is written without waiting for
/// more, `running` jobs (the batch's included) being in this processor.
fn write_now(batch: usize, running: usize) -> bool {
    batch >= MAX_BATCH || batch * 2 >= running
}

impl Inner {
    /// Writes one batch (retried for up to one lease), then frees the
    /// slots and answers each run.
    async fn write_successes(&self, batch: Vec<Success>) {
        let pairs: Vec<(i64, String)> = batch.iter().map(|s| (s.id, s.token.clone())).collect();
        let give_up = Instant::now() + self.cfg.lease;
        let mut pause = RetryPause::new();
        let result = loop {
            let t = self.health.tick();
            match self.store.complete_many(&pairs).await {
                Ok(ids) => {
                    self.health.ok();
                    break Ok(ids.into_iter().collect::<HashSet<i64>>());
                }
                Err(e) if e.is_retryable() && Instant::now() + pause.peek() < give_up => {
                    self.health.failed("record a job's result", &e, t);
                    tokio::time::sleep(pause.next()).await;
                }
                Err(e) => break Err(Arc::new(e)),
            }
        };
        tracing::trace!(jobs = batch.len(), "Successful runs recorded together.");
        let mut answers = Vec::with_capacity(batch.len());
        for s in batch {
            // Every slot of the batch back before any run goes on.
            drop(s.permit);
            answers.push((s.id, s.written));
        }
        for (id, written) in answers {
            let answer = match &result {
                Ok(ids) => Ok(ids.contains(&id)),
                Err(e) => Err(e.clone()),
            };
            // The run may be gone (its task aborted): nobody to tell.
            let _ = written.send(answer);
        }
    }

    /// Records a success through the group commit. `None`: the completer
    /// is gone (the processor is being dropped); the caller writes alone.
    pub(super) async fn complete_batched(
        &self,
        id: i64,
        token: &str,
        permit: OwnedSemaphorePermit,
    ) -> Option<Written> {
        let (tx, rx) = oneshot::channel();
        self.successes
            .send(Success {
                id,
                token: token.to_owned(),
                permit,
                written: tx,
            })
            .ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_waits_only_while_most_running_jobs_may_still_join() {
        // Idle: a lone success (or two) is written at once.
        assert!(write_now(1, 1));
        assert!(write_now(1, 2));
        assert!(write_now(1, 0), "its run already gone: nothing to wait for");
        // Busy: wait until half of the running jobs are in.
        assert!(!write_now(1, 3));
        assert!(!write_now(7, 16));
        assert!(write_now(8, 16));
        assert!(write_now(16, 16));
        // Never more than one statement's worth.
        assert!(write_now(MAX_BATCH, 10_000));
        assert!(!write_now(MAX_BATCH - 1, 10_000));
    }
}
