//! Periodic jobs (`[jobs.periodic.<name>]`): the scheduler that enqueues
//! each schedule's instants, and the report of `curfew jobs periodic`.
//!
//! - **Exactly once across instances.** Every curfew sharing the store runs
//!   the scheduler; each wakes at an instant and asks the store to advance
//!   the schedule to it ([`Store::periodic_advance`]): the store's row for
//!   the schedule moves forward and the job is inserted in one transaction,
//!   so one of them enqueues and the others find it done. The job's
//!   `run_at` is the instant.
//! - **Restarts and deploys.** On start the scheduler records each schedule
//!   the store does not know yet at its latest instant (a new schedule
//!   starts with its next instant), then looks at every schedule at once: an
//!   instant that fell while no curfew was running is enqueued
//!   (`catch_up = "last"`, only the latest one) or passed over (`"none"`);
//!   every instant that falls while it runs is enqueued, in order, even
//!   when it comes to it late — see [`plan::decide`].
//! - **Lifecycle.** It starts with the processor ([`super::Processor::begin`])
//!   and ends at the stop request (`stop_claiming`): it checks the request
//!   before every enqueue, so nothing is enqueued once it was seen. A reload
//!   that changes `[jobs.periodic]` reaches it through
//!   [`super::Processor::set_periodic`] and takes effect at once.
//!
//! [`Store::periodic_advance`]: curfew_store::Store::periodic_advance

pub mod plan;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::{Inner, Processor, RetryPause};
use crate::config::periodic::PeriodicConfig;
use crate::protocol::jobs::{PeriodicReply, PeriodicReport};
use curfew_store::{NewJob, PeriodicOutcome, PeriodicState};
use plan::Step;

/// The longest the scheduler sleeps before it looks at the wall clock
/// again (a clock that was set meanwhile).
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Instants of one schedule handled in one pass at most.
const MAX_STEPS: usize = 100;

/// The schedules the scheduler follows; replaced by a reload.
pub(super) type Schedules = tokio::sync::watch::Sender<Arc<Vec<PeriodicConfig>>>;

impl Processor {
    /// Replaces the periodic schedules (at start, and when a reload changed
    /// `[jobs.periodic]`); the scheduler follows the new ones at once.
    pub fn set_periodic(&self, schedules: Vec<PeriodicConfig>) {
        self.inner.periodic.send_replace(Arc::new(schedules));
    }

    /// The schedules followed now.
    pub fn periodic_schedules(&self) -> Arc<Vec<PeriodicConfig>> {
        self.inner.periodic.borrow().clone()
    }
}

/// `curfew jobs periodic`: each configured schedule with its next instant
/// after `now` and what the store says of it, then the schedules only the
/// store knows (removed from the configuration), by name.
pub fn report(
    schedules: &[PeriodicConfig],
    states: Vec<PeriodicState>,
    now: Timestamp,
) -> PeriodicReply {
    let mut states: HashMap<String, PeriodicState> =
        states.into_iter().map(|s| (s.name.clone(), s)).collect();
    let mut out: Vec<PeriodicReport> = schedules
        .iter()
        .map(|p| {
            let state = states.remove(&p.name);
            PeriodicReport {
                name: p.name.clone(),
                schedule: Some(p.schedule.to_string()),
                queue: Some(p.queue.clone()),
                kind: Some(p.kind.clone()),
                catch_up: Some(p.catch_up.as_str().to_owned()),
                next_run: p.schedule.next_after(now).map(|t| t.as_millisecond()),
                last_instant: state.as_ref().map(|s| s.last_instant),
                last_job_id: state.and_then(|s| s.last_job_id),
            }
        })
        .collect();
    let mut rest: Vec<PeriodicState> = states.into_values().collect();
    rest.sort_by(|a, b| a.name.cmp(&b.name));
    out.extend(rest.into_iter().map(|s| PeriodicReport {
        name: s.name,
        schedule: None,
        queue: None,
        kind: None,
        catch_up: None,
        next_run: None,
        last_instant: Some(s.last_instant),
        last_job_id: s.last_job_id,
    }));
    out.sort_by(|a, b| a.name.cmp(&b.name));
    PeriodicReply { schedules: out }
}

/// How an instant is advanced to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Advance {
    /// Enqueued as it falls.
    OnTime,
    /// Enqueued at start: it fell while this scheduler was not running.
    CatchUp,
    /// Passed over without a job (`catch_up = "none"`).
    Pass,
}

impl Inner {
    /// The scheduler (see the module docs), until the stop request.
    pub(super) async fn periodic_loop(self: Arc<Self>) {
        let mut schedules_rx = self.periodic.subscribe();
        // The latest instant known handled, per schedule: what the store
        // said at start, then what this scheduler did or found done.
        let mut known: HashMap<String, i64> = HashMap::new();
        let mut pause = RetryPause::new();
        // The scheduler's first look, once the store answered: instants at
        // or before it fell while no curfew ran (see `plan`).
        let mut started: Option<i64> = None;
        loop {
            let schedules = schedules_rx.borrow_and_update().clone();
            let mut retry = false;
            if !schedules.iter().all(|p| known.contains_key(&p.name))
                && self.periodic_start(&schedules, &mut known).await.is_err()
            {
                retry = true;
            }
            if started.is_none() && !retry {
                started = Some(Timestamp::now().as_millisecond());
            }
            let started = started.unwrap_or(i64::MAX);
            for p in schedules.iter() {
                // Each pending instant in turn; a bounded number per pass
                // (the others follow at once, after the other schedules').
                for _ in 0..MAX_STEPS {
                    if self.stop_claiming.is_cancelled() {
                        return;
                    }
                    let Some(&last) = known.get(&p.name) else {
                        break;
                    };
                    let (instant, how) = match plan::decide(
                        &p.schedule,
                        p.catch_up,
                        last,
                        started,
                        Timestamp::now(),
                    ) {
                        Step::Wait => break,
                        Step::Enqueue(i) => (i, Advance::OnTime),
                        Step::CatchUp(i) => (i, Advance::CatchUp),
                        Step::Pass(i) => (i, Advance::Pass),
                    };
                    if self.advance(p, instant, how, &mut known).await.is_err() {
                        retry = true;
                        break;
                    }
                }
            }
            let now = Timestamp::now();
            let until_next = schedules
                .iter()
                .filter_map(|p| p.schedule.next_after(now))
                .map(|t| {
                    let ms = t.as_millisecond().saturating_sub(now.as_millisecond());
                    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
                })
                .min()
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            let sleep = if retry {
                pause.next().min(until_next)
            } else {
                pause.reset();
                until_next
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                changed = schedules_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tracing::info!(
                        schedules = %schedules_rx.borrow().iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
                        "Periodic jobs: following the reloaded schedules."
                    );
                }
                _ = self.stop_claiming.cancelled() => return,
            }
        }
    }

    /// Records the schedules the store does not know at their latest
    /// instant, then reads every schedule's position into `known`.
    async fn periodic_start(
        &self,
        schedules: &[PeriodicConfig],
        known: &mut HashMap<String, i64>,
    ) -> Result<(), ()> {
        let now = Timestamp::now();
        let t = self.health.tick();
        for p in schedules.iter().filter(|p| !known.contains_key(&p.name)) {
            // A schedule with no instant yet starts at 0: its first is next.
            let latest = p
                .schedule
                .at_or_before(now)
                .map_or(0, |t| t.as_millisecond());
            match self.store.periodic_start(&p.name, latest).await {
                Ok(true) => tracing::info!(
                    schedule = %p.name,
                    when = %p.schedule,
                    next = %p.schedule.next_after(now).map(|t| t.to_string()).unwrap_or_default(),
                    "Periodic schedule new to the store: its first job is at its next instant."
                ),
                Ok(false) => {}
                Err(e) => {
                    self.health.failed("record a periodic schedule", &e, t);
                    return Err(());
                }
            }
        }
        match self.store.periodic_states().await {
            Ok(states) => {
                self.health.ok();
                for s in states {
                    let e = known.entry(s.name).or_insert(s.last_instant);
                    *e = (*e).max(s.last_instant);
                }
                Ok(())
            }
            Err(e) => {
                self.health.failed("read the periodic schedules", &e, t);
                Err(())
            }
        }
    }

    /// Advances schedule `p` to `instant` in the store, with its job
    /// (unless the instant is passed over).
    async fn advance(
        &self,
        p: &PeriodicConfig,
        instant: i64,
        how: Advance,
        known: &mut HashMap<String, i64>,
    ) -> Result<(), ()> {
        let job = (how != Advance::Pass).then(|| NewJob {
            queue: p.queue.clone(),
            kind: p.kind.clone(),
            payload: p.payload.clone(),
            priority: p.priority,
            run_at: Some(instant),
            max_attempts: p
                .max_attempts
                .or_else(|| self.cfg.queue(&p.queue).map(|q| q.max_attempts)),
            idempotency_key: None,
            unique: None,
        });
        let at = Timestamp::from_millisecond(instant)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let t = self.health.tick();
        match self.store.periodic_advance(&p.name, instant, job).await {
            Ok(outcome) => {
                self.health.ok();
                known.insert(p.name.clone(), instant);
                match outcome {
                    PeriodicOutcome::Enqueued(id) => {
                        let (result, msg) = match how {
                            Advance::CatchUp => (
                                "caught_up",
                                "Periodic instant missed while no curfew ran; its job enqueued now (catch_up = \"last\").",
                            ),
                            _ => ("on_time", "Periodic job enqueued."),
                        };
                        tracing::info!(event = "periodic_enqueued", result, schedule = %p.name, instant = %at, instant_ms = instant, job_id = id, queue = %p.queue, kind = %p.kind, "{msg}");
                        if let Some(q) = self.queues.get(&p.queue) {
                            q.wake.notify_one();
                        }
                    }
                    PeriodicOutcome::Passed => tracing::info!(
                        event = "periodic_passed",
                        schedule = %p.name,
                        instant_ms = instant,
                        instant = %at,
                        "Periodic instant missed while no curfew ran; passed over (catch_up = \"none\")."
                    ),
                    PeriodicOutcome::AlreadyDone => tracing::debug!(
                        schedule = %p.name,
                        instant = %at,
                        "Periodic instant handled by another processor."
                    ),
                }
                Ok(())
            }
            Err(e) => {
                self.health.failed("enqueue a periodic job", &e, t);
                if e.is_refused_input() {
                    // A job the store refuses (it cannot become valid by
                    // waiting): skip the instant rather than loop on it.
                    // Any other error (a timeout, a failover, a store
                    // fault) keeps the instant due: it is tried again.
                    tracing::error!(schedule = %p.name, instant = %at, error = %e, "Periodic job refused by the store; this instant is skipped.");
                    known.insert(p.name.clone(), instant);
                }
                Err(())
            }
        }
    }
}
