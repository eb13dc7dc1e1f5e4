//! Starting the new curfew with the listening sockets, and taking the
//! handshake's descriptors in it: the `unsafe` of an upgrade (a `pre_exec`
//! that only calls `dup2`, and owning descriptors inherited by number).
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::names::{Handshake, Invocation};
use crate::supervisor::reaper::{ExitStatus, Reaper};

/// systemd's `SD_LISTEN_FDS_START`.
pub(super) const FIRST_FD: RawFd = 3;

/// The new curfew, just started.
pub(super) struct Spawned {
    pub pid: u32,
    pub exit: oneshot::Receiver<ExitStatus>,
    /// Our end of the handshake channel.
    pub channel: UnixStream,
    /// Its stderr until the hand-over.
    pub stderr: Option<pipe::Receiver>,
}

/// Start `inv` as the new curfew: through the exec shim (which sets
/// `LISTEN_PID` to the new process's pid, known only after the fork), with
/// `sockets` on fds 3… (`LISTEN_FDS`, `LISTEN_FDNAMES` = `names`), then the
/// handshake channel and this process's stderr (`CURFEW_UPGRADE`). Same
/// arguments, environment, working directory and process group; no
/// parent-death signal (it must outlive this process); stdin from
/// /dev/null, stdout shared, stderr a pipe until the hand-over.
pub(super) fn spawn(
    reaper: &Reaper,
    inv: &Invocation,
    sockets: &[BorrowedFd<'_>],
    names: &str,
    live: Vec<String>,
) -> std::io::Result<Spawned> {
    let (ours, theirs) = UnixStream::pair()?;
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let n = sockets.len() as RawFd;
    let handshake = Handshake {
        channel: FIRST_FD + n,
        stderr: FIRST_FD + n + 1,
        from_pid: std::process::id(),
        live,
    };
    let sources: Vec<BorrowedFd<'_>> = sockets
        .iter()
        .copied()
        .chain([theirs.as_fd(), stderr.as_fd()])
        .collect();
    // Copies above every target number, so no dup2 below overwrites a
    // source it still needs; close-on-exec, so only the targets pass.
    let total = sources.len() as RawFd;
    let high: Vec<OwnedFd> = sources
        .iter()
        .map(|fd| dup_at_least(*fd, FIRST_FD + total))
        .collect::<std::io::Result<_>>()?;
    let raw: Vec<RawFd> = high.iter().map(AsRawFd::as_raw_fd).collect();

    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(crate::shim::ARG)
        .arg(&inv.program)
        .args(&inv.args)
        .env_remove("LISTEN_PID")
        // Ours: the new process is the watchdog's after MAINPID= (the
        // variable is optional; without it the watchdog is for whoever reads it).
        .env_remove("WATCHDOG_PID")
        .env("LISTEN_FDS", n.to_string())
        .env("LISTEN_FDNAMES", names)
        .env(super::names::ENV, handshake.to_env())
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    // The open-file limit curfew started with: the new curfew raises its
    // own again and must know the original for its workers.
    let nofile = crate::supervisor::nofile::original_soft_limit();
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls dup2, getrlimit and setrlimit, which are async-signal-safe; it
    // reads `raw` (allocated before the fork) and allocates nothing, takes
    // no lock.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(soft) = nofile {
                crate::supervisor::nofile::restore_in_child(soft);
            }
            for (i, fd) in raw.iter().enumerate() {
                // dup2 clears FD_CLOEXEC on the target: these pass the exec.
                if libc::dup2(*fd, FIRST_FD + i as RawFd) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let registration = reaper.lock();
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let exit = registration.register(pid);
    let stderr_pipe = child
        .stderr
        .take()
        .and_then(|s| pipe::Receiver::from_owned_fd(OwnedFd::from(s)).ok());
    // Never waited on through `child`: the reaper owns its exit status.
    drop(child);
    drop(high);
    Ok(Spawned {
        pid,
        exit,
        channel: ours,
        stderr: stderr_pipe,
    })
}

fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a valid borrowed descriptor; the
    // new descriptor it returns is owned by nobody else.
    unsafe {
        let new = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min);
        if new == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(new))
    }
}

/// Takes ownership of a descriptor the old curfew passed by number in
/// `CURFEW_UPGRADE` (after checking it is open), close-on-exec from now on.
pub(super) fn own_inherited(raw: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: F_GETFD/F_SETFD on a number; they fail with EBADF if it is
    // not open, and change nothing else.
    unsafe {
        if libc::fcntl(raw, libc::F_GETFD) == -1
            || libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) == -1
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: `raw` is open (checked above) and was placed there for this
    // process by its parent, the old curfew (the caller checked that the
    // handshake is for this process: `LISTEN_PID` and the parent's pid);
    // nothing else in curfew takes fds above the `LISTEN_FDS` range by
    // number, and `Successor::from_env` runs once, so this is its one owner.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}
