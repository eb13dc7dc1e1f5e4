//! The supervisor: runs N worker slots, each a task that spawns its worker,
//! waits until it is ready, hands it to the router, watches it, restarts it
//! with backoff when it dies, and stops it (SIGTERM, then SIGKILL after
//! `worker_stop_timeout`) when told to.
//!
//! It knows nothing of HTTP: readiness probes and routing go through the
//! [`Backends`] trait, which the proxy implements.
//!
//! Invariants:
//! - a worker is routed to only between "ready" and its removal, and it is
//!   removed from routing *before* it is signalled to stop;
//! - every worker process is reaped by [`reaper::Reaper`]; a stopped slot
//!   leaves no process of its group behind (the group is SIGKILLed once its
//!   leader has exited);
//! - every exit is classified and logged exactly once ([`classify`]).

pub mod backoff;
pub mod classify;
pub mod output;
pub mod reaper;
mod spawn;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, WorkerSocket};
use backoff::Backoff;
use classify::{ExitClass, SentSignal, Severity};
use output::{Stream, Tail};
use reaper::{ExitStatus, Reaper};

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
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the supervisor needs from the HTTP side.
pub trait Backends: Send + Sync + 'static {
    /// Does the worker at `addr` answer? `Err` carries why not.
    fn probe(&self, addr: WorkerAddr) -> BoxFuture<'static, Result<(), String>>;
    /// Start routing to this worker.
    fn add(&self, worker: ReadyWorker);
    /// Stop routing to this worker (requests already on it finish).
    fn remove(&self, uid: u64);
}

/// What the slots need to know, shared.
pub struct WorkerSpec {
    pub command: Vec<String>,
    pub socket: WorkerSocket,
    pub chdir: Option<PathBuf>,
    pub boot_timeout: Duration,
    pub stop_timeout: Duration,
    pub abort_timeout: Duration,
    pub faulthandler: bool,
    pub run_dir: PathBuf,
}

impl WorkerSpec {
    pub fn from_config(cfg: &Config, run_dir: PathBuf) -> Self {
        WorkerSpec {
            command: cfg.command.clone(),
            socket: cfg.worker_socket,
            chdir: cfg.chdir.clone(),
            boot_timeout: cfg.boot_timeout,
            stop_timeout: cfg.worker_stop_timeout,
            abort_timeout: cfg.abort_timeout,
            faulthandler: cfg.faulthandler,
            run_dir,
        }
    }
}

/// Why a worker's first boot failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("worker {id} failed to boot: {reason}{}", if stderr.is_empty() { String::new() } else { format!("\n--- last lines of its stderr ---\n{stderr}") })]
pub struct BootError {
    pub id: usize,
    pub reason: String,
    pub stderr: String,
}

/// How a slot ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotOutcome {
    /// A worker had to be SIGKILLed because it ignored SIGTERM.
    pub forced: bool,
}

struct Shared {
    reaper: Reaper,
    spec: WorkerSpec,
    backends: Arc<dyn Backends>,
    next_uid: AtomicU64,
    /// Serving worker instances, by uid: how to reach their slot.
    serving: std::sync::Mutex<std::collections::HashMap<u64, mpsc::UnboundedSender<Command>>>,
}

/// Something a slot is asked to do with its current worker.
#[derive(Debug)]
enum Command {
    /// The worker is hung: dump its stack (SIGABRT), kill it, replace it.
    Abort { reason: String, request: String },
}

/// A cheap, cloneable way to act on workers from elsewhere (the proxy's
/// hung-request detection).
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Abort worker instance `uid` as hung (no-op if it is gone already).
    pub fn abort(&self, uid: u64, reason: String, request: String) {
        let map = self
            .shared
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.get(&uid) {
            let _ = tx.send(Command::Abort { reason, request });
        }
    }
}

struct Slot {
    stop: CancellationToken,
    join: JoinHandle<SlotOutcome>,
}

/// The pool of worker slots.
pub struct Supervisor {
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    /// Cancelled for an immediate stop: SIGKILL instead of SIGTERM.
    kill_now: CancellationToken,
}

impl Supervisor {
    pub fn new(reaper: Reaper, spec: WorkerSpec, backends: Arc<dyn Backends>) -> Self {
        Supervisor {
            shared: Arc::new(Shared {
                reaper,
                spec,
                backends,
                next_uid: AtomicU64::new(1),
                serving: Default::default(),
            }),
            slots: Vec::new(),
            kill_now: CancellationToken::new(),
        }
    }

    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// Start `n` slots. The returned channel yields one first-boot result per
    /// slot (`Ok(id)` once ready, or the boot error).
    pub fn start(&mut self, n: usize) -> mpsc::UnboundedReceiver<Result<usize, BootError>> {
        let (tx, rx) = mpsc::unbounded_channel();
        for id in 0..n {
            let stop = CancellationToken::new();
            let (first_tx, first_rx) = oneshot::channel();
            let join = tokio::spawn(run_slot(
                self.shared.clone(),
                id,
                stop.clone(),
                self.kill_now.clone(),
                first_tx,
            ));
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(r) = first_rx.await {
                    let _ = tx.send(r);
                }
            });
            self.slots.push(Slot { stop, join });
        }
        rx
    }

    /// Stop every worker: SIGTERM, then SIGKILL after `worker_stop_timeout`
    /// (or at once after [`Supervisor::kill_now`]). Returns whether any
    /// worker had to be killed.
    pub fn stop_all(&mut self) -> impl Future<Output = SlotOutcome> + Send + 'static {
        for s in &self.slots {
            s.stop.cancel();
        }
        let slots: Vec<Slot> = self.slots.drain(..).collect();
        async move {
            let mut outcome = SlotOutcome::default();
            for s in slots {
                if let Ok(o) = s.join.await {
                    outcome.forced |= o.forced;
                }
            }
            outcome
        }
    }

    /// Make any stop in progress (or to come) SIGKILL at once.
    pub fn kill_now(&self) {
        self.kill_now.cancel();
        for s in &self.slots {
            s.stop.cancel();
        }
    }
}

/// A worker process being supervised.
struct Instance {
    pid: u32,
    addr: WorkerAddr,
    exit: oneshot::Receiver<ExitStatus>,
    started: Instant,
    tail: Tail,
    stderr_done: Option<JoinHandle<()>>,
}

impl Instance {
    fn signal_group(&self, sig: Signal) {
        // The worker leads its own process group (process_group(0) at spawn).
        let _ = killpg(Pid::from_raw(self.pid as i32), sig);
    }

    /// Wait (briefly) until its stderr has been read to the end, so the tail
    /// holds its last words.
    async fn flush_stderr(&mut self) {
        if let Some(h) = self.stderr_done.take() {
            let _ = tokio::time::timeout(Duration::from_millis(500), h).await;
        }
    }
}

enum Boot {
    Ready,
    Exited(ExitStatus),
    TimedOut(String),
    Stopped,
}

async fn run_slot(
    shared: Arc<Shared>,
    id: usize,
    stop: CancellationToken,
    kill_now: CancellationToken,
    first_boot: oneshot::Sender<Result<usize, BootError>>,
) -> SlotOutcome {
    let mut first_boot = Some(first_boot);
    let mut backoff = Backoff::default();
    loop {
        if stop.is_cancelled() {
            return SlotOutcome::default();
        }
        let uid = shared.next_uid.fetch_add(1, Ordering::Relaxed);
        let mut inst = match start_instance(&shared, id, uid) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(worker = id, error = %e, "Could not start worker.");
                if let Some(tx) = first_boot.take() {
                    let _ = tx.send(Err(BootError {
                        id,
                        reason: format!("could not start: {e}"),
                        stderr: String::new(),
                    }));
                    return SlotOutcome::default();
                }
                if sleep_or_stop(backoff.next_delay(Duration::ZERO), &stop).await {
                    return SlotOutcome::default();
                }
                continue;
            }
        };
        tracing::debug!(worker = id, pid = inst.pid, addr = %inst.addr, "Worker started; waiting until it is ready.");

        match wait_ready(&shared, &mut inst, &stop).await {
            Boot::Ready => {
                tracing::info!(
                    worker = id,
                    pid = inst.pid,
                    boot_ms = inst.started.elapsed().as_millis() as u64,
                    "Worker ready."
                );
                shared.backends.add(ReadyWorker {
                    uid,
                    id,
                    pid: inst.pid,
                    addr: inst.addr.clone(),
                });
                if let Some(tx) = first_boot.take() {
                    let _ = tx.send(Ok(id));
                }
            }
            Boot::Stopped => return stop_instance(&shared, inst, id, &kill_now).await,
            failed => {
                let reason = match failed {
                    Boot::Exited(status) => format!("it exited during boot ({status})"),
                    Boot::TimedOut(last) => {
                        inst.signal_group(Signal::SIGKILL);
                        let _ = (&mut inst.exit).await;
                        format!(
                            "not ready within boot_timeout ({:?}); last probe: {last}",
                            shared.spec.boot_timeout
                        )
                    }
                    _ => unreachable!("handled above"),
                };
                inst.signal_group(Signal::SIGKILL); // leftovers of its group
                inst.flush_stderr().await;
                let stderr = inst.tail.last(12);
                let delay = backoff.next_delay(Duration::ZERO);
                if let Some(tx) = first_boot.take() {
                    let _ = tx.send(Err(BootError { id, reason, stderr }));
                    return SlotOutcome::default();
                }
                tracing::warn!(
                    worker = id,
                    pid = inst.pid,
                    retry_in_ms = delay.as_millis() as u64,
                    stderr = %inst.tail.last_one_line(12),
                    "Worker failed to boot: {reason}."
                );
                if sleep_or_stop(delay, &stop).await {
                    return SlotOutcome::default();
                }
                continue;
            }
        }

        // Serving until it exits, hangs, or we are told to stop.
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
        shared
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid, cmd_tx);
        let outcome = tokio::select! {
            status = &mut inst.exit => Serving::Exited(status.unwrap_or(ExitStatus::Code(-1))),
            Some(Command::Abort { reason, request }) = cmd_rx.recv() => Serving::Hung { reason, request },
            _ = stop.cancelled() => Serving::Stop,
        };
        shared
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
        shared.backends.remove(uid);
        let delay = match outcome {
            Serving::Stop => return stop_instance(&shared, inst, id, &kill_now).await,
            Serving::Exited(status) => {
                inst.signal_group(Signal::SIGKILL);
                inst.flush_stderr().await;
                let class = ExitClass::of(status, SentSignal::None, false);
                let uptime = inst.started.elapsed();
                let delay = backoff.next_delay(uptime);
                log_exit(&class, id, inst.pid, uptime, &inst.tail, Some(delay));
                delay
            }
            Serving::Hung { reason, request } => {
                let delay = backoff.next_delay(inst.started.elapsed());
                abort_hung(&shared, &mut inst, id, &reason, &request, &kill_now).await;
                delay
            }
        };
        if sleep_or_stop(delay, &stop).await {
            return SlotOutcome::default();
        }
    }
}

enum Serving {
    Exited(ExitStatus),
    Hung { reason: String, request: String },
    Stop,
}

/// A hung worker: SIGABRT so its runtime can dump where it is stuck (Python
/// with faulthandler prints every thread's traceback), wait `abort_timeout`,
/// SIGKILL if still there; then log it, with its last stderr lines, as the
/// one worker event that is an ERROR by design.
async fn abort_hung(
    shared: &Shared,
    inst: &mut Instance,
    id: usize,
    reason: &str,
    request: &str,
    kill_now: &CancellationToken,
) {
    let mark = inst.tail.mark();
    inst.signal_group(Signal::SIGABRT);
    let killed = tokio::select! {
        _ = &mut inst.exit => false,
        _ = tokio::time::sleep(shared.spec.abort_timeout) => true,
        _ = kill_now.cancelled() => true,
    };
    if killed {
        inst.signal_group(Signal::SIGKILL);
        let _ = (&mut inst.exit).await;
    }
    inst.signal_group(Signal::SIGKILL);
    inst.flush_stderr().await;
    tracing::error!(
        worker = id,
        pid = inst.pid,
        reason,
        request,
        killed_after_abort = killed,
        stack_dump = %inst.tail.since(mark, 60),
        "Worker hung: aborted it (SIGABRT{}) and starting a replacement.",
        if killed { ", then SIGKILL" } else { "" }
    );
}

fn start_instance(shared: &Shared, id: usize, uid: u64) -> std::io::Result<Instance> {
    let s = spawn::spawn(&shared.reaper, &shared.spec, id, uid)?;
    if let Some(out) = s.stdout {
        output::capture(out, id, s.pid, Stream::Stdout, None);
    }
    let tail = Tail::default();
    let stderr_done = s
        .stderr
        .map(|err| output::capture(err, id, s.pid, Stream::Stderr, Some(tail.clone())));
    Ok(Instance {
        pid: s.pid,
        addr: s.addr,
        exit: s.exit,
        started: Instant::now(),
        tail,
        stderr_done,
    })
}

/// Probe until ready, exit, timeout or stop. Probes start fast (10 ms) and
/// back off to 200 ms.
async fn wait_ready(shared: &Shared, inst: &mut Instance, stop: &CancellationToken) -> Boot {
    let deadline = tokio::time::Instant::now() + shared.spec.boot_timeout;
    let mut interval = Duration::from_millis(10);
    let mut last = String::from("no probe completed");
    loop {
        tokio::select! {
            status = &mut inst.exit => return Boot::Exited(status.unwrap_or(ExitStatus::Code(-1))),
            _ = tokio::time::sleep_until(deadline) => return Boot::TimedOut(last),
            _ = stop.cancelled() => return Boot::Stopped,
            r = shared.backends.probe(inst.addr.clone()) => match r {
                Ok(()) => return Boot::Ready,
                Err(e) => last = e,
            },
        }
        tokio::select! {
            status = &mut inst.exit => return Boot::Exited(status.unwrap_or(ExitStatus::Code(-1))),
            _ = tokio::time::sleep_until(deadline) => return Boot::TimedOut(last),
            _ = stop.cancelled() => return Boot::Stopped,
            _ = tokio::time::sleep(interval) => {}
        }
        interval = (interval * 2).min(Duration::from_millis(200));
    }
}

/// SIGTERM the worker's group, wait `worker_stop_timeout`, then SIGKILL.
async fn stop_instance(
    shared: &Shared,
    mut inst: Instance,
    id: usize,
    kill_now: &CancellationToken,
) -> SlotOutcome {
    let mut sent = SentSignal::Term;
    let mut forced = false;
    if kill_now.is_cancelled() {
        inst.signal_group(Signal::SIGKILL);
        sent = SentSignal::Kill;
    } else {
        inst.signal_group(Signal::SIGTERM);
    }
    let status = tokio::select! {
        s = &mut inst.exit => s,
        _ = tokio::time::sleep(shared.spec.stop_timeout), if sent == SentSignal::Term => {
            tracing::warn!(
                worker = id,
                pid = inst.pid,
                timeout_ms = shared.spec.stop_timeout.as_millis() as u64,
                "Worker did not exit within worker_stop_timeout after SIGTERM; sending SIGKILL."
            );
            forced = true;
            inst.signal_group(Signal::SIGKILL);
            sent = SentSignal::Kill;
            (&mut inst.exit).await
        }
        _ = kill_now.cancelled(), if sent == SentSignal::Term => {
            inst.signal_group(Signal::SIGKILL);
            sent = SentSignal::Kill;
            (&mut inst.exit).await
        }
    };
    let status = status.unwrap_or(ExitStatus::Code(-1));
    // Anything left in its process group goes too.
    inst.signal_group(Signal::SIGKILL);
    inst.flush_stderr().await;
    let uptime = inst.started.elapsed();
    if sent == SentSignal::Kill && !forced {
        tracing::info!(
            worker = id,
            pid = inst.pid,
            "Worker killed (immediate stop)."
        );
    } else {
        log_exit(
            &ExitClass::of(status, sent, false),
            id,
            inst.pid,
            uptime,
            &inst.tail,
            None,
        );
    }
    SlotOutcome { forced }
}

fn log_exit(
    class: &ExitClass,
    id: usize,
    pid: u32,
    uptime: Duration,
    tail: &Tail,
    restart_in: Option<Duration>,
) {
    let msg = class.describe();
    let uptime_ms = uptime.as_millis() as u64;
    let restart_in_ms = restart_in.map(|d| d.as_millis() as u64);
    let reason = class.reason();
    match class.severity() {
        Severity::Info => tracing::info!(worker = id, pid, uptime_ms, reason, "{msg}"),
        Severity::Warn => {
            let stderr = tail.last_one_line(8);
            tracing::warn!(worker = id, pid, uptime_ms, reason, restart_in_ms, stderr = %stderr, "{msg}")
        }
        Severity::Error => {
            let stderr = tail.last_one_line(8);
            tracing::error!(worker = id, pid, uptime_ms, reason, restart_in_ms, stderr = %stderr, "{msg}")
        }
    }
}

/// Sleep `d` unless `stop` fires first; returns true if stopped.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.cancelled() => true,
    }
}
