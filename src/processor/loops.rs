//! The processor's long-running tasks: reclaim at start, the wake-up
//! listener, the rescue loop, the prune loop and one claim loop per queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Inner, QueueState, RetryPause};
use curfew_store::{PruneOutcome, Pruned, now_ms};

/// Rows per finished state deleted in one prune transaction: a few
/// milliseconds of write lock.
pub(super) const PRUNE_BATCH: u32 = 1_000;
/// Between two prune batches, so claims and completions get the write lock
/// (SQLite) and autovacuum keeps up (PostgreSQL).
const PRUNE_PAUSE: Duration = Duration::from_millis(20);

impl Inner {
    /// Takes back at once the runs of this node's previous boots that are
    /// provably dead: every other boot of the node except the live
    /// predecessors an upgrade named (`Processor::set_live_predecessors`),
    /// whose runs end with them or at their lease's expiry.
    pub(super) async fn reclaim_previous(&self) {
        let mut live = self
            .live_predecessors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !live.is_empty() {
            tracing::info!(
                live = %live.join(", "),
                "Not reclaiming the jobs of the curfew this one upgraded (it still runs them, then hands back what is left)."
            );
        }
        let mut pause = RetryPause::new();
        let mut siblings_known = false;
        loop {
            let t = self.health.tick();
            if !siblings_known {
                match self.siblings(&live).await {
                    Ok(siblings) => {
                        if !siblings.is_empty() {
                            tracing::warn!(
                                node = %self.node,
                                others = %siblings.join(", "),
                                "Another curfew on this host runs jobs under this node's name (jobs.node, the host name by default): its runs are left to it (they are rescued only if its leases lapse). Give each curfew sharing a store its own jobs.node."
                            );
                        }
                        live.extend(siblings);
                        siblings_known = true;
                    }
                    Err(e) => {
                        self.health
                            .failed("list the running jobs of this node", &e, t);
                        if !e.is_retryable() {
                            return;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(pause.next()) => {}
                            _ = self.stop_claiming.cancelled() => return,
                        }
                        continue;
                    }
                }
            }
            match self
                .store
                .reclaim_own_previous_except(&self.node, &self.boot, &live, self.cfg.max_crashes)
                .await
            {
                Ok(ids) => {
                    self.health.ok();
                    if !ids.is_empty() {
                        tracing::info!(
                            jobs = ids.len(),
                            "Reclaimed the jobs this node was running when it last stopped."
                        );
                    }
                    return;
                }
                Err(e) => {
                    self.health.failed("reclaim the previous run's jobs", &e, t);
                    if !e.is_retryable() {
                        return;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause.next()) => {}
                _ = self.stop_claiming.cancelled() => return,
            }
        }
    }

    /// The lease owners of this node's other boots that run jobs now and
    /// whose process still runs on this host (`boot::runs_elsewhere_here`),
    /// apart from those already in `live`: curfews sharing the node's name,
    /// not previous boots of this one.
    async fn siblings(&self, live: &[String]) -> Result<Vec<String>, curfew_store::StoreError> {
        let prefix = format!("{}/", self.node);
        let mut owners = std::collections::BTreeSet::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .list(curfew_store::ListFilter {
                    state: Some(curfew_store::JobState::Running),
                    limit: curfew_store::ListFilter::MAX_LIMIT,
                    after_id: after,
                    with_payload: false,
                    ..curfew_store::ListFilter::default()
                })
                .await?;
            let full = page.len() == curfew_store::ListFilter::MAX_LIMIT as usize;
            after = page.last().map(|j| j.id);
            owners.extend(page.into_iter().filter_map(|j| j.lease_owner));
            if !full {
                break;
            }
        }
        Ok(owners
            .into_iter()
            .filter(|o| *o != self.owner && !live.contains(o))
            .filter(|o| {
                o.strip_prefix(&prefix)
                    .is_some_and(super::boot::runs_elsewhere_here)
            })
            .collect())
    }

    pub(super) async fn listen_loop(self: Arc<Self>) {
        let mut pause = RetryPause::new();
        while !self.stop_claiming.is_cancelled() {
            let t = self.health.tick();
            let listener = tokio::select! {
                l = self.store.listen() => l,
                _ = self.stop_claiming.cancelled() => return,
            };
            match listener {
                Ok(mut l) => loop {
                    let got = tokio::select! {
                        g = l.recv() => g,
                        _ = self.stop_claiming.cancelled() => return,
                    };
                    match got {
                        Ok(queue) => {
                            pause.reset();
                            if let Some(q) = self.queues.get(&queue) {
                                q.wake.notify_one();
                            }
                        }
                        Err(e) => {
                            // A live connection failing now: no straggler.
                            self.health
                                .failed("listen for new jobs", &e, self.health.tick());
                            break;
                        }
                    }
                },
                Err(e) => self.health.failed("listen for new jobs", &e, t),
            }
            tokio::select! {
                _ = tokio::time::sleep(pause.next()) => {}
                _ = self.stop_claiming.cancelled() => return,
            }
        }
    }

    /// Takes back jobs whose processor died (lease expired), every half lease.
    pub(super) async fn rescue_loop(self: Arc<Self>) {
        let every = (self.cfg.lease / 2).max(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.stop_claiming.cancelled() => return,
            }
            let t = self.health.tick();
            match self.store.rescue_expired(self.cfg.max_crashes).await {
                Ok(ids) if !ids.is_empty() => {
                    self.health.ok();
                    for q in self.queues.values() {
                        q.wake.notify_one();
                    }
                }
                Ok(_) => self.health.ok(),
                Err(e) => self.health.failed("rescue jobs of dead processors", &e, t),
            }
        }
    }

    /// Deletes finished jobs past `[jobs.retention]`, every
    /// `retention.interval`: batch after batch until nothing more is due.
    /// On PostgreSQL one processor of those sharing the store prunes at a
    /// time; the others find it busy and wait for their next interval.
    pub(super) async fn prune_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.prune_interval) => {}
                _ = self.stop_claiming.cancelled() => return,
            }
            self.prune_pass().await;
        }
    }

    async fn prune_pass(&self) {
        let started = Instant::now();
        let mut total = Pruned::default();
        let mut batches = 0u32;
        loop {
            let t = self.health.tick();
            match self.store.prune(&self.cfg.retention, PRUNE_BATCH).await {
                Ok(PruneOutcome::Deleted { pruned, more }) => {
                    self.health.ok();
                    batches += 1;
                    total.succeeded += pruned.succeeded;
                    total.cancelled += pruned.cancelled;
                    total.dead += pruned.dead;
                    if !more {
                        break;
                    }
                }
                Ok(PruneOutcome::Busy) => {
                    self.health.ok();
                    tracing::debug!("Another processor is pruning the job store.");
                    break;
                }
                Err(e) => {
                    self.health.failed("prune finished jobs", &e, t);
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(PRUNE_PAUSE) => {}
                _ = self.stop_claiming.cancelled() => break,
            }
        }
        if total.total() > 0 {
            tracing::info!(
                event = "jobs_pruned",
                succeeded = total.succeeded,
                cancelled = total.cancelled,
                dead = total.dead,
                batches,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "Deleted finished jobs past their retention."
            );
        }
    }

    pub(super) async fn queue_loop(self: Arc<Self>, q: Arc<QueueState>) {
        let mut pause = RetryPause::new();
        loop {
            if self.stop_claiming.is_cancelled() {
                return;
            }
            let free = q.slots.available_permits();
            let mut sleep_for = self.cfg.poll_interval;
            if free > 0 {
                // The free slots are taken before the claim, so an enqueue
                // that claims for a slot of its own (`Processor::enqueue`)
                // cannot take one of them meanwhile; those the claim does
                // not fill go back when `held` drops.
                let Some((n, mut held)) = u32::try_from(free).ok().and_then(|n| {
                    q.slots
                        .clone()
                        .try_acquire_many_owned(n)
                        .ok()
                        .map(|held| (n, held))
                }) else {
                    // Such an enqueue took one since they were counted.
                    tokio::task::yield_now().await;
                    continue;
                };
                let t = self.health.tick();
                match self
                    .store
                    .claim(&q.cfg.name, n, &self.owner, self.cfg.lease)
                    .await
                {
                    Ok(claimed) => {
                        self.health.ok();
                        pause.reset();
                        let got = claimed.len();
                        let slots = (0..got).map_while(|_| held.split(1)).collect();
                        drop(held);
                        // Gives the jobs back untouched if the stop came
                        // while this claim was in flight.
                        self.start_claimed(&q, claimed, slots).await;
                        if self.stop_claiming.is_cancelled() {
                            return;
                        }
                        if got == free {
                            // Maybe more: claim again as soon as a slot frees.
                            continue;
                        }
                        match self.store.next_run_at(&q.cfg.name).await {
                            Ok(Some(at)) => {
                                let until = Duration::from_millis((at - now_ms()).max(0) as u64);
                                sleep_for = sleep_for.min(until.max(Duration::from_millis(5)));
                            }
                            Ok(None) => {}
                            Err(e) => self.health.failed("look for scheduled jobs", &e, t),
                        }
                    }
                    Err(e) => {
                        self.health
                            .failed(&format!("claim jobs of queue {}", q.cfg.name), &e, t);
                        sleep_for = pause.next();
                    }
                }
            }
            let slot_free = async {
                if free == 0 {
                    // Wait for a slot (then give it back: the claim takes it).
                    let _ = q.slots.acquire().await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = q.wake.notified() => {}
                _ = slot_free => {}
                _ = tokio::time::sleep(sleep_for) => {}
                _ = self.stop_claiming.cancelled() => return,
            }
        }
    }
}
