//! Health checks of the serving worker: the liveness probe (`liveness`)
//! and the `max_memory` check, both ticking inside the slot's event loop.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};

use super::super::{BoxFuture, WorkerSpec};
use super::{Event, Slot, State};
use crate::config::Liveness;

/// How often `max_memory` is checked.
const MEMORY_CHECK: Duration = Duration::from_secs(3);

/// Health checks of the serving worker.
pub(super) struct Watch {
    memory: Interval,
    live: Option<Live>,
}

struct Live {
    cfg: Liveness,
    tick: Interval,
    failures: u32,
    probe: Option<BoxFuture<'static, Result<(), String>>>,
}

impl Watch {
    pub(super) fn new(spec: &WorkerSpec) -> Watch {
        let mut memory = tokio::time::interval(MEMORY_CHECK);
        memory.set_missed_tick_behavior(MissedTickBehavior::Delay);
        memory.reset();
        let live = spec.liveness.clone().map(|cfg| {
            let mut tick = tokio::time::interval(cfg.interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tick.reset(); // the first probe one interval after it became ready
            Live {
                cfg,
                tick,
                failures: 0,
                probe: None,
            }
        });
        Watch { memory, live }
    }
}

impl Slot {
    /// Time for a liveness probe of the serving worker (unless one is
    /// still under way).
    pub(super) fn live_tick(&mut self, st: &mut State) {
        if let (Some(inst), Some(Watch { live: Some(l), .. })) = (&st.current, &mut st.watch)
            && l.probe.is_none()
        {
            l.probe = Some(self.shared.backends.liveness(
                inst.addr.clone(),
                l.cfg.path.clone(),
                l.cfg.timeout,
            ));
        }
    }

    /// `max_memory`: recycle the serving worker once its group's RSS is
    /// over the limit.
    pub(super) fn memory_tick(&mut self, st: &mut State) {
        if let (Some(inst), Some(limit)) = (&st.current, self.spec.max_memory) {
            let rss = inst.rss_bytes();
            if rss > limit {
                let reason = format!("RSS {} MiB > {} MiB", rss >> 20, limit >> 20);
                let uid = inst.uid;
                self.recycle(st, uid, reason);
            }
        }
    }

    pub(super) fn liveness_result(&mut self, st: &mut State, result: Result<(), String>) {
        let Some(Watch { live: Some(l), .. }) = &mut st.watch else {
            return;
        };
        l.probe = None;
        let Some(inst) = &st.current else { return };
        match result {
            Ok(()) => l.failures = 0,
            Err(e) => {
                l.failures += 1;
                tracing::info!(worker = self.id, pid = inst.pid, failures = l.failures, of = l.cfg.failures, error = %e, "Liveness probe failed.");
                if l.failures >= l.cfg.failures {
                    let reason = format!("liveness probe failed {} times: {e}", l.failures);
                    let requests = self.shared.backends.requests_on(inst.uid).join(", ");
                    self.abort_current(st, reason, requests);
                }
            }
        }
    }
}

pub(super) async fn watch_progress(watch: &mut Option<Watch>) -> Event {
    let Some(w) = watch else {
        return std::future::pending().await;
    };
    let live = async {
        match &mut w.live {
            Some(Live {
                probe: Some(probe), ..
            }) => Event::Live(probe.await),
            Some(Live { tick, .. }) => {
                tick.tick().await;
                Event::LiveTick
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        e = live => e,
        _ = w.memory.tick() => Event::MemoryTick,
    }
}
