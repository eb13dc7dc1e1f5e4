//! Socket activation of curfew's own listeners: the sockets a service
//! manager passes (`LISTEN_FDS` from fd 3, `LISTEN_FDNAMES`, for this
//! process by `LISTEN_PID`) are adopted instead of binding, so `systemctl
//! restart` keeps the kernel's accept queue and no client is refused while
//! curfew is away.
//!
//! Matching: a socket named `admin` serves `admin_bind` (which must be
//! set); one named `control` (passed by an upgrade) the control socket at
//! its path; every other socket serves the `bind` entry with its address (the
//! same address, or wildcards on the same port; a Unix socket's path). A
//! `bind` entry no socket serves is bound as usual. A socket that serves no
//! entry, is not a listening stream socket, or is of another family than its
//! entry is an error that names the fd, its name and its address.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::upgrade::names::Role;
use crate::config::BindAddr;
use crate::proxy::listener::{BindError, InheritedAddr, Listener, inherited_addr, serves};

/// The name (in `LISTEN_FDNAMES`) of the socket for `admin_bind`.
pub const ADMIN_NAME: &str = "admin";
/// The name of the control socket's listener (passed by an upgrade).
pub const CONTROL_NAME: &str = super::upgrade::names::CONTROL;

/// Set once the passed sockets are taken: they are owned once per process.
static TAKEN: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("socket activation: LISTEN_FDS, LISTEN_PID or LISTEN_FDNAMES is invalid: {0}")]
    Env(std::io::Error),
    #[error(
        "socket activation: fd {fd} ({name:?}) is named {ADMIN_NAME:?} but `admin_bind` is not set: set it to the socket's address ({addr})"
    )]
    AdminUnset { fd: i32, name: String, addr: String },
    #[error(
        "socket activation: fd {fd} ({name:?}) {what}, which no `bind` entry names (bind: {binds}); set `bind` to the socket unit's address, or name the socket {ADMIN_NAME:?} for `admin_bind`"
    )]
    Unused {
        fd: i32,
        name: String,
        what: String,
        binds: String,
    },
}

/// One socket passed by the service manager.
struct Passed {
    fd: OwnedFd,
    name: String,
    addr: Option<InheritedAddr>,
}

/// The sockets passed to this process, not yet adopted, and the fds of
/// those adopted so far.
pub(super) struct Inherited {
    passed: Vec<Passed>,
    adopted: Vec<i32>,
    /// This process is an upgrade's new curfew: the sockets come from its
    /// predecessor, not a service manager (how adoption is logged, which
    /// admin socket is taken, and whether leftovers are an error).
    upgrade: bool,
}

impl Inherited {
    /// The sockets passed to this process (none when `LISTEN_PID` is not
    /// ours, or when they were taken before); `upgrade`: this process is an
    /// upgrade's new curfew ([`super::upgrade::child::Successor`]).
    pub(super) fn from_env(upgrade: bool) -> Result<Inherited, ActivationError> {
        let fds: Vec<(i32, String)> = sd_notify::listen_fds_with_names()
            .map_err(ActivationError::Env)?
            .collect();
        if fds.is_empty() || TAKEN.swap(true, Ordering::SeqCst) {
            return Ok(Inherited {
                passed: Vec::new(),
                adopted: Vec::new(),
                upgrade,
            });
        }
        let passed = fds
            .into_iter()
            .map(|(raw, name)| {
                let fd = own(raw);
                let addr = inherited_addr(fd.as_fd());
                Passed { fd, name, addr }
            })
            .collect();
        Ok(Inherited {
            passed,
            adopted: Vec::new(),
            upgrade,
        })
    }

    /// The fds adopted so far (what an upgrade's new curfew reports).
    pub(super) fn adopted(&self) -> Vec<i32> {
        self.adopted.clone()
    }

    /// Adopt passed socket `i` as the listener for `addr`. A Unix socket
    /// whose file an upgrade's predecessor created (`bind-own`,
    /// `admin-own`) is ours to remove once the predecessor acknowledged
    /// the hand-over (until then it still serves it).
    fn take(&mut self, i: usize, addr: &BindAddr) -> Result<Listener, BindError> {
        let p = self.passed.remove(i);
        let fd = p.fd.as_raw_fd();
        let owned = matches!(
            Role::of(&p.name),
            Role::Public { owned: true } | Role::Admin { owned: true }
        );
        let name = p.name;
        let l = match Listener::adopt(p.fd, &name, addr)? {
            Listener::Unix(u, path, _) if owned => {
                // The predecessor serves it until it acknowledges the
                // hand-over: a new curfew that fails before then must
                // leave the file in place.
                if self.upgrade {
                    crate::proxy::listener::own_after_hand_over(&path);
                }
                Listener::Unix(u, path, true)
            }
            l => l,
        };
        let from = if self.upgrade {
            "the previous curfew (upgrade)"
        } else {
            "the service manager (socket activation)"
        };
        tracing::info!(fd, name = %name, listen = %l.describe(), "Adopted a listening socket from {from}.");
        self.adopted.push(fd);
        Ok(l)
    }

    /// The passed socket for the public `addr`, adopted, if there is one.
    pub(super) fn public(&mut self, addr: &BindAddr) -> Result<Option<Listener>, BindError> {
        let found = self.passed.iter().position(|p| {
            matches!(Role::of(&p.name), Role::Public { .. })
                && p.addr.as_ref().is_some_and(|a| serves(a, addr))
        });
        found.map(|i| self.take(i, addr)).transpose()
    }

    /// The socket named `admin`, adopted for `admin_bind`, if there is one.
    /// In an upgrade, only when its address still serves `admin_bind` (an
    /// upgrade's new configuration may have moved or dropped it; the socket
    /// is then closed by [`Inherited::finish`]).
    pub(super) fn admin(
        &mut self,
        admin_bind: Option<&BindAddr>,
    ) -> Result<Option<Listener>, super::ServeError> {
        let upgrade = self.upgrade;
        let Some(i) = self.passed.iter().position(|p| {
            matches!(Role::of(&p.name), Role::Admin { .. })
                && (!upgrade
                    || admin_bind
                        .is_some_and(|want| p.addr.as_ref().is_some_and(|a| serves(a, want))))
        }) else {
            return Ok(None);
        };
        match admin_bind {
            Some(addr) => Ok(Some(self.take(i, addr)?)),
            None => {
                let p = self.passed.remove(i);
                Err(ActivationError::AdminUnset {
                    fd: p.fd.as_raw_fd(),
                    addr: describe(&p.addr),
                    name: p.name,
                }
                .into())
            }
        }
    }

    /// The socket named `control` (an upgrade's predecessor passes its
    /// control socket), when it listens on `path`: the control socket,
    /// taken over while the predecessor still answers on it.
    pub(super) fn control(
        &mut self,
        path: &std::path::Path,
    ) -> std::io::Result<Option<tokio::net::UnixListener>> {
        let want = BindAddr::Unix(path.to_path_buf());
        let Some(i) = self.passed.iter().position(|p| {
            p.name == CONTROL_NAME && p.addr.as_ref().is_some_and(|a| serves(a, &want))
        }) else {
            return Ok(None);
        };
        let p = self.passed.remove(i);
        let fd = p.fd.as_raw_fd();
        let std = std::os::unix::net::UnixListener::from(p.fd);
        std.set_nonblocking(true)?;
        let l = tokio::net::UnixListener::from_std(std)?;
        tracing::info!(fd, path = %path.display(), "Took over the control socket from the previous curfew.");
        self.adopted.push(fd);
        Ok(Some(l))
    }

    /// Every passed socket must have been adopted; in an upgrade (an
    /// upgrade's new curfew, whose configuration may have dropped an
    /// address) the others are closed, each named at INFO.
    pub(super) fn finish(self, binds: &[BindAddr]) -> Result<(), ActivationError> {
        if self.upgrade {
            for p in self.passed {
                tracing::info!(
                    fd = p.fd.as_raw_fd(),
                    name = %p.name,
                    listen = %describe(&p.addr),
                    "Upgrade: the configuration no longer serves this socket of the previous curfew; closed here (the previous curfew closes its own)."
                );
            }
            return Ok(());
        }
        match self.passed.into_iter().next() {
            None => Ok(()),
            Some(p) => Err(ActivationError::Unused {
                fd: p.fd.as_raw_fd(),
                what: match &p.addr {
                    Some(a) => format!("listens on {a}"),
                    None => "is not a socket".to_owned(),
                },
                name: p.name,
                binds: binds
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

fn describe(addr: &Option<InheritedAddr>) -> String {
    addr.as_ref()
        .map_or_else(|| "not a socket".to_owned(), ToString::to_string)
}

/// Takes ownership of a descriptor passed in `LISTEN_FDS`.
#[allow(unsafe_code)]
fn own(raw: i32) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `raw` is one of the descriptors the service manager passed to
    // this process (`sd_notify::listen_fds_with_names` checked `LISTEN_PID`
    // and set FD_CLOEXEC on it); nothing else in curfew opens, uses or
    // closes fds from 3 to 3+LISTEN_FDS by number, and `TAKEN` makes this
    // the only place that takes them, once per process, so the `OwnedFd` is
    // their one owner.
    unsafe { OwnedFd::from_raw_fd(raw) }
}
