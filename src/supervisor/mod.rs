//! The supervisor: runs N worker slots ([`slot`]), each a task that keeps
//! one ready worker process: it spawns the worker, waits until it is ready,
//! hands it to the router, restarts it with backoff when it dies, aborts it
//! when hung, replaces it (new one ready first, then the old one drained and
//! stopped) for recycling and reloads, and stops it (SIGTERM, then SIGKILL
//! after `worker_stop_timeout`) when told to.
//!
//! It knows nothing of HTTP: readiness probes, routing and "has this worker
//! finished its requests" go through the [`Backends`] trait, which the proxy
//! implements.
//!
//! Invariants:
//! - a worker is routed to only between "ready" and its removal, and it is
//!   removed from routing *before* it is signalled to stop; a worker that is
//!   replaced or scaled away first finishes its in-flight requests;
//! - a worker that dies is removed from routing as soon as the reaper
//!   reports it, whatever its slot is doing (a slot never waits on one thing
//!   alone, see `slot`), and a slot without a worker always has one on its
//!   way;
//! - every worker process is reaped by [`reaper::Reaper`]; a stopped slot
//!   leaves no process of its group behind (the group is SIGKILLed once its
//!   leader has exited);
//! - a reload switches a slot to the new generation only after every slot of
//!   its batch has a ready new worker; otherwise the old ones keep serving;
//! - every exit is classified and logged exactly once ([`classify`]), by
//!   what happened to the process, not by what its slot was doing.

pub mod backoff;
pub mod classify;
pub mod command;
mod hint;
mod instance;
pub mod nofile;
mod oom;
pub mod output;
pub mod procfs;
pub mod reaper;
mod slot;
mod spawn;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, WorkerSocket};
use crate::events::{HookSink, NoHooks, Sinks};
use crate::metrics::Metrics;
use backoff::Backoff;
pub use instance::group_rss_bytes;
use reaper::Reaper;

pub use spawn::make_run_dir;

/// Where a worker accepts connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WorkerAddr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for WorkerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerAddr::Tcp(a) => write!(f, "{a}"),
            WorkerAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A ready worker, as handed to the router.
#[derive(Debug, Clone)]
pub struct ReadyWorker {
    /// Unique per process instance (never reused).
    pub uid: u64,
    /// The stable slot number, `CURFEW_WORKER_ID`.
    pub id: usize,
    pub pid: u32,
    pub addr: WorkerAddr,
    /// Which configuration generation it runs (1 at start, +1 per reload).
    pub generation: u64,
    /// How many times its slot restarted a dead or hung worker before it.
    pub restarts: u32,
    /// Recycle after this many requests (`max_requests` + jitter).
    pub max_requests: Option<u64>,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the supervisor needs from the HTTP side.
pub trait Backends: Send + Sync + 'static {
    /// Does the worker at `addr` answer? `Err` carries why not.
    fn probe(&self, addr: WorkerAddr) -> BoxFuture<'static, Result<(), String>>;
    /// Does the worker at `addr` answer `GET path` with 2xx/3xx within `timeout`?
    fn liveness(
        &self,
        addr: WorkerAddr,
        path: String,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<(), String>>;
    /// Start routing to this worker.
    fn add(&self, worker: ReadyWorker);
    /// Stop routing to this worker (requests already on it finish).
    fn remove(&self, uid: u64);
    /// The requests in flight on worker `uid` ("GET /x (age 120 ms)").
    fn requests_on(&self, uid: u64) -> Vec<String>;
    /// Resolves `true` once no request is in flight on worker `uid` any
    /// more, `false` if that takes longer than `timeout`.
    fn drained(&self, uid: u64, timeout: Duration) -> BoxFuture<'static, bool>;
}

/// What the slots need to know to start a worker. Replaced as a whole on
/// reload (with `generation` + 1).
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub command: Vec<String>,
    pub socket: WorkerSocket,
    pub chdir: Option<PathBuf>,
    pub boot_timeout: Duration,
    pub stop_timeout: Duration,
    pub graceful_timeout: Duration,
    pub abort_timeout: Duration,
    pub faulthandler: bool,
    pub max_requests: Option<u64>,
    pub max_requests_jitter: u64,
    pub max_memory: Option<u64>,
    /// Liveness probe for workers with several requests at once.
    pub liveness: Option<crate::config::Liveness>,
    pub run_dir: PathBuf,
    pub generation: u64,
    /// Variables set for every worker on top of the inherited environment
    /// (e.g. `CURFEW_JOB_TOKEN`).
    pub extra_env: Vec<(String, String)>,
    /// Worker output relayed at or above this level; `None`: none.
    pub worker_log_level: Option<output::Level>,
}

impl WorkerSpec {
    /// The spec of `cfg` (generation 1; a reload assigns the next one).
    pub fn from_config(cfg: &Config, run_dir: PathBuf) -> Self {
        WorkerSpec {
            command: cfg.command.clone(),
            socket: cfg.worker_socket,
            chdir: cfg.chdir.clone(),
            boot_timeout: cfg.boot_timeout,
            stop_timeout: cfg.worker_stop_timeout,
            graceful_timeout: cfg.graceful_timeout,
            abort_timeout: cfg.abort_timeout,
            faulthandler: cfg.faulthandler,
            max_requests: cfg.max_requests,
            max_requests_jitter: cfg.max_requests_jitter,
            max_memory: cfg.max_memory,
            liveness: cfg.liveness.clone().filter(|_| cfg.worker_concurrency > 1),
            run_dir,
            generation: 1,
            extra_env: Vec::new(),
            worker_log_level: cfg.worker_log_level,
        }
    }
}

/// Why a worker could not boot.
#[derive(Debug, Clone, thiserror::Error)]
#[error("worker {id} failed to boot: {reason}{}", if stderr.is_empty() { String::new() } else { format!("; its stderr: {stderr}") })]
pub struct BootError {
    pub id: usize,
    pub reason: String,
    /// What the worker last said, on one line ([`output::Tail::summary`]).
    pub stderr: String,
}

/// Why a reload did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    #[error("the new generation could not boot; the old one keeps serving: {0}")]
    Boot(BootError),
    #[error("worker {0} did not answer the reload in time; the old generation keeps serving")]
    NoAnswer(usize),
    /// Every new worker of the batch was ready, but this slot's died before
    /// the switch and no other could boot in its place: the slots before it
    /// switched, this one keeps its old worker.
    #[error(
        "worker {0}'s new worker died before the switch and no replacement became ready; that slot keeps its old generation"
    )]
    Lost(usize),
}

/// How a slot ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotOutcome {
    /// A worker had to be SIGKILLed because it ignored SIGTERM.
    pub forced: bool,
}

/// Something a slot is asked to do.
#[derive(Debug)]
pub(crate) enum SlotCommand {
    /// Worker `uid` is hung: dump its stack (SIGABRT), kill it, replace it.
    Abort {
        uid: u64,
        reason: String,
        request: String,
    },
    /// Replace worker `uid` (max_requests, max_memory).
    Recycle { uid: u64, reason: String },
    /// Reload, phase one: boot a worker of `spec` (the reload's generation),
    /// say whether it is ready, then switch to it only if `go` says so.
    Prepare {
        spec: Arc<WorkerSpec>,
        ready: oneshot::Sender<Result<(), BootError>>,
        go: oneshot::Receiver<bool>,
        /// Answered once traffic has switched (`true`), or once the new
        /// worker is gone without a switch (`false`).
        done: oneshot::Sender<bool>,
    },
    /// Scale down: drain the worker, stop it, end the slot.
    Retire,
}

pub(crate) struct Shared {
    reaper: Reaper,
    /// The spec of the last completed reload (or of the start): new slots
    /// start from it. Each slot keeps its own copy, which a reload replaces
    /// when that slot switches.
    spec: RwLock<Arc<WorkerSpec>>,
    backends: Arc<dyn Backends>,
    /// Worker exits are counted here (by reason).
    metrics: Arc<Metrics>,
    next_uid: AtomicU64,
    /// Serving worker instances, by uid: their slot's command channel.
    serving: Mutex<HashMap<u64, mpsc::UnboundedSender<SlotCommand>>>,
    /// Old workers being drained and stopped after a replacement.
    retiring: TaskTracker,
    /// Set when a retiring worker had to be SIGKILLed.
    forced: AtomicBool,
    /// Cancelled for an immediate stop: SIGKILL instead of SIGTERM.
    kill_now: CancellationToken,
    /// Where the `worker_exit` and `worker_abort` hooks go (set by the
    /// orchestrator; none until then).
    hooks: std::sync::OnceLock<Box<dyn HookSink>>,
    /// What the workers' output relays share (boot tracebacks said once).
    relay: Arc<output::Relay>,
}

impl Shared {
    /// Where the supervisor's events go besides the log.
    fn sinks(&self) -> Sinks<'_> {
        Sinks {
            metrics: &self.metrics,
            hooks: match self.hooks.get() {
                Some(h) => h.as_ref(),
                None => &NoHooks,
            },
        }
    }

    fn spec(&self) -> Arc<WorkerSpec> {
        self.spec.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn register(&self, uid: u64, tx: mpsc::UnboundedSender<SlotCommand>) {
        self.serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid, tx);
    }

    fn unregister(&self, uid: u64) {
        self.serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
    }

    fn send(&self, uid: u64, cmd: SlotCommand) {
        if let Some(tx) = self
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&uid)
        {
            let _ = tx.send(cmd);
        }
    }
}

/// A cheap, cloneable way to act on running workers from elsewhere (the
/// proxy's hung-request and max_requests detection).
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Abort worker instance `uid` as hung (no-op if it is gone already).
    pub fn abort(&self, uid: u64, reason: String, request: String) {
        self.shared.send(
            uid,
            SlotCommand::Abort {
                uid,
                reason,
                request,
            },
        );
    }

    /// Replace worker instance `uid` (no-op if it is gone already).
    pub fn recycle(&self, uid: u64, reason: String) {
        self.shared.send(uid, SlotCommand::Recycle { uid, reason });
    }
}

/// What a caught panic says (its `&str` or `String` payload).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

struct SlotHandle {
    id: usize,
    stop: CancellationToken,
    cmd: mpsc::UnboundedSender<SlotCommand>,
    join: JoinHandle<SlotOutcome>,
}

/// The pool of worker slots.
pub struct Supervisor {
    shared: Arc<Shared>,
    slots: Vec<SlotHandle>,
    /// Slots being scaled away.
    leaving: Vec<JoinHandle<SlotOutcome>>,
    /// Generation the next reload gets (never reused, even after a failure).
    next_generation: u64,
}

impl Supervisor {
    pub fn new(
        reaper: Reaper,
        spec: WorkerSpec,
        backends: Arc<dyn Backends>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Supervisor {
            shared: Arc::new(Shared {
                reaper,
                spec: RwLock::new(Arc::new(spec)),
                backends,
                metrics,
                next_uid: AtomicU64::new(1),
                serving: Mutex::default(),
                retiring: TaskTracker::new(),
                forced: AtomicBool::new(false),
                kill_now: CancellationToken::new(),
                hooks: std::sync::OnceLock::new(),
                relay: Arc::default(),
            }),
            slots: Vec::new(),
            leaving: Vec::new(),
            next_generation: 2,
        }
    }

    /// Set who hears of unexpected worker exits and aborts.
    pub fn set_hooks(&self, hooks: Box<dyn HookSink>) {
        let _ = self.shared.hooks.set(hooks);
    }

    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    pub fn generation(&self) -> u64 {
        self.shared.spec().generation
    }

    pub fn workers(&self) -> usize {
        self.slots.len()
    }

    /// Start `n` slots. The returned channel yields one first-boot result per
    /// slot (`Ok(id)` once ready, or the boot error).
    pub fn start(&mut self, n: usize) -> mpsc::UnboundedReceiver<Result<usize, BootError>> {
        let (tx, rx) = mpsc::unbounded_channel();
        for _ in 0..n {
            let (first_tx, first_rx) = oneshot::channel();
            self.add_slot(Some(first_tx));
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(r) = first_rx.await {
                    let _ = tx.send(r);
                }
            });
        }
        rx
    }

    /// A new slot with the lowest free id.
    fn add_slot(&mut self, first_boot: Option<oneshot::Sender<Result<usize, BootError>>>) {
        let id = (0..)
            .find(|i| !self.slots.iter().any(|s| s.id == *i))
            .unwrap_or(self.slots.len());
        let stop = CancellationToken::new();
        let (cmd_tx, cmds) = mpsc::unbounded_channel();
        let slot = slot::Slot {
            shared: self.shared.clone(),
            id,
            stop: stop.clone(),
            cmds,
            cmd_tx: cmd_tx.clone(),
            first_boot,
            backoff: Backoff::default(),
            restarts: 0,
            spec: self.shared.spec(),
        };
        let join = tokio::spawn(async move {
            use futures_util::FutureExt;
            // A panic in the slot's task (a bug) is said at once, at ERROR:
            // the slot starts no worker any more.
            match std::panic::AssertUnwindSafe(slot.run())
                .catch_unwind()
                .await
            {
                Ok(outcome) => outcome,
                Err(panic) => {
                    tracing::error!(
                        slot = id,
                        panic = panic_message(panic.as_ref()),
                        "A worker slot's task panicked: this slot starts no worker any more until curfew restarts (a bug in curfew)."
                    );
                    SlotOutcome::default()
                }
            }
        });
        self.slots.push(SlotHandle {
            id,
            stop,
            cmd: cmd_tx,
            join,
        });
        self.slots.sort_by_key(|s| s.id);
    }

    /// Grow or shrink to `n` workers (at least 1). Leaving workers finish
    /// their requests first.
    pub fn scale(&mut self, n: usize) {
        let n = n.max(1);
        while self.slots.len() < n {
            self.add_slot(None);
        }
        while self.slots.len() > n {
            if let Some(s) = self.slots.pop() {
                let _ = s.cmd.send(SlotCommand::Retire);
                self.leaving.push(s.join);
            }
        }
        self.leaving.retain(|j| !j.is_finished());
    }

    /// Reload with `spec`: boot new workers `batch` slots at a time; each
    /// batch switches only when all of its new workers are ready. On failure
    /// the slots not yet switched keep their old workers (with `batch >=
    /// workers`, that is all of them) and their old spec, so their restarts
    /// use the old command too. Generations are never reused.
    ///
    /// A slot keeps watching its serving worker throughout: if it dies while
    /// the new one boots or waits for `go`, the slot restarts it with its own
    /// (old) generation at once, and the new one takes over on `go` as usual.
    pub async fn reload(&mut self, mut spec: WorkerSpec, batch: usize) -> Result<u64, ReloadError> {
        let generation = self.next_generation;
        self.next_generation += 1;
        spec.generation = generation;
        let answer_within = spec
            .boot_timeout
            .saturating_mul(2)
            .saturating_add(Duration::from_secs(10));
        let spec = Arc::new(spec);
        let ids: Vec<(usize, mpsc::UnboundedSender<SlotCommand>)> =
            self.slots.iter().map(|s| (s.id, s.cmd.clone())).collect();
        for chunk in ids.chunks(batch.max(1)) {
            let mut pending = Vec::new();
            for (id, cmd) in chunk {
                let (ready_tx, ready_rx) = oneshot::channel();
                let (go_tx, go_rx) = oneshot::channel();
                let (done_tx, done_rx) = oneshot::channel();
                let _ = cmd.send(SlotCommand::Prepare {
                    spec: spec.clone(),
                    ready: ready_tx,
                    go: go_rx,
                    done: done_tx,
                });
                pending.push((*id, ready_rx, go_tx, done_rx));
            }
            let mut failure = None;
            let mut gos = Vec::new();
            let mut dones = Vec::new();
            for (id, ready_rx, go_tx, done_rx) in pending {
                match tokio::time::timeout(answer_within, ready_rx).await {
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(e))) => {
                        failure.get_or_insert(ReloadError::Boot(e));
                    }
                    _ => {
                        failure.get_or_insert(ReloadError::NoAnswer(id));
                    }
                }
                gos.push(go_tx);
                dones.push((id, done_rx));
            }
            let commit = failure.is_none();
            for go in gos {
                let _ = go.send(commit);
            }
            // "Reload complete" must mean every slot of the batch routes to
            // its new worker, so a request sent afterwards reaches new code.
            // (A switch is immediate, unless the prepared worker died and the
            // slot is booting another one.)
            for (id, done) in dones {
                if let Ok(Ok(false)) = tokio::time::timeout(answer_within, done).await
                    && commit
                {
                    failure.get_or_insert(ReloadError::Lost(id));
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
        }
        // Slots added from now on (scale up) start the new generation.
        *self.shared.spec.write().unwrap_or_else(|e| e.into_inner()) = spec;
        Ok(generation)
    }

    /// Stop every worker: SIGTERM, then SIGKILL after `worker_stop_timeout`
    /// (or at once after [`Supervisor::kill_now`]). Resolves to whether any
    /// worker had to be killed.
    pub fn stop_all(&mut self) -> impl Future<Output = SlotOutcome> + Send + 'static {
        for s in &self.slots {
            s.stop.cancel();
        }
        let joins: Vec<JoinHandle<SlotOutcome>> = self
            .slots
            .drain(..)
            .map(|s| s.join)
            .chain(self.leaving.drain(..))
            .collect();
        let shared = self.shared.clone();
        async move {
            let mut outcome = SlotOutcome::default();
            for j in joins {
                match j.await {
                    Ok(o) => outcome.forced |= o.forced,
                    // A panic is caught and logged in the task itself.
                    Err(e) => tracing::error!(error = %e, "A worker slot's task failed."),
                }
            }
            shared.retiring.close();
            shared.retiring.wait().await;
            outcome.forced |= shared.forced.load(Ordering::Relaxed);
            outcome
        }
    }

    /// Make any stop in progress (or to come) SIGKILL at once.
    pub fn kill_now(&self) {
        self.shared.kill_now.cancel();
        for s in &self.slots {
            s.stop.cancel();
        }
    }
}
