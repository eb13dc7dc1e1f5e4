//! The one place that reaps child processes.
//!
//! curfew is a child subreaper (and may be PID 1 in a container), so it must
//! reap every child, including orphaned grandchildren re-parented to it. One
//! task waits for SIGCHLD and loops `waitpid(-1, WNOHANG)`; each status is
//! routed to whoever registered that pid. Nothing else may wait for children
//! (in particular not `tokio::process`, whose own `waitpid(pid)` would race
//! this loop; see STACK.md §A3), which is why workers are spawned with
//! `std::process::Command` and never waited on through it.
//!
//! Registration happens while holding the table lock *around* the spawn, and
//! the loop holds it around each `waitpid(-1)`: a child that exits at once is
//! still routed (the loop waits until the pid is in the table), and std's own
//! wait for a child whose exec failed, inside the spawn, is never raced. A
//! pid cannot be reused before it is reaped, so there is no pid-reuse race.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, oneshot};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {}", signal_name(*s)),
        }
    }
}

pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("{sig}"))
}

/// Held by every unit test that starts child processes: one reap loop at a
/// time (each `waitpid(-1)` loop would take the others' children).
#[cfg(test)]
pub(crate) static TEST_CHILDREN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Default)]
struct Table {
    waiting: HashMap<i32, oneshot::Sender<ExitStatus>>,
}

/// Routes child exit statuses to their waiters.
#[derive(Clone, Default)]
pub struct Reaper {
    table: Arc<Mutex<Table>>,
    /// Notified after every reaping pass that found something (for "are all
    /// children gone?" checks).
    reaped: Arc<Notify>,
    /// Children that outlive curfew on purpose: an upgrade's new curfew,
    /// once it has taken over. [`Reaper::kill_all_children`] leaves them.
    exempt: Arc<Mutex<std::collections::HashSet<i32>>>,
}

/// Held while spawning; registering through it cannot race the reap loop.
pub struct Registration<'a> {
    guard: MutexGuard<'a, Table>,
}

impl Registration<'_> {
    pub fn register(mut self, pid: u32) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        self.guard.waiting.insert(pid as i32, tx);
        rx
    }
}

impl Reaper {
    /// Start the reap loop. Must be called once, inside the runtime, before
    /// any child is spawned.
    pub fn start() -> std::io::Result<Reaper> {
        let reaper = Reaper::default();
        let mut sigchld = signal(SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Lock the table for a spawn; call [`Registration::register`] with the
    /// new pid before dropping it.
    pub fn lock(&self) -> Registration<'_> {
        Registration {
            guard: self.table.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Reap every child that has exited. Statuses of unregistered pids
    /// (adopted orphans) are logged at debug level and dropped.
    ///
    /// Each `waitpid(-1)` runs under the table's lock, which every spawn
    /// holds around `Command::spawn`: std (and glibc's `posix_spawn`) wait
    /// for a child whose exec failed with their own `waitpid(pid)` inside
    /// the spawn, and a reap in between would take that status (std then
    /// panics: "wait() should either return Ok or panic").
    pub fn reap_all(&self) {
        let mut any = false;
        loop {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _core)) => (pid, ExitStatus::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue, // stopped/continued: not an exit
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break, // ECHILD: no children at all
            };
            any = true;
            let tx = table.waiting.remove(&pid.as_raw());
            drop(table);
            match tx {
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => {
                    tracing::debug!(pid = pid.as_raw(), %status, "Reaped an adopted orphan process.")
                }
            }
        }
        if any {
            self.reaped.notify_waiters();
        }
    }

    /// Let child `pid` outlive curfew: an upgrade's new curfew, which took
    /// over the service (it is re-parented to init or the nearest subreaper
    /// when this process exits).
    pub fn exempt(&self, pid: u32) {
        self.exempt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid as i32);
    }

    /// Kill (SIGKILL) every remaining child process of curfew, including
    /// adopted orphans, and reap them. The last step of every shutdown: no
    /// process may outlive curfew, except an upgrade's successor
    /// ([`Reaper::exempt`]).
    pub async fn kill_all_children(&self) -> usize {
        let mut killed = 0;
        for _ in 0..50 {
            let exempt = self
                .exempt
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let children: Vec<i32> = own_children()
                .into_iter()
                .filter(|p| !exempt.contains(p))
                .collect();
            if children.is_empty() {
                break;
            }
            for pid in &children {
                if nix::sys::signal::kill(Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL)
                    .is_ok()
                {
                    killed += 1;
                }
            }
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(20), self.reaped.notified())
                    .await;
            self.reap_all();
        }
        killed
    }
}

/// Live (non-zombie) processes whose parent is this process, from /proc. A
/// zombie is already dead; it only needs reaping.
pub fn own_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    super::procfs::all()
        .into_iter()
        .filter(|p| p.ppid == me && p.state != 'Z')
        .map(|p| p.pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A child whose exec fails is waited for inside `Command::spawn` by
    /// std itself (the fork path: here forced by a `PATH` in the child's
    /// environment, as a `pre_exec` does for workers). Spawned under the
    /// table's lock, as every spawn is, while another thread reaps without
    /// pause, std always finds its child: before the reap loop took the
    /// lock around `waitpid(-1)`, it stole the status and std panicked
    /// ("wait() should either return Ok or panic").
    #[test]
    fn a_failed_exec_is_never_reaped_from_under_std() {
        let _children = TEST_CHILDREN.blocking_lock();
        let reaper = Reaper::default();
        let stop = Arc::new(AtomicBool::new(false));
        let reaping = {
            let (reaper, stop) = (reaper.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    reaper.reap_all();
                }
            })
        };
        let spawned = std::panic::catch_unwind(|| {
            for _ in 0..300 {
                let registration = reaper.lock();
                let r = std::process::Command::new("curfew-test-no-such-program")
                    .env("PATH", "/nonexistent")
                    .spawn();
                drop(registration);
                assert!(r.is_err(), "the program does not exist");
            }
        });
        stop.store(true, Ordering::Relaxed);
        let _ = reaping.join();
        assert!(
            spawned.is_ok(),
            "std's own wait lost its child to the reaper"
        );
    }
}
