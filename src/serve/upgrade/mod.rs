//! Zero-downtime upgrade of curfew itself (SIGUSR2, `curfew upgrade`),
//! nginx's and gunicorn's binary upgrade:
//!
//! 1. The running curfew (old) starts the binary at the path it was
//!    started as ([`remember_invocation`]; a new file there is the new
//!    version) with the same arguments and environment, through the exec
//!    shim (which sets `LISTEN_PID`), passing copies of its listening
//!    sockets as fds 3… with `LISTEN_FDS`/`LISTEN_FDNAMES` (the socket
//!    activation convention: `bind`/`bind-own` for the public listeners,
//!    `admin`, `control`), plus a private channel and its own stderr
//!    (`CURFEW_UPGRADE`, [`names::Handshake`]). The new curfew's stderr is
//!    a pipe the old one relays to its own, keeping the last lines.
//! 2. The new curfew reads the configuration on disk (restart-only
//!    settings included), adopts the sockets whose address it still
//!    binds, boots its own workers and, once serving (`Serving`), accepts
//!    on the shared public sockets beside the old one and reports ready on
//!    the channel ([`child::Successor`]). Its admin endpoint and control
//!    socket wait, and it sends nothing to systemd yet.
//! 3. The old one then: leaves the adopted sockets' files to the new one,
//!    stops accepting on the admin and control sockets, sends
//!    `MAINPID=<new>` to systemd and goes quiet there, exempts the new
//!    process from its final kill, answers the channel, and drains as on
//!    SIGTERM (without `drain_delay`: the address stays served) — stops
//!    accepting after taking what waits in the kernel queue (the new one
//!    holds the same socket, so the queue lives on), finishes its requests,
//!    hands its unfinished jobs back, stops its workers, exits 0.
//! 4. The new one, answered, serves the admin and control sockets, takes
//!    over the old one's stderr and sends `READY=1` to systemd.
//!
//! A new curfew that exits, closes the channel, or has not reported ready
//! within `boot_timeout` + [`READY_MARGIN`] is stopped (SIGTERM, SIGKILL
//! after `worker_stop_timeout` + 5 s) and reaped; the old one keeps serving
//! and logs (ERROR) and answers the reason with its last stderr lines. Its
//! sockets it only closes: a failed start never accepts from the shared
//! queues.

pub(super) mod child;
mod exec;
pub(super) mod names;

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use super::Run;
use crate::control;
use crate::events::Upgrade;
use crate::proxy::listener::Listener;
use crate::supervisor::output::Tail;
use crate::supervisor::reaper::ExitStatus;
use names::{Decision, Invocation, Role};

/// Added to `boot_timeout` for the new curfew's own start (configuration,
/// store, listeners) before its workers boot.
pub const READY_MARGIN: Duration = Duration::from_secs(20);
/// Lines of the new curfew's stderr kept for a failure report.
const TAIL_LINES: usize = 20;
/// Longest line kept in that report.
const TAIL_LINE_CHARS: usize = 1000;

static INVOCATION: OnceLock<Option<Invocation>> = OnceLock::new();

/// Records the binary's path and arguments as started (call first thing
/// in `main`, before the working directory could change).
pub fn remember_invocation() {
    INVOCATION.get_or_init(invocation_now);
}

fn invocation() -> Option<&'static Invocation> {
    INVOCATION.get_or_init(invocation_now).as_ref()
}

fn invocation_now() -> Option<Invocation> {
    let mut args = std::env::args_os();
    let argv0 = args.next()?;
    let cwd = std::env::current_dir().ok()?;
    let program = names::resolve_program(&argv0, &cwd, std::env::var_os("PATH").as_deref())
        .or_else(|| std::env::current_exe().ok())?;
    Some(Invocation {
        program,
        args: args.collect(),
    })
}

/// One socket an upgrade passes on: a copy of a listener's descriptor.
struct Passable {
    fd: OwnedFd,
    role: Role,
    /// A Unix socket's file this process would remove at close.
    owned_file: Option<PathBuf>,
}

/// The sockets an upgrade passes on, in fd order.
#[derive(Default)]
pub(super) struct Sockets(Vec<Passable>);

impl Sockets {
    /// A public (`bind`) or the admin listener.
    pub(super) fn add(&mut self, l: &Listener, admin: bool) -> std::io::Result<()> {
        let (fd, owned_file) = match l {
            Listener::Tcp(t, _) => (t.as_fd().try_clone_to_owned()?, None),
            Listener::Unix(u, path, owned) => {
                (u.as_fd().try_clone_to_owned()?, owned.then(|| path.clone()))
            }
        };
        let role = if admin {
            Role::Admin {
                owned: owned_file.is_some(),
            }
        } else {
            Role::Public {
                owned: owned_file.is_some(),
            }
        };
        self.0.push(Passable {
            fd,
            role,
            owned_file,
        });
        Ok(())
    }

    /// The control socket's listener.
    pub(super) fn add_control(&mut self, l: &tokio::net::UnixListener) -> std::io::Result<()> {
        self.0.push(Passable {
            fd: l.as_fd().try_clone_to_owned()?,
            role: Role::Control,
            owned_file: None,
        });
        Ok(())
    }
}

/// What the orchestrator hears about an upgrade under way.
pub(super) enum Progress {
    /// The new curfew serves, with these of the passed fds.
    Ready { adopted: Vec<i32> },
    /// It did not start (and is gone).
    Failed { reason: String, stderr: String },
}

/// An upgrade under way (the old curfew's side).
pub(super) struct InProgress {
    pub(super) pid: u32,
    started: Instant,
    replies: Vec<oneshot::Sender<control::Response>>,
    progress: mpsc::UnboundedReceiver<Progress>,
    ack: Option<oneshot::Sender<()>>,
}

/// The next word from the upgrade under way (never, without one).
pub(super) async fn progress(upgrade: &mut Option<InProgress>) -> Progress {
    match upgrade {
        Some(u) => match u.progress.recv().await {
            Some(p) => p,
            None => Progress::Failed {
                reason: "the upgrade's monitor ended".to_owned(),
                stderr: String::new(),
            },
        },
        None => std::future::pending().await,
    }
}

/// SIGUSR2 (`reply` = `None`) or `curfew upgrade`.
pub(super) fn request(run: &mut Run, reply: Option<oneshot::Sender<control::Response>>) {
    let program = invocation().map(|i| i.program.as_path());
    let decision = names::decide(
        run.machine.phase(),
        std::process::id(),
        run.upgrade.as_ref().map(|u| u.pid),
        program,
    );
    match decision {
        Decision::Join { pid } => {
            Upgrade::AlreadyRunning { pid }.emit();
            if let (Some(r), Some(u)) = (reply, run.upgrade.as_mut()) {
                u.replies.push(r);
            }
        }
        Decision::Refuse(reason) => {
            Upgrade::Refused {
                reason: reason.clone(),
            }
            .emit();
            if let Some(r) = reply {
                let _ = r.send(control::Response::err(format!("upgrade refused: {reason}")));
            }
        }
        Decision::Start => match start(run) {
            Ok(mut up) => {
                up.replies.extend(reply);
                run.upgrade = Some(up);
            }
            Err(e) => {
                let reason = format!("cannot start the new curfew: {e}");
                Upgrade::Failed {
                    pid: None,
                    reason: reason.clone(),
                    stderr: String::new(),
                }
                .emit();
                if let Some(r) = reply {
                    let _ = r.send(control::Response::err(format!(
                        "upgrade failed: {reason}; this curfew keeps serving"
                    )));
                }
            }
        },
    }
}

fn start(run: &mut Run) -> std::io::Result<InProgress> {
    let inv = invocation().ok_or_else(|| std::io::Error::other("the binary's path is unknown"))?;
    let roles: Vec<Role> = run.sockets.0.iter().map(|s| s.role).collect();
    let fds: Vec<_> = run.sockets.0.iter().map(|s| s.fd.as_fd()).collect();
    let own = run.jobs.as_ref().map(|j| j.owner().to_owned());
    let inherited = run
        .jobs
        .as_ref()
        .map(|j| j.live_predecessors())
        .unwrap_or_default();
    let live = names::live_for_successor(own.as_deref(), &inherited);
    let spawned = exec::spawn(&run.reaper, inv, &fds, &names::fd_names(&roles), live)?;
    let pid = spawned.pid;
    Upgrade::Started {
        pid,
        program: inv.program.display().to_string(),
        sockets: fds.len(),
    }
    .emit();
    let tail = Tail::default();
    let relay = spawned
        .stderr
        .map(|rx| tokio::spawn(relay(rx, tail.clone())));
    let (tx, progress) = mpsc::unbounded_channel();
    let (ack, ack_rx) = oneshot::channel();
    let timeout = run.cfg.boot_timeout + READY_MARGIN;
    let watch = Watch {
        pid,
        exit: spawned.exit,
        exited: false,
        relay,
        tail,
        timeout,
        // Its whole stop: it may already serve (it accepts before its
        // ready report), and a SIGKILL would cut what it accepted.
        grace: run
            .cfg
            .drain_delay
            .saturating_add(run.cfg.graceful_timeout)
            .saturating_add(run.cfg.worker_stop_timeout)
            .saturating_add(Duration::from_secs(5)),
    };
    tokio::spawn(watch.run(spawned.channel, tx, ack_rx));
    Ok(InProgress {
        pid,
        started: Instant::now(),
        replies: Vec::new(),
        progress,
        ack: Some(ack),
    })
}

/// Follows the new curfew until it reports ready (then answers the channel
/// when told to) or fails (then stops and reaps it).
struct Watch {
    pid: u32,
    exit: oneshot::Receiver<ExitStatus>,
    /// Its exit was received (it is reaped: never signal its pid again).
    exited: bool,
    relay: Option<tokio::task::JoinHandle<()>>,
    tail: Tail,
    timeout: Duration,
    grace: Duration,
}

impl Watch {
    async fn run(
        mut self,
        channel: std::os::unix::net::UnixStream,
        tx: mpsc::UnboundedSender<Progress>,
        ack: oneshot::Receiver<()>,
    ) {
        let stream = channel
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(channel));
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                let reason = format!("cannot use the upgrade channel: {e}");
                let _ = tx.send(self.fail(reason).await);
                return;
            }
        };
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let ready = tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(l)) => serde_json::from_str::<names::Ready>(l.trim())
                    .map_err(|_| format!("the new curfew sent {l:?}, not its ready report")),
                // Closed: it exited (its status says how) or closed it.
                Ok(None) => match tokio::time::timeout(Duration::from_secs(2), &mut self.exit).await {
                    Ok(st) => {
                        self.exited = true;
                        Err(exited_before_ready(st))
                    }
                    Err(_) => Err("the new curfew closed the upgrade channel before it was ready".to_owned()),
                },
                Err(e) => Err(format!("cannot read the upgrade channel: {e}")),
            },
            st = &mut self.exit => {
                self.exited = true;
                Err(exited_before_ready(st))
            }
            _ = tokio::time::sleep_until(deadline) => Err(format!(
                "the new curfew did not report ready within {:?} (boot_timeout + {:?})",
                self.timeout, READY_MARGIN
            )),
        };
        let ready = match ready {
            // Died right after its report: not a successor.
            Ok(_) if self.exit.try_recv().is_ok() => {
                self.exited = true;
                Err("the new curfew exited right after reporting ready".to_owned())
            }
            r => r,
        };
        match ready {
            Ok(ready) => {
                if tx
                    .send(Progress::Ready {
                        adopted: ready.adopted,
                    })
                    .is_err()
                {
                    return;
                }
                // Answered once the orchestrator has handed over; dropped
                // (the channel closes unanswered) if it abandoned.
                if ack.await.is_ok() {
                    let mut line =
                        serde_json::to_string(&names::Ack { ack: true }).unwrap_or_default();
                    line.push('\n');
                    let _ = w.write_all(line.as_bytes()).await;
                }
                // Keep relaying its stderr until it takes it over.
                if let Some(relay) = self.relay.take() {
                    let _ = relay.await;
                }
            }
            Err(reason) => {
                let failed = self.fail(reason).await;
                let _ = tx.send(failed);
            }
        }
    }

    /// Stops the new curfew if it still runs (SIGTERM, SIGKILL after the
    /// grace), reaps it, and gives the failure with its last stderr lines.
    async fn fail(&mut self, reason: String) -> Progress {
        let mut reason = reason;
        if !self.exited && self.exit.try_recv().is_ok() {
            self.exited = true;
        }
        if !self.exited {
            let pid = nix::unistd::Pid::from_raw(self.pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let exited = tokio::time::timeout(self.grace, &mut self.exit).await;
            if exited.is_err() {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.exit).await;
                reason.push_str("; it was killed");
            } else {
                reason.push_str("; it was stopped");
            }
        }
        if let Some(relay) = self.relay.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), relay).await;
        }
        let stderr = self.tail.last(TAIL_LINES);
        Progress::Failed { reason, stderr }
    }
}

fn exited_before_ready(st: Result<ExitStatus, oneshot::error::RecvError>) -> String {
    match st {
        Ok(st) => format!("the new curfew exited with {st} before it was ready"),
        Err(_) => "the new curfew's exit status was lost".to_owned(),
    }
}

/// Copies the new curfew's stderr to ours line by line, keeping the last
/// lines in `tail`.
async fn relay(rx: tokio::net::unix::pipe::Receiver, tail: Tail) {
    use std::io::Write;
    let mut reader = BufReader::new(rx);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&line);
            if !line.ends_with(b"\n") {
                let _ = err.write_all(b"\n");
            }
        }
        let text = String::from_utf8_lossy(&line);
        let text: String = text.trim_end().chars().take(TAIL_LINE_CHARS).collect();
        tail.push(text);
    }
}

/// The orchestrator's answer to the upgrade's progress (while serving).
pub(super) fn on_progress(run: &mut Run, p: Progress) {
    match p {
        Progress::Ready { adopted } => hand_over(run, &adopted),
        Progress::Failed { reason, stderr } => {
            let Some(up) = run.upgrade.take() else { return };
            Upgrade::Failed {
                pid: Some(up.pid),
                reason: reason.clone(),
                stderr: stderr.clone(),
            }
            .emit();
            let mut msg = format!(
                "upgrade failed: {reason}; this curfew (pid {}) keeps serving",
                std::process::id()
            );
            if !stderr.is_empty() {
                msg.push_str("\nthe new curfew's last lines on stderr:\n");
                msg.push_str(&stderr);
            }
            for r in up.replies {
                let _ = r.send(control::Response::err(msg.clone()));
            }
        }
    }
}

/// The new curfew serves: give it the service, then drain.
fn hand_over(run: &mut Run, adopted: &[i32]) {
    let Some(mut up) = run.upgrade.take() else {
        return;
    };
    for (i, s) in run.sockets.0.iter().enumerate() {
        if !adopted.contains(&(exec::FIRST_FD + i as i32)) {
            continue;
        }
        if let Some(path) = &s.owned_file {
            crate::proxy::listener::hand_over_file(path);
        }
        match s.role {
            Role::Admin { .. } => run.admin_release.cancel(),
            Role::Control => run.control_release.cancel(),
            Role::Public { .. } => {}
        }
    }
    // Our copies: the new curfew has its own.
    run.sockets = Sockets::default();
    let status = format!(
        "Upgraded: the new curfew (pid {}) serves; this one drains.",
        up.pid
    );
    run.notifier.main_pid(up.pid, &status);
    run.notifier.set_muted(true);
    run.reaper.exempt(up.pid);
    if let Some(ack) = up.ack.take() {
        let _ = ack.send(());
    }
    Upgrade::HandedOver {
        pid: up.pid,
        duration_ms: up.started.elapsed().as_millis() as u64,
    }
    .emit();
    for r in up.replies.drain(..) {
        let _ = r.send(control::Response::ok(format!(
            "upgraded: the new curfew (pid {}) serves; this one (pid {}) drains and exits",
            up.pid,
            std::process::id()
        )));
    }
    run.on_handover();
}

/// A stop while an upgrade is under way: the new curfew is stopped too
/// (SIGTERM; it may still be booting, or already serve), its callers told;
/// the teardown gives it its stop before the final kill ([`wait_abandoned`]).
pub(super) fn abandon(run: &mut Run, signal: &'static str) {
    let Some(up) = run.upgrade.take() else {
        return;
    };
    Upgrade::Abandoned {
        pid: up.pid,
        signal,
    }
    .emit();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    // The teardown waits for its stop before the final kill.
    run.abandoned = Some(up.pid);
    for r in up.replies {
        let _ = r.send(control::Response::err(format!(
            "upgrade abandoned: {signal} received; both curfews stop"
        )));
    }
}

/// At the teardown, before the final kill: the new curfew of an abandoned
/// upgrade got its SIGTERM with our stop request; it has until our own stop
/// budget ends (`deadline`) to stop by itself (it may already have accepted
/// connections: a SIGKILL would cut them). Then the final kill takes it.
pub(super) async fn wait_abandoned(pid: Option<u32>, deadline: Option<tokio::time::Instant>) {
    let Some(pid) = pid.map(|p| p as i32) else {
        return;
    };
    let running = || crate::supervisor::reaper::own_children().contains(&pid);
    if !running() {
        return;
    }
    let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1));
    tracing::info!(
        pid,
        "Waiting for the new curfew of the abandoned upgrade to stop."
    );
    while running() {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                pid,
                "The new curfew of the abandoned upgrade did not stop within the stop budget: killing it."
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
