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
//! - **The freed slots claimed in the same commit.** The batch's write also
//!   claims jobs of the queue with the most runs in it, up to the slots
//!   those runs free ([`curfew_store::Store::complete_and_claim`]: one
//!   transaction, so with PostgreSQL's synchronous commit one WAL flush per
//!   batch instead of one for the completions and one for the claim). The
//!   claimed jobs take those slots over directly; slots left over are given
//!   back to the queue's claim loop. Nothing is claimed once the processor
//!   stops claiming (jobs claimed by a write in flight then are handed
//!   back, as the claim loop does).
//! - **Two batches in flight.** A batch does not wait for the previous
//!   one's commit (a WAL flush of a few ms): up to [`MAX_IN_FLIGHT`]
//!   writes run at once, so both halves of the running jobs keep turning.
//! - **Never done without the write.** A crash before the commit leaves
//!   the runs `running` under their leases: this node's next boot reclaims
//!   them, another node rescues them when the lease expires, and they run
//!   again (at least once). An unreachable store is retried for up to one
//!   lease, as a single write would be.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::{Inner, QueueState, RetryPause};
use curfew_store::{Claimed, StoreError};

/// The longest a success waits for others to share its commit.
pub(super) const LINGER: Duration = Duration::from_millis(2);
/// The most runs written in one statement.
const MAX_BATCH: usize = 512;
/// The most batches being written at once.
const MAX_IN_FLIGHT: usize = 2;

/// What the run learns: written (`true`), its lease lost (`false`), or the
/// store's error after the retries.
pub(super) type Written = Result<bool, Arc<StoreError>>;

/// One successful run, waiting for its commit.
pub(super) struct Success {
    pub(super) id: i64,
    pub(super) token: String,
    /// The run's queue.
    pub(super) queue: Arc<QueueState>,
    /// The run's queue slot, given back after the commit (or handed to a
    /// job claimed by the same commit).
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) written: oneshot::Sender<Written>,
}

/// The runs' side of the completer.
pub(super) type Successes = mpsc::UnboundedSender<Success>;

/// The completer's loop: ends when the processor is gone (its sender
/// dropped).
pub(super) async fn complete_loop(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Success>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        // A turn first: what arrives while both writes are in flight joins
        // this batch. (Never closed, so never an error.)
        let Ok(turn) = in_flight.clone().acquire_owned().await else {
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
        tokio::spawn(async move {
            inner.write_successes(batch).await;
            drop(turn);
        });
    }
}

/// The queue with the most runs in `batch` and their number: the slots a
/// write of the batch frees for it. `None` for an empty batch.
fn busiest_queue(batch: &[Success]) -> Option<(Arc<QueueState>, u32)> {
    let mut counts: Vec<(&Arc<QueueState>, u32)> = Vec::new();
    for s in batch {
        match counts.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &s.queue)) {
            Some((_, n)) => *n += 1,
            None => counts.push((&s.queue, 1)),
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(q, n)| (q.clone(), n))
}

/// Whether a batch of `batch` successes is written without waiting for
/// more, `running` jobs (the batch's included) being in this processor.
fn write_now(batch: usize, running: usize) -> bool {
    batch >= MAX_BATCH || batch * 2 >= running
}

impl Inner {
    /// Writes one batch (retried for up to one lease) and claims for the
    /// slots it frees, then hands those slots to the claimed jobs, frees
    /// the others and answers each run.
    async fn write_successes(self: Arc<Self>, batch: Vec<Success>) {
        let pairs: Vec<(i64, String)> = batch.iter().map(|s| (s.id, s.token.clone())).collect();
        let mut claim = (!self.stop_claiming.is_cancelled())
            .then(|| busiest_queue(&batch))
            .flatten();
        let give_up = Instant::now() + self.cfg.lease;
        let mut pause = RetryPause::new();
        let result = loop {
            let t = self.health.tick();
            let written = match &claim {
                Some((q, slots)) => {
                    self.store
                        .complete_and_claim(
                            &pairs,
                            &q.cfg.name,
                            *slots,
                            &self.owner,
                            self.cfg.lease,
                        )
                        .await
                }
                None => self
                    .store
                    .complete_many(&pairs)
                    .await
                    .map(|ids| (ids, Vec::new())),
            };
            match written {
                Ok((ids, claimed)) => {
                    self.health.ok();
                    break Ok((ids.into_iter().collect::<HashSet<i64>>(), claimed));
                }
                Err(e) if e.is_retryable() && Instant::now() + pause.peek() < give_up => {
                    self.health.failed("record a job's result", &e, t);
                    // Only the verdicts are due: the claim loop claims.
                    claim = None;
                    tokio::time::sleep(pause.next()).await;
                }
                Err(e) => break Err(Arc::new(e)),
            }
        };
        tracing::trace!(jobs = batch.len(), "Successful runs recorded together.");
        let (result, claimed) = match result {
            Ok((ids, claimed)) => (Ok(ids), claimed),
            Err(e) => (Err(e), Vec::new()),
        };
        let claimed_for = claim.map(|(q, _)| q);
        let mut handed = Vec::new();
        let mut answers = Vec::with_capacity(batch.len());
        for s in batch {
            if handed.len() < claimed.len()
                && claimed_for
                    .as_ref()
                    .is_some_and(|q| Arc::ptr_eq(q, &s.queue))
            {
                handed.push(s.permit);
            } else {
                // Every other slot of the batch back before any run goes on.
                drop(s.permit);
            }
            answers.push((s.id, s.written));
        }
        if let Some(q) = claimed_for {
            self.start_claimed(&q, claimed, handed).await;
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

    /// Starts claimed jobs of `q`, each in one of `slots` (held for it by
    /// the claimer: the claim loop, a batch's write, an enqueue); hands
    /// them back if the processor stopped claiming meanwhile, and any job
    /// beyond the slots.
    pub(super) async fn start_claimed(
        self: &Arc<Self>,
        q: &Arc<QueueState>,
        claimed: Vec<Claimed>,
        slots: Vec<OwnedSemaphorePermit>,
    ) {
        if claimed.is_empty() {
            return;
        }
        if self.stop_claiming.is_cancelled() {
            self.hand_back(claimed, "claimed as curfew began to stop")
                .await;
            return;
        }
        let mut slots = slots.into_iter();
        let mut extra = Vec::new();
        for c in claimed {
            match slots.next() {
                Some(permit) => {
                    self.runs.spawn(self.clone().run(q.clone(), c, permit));
                }
                // Cannot happen: every claimer asks for no more jobs than
                // the slots it holds. Hand back rather than overrun the
                // limit.
                None => extra.push(c),
            }
        }
        if !extra.is_empty() {
            self.hand_back(extra, "no free slot").await;
        }
    }

    /// Releases claimed jobs that will not run here.
    pub(super) async fn hand_back(&self, claimed: Vec<Claimed>, why: &str) {
        let pairs: Vec<(i64, String)> = claimed.into_iter().map(|c| (c.job.id, c.token)).collect();
        let t = self.health.tick();
        if let Err(e) = self.store.release(&pairs, why).await {
            self.health.failed("hand back claimed jobs", &e, t);
        }
    }

    /// Records a success through the group commit. `None`: the completer
    /// is gone (the processor is being dropped); the caller writes alone.
    pub(super) async fn complete_batched(
        &self,
        id: i64,
        token: &str,
        queue: &Arc<QueueState>,
        permit: OwnedSemaphorePermit,
    ) -> Option<Written> {
        let (tx, rx) = oneshot::channel();
        self.successes
            .send(Success {
                id,
                token: token.to_owned(),
                queue: queue.clone(),
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
