//! The pure parts of an upgrade: how the sockets passed to the new curfew
//! are named (`LISTEN_FDNAMES`) and told apart, the `CURFEW_UPGRADE`
//! variable, the live predecessors passed on, where the binary to run is,
//! and whether an upgrade may start now.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::lifecycle::Phase;

/// The environment variable that tells a curfew it is an upgrade's new
/// process (see [`Handshake`]).
pub const ENV: &str = "CURFEW_UPGRADE";

/// `LISTEN_FDNAMES` of a public `bind` listener whose Unix socket file the
/// receiver may not remove (TCP, or a file the service manager made).
pub const BIND: &str = "bind";
/// A public listener whose Unix socket file the sender created: the
/// receiver owns it now (and removes it when it stops).
pub const BIND_OWN: &str = "bind-own";
/// The admin listener (socket activation's name for it).
pub const ADMIN: &str = super::super::activation::ADMIN_NAME;
/// The admin listener on a Unix socket file the sender created: the
/// receiver owns it now (and removes it when it stops).
pub const ADMIN_OWN: &str = "admin-own";
/// The control socket's listener.
pub const CONTROL: &str = "control";

/// Predecessors passed on in a chain of upgrades (older ones have long
/// finished draining).
pub const MAX_LIVE: usize = 8;

/// What a passed socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A public `bind` listener; `owned`: the receiver owns its Unix file.
    Public {
        owned: bool,
    },
    /// The admin listener; `owned`: the receiver owns its Unix file.
    Admin {
        owned: bool,
    },
    Control,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Public { owned: false } => BIND,
            Role::Public { owned: true } => BIND_OWN,
            Role::Admin { owned: false } => ADMIN,
            Role::Admin { owned: true } => ADMIN_OWN,
            Role::Control => CONTROL,
        }
    }

    /// The role a name gives; any other name (a service manager's) is a
    /// public listener matched by its address.
    pub fn of(name: &str) -> Role {
        match name {
            ADMIN => Role::Admin { owned: false },
            ADMIN_OWN => Role::Admin { owned: true },
            CONTROL => Role::Control,
            BIND_OWN => Role::Public { owned: true },
            _ => Role::Public { owned: false },
        }
    }
}

/// `LISTEN_FDNAMES` for sockets with these roles, in fd order.
pub fn fd_names(roles: &[Role]) -> String {
    roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(":")
}

/// `CURFEW_UPGRADE`: the new curfew's private channel to the old one and
/// the old one's stderr (both inherited fds), who the old one is, and the
/// job lease owners of this node that still run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    /// The channel (a Unix stream socket): the new curfew writes one
    /// [`Ready`] line when it serves; the old one answers one line
    /// (`{"ack":true}`) once it has stopped accepting on the shared
    /// control and admin sockets and named the new one `MAINPID`.
    pub channel: i32,
    /// The old curfew's stderr, which the new one makes its own after the
    /// hand-over (until then its stderr is a pipe the old one reads, to
    /// report a failed start with its last lines).
    pub stderr: i32,
    /// The old curfew's pid (the new one's parent).
    pub from_pid: u32,
    /// Job lease owners (`node/boot`) whose runs are not reclaimed at start.
    pub live: Vec<String>,
}

impl Handshake {
    pub fn to_env(&self) -> String {
        // A struct of integers and strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_env(value: &str) -> Result<Handshake, String> {
        serde_json::from_str(value).map_err(|e| format!("{ENV} is not curfew's: {e}"))
    }
}

/// The new curfew's report on the channel: it serves, with these of the
/// passed fds (the others it closed: its configuration no longer names
/// their address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub ready: bool,
    pub pid: u32,
    pub adopted: Vec<i32>,
}

/// The old one's answer: the new one is the service now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub ack: bool,
}

/// The lease owners a successor must leave alone: this process's own,
/// then those it was told about, at most [`MAX_LIVE`].
pub fn live_for_successor(own: Option<&str>, inherited: &[String]) -> Vec<String> {
    let mut live: Vec<String> = own.map(str::to_owned).into_iter().collect();
    for o in inherited {
        if !live.contains(o) {
            live.push(o.clone());
        }
    }
    live.truncate(MAX_LIVE);
    live
}

/// The path of the binary as it was started: `argv[0]` made absolute
/// against the working directory at start, or found on `PATH` like the
/// shell did. Not `/proc/self/exe`, which points at the running file (and
/// reads "(deleted)" once a new binary replaced it): an upgrade runs what
/// is at this path now.
pub fn resolve_program(argv0: &OsStr, cwd: &Path, path_var: Option<&OsStr>) -> Option<PathBuf> {
    let p = Path::new(argv0);
    if argv0.is_empty() {
        return None;
    }
    if p.components().count() > 1 || argv0.as_encoded_bytes().contains(&b'/') {
        return Some(if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        });
    }
    let path_var = path_var?;
    std::env::split_paths(path_var)
        .map(|dir| {
            if dir.is_absolute() {
                dir.join(p)
            } else {
                cwd.join(dir).join(p)
            }
        })
        .find(|c| is_executable(c))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The binary and arguments an upgrade starts again.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// What an upgrade request does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Start,
    /// One is under way: wait for its outcome.
    Join {
        pid: u32,
    },
    Refuse(String),
}

/// Whether an upgrade may start: only while serving, never as PID 1 (the
/// new process would be PID 1's child, and PID 1 cannot be handed over:
/// when it exits the container ends), one at a time.
pub fn decide(phase: Phase, pid: u32, running: Option<u32>, program: Option<&Path>) -> Decision {
    if let Some(pid) = running {
        return Decision::Join { pid };
    }
    if phase != Phase::Serving {
        return Decision::Refuse(format!("curfew is {phase}"));
    }
    if pid == 1 {
        return Decision::Refuse(
            "curfew is PID 1 (a container's init): the process that is PID 1 cannot hand its place to another, and the container ends when it exits; replace the container instead (a rolling deploy), or run curfew under an init such as tini to upgrade in place"
                .to_owned(),
        );
    }
    if program.is_none() {
        return Decision::Refuse(
            "the path curfew was started as is unknown (argv[0] was empty or not on PATH)"
                .to_owned(),
        );
    }
    Decision::Start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_to_roles() {
        let roles = [
            Role::Public { owned: false },
            Role::Public { owned: true },
            Role::Admin { owned: false },
            Role::Admin { owned: true },
            Role::Control,
        ];
        assert_eq!(fd_names(&roles), "bind:bind-own:admin:admin-own:control");
        for r in roles {
            assert_eq!(Role::of(r.name()), r);
        }
        // A service manager's own name is a public listener, matched by
        // its address; its file is not ours to remove.
        assert_eq!(Role::of("curfew.socket"), Role::Public { owned: false });
        assert_eq!(Role::of("unknown"), Role::Public { owned: false });
    }

    #[test]
    fn handshake_round_trips_and_rejects_strangers() {
        let h = Handshake {
            channel: 6,
            stderr: 7,
            from_pid: 4242,
            live: vec!["web/abc".into()],
        };
        assert_eq!(Handshake::from_env(&h.to_env()), Ok(h));
        let e = Handshake::from_env("yes").expect_err("not ours");
        assert!(e.contains(ENV), "{e}");
    }

    #[test]
    fn live_predecessors_chain_without_duplicates_and_bounded() {
        assert_eq!(live_for_successor(None, &[]), Vec::<String>::new());
        let inherited: Vec<String> = (0..20).map(|i| format!("n/{i}")).collect();
        let live = live_for_successor(Some("n/me"), &inherited);
        assert_eq!(live.len(), MAX_LIVE);
        assert_eq!(live[0], "n/me");
        assert_eq!(live[1], "n/0");
        let live = live_for_successor(Some("n/0"), &inherited[..2]);
        assert_eq!(live, ["n/0", "n/1"]);
    }

    #[test]
    fn the_program_is_the_path_started_not_the_running_file() {
        let cwd = Path::new("/srv/app");
        assert_eq!(
            resolve_program(OsStr::new("/usr/bin/curfew"), cwd, None),
            Some(PathBuf::from("/usr/bin/curfew"))
        );
        assert_eq!(
            resolve_program(OsStr::new("./bin/curfew"), cwd, None),
            Some(PathBuf::from("/srv/app/./bin/curfew"))
        );
        assert_eq!(resolve_program(OsStr::new(""), cwd, None), None);
        // A bare name: found on PATH like the shell did.
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("curfew");
        std::fs::write(&exe, "#!/bin/sh\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).expect("join");
        assert_eq!(
            resolve_program(OsStr::new("curfew"), cwd, Some(&path)),
            Some(exe)
        );
        assert_eq!(resolve_program(OsStr::new("curfew"), cwd, None), None);
    }

    #[test]
    fn an_upgrade_starts_only_while_serving_once_and_never_as_pid_1() {
        let prog = Some(Path::new("/usr/bin/curfew"));
        assert_eq!(decide(Phase::Serving, 100, None, prog), Decision::Start);
        assert_eq!(
            decide(Phase::Serving, 100, Some(200), prog),
            Decision::Join { pid: 200 }
        );
        for phase in [Phase::Starting, Phase::LameDuck, Phase::Draining] {
            let Decision::Refuse(why) = decide(phase, 100, None, prog) else {
                panic!("{phase} must refuse");
            };
            assert!(why.contains(phase.as_str()), "{why}");
        }
        let Decision::Refuse(why) = decide(Phase::Serving, 1, None, prog) else {
            panic!("PID 1 must refuse");
        };
        assert!(why.contains("PID 1"), "{why}");
        assert!(matches!(
            decide(Phase::Serving, 100, None, None),
            Decision::Refuse(_)
        ));
    }
}
