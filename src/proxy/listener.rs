//! Public listeners: binding (TCP or Unix), adopting one inherited from the
//! service manager (socket activation, [`Listener::adopt`]), and the careful
//! close.
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
    /// A socket passed by the service manager (`LISTEN_FDS`) that cannot
    /// serve the address it was matched to.
    #[error(
        "socket activation: fd {fd} ({name:?}) cannot serve {addr}: {problem} (the socket unit's Listen…= and curfew's `bind`/`admin_bind` must name the same address)"
    )]
    Inherited {
        addr: BindAddr,
        fd: i32,
        name: String,
        problem: String,
    },
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
    /// The path, and whether curfew created it (and removes it at close; an
    /// inherited socket's file belongs to the service manager).
    Unix(UnixListener, PathBuf, bool),
}

/// What an inherited socket is, read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InheritedAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
    /// Another family, or an unnamed or abstract Unix socket.
    Other(String),
}

impl std::fmt::Display for InheritedAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InheritedAddr::Tcp(a) => write!(f, "{a}"),
            InheritedAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            InheritedAddr::Other(s) => f.write_str(s),
        }
    }
}

/// Where an inherited socket listens (`None`: not a socket at all).
pub fn inherited_addr(fd: std::os::fd::BorrowedFd<'_>) -> Option<InheritedAddr> {
    let s = socket2::SockRef::from(&fd);
    let local = s.local_addr().ok()?;
    Some(if let Some(a) = local.as_socket() {
        InheritedAddr::Tcp(a)
    } else if let Some(p) = local.as_pathname() {
        InheritedAddr::Unix(p.to_path_buf())
    } else if local.is_unix() {
        InheritedAddr::Other("an unnamed or abstract Unix socket".to_owned())
    } else {
        InheritedAddr::Other(format!("a socket of family {}", local.family()))
    })
}

/// Whether a socket listening on `have` serves the configured `want`: the
/// same address; or, for TCP, both wildcards on the same port (systemd's
/// `ListenStream=8000` is `[::]:8000`, dual-stack, where curfew's `bind`
/// says `0.0.0.0:8000`); for Unix, the same path once made absolute.
pub fn serves(have: &InheritedAddr, want: &BindAddr) -> bool {
    match (have, want) {
        (InheritedAddr::Tcp(h), BindAddr::Tcp(w)) => {
            h == w || (h.port() == w.port() && h.ip().is_unspecified() && w.ip().is_unspecified())
        }
        (InheritedAddr::Unix(h), BindAddr::Unix(w)) => {
            let abs = |p: &std::path::Path| match std::env::current_dir() {
                Ok(cwd) if p.is_relative() => cwd.join(p),
                _ => p.to_path_buf(),
            };
            abs(h) == abs(w)
        }
        _ => false,
    }
}

/// Unix socket paths this process handed to an upgrade's successor: their
/// files are the successor's now, never removed here.
static HANDED_OVER: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// The socket file at `path` belongs to an upgrade's successor from now on:
/// closing the listener here leaves it in place.
pub fn hand_over_file(path: &std::path::Path) {
    HANDED_OVER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(path.to_path_buf());
}

fn handed_over(path: &std::path::Path) -> bool {
    HANDED_OVER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|p| p == path)
}

/// Unix socket paths an upgrade's new curfew adopted from its predecessor
/// as its own to remove (`bind-own`, `admin-own`), while that predecessor
/// still owns them: until the hand-over is acknowledged, a failed new
/// curfew closing its listener must leave the file the old one serves.
static NOT_YET_OWNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// The socket file at `path` becomes this process's only once
/// [`own_adopted_files`] is called (an upgrade's hand-over acknowledged).
pub fn own_after_hand_over(path: &std::path::Path) {
    NOT_YET_OWNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(path.to_path_buf());
}

/// The predecessor acknowledged the hand-over: the files named by
/// [`own_after_hand_over`] are this process's to remove from now on.
pub fn own_adopted_files() {
    NOT_YET_OWNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
}

fn not_yet_owned(path: &std::path::Path) -> bool {
    NOT_YET_OWNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|p| p == path)
}

/// A listener not registered with any runtime: what is handed to a proxy
/// thread, and copied for each one ([`Detached::try_clone`]).
pub enum Detached {
    Tcp(std::net::TcpListener, SocketAddr),
    Unix(std::os::unix::net::UnixListener, PathBuf, bool),
}

impl Detached {
    /// Another descriptor of the same listening socket (one kernel accept
    /// queue). The copy never removes the socket file: the original does.
    pub fn try_clone(&self) -> std::io::Result<Detached> {
        Ok(match self {
            Detached::Tcp(l, a) => Detached::Tcp(l.try_clone()?, *a),
            Detached::Unix(l, p, _) => Detached::Unix(l.try_clone()?, p.clone(), false),
        })
    }

    /// Register it with the current runtime. Must run inside that runtime.
    pub fn attach(self) -> std::io::Result<Listener> {
        Ok(match self {
            Detached::Tcp(l, a) => Listener::Tcp(TcpListener::from_std(l)?, a),
            Detached::Unix(l, p, owned) => Listener::Unix(UnixListener::from_std(l)?, p, owned),
        })
    }
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
                    true,
                ))
            }
        }
    }

    /// Adopt a listening socket passed by the service manager (fd `fd`,
    /// named `name` in `LISTEN_FDNAMES`) for `addr`, after checking that it
    /// is a stream socket, listening, of `addr`'s family and on its address.
    /// Must run inside the runtime.
    pub fn adopt(
        sock: std::os::fd::OwnedFd,
        name: &str,
        addr: &BindAddr,
    ) -> Result<Listener, BindError> {
        use std::os::fd::AsRawFd;
        let fd = sock.as_raw_fd();
        let fail = |problem: String| BindError::Inherited {
            addr: addr.clone(),
            fd,
            name: name.to_owned(),
            problem,
        };
        let Some(have) = inherited_addr(std::os::fd::AsFd::as_fd(&sock)) else {
            return Err(fail("it is not a socket".to_owned()));
        };
        let s = Socket::from(sock);
        match s.r#type() {
            Ok(t) if t == Type::STREAM => {}
            Ok(_) => {
                return Err(fail(
                    "it is not a stream (TCP or Unix stream) socket".to_owned(),
                ));
            }
            Err(e) => return Err(fail(format!("its type cannot be read: {e}"))),
        }
        match s.is_listener() {
            Ok(true) => {}
            Ok(false) => {
                return Err(fail(
                    "it is not listening (listen(2) was not called)".to_owned(),
                ));
            }
            Err(e) => return Err(fail(format!("cannot tell whether it listens: {e}"))),
        }
        if !serves(&have, addr) {
            return Err(fail(format!("it listens on {have}")));
        }
        let io = |e: std::io::Error| fail(e.to_string());
        s.set_nonblocking(true).map_err(io)?;
        match have {
            InheritedAddr::Tcp(local) => {
                // Accepted sockets inherit it (see `Listener::bind`).
                s.set_tcp_nodelay(true).map_err(io)?;
                let std: std::net::TcpListener = s.into();
                Ok(Listener::Tcp(
                    TcpListener::from_std(std).map_err(io)?,
                    local,
                ))
            }
            InheritedAddr::Unix(path) => {
                let std: std::os::unix::net::UnixListener = s.into();
                Ok(Listener::Unix(
                    UnixListener::from_std(std).map_err(io)?,
                    path,
                    false,
                ))
            }
            InheritedAddr::Other(what) => Err(fail(format!("it is {what}"))),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(_, a) => a.to_string(),
            Listener::Unix(_, p, _) => format!("unix:{}", p.display()),
        }
    }

    pub async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Listener::Tcp(l, _) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Accepted::Tcp(s, peer))
            }
            Listener::Unix(l, ..) => Ok(Accepted::Unix(l.accept().await?.0)),
        }
    }

    /// This listener detached from the runtime it was made in, to be
    /// served by another (a proxy thread's).
    pub fn into_detached(self) -> std::io::Result<Detached> {
        Ok(match self {
            Listener::Tcp(l, a) => Detached::Tcp(l.into_std()?, a),
            Listener::Unix(l, p, owned) => Detached::Unix(l.into_std()?, p, owned),
        })
    }

    /// Close the listener without accepting what waits in its queue (an
    /// immediate stop), removing its socket file if this process owns it.
    pub fn close(self) {
        if let Listener::Unix(l, path, owned) = self {
            drop(l);
            if owned && !handed_over(&path) && !not_yet_owned(&path) {
                let _ = std::fs::remove_file(&path);
            }
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
            Listener::Unix(l, path, owned) => {
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
                if owned && !handed_over(&path) && !not_yet_owned(&path) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_sockets_serve_their_own_address_or_the_same_wildcard_port() {
        let tcp = |s: &str| InheritedAddr::Tcp(s.parse().expect("addr"));
        let bind = |s: &str| BindAddr::Tcp(s.parse().expect("addr"));
        assert!(serves(&tcp("127.0.0.1:8000"), &bind("127.0.0.1:8000")));
        assert!(!serves(&tcp("127.0.0.1:8001"), &bind("127.0.0.1:8000")));
        // systemd's ListenStream=8000 is [::]:8000, dual-stack.
        assert!(serves(&tcp("[::]:8000"), &bind("0.0.0.0:8000")));
        assert!(!serves(&tcp("[::]:8000"), &bind("127.0.0.1:8000")));
        assert!(!serves(&tcp("[::1]:8000"), &bind("0.0.0.0:8000")));
        let unix = InheritedAddr::Unix("/run/app.sock".into());
        assert!(serves(&unix, &BindAddr::Unix("/run/app.sock".into())));
        assert!(!serves(&unix, &bind("0.0.0.0:8000")));
        assert!(!serves(
            &tcp("0.0.0.0:8000"),
            &BindAddr::Unix("/run/app.sock".into())
        ));
    }
}
