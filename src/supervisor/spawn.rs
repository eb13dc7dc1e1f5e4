//! Starting one worker process: its socket, its environment, its process
//! group, and the hand-off of an inherited listening socket on fd 3.
//!
//! This is the one module with `unsafe` code: the `pre_exec` hook that runs
//! between `fork` and `exec` (only async-signal-safe calls there).
#![allow(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use socket2::{Domain, Socket, Type};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::reaper::{ExitStatus, Reaper};
use super::{WorkerAddr, WorkerSpec};
use crate::config::WorkerSocket;
use crate::shim;

/// The fd an inherited listening socket is placed on (systemd's SD_LISTEN_FDS_START).
pub const LISTEN_FD: i32 = 3;
/// Listen backlog of the sockets curfew creates for workers.
const WORKER_LISTEN_BACKLOG: i32 = 1024;

/// A running worker process just after spawn.
pub struct Spawned {
    pub pid: u32,
    pub addr: WorkerAddr,
    pub exit: oneshot::Receiver<ExitStatus>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

/// Start worker `id` (instance `uid`). Errors are I/O errors of socket
/// creation or of the spawn itself (a missing program was rejected by the
/// config already, and the exec shim reports exec failures on stderr).
pub fn spawn(reaper: &Reaper, spec: &WorkerSpec, id: usize, uid: u64) -> std::io::Result<Spawned> {
    let (program, mut args): (String, Vec<String>) =
        (spec.command[0].clone(), spec.command[1..].to_vec());
    let Endpoint {
        addr,
        listener,
        env,
    } = endpoint(spec, id, uid, &mut args)?;
    let mut cmd = command(spec, &program, &args, listener.is_some(), &env);
    set_pre_exec(&mut cmd, listener.as_ref().map(|fd| fd.as_raw_fd()));

    let registration = reaper.lock();
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let exit = registration.register(pid);
    // curfew's own copy of the worker socket is closed now: once the worker is
    // gone, connecting to it is refused (and retried elsewhere) instead of
    // queueing forever.
    drop(listener);
    let stdout = child
        .stdout
        .take()
        .and_then(|s| pipe::Receiver::from_owned_fd(OwnedFd::from(s)).ok());
    let stderr = child
        .stderr
        .take()
        .and_then(|s| pipe::Receiver::from_owned_fd(OwnedFd::from(s)).ok());
    // `child` is dropped without waiting: the reaper owns its exit status.
    drop(child);
    Ok(Spawned {
        pid,
        addr,
        exit,
        stdout,
        stderr,
    })
}

/// The variable uvicorn and gunicorn read their trusted proxies from.
const FORWARDED_ALLOW_IPS: &str = "FORWARDED_ALLOW_IPS";

/// Whether the user gave the workers `var` (in curfew's environment, which
/// workers inherit, or in the spec's own variables): then it is left alone.
fn user_sets(spec: &WorkerSpec, var: &str) -> bool {
    std::env::var_os(var).is_some() || spec.extra_env.iter().any(|(k, _)| k == var)
}

/// The path of worker `id`'s (instance `uid`) Unix socket in the run directory.
fn socket_path(spec: &WorkerSpec, id: usize, uid: u64) -> PathBuf {
    spec.run_dir.join(format!("w{id}-{uid}.sock"))
}

/// Where worker `id` (instance `uid`) will accept connections, per
/// `worker_socket`, and what it is told about it.
struct Endpoint {
    addr: WorkerAddr,
    /// The listening socket handed over on fd 3 (`worker_socket = "fd"` or
    /// `"fd-tcp"`).
    listener: Option<OwnedFd>,
    /// `CURFEW_WORKER_ID` and the socket's variables.
    env: Vec<(&'static str, String)>,
}

/// Make the worker's socket (or pick its port or path), substituting
/// `{port}` / `{socket}` in `args`.
fn endpoint(
    spec: &WorkerSpec,
    id: usize,
    uid: u64,
    args: &mut [String],
) -> std::io::Result<Endpoint> {
    let mut listener: Option<OwnedFd> = None;
    let mut env: Vec<(&'static str, String)> = vec![("CURFEW_WORKER_ID", id.to_string())];
    let addr = match spec.socket {
        WorkerSocket::Fd => {
            let path = socket_path(spec, id, uid);
            remove_stale(&path);
            listener = Some(OwnedFd::from(unix_listener(&path)?));
            WorkerAddr::Unix(path)
        }
        WorkerSocket::FdTcp => {
            let l = TcpListener::from(loopback_listener()?);
            let a = l.local_addr()?;
            listener = Some(OwnedFd::from(l));
            WorkerAddr::Tcp(a)
        }
        WorkerSocket::Port => {
            let port = free_port()?;
            substitute(args, "{port}", &port.to_string());
            env.push(("PORT", port.to_string()));
            WorkerAddr::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        }
        WorkerSocket::Unix => {
            let path = socket_path(spec, id, uid);
            remove_stale(&path);
            let p = path.to_string_lossy().into_owned();
            substitute(args, "{socket}", &p);
            env.push(("CURFEW_SOCKET", p));
            WorkerAddr::Unix(path)
        }
    };
    if spec.socket.inherited() {
        env.push(("LISTEN_FDS", "1".into()));
        env.push(("LISTEN_FDNAMES", "curfew".into()));
    }
    if matches!(addr, WorkerAddr::Unix(_)) && !user_sets(spec, FORWARDED_ALLOW_IPS) {
        // A Unix-socket peer has no address, so uvicorn (and gunicorn's
        // UvicornWorker) would trust none of curfew's `X-Forwarded-*` and
        // report no client. Only curfew can connect to a socket in its 0700
        // run directory, and it sends a chain whose first entry is the
        // client it resolved (see `proxy::headers::set_forwarded`).
        env.push((FORWARDED_ALLOW_IPS, "*".into()));
    }
    Ok(Endpoint {
        addr,
        listener,
        env,
    })
}

/// The worker's command line, environment, directory, pipes and process
/// group (`through_shim` when it inherits a socket on fd 3).
fn command(
    spec: &WorkerSpec,
    program: &str,
    args: &[String],
    through_shim: bool,
    env: &[(&'static str, String)],
) -> Command {
    let mut cmd = if through_shim {
        // Through the exec shim, which sets LISTEN_PID to the worker's own pid.
        let mut c = Command::new("/proc/self/exe");
        c.arg(shim::ARG).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    };
    cmd.env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    // systemd's notify socket and watchdog are curfew's: a worker that saw
    // them would report READY (gunicorn does) or ping for the service.
    cmd.env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    // curfew consumed WEB_CONCURRENCY as its worker count; passed on, uvicorn
    // and gunicorn would each start that many processes of their own.
    cmd.env_remove("WEB_CONCURRENCY");
    // Likewise PORT, curfew's public port (bind = 0.0.0.0:$PORT): a worker
    // that listens on `$PORT` when set (Node, Go, Ruby apps; gunicorn
    // without LISTEN_FDS) would try to bind curfew's own address. In
    // `port` mode the worker's own port is set below.
    cmd.env_remove("PORT");
    if std::env::var_os("PYTHONUNBUFFERED").is_none() {
        // Python buffers stdout when it is a pipe; line-by-line logs need this.
        cmd.env("PYTHONUNBUFFERED", "1");
    }
    if spec.faulthandler && std::env::var_os("PYTHONFAULTHANDLER").is_none() {
        // On SIGABRT (a hung worker) Python prints every thread's traceback.
        cmd.env("PYTHONFAULTHANDLER", "1");
    }
    for (k, v) in &spec.extra_env {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(dir) = &spec.chdir {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group: a Ctrl-C in the terminal reaches curfew only,
    // and curfew can signal the worker together with its children.
    cmd.process_group(0);
    cmd
}

/// What the child does between fork and exec: PDEATHSIG, the open-file
/// limit it would have had without curfew, and the inherited socket
/// `listen_fd` moved onto fd 3.
fn set_pre_exec(cmd: &mut Command, listen_fd: Option<std::os::fd::RawFd>) {
    let parent = std::process::id() as libc::pid_t;
    // Read before the fork: the child only calls setrlimit with it.
    let nofile = super::nofile::original_soft_limit();
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls prctl/getppid/dup2/fcntl/getrlimit/setrlimit, which are
    // async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            // If curfew itself dies (even by SIGKILL), its workers die with it
            // instead of living on as orphans. Workers are only spawned from
            // the runtime's long-lived worker threads: the death signal fires
            // when the *thread* that forked exits, which happens only at
            // process exit, after every worker was stopped.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // curfew died between fork and prctl.
                libc::_exit(1);
            }
            if let Some(soft) = nofile {
                // The open-file limit the worker would have had without
                // curfew (see `nofile`).
                super::nofile::restore_in_child(soft);
            }
            if let Some(raw) = listen_fd {
                if raw == LISTEN_FD {
                    // dup2 onto itself would keep FD_CLOEXEC: clear it instead.
                    if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(raw, LISTEN_FD) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A listening Unix socket at `path` (in the 0700 run directory, so only
/// curfew's user can connect; the worker inherits it on fd 3).
fn unix_listener(path: &Path) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    s.bind(&socket2::SockAddr::unix(path)?)?;
    s.listen(WORKER_LISTEN_BACKLOG)?;
    Ok(s)
}

fn loopback_listener() -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener. Without it, a
    // server that writes headers and body separately (uvicorn on an fd it
    // treats as a Unix socket) waits ~40 ms for delayed ACKs on every
    // keep-alive request.
    s.set_tcp_nodelay(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    s.listen(WORKER_LISTEN_BACKLOG)?;
    Ok(s)
}

/// A loopback port that is free now (the worker binds it itself, so another
/// process could take it first; the boot then fails and is retried).
fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

fn substitute(args: &mut [String], placeholder: &str, value: &str) {
    for a in args.iter_mut() {
        if a.contains(placeholder) {
            *a = a.replace(placeholder, value);
        }
    }
}

fn remove_stale(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// The directory for worker Unix sockets: `$XDG_RUNTIME_DIR/curfew-<pid>-XXXXXX`
/// or `/tmp/curfew-<pid>-XXXXXX`, a fresh random name created exclusively
/// (`mkdir`, failing if it exists) with mode 0700, so another local user
/// cannot have made it first and read or replace a worker's socket. An
/// error comes with the directory it was to be made in.
pub fn make_run_dir() -> Result<PathBuf, (PathBuf, std::io::Error)> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    make_run_dir_in(base)
}

fn make_run_dir_in(base: PathBuf) -> Result<PathBuf, (PathBuf, std::io::Error)> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(&format!("curfew-{}-", std::process::id()))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&base)
        .map_err(|e| (base.clone(), e))?;
    // A Unix socket's path has at most 107 bytes (`sun_path`); found now
    // rather than as every worker's boot failure.
    let longest = dir.path().as_os_str().len() + LONGEST_SOCKET_NAME;
    if longest > MAX_SOCKET_PATH {
        return Err((
            base,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} is too long for worker socket paths ({longest} of at most {MAX_SOCKET_PATH} bytes); use a shorter directory",
                    dir.path().display()
                ),
            ),
        ));
    }
    // Removed by the orchestrator at exit, not on drop.
    Ok(dir.keep())
}

/// The longest path a Unix socket can have (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The longest name [`socket_path`] gives: `/w<id>-<uid>.sock`, both `u64`.
const LONGEST_SOCKET_NAME: usize = "/w-.sock".len() + 2 * 20;

#[cfg(test)]
mod run_dir_tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn run_dirs_are_fresh_and_private() {
        let a = super::make_run_dir().map_err(|(_, e)| e).expect("run dir");
        let b = super::make_run_dir().map_err(|(_, e)| e).expect("run dir");
        assert_ne!(a, b, "a fresh name each time, never a reused one");
        for d in [&a, &b] {
            let mode = std::fs::metadata(d).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
            std::fs::remove_dir(d).expect("cleanup");
        }
    }

    #[test]
    fn a_run_dir_too_long_for_socket_paths_is_refused() {
        let base = tempfile::tempdir().expect("tempdir");
        let deep = base.path().join("d".repeat(80));
        std::fs::create_dir(&deep).expect("deep dir");
        let (at, e) = super::make_run_dir_in(deep.clone()).expect_err("too long");
        assert_eq!(at, deep);
        assert!(e.to_string().contains("too long"), "{e}");
        let left = std::fs::read_dir(&deep).expect("deep").count();
        assert_eq!(left, 0, "the refused directory is removed again");
    }
}
