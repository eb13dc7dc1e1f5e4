//! What the processor reports: per-queue counts from the store and from
//! this processor, for `curfew status`, SIGUSR1 and /metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Processor;
pub use crate::protocol::jobs::{JobsReport, QueueReport};
use curfew_store::QueueStats;

/// Counts since this curfew started, per queue.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) succeeded: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) dead: AtomicU64,
    pub(super) snoozed: AtomicU64,
    pub(super) released: AtomicU64,
    pub(super) lost: AtomicU64,
    pub(super) cancelled: AtomicU64,
}

impl Processor {
    /// Counts per queue: the store's (asked for at most `timeout`) and this
    /// processor's. Queues in the store that this curfew does not process
    /// are listed too, with concurrency 0.
    pub async fn report(&self, timeout: Duration) -> JobsReport {
        let inner = &self.inner;
        // One count in flight at a time, shared by the callers meanwhile:
        // a flood of scrapes costs the store one query at a time.
        let counted = inner
            .gate
            .counted(|| async {
                let started = tokio::time::Instant::now();
                let stats = match tokio::time::timeout(timeout, inner.store.stats()).await {
                    Ok(Ok(s)) => Some(s),
                    _ => None,
                };
                let paused = match tokio::time::timeout(timeout, inner.store.paused()).await {
                    Ok(Ok(p)) => p,
                    _ => Vec::new(),
                };
                super::gate::Counted {
                    started,
                    stats,
                    paused,
                }
            })
            .await;
        let (stats, paused) = (counted.stats, counted.paused);
        let store_up = stats.is_some() && inner.health.is_up();
        let running = inner.running_snapshot();
        let mut queues: Vec<QueueReport> = inner
            .cfg
            .queues
            .iter()
            .filter_map(|qc| inner.queues.get(&qc.name))
            .map(|q| {
                let c = &q.counters;
                let name = &q.cfg.name;
                QueueReport {
                    queue: name.clone(),
                    concurrency: q.cfg.concurrency,
                    running_here: running.iter().filter(|r| &r.queue == name).count(),
                    store: stats.as_ref().map(|all| {
                        all.iter()
                            .find(|s| &s.queue == name)
                            .cloned()
                            .unwrap_or_else(|| empty_stats(name))
                    }),
                    paused: paused.contains(name),
                    succeeded: c.succeeded.load(Ordering::Relaxed),
                    failed: c.failed.load(Ordering::Relaxed),
                    dead: c.dead.load(Ordering::Relaxed),
                    snoozed: c.snoozed.load(Ordering::Relaxed),
                    released: c.released.load(Ordering::Relaxed),
                    lost: c.lost.load(Ordering::Relaxed),
                    cancelled: c.cancelled.load(Ordering::Relaxed),
                }
            })
            .collect();
        for s in stats.iter().flatten() {
            if !inner.queues.contains_key(&s.queue) {
                queues.push(QueueReport {
                    queue: s.queue.clone(),
                    concurrency: 0,
                    running_here: 0,
                    store: Some(s.clone()),
                    paused: paused.contains(&s.queue),
                    succeeded: 0,
                    failed: 0,
                    dead: 0,
                    snoozed: 0,
                    released: 0,
                    lost: 0,
                    cancelled: 0,
                });
            }
        }
        queues.sort_by(|a, b| a.queue.cmp(&b.queue));
        JobsReport {
            store: inner.store.name().to_owned(),
            store_up,
            owner: inner.owner.clone(),
            queues,
            running,
        }
    }
}

fn empty_stats(queue: &str) -> QueueStats {
    QueueStats {
        queue: queue.to_owned(),
        queued: 0,
        scheduled: 0,
        running: 0,
        failed: 0,
        dead: 0,
        oldest_queued_age_ms: None,
    }
}
