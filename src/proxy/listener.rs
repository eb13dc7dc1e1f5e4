//! Public listeners: binding (TCP or Unix) and the careful close.
//!
//! Closing a listening socket resets every connection still waiting in the
//! kernel's accept queue: clients that already sent a request get a reset
//! (gunicorn#2409, #3397). So before closing, curfew accepts everything that
//! is queued, with direct non-blocking `accept(2)` calls until `EAGAIN` (not
//! through the reactor, whose readiness may lag), and serves it.

use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::config::BindAddr;

/// Kernel accept queue length of public listeners.
const LISTEN_BACKLOG: i32 = 2048;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {addr}: {source}{}", hint(source))]
    Io {
        addr: BindAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: another process is listening on that socket")]
    UnixInUse { addr: BindAddr },
}

fn hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another process uses this address: stop it or choose another `bind`)"
        }
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need privileges; choose a higher port)"
        }
        std::io::ErrorKind::AddrNotAvailable => " (this host has no such address)",
        _ => "",
    }
}

pub enum Listener {
    Tcp(TcpListener, SocketAddr),
    Unix(UnixListener, PathBuf),
}

pub enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

impl Listener {
    /// Bind an address. Must run inside the runtime.
    pub fn bind(addr: &BindAddr) -> Result<Listener, BindError> {
        let io = |source| BindError::Io {
            addr: addr.clone(),
            source,
        };
        match addr {
            BindAddr::Tcp(a) => {
                let s = Socket::new(Domain::for_address(*a), Type::STREAM, None).map_err(io)?;
                s.set_reuse_address(true).map_err(io)?;
                if a.is_ipv6() {
                    s.set_only_v6(true).map_err(io)?;
                }
                s.set_tcp_nodelay(true).map_err(io)?;
                s.bind(&(*a).into()).map_err(io)?;
                s.listen(LISTEN_BACKLOG).map_err(io)?;
                s.set_nonblocking(true).map_err(io)?;
                let std: std::net::TcpListener = s.into();
                let local = std.local_addr().map_err(io)?;
                Ok(Listener::Tcp(
                    TcpListener::from_std(std).map_err(io)?,
                    local,
                ))
            }
            BindAddr::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() {
                        return Err(io(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            "a file that is not a socket exists at this path",
                        )));
                    }
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        return Err(BindError::UnixInUse { addr: addr.clone() });
                    }
                    // A stale socket file from a previous run.
                    std::fs::remove_file(path).map_err(io)?;
                }
                let s = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io)?;
                s.bind(&SockAddr::unix(path).map_err(io)?).map_err(io)?;
                s.listen(LISTEN_BACKLOG).map_err(io)?;
                s.set_nonblocking(true).map_err(io)?;
                let std: std::os::unix::net::UnixListener = s.into();
                Ok(Listener::Unix(
                    UnixListener::from_std(std).map_err(io)?,
                    path.clone(),
                ))
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(_, a) => a.to_string(),
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }

    pub async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Listener::Tcp(l, _) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Accepted::Tcp(s, peer))
            }
            Listener::Unix(l, _) => Ok(Accepted::Unix(l.accept().await?.0)),
        }
    }

    /// Accept every connection waiting in the kernel queue, then close the
    /// listener (and remove its socket file).
    pub fn drain_and_close(self) -> Vec<Accepted> {
        let mut out = Vec::new();
        match self {
            Listener::Tcp(l, _) => {
                if let Ok(std) = l.into_std() {
                    while let Ok((s, peer)) = std.accept() {
                        if s.set_nonblocking(true).is_ok()
                            && let Ok(t) = TcpStream::from_std(s)
                        {
                            let _ = t.set_nodelay(true);
                            out.push(Accepted::Tcp(t, peer));
                        }
                    }
                }
            }
            Listener::Unix(l, path) => {
                if let Ok(std) = l.into_std() {
                    while let Ok((s, _)) = std.accept() {
                        if s.set_nonblocking(true).is_ok()
                            && let Ok(u) = UnixStream::from_std(s)
                        {
                            out.push(Accepted::Unix(u));
                        }
                    }
                    drop(std);
                }
                let _ = std::fs::remove_file(&path);
            }
        }
        out
    }
}
