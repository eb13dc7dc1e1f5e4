//! The new curfew's side of an upgrade: the handshake read from
//! `CURFEW_UPGRADE`, the ready report once it serves, and the take-over
//! when the old one answers.

use std::os::fd::OwnedFd;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::exec::own_inherited;
use super::names::{Ack, ENV, Handshake, Ready};

#[derive(Debug, thiserror::Error)]
pub enum SuccessorError {
    #[error("{0}")]
    Env(String),
    #[error("{ENV}: cannot take the inherited fd {fd}: {source}")]
    Fd { fd: i32, source: std::io::Error },
}

/// This process is an upgrade's new curfew.
pub struct Successor {
    pub from_pid: u32,
    /// Job lease owners whose runs are not reclaimed.
    pub live: Vec<String>,
    channel: OwnedFd,
    stderr: OwnedFd,
}

impl Successor {
    /// The handshake, when `CURFEW_UPGRADE` is set *for this process*: the
    /// exec shim set `LISTEN_PID` to our pid, and our parent is the old
    /// curfew that wrote it (a curfew started from a worker's shell, which
    /// inherits the variable, is not a successor).
    pub fn from_env() -> Result<Option<Successor>, SuccessorError> {
        let Some(value) = std::env::var_os(ENV).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let value = value.to_string_lossy();
        let h = Handshake::from_env(&value).map_err(SuccessorError::Env)?;
        let for_us = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            == Some(std::process::id())
            && nix::unistd::getppid().as_raw() as u32 == h.from_pid;
        if !for_us {
            return Ok(None);
        }
        let own = |fd: i32| own_inherited(fd).map_err(|source| SuccessorError::Fd { fd, source });
        Ok(Some(Successor {
            from_pid: h.from_pid,
            live: h.live,
            channel: own(h.channel)?,
            stderr: own(h.stderr)?,
        }))
    }

    /// Reports ready with the fds adopted, and waits for the old curfew's
    /// answer (or for the channel to close: the old one is gone). Then
    /// makes the old one's stderr ours (until now it read ours, to report
    /// a failed start). Returns whether the old one acknowledged.
    pub async fn take_over(self, adopted: Vec<i32>) -> bool {
        let acked = self.handshake(adopted).await.unwrap_or(false);
        if let Err(e) = nix::unistd::dup2_stderr(&self.stderr) {
            tracing::warn!(error = %e, "Upgrade: cannot take over the previous curfew's stderr; logs keep going through it while it runs.");
        }
        acked
    }

    async fn handshake(&self, adopted: Vec<i32>) -> std::io::Result<bool> {
        let std = std::os::unix::net::UnixStream::from(self.channel.try_clone()?);
        std.set_nonblocking(true)?;
        let mut stream = tokio::net::UnixStream::from_std(std)?;
        let ready = Ready {
            ready: true,
            pid: std::process::id(),
            adopted,
        };
        let mut line = serde_json::to_string(&ready).map_err(std::io::Error::other)?;
        line.push('\n');
        stream.write_all(line.as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(&mut stream).read_line(&mut answer).await?;
        Ok(serde_json::from_str::<Ack>(answer.trim()).is_ok_and(|a| a.ack))
    }
}
