//! Test support: start the real `curfew` binary on a free port with real
//! worker processes, send it signals, read its logs, talk HTTP to it, run
//! the real load generator against it, and check the process table.
#![allow(dead_code)]

pub mod jobs;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CURFEW: &str = env!("CARGO_BIN_EXE_curfew");
pub const TESTWORKER: &str = env!("CARGO_BIN_EXE_curfew-testworker");
pub const LOAD: &str = env!("CARGO_BIN_EXE_curfew-load");

/// The start of a lifecycle event's fields in a text log line
/// (`events.rs`), e.g. `event("reload_finished", "ok")`.
pub fn event(name: &str, result: &str) -> String {
    format!("event=\"{name}\" result=\"{result}\"")
}

/// A text log line of curfew serving (`events::Serving`).
pub const SERVING: &str = "event=\"serving\"";
/// A text log line of a worker ready to serve (started or restarted).
pub const WORKER_READY: &str = "event=\"worker_ready\" result=\"booted\"";
/// A text log line of a replacement (reload, recycle) ready to take over.
pub const REPLACEMENT_READY: &str = "event=\"worker_ready\" result=\"replacement\"";
/// A text log line of a hung worker aborted (`events::WorkerAborted`).
pub const WORKER_ABORTED: &str = "event=\"worker_aborted\"";

/// Polls `f` until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

///
/// Never the same port twice in one test process: a port picked here is
/// released at once and bound later (by curfew, or a test's own listener),
/// and the kernel may hand it to the next `bind(:0)` meanwhile -- two such
/// calls in one test (admin and front, a relay and the front) once got the
/// same port. Other test processes can still race for it; their window is
/// the few milliseconds until the port is bound.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind :0")
            .local_addr()
            .expect("addr")
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// `GET path` (HTTP/1.0) on the Unix socket at `sock`: the answer's status
/// line ("" when nothing came back).
pub fn unix_status_line(sock: &Path, path: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("connect to the Unix socket");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or_default().to_owned()
}

/// Whether `pid` runs (not a zombie, not gone).
pub fn alive(pid: i32) -> bool {
    curfew::supervisor::procfs::all()
        .iter()
        .any(|p| p.pid == pid && p.state != 'Z')
}

/// Live (non-zombie) child processes of `pid` (of curfew: its workers,
/// whatever state their slots are in).
pub fn children(pid: i32) -> Vec<i32> {
    curfew::supervisor::procfs::all()
        .into_iter()
        .filter(|p| p.ppid == pid && p.state != 'Z')
        .map(|p| p.pid)
        .collect()
}

/// A unique marker to find every process a test started (in argv).
pub fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("t{}x{}", std::process::id(), nanos % 1_000_000_000)
}

/// A running curfew.
pub struct Curfew {
    pub child: Child,
    pub port: u16,
    pub marker: String,
    logs: Arc<Mutex<Vec<String>>>,
    /// Its control socket (a private temporary directory per instance).
    pub control_socket: PathBuf,
    _control_dir: tempfile::TempDir,
    /// Set when curfew's stderr closes (it exited).
    ended: Arc<std::sync::atomic::AtomicBool>,
    exit: Option<std::process::ExitStatus>,
}

pub struct Opts {
    pub args: Vec<String>,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub bind: Option<String>,
    /// Start curfew inside the cgroup whose `cgroup.procs` file this is.
    pub wrap: Option<PathBuf>,
    /// Start curfew with this open-file limit (soft, hard; `prlimit`).
    pub nofile: Option<(u64, u64)>,
}

impl Opts {
    /// curfew serve with the test worker and `extra` curfew flags.
    pub fn testworker(extra: &[&str], worker_args: &[&str]) -> Opts {
        let mut command = vec![TESTWORKER.to_string()];
        command.extend(worker_args.iter().map(|s| s.to_string()));
        Opts {
            args: extra.iter().map(|s| s.to_string()).collect(),
            command,
            env: vec![],
            cwd: None,
            bind: None,
            wrap: None,
            nofile: None,
        }
    }

    pub fn command(extra: &[&str], command: &[&str]) -> Opts {
        Opts {
            args: extra.iter().map(|s| s.to_string()).collect(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            cwd: None,
            bind: None,
            wrap: None,
            nofile: None,
        }
    }
}

impl Curfew {
    /// Start curfew and wait until it logs the `serving` event, in text or
    /// JSON (panics with the logs if it exits first or takes longer than
    /// 30 s).
    pub fn start(opts: Opts) -> Curfew {
        let json = opts.args.windows(2).any(|w| w == ["--log-format", "json"]);
        let c = Curfew::spawn(opts);
        let needle = if json {
            "\"event\":\"serving\""
        } else {
            SERVING
        };
        c.wait_log(needle, Duration::from_secs(30));
        c
    }

    /// Start curfew without waiting for anything.
    pub fn spawn(opts: Opts) -> Curfew {
        Curfew::spawn_inner(opts, None, Path::new(CURFEW))
    }

    /// [`Curfew::spawn`] of the curfew binary at `program` (a copy, for
    /// the upgrade tests).
    pub fn spawn_program(opts: Opts, program: &Path) -> Curfew {
        Curfew::spawn_inner(opts, None, program)
    }

    /// Start curfew socket-activated, as systemd would: `listener` passed as
    /// fd 3 with `LISTEN_FDS=1`, `LISTEN_FDNAMES=<name>` and `LISTEN_PID` set
    /// to curfew's own pid (a shell moves the socket from its stdin to fd 3,
    /// sets `LISTEN_PID=$$` and execs curfew, keeping its pid); `--bind`
    /// is the listener's address. Does not wait.
    pub fn spawn_activated(
        opts: Opts,
        listener: std::os::fd::OwnedFd,
        addr: std::net::SocketAddr,
        name: &str,
    ) -> Curfew {
        Curfew::spawn_activated_with(opts, listener, addr, name, None)
    }

    /// [`Curfew::spawn_activated`], with a second socket as fd 4 named
    /// `admin` when `admin` is given (`LISTEN_FDS=2`).
    pub fn spawn_activated_with(
        mut opts: Opts,
        listener: std::os::fd::OwnedFd,
        addr: std::net::SocketAddr,
        name: &str,
        admin: Option<std::os::fd::OwnedFd>,
    ) -> Curfew {
        opts.bind = Some(addr.to_string());
        let n = if admin.is_some() { 2 } else { 1 };
        let names = if admin.is_some() {
            format!("{name}:admin")
        } else {
            name.to_owned()
        };
        opts.env.push(("LISTEN_FDS".into(), n.to_string()));
        opts.env.push(("LISTEN_FDNAMES".into(), names));
        Curfew::spawn_inner(
            opts,
            Some((listener, addr.port(), admin)),
            Path::new(CURFEW),
        )
    }

    fn spawn_inner(
        opts: Opts,
        activated: Option<(std::os::fd::OwnedFd, u16, Option<std::os::fd::OwnedFd>)>,
        program: &Path,
    ) -> Curfew {
        // A PORT in the test's env is the port curfew will bind (no --bind).
        let env_port = opts
            .env
            .iter()
            .find(|(k, _)| k == "PORT")
            .and_then(|(_, v)| v.parse().ok());
        let port = activated
            .as_ref()
            .map(|(_, p, _)| *p)
            .or(env_port)
            .unwrap_or_else(free_port);
        let marker = marker();
        let mut cmd = match &opts.wrap {
            _ if activated.is_some() => {
                // A second socket: inherited by bash (close-on-exec cleared
                // on it, by number), moved to fd 4.
                let fd4 = match activated.as_ref().and_then(|(_, _, a)| a.as_ref()) {
                    Some(a) => {
                        use std::os::fd::AsRawFd;
                        nix::fcntl::fcntl(
                            a,
                            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                        )
                        .expect("clear FD_CLOEXEC");
                        let n = a.as_raw_fd();
                        format!(" 4<&{n} {n}<&-")
                    }
                    None => String::new(),
                };
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!(
                        "exec 3<&0{fd4} </dev/null; export LISTEN_PID=$$; exec \"$0\" \"$@\""
                    ))
                    .arg(CURFEW);
                c
            }
            // Join the cgroup first, then become curfew (same pid).
            Some(procs) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!(
                        "echo $$ > '{}' && exec \"$0\" \"$@\"",
                        procs.display()
                    ))
                    .arg(CURFEW);
                c
            }
            None => match opts.nofile {
                Some((soft, hard)) => {
                    let mut c = Command::new("prlimit");
                    c.arg(format!("--nofile={soft}:{hard}"))
                        .arg("--")
                        .arg(program);
                    c
                }
                None => Command::new(program),
            },
        };
        cmd.arg("serve");
        if env_port.is_none() {
            let bind = opts
                .bind
                .clone()
                .unwrap_or_else(|| format!("127.0.0.1:{port}"));
            cmd.args(["--bind", &bind]);
        }
        let control_dir = tempfile::tempdir().expect("tempdir");
        let control_socket = control_dir.path().join("control.sock");
        cmd.arg("--control-socket").arg(&control_socket);
        cmd.args(&opts.args);
        cmd.arg("--");
        cmd.args(&opts.command);
        cmd.env_remove("WEB_CONCURRENCY").env_remove("PORT");
        for (k, _) in std::env::vars() {
            if k.starts_with("CURFEW_") {
                cmd.env_remove(k);
            }
        }
        // Inherited by every descendant: the process-table check finds them all.
        cmd.env("TEST_CURFEW_MARKER", &marker);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if let Some(d) = &opts.cwd {
            cmd.current_dir(d);
        }
        // The admin socket (if any) stays open until the spawn.
        let mut _admin_fd = None;
        match activated {
            Some((fd, _, admin)) => {
                _admin_fd = admin;
                cmd.stdin(Stdio::from(fd))
            }
            None => cmd.stdin(Stdio::null()),
        };
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn curfew");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for (i, pipe) in [
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .enumerate()
        {
            let logs = logs.clone();
            let ended = ended.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if std::env::var_os("CURFEW_TEST_ECHO").is_some() {
                        eprintln!("[curfew] {line}");
                    }
                    logs.lock().expect("logs").push(line);
                }
                if i == 0 {
                    ended.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
        Curfew {
            child,
            port,
            marker,
            logs,
            ended,
            exit: None,
            control_socket,
            _control_dir: control_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    pub fn log_text(&self) -> String {
        self.logs().join("\n")
    }

    pub fn count_log(&self, needle: &str) -> usize {
        self.logs().iter().filter(|l| l.contains(needle)).count()
    }

    /// Wait until a log line contains `needle`; panics with the logs on timeout
    /// or if curfew exits first.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_log_count(needle, 1, timeout)
    }

    pub fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            let hits: Vec<&String> = logs.iter().filter(|l| l.contains(needle)).collect();
            if hits.len() >= n {
                return hits[n - 1].clone();
            }
            if Instant::now() > deadline || self.ended.load(std::sync::atomic::Ordering::SeqCst) {
                if Instant::now() <= deadline {
                    // One more look: the last lines may have just arrived.
                    std::thread::sleep(Duration::from_millis(50));
                    let logs = self.logs();
                    let hits: Vec<&String> = logs.iter().filter(|l| l.contains(needle)).collect();
                    if hits.len() >= n {
                        return hits[n - 1].clone();
                    }
                }
                panic!(
                    "no {n}× log line containing {needle:?} within {timeout:?}; logs:\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal curfew");
    }

    /// Wait for curfew to exit; returns its exit code (panics if killed by a
    /// signal or still running after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(st);
                // Let the log threads read the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return st.code().unwrap_or_else(|| {
                    panic!("curfew died by a signal: {st:?}\n{}", self.log_text())
                });
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "curfew still running after {timeout:?}; logs:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lines at WARN or ERROR level that curfew itself wrote (not worker output).
    pub fn faults(&self) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect()
    }

    /// pids of worker processes from `worker_ready` events (not replacements).
    pub fn worker_pids(&self) -> Vec<i32> {
        self.logs()
            .iter()
            .filter(|l| l.contains(WORKER_READY))
            .filter_map(|l| field(l, "pid").and_then(|p| p.parse().ok()))
            .collect()
    }
}

impl Drop for Curfew {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Never leave a worker behind, even when a test failed.
        for pid in processes_with(&self.marker) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The value of `key=value` in a text log line.
pub fn field(line: &str, key: &str) -> Option<String> {
    let pat = format!(" {key}=");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    let end = rest.find([' ', '"']).unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// Resident memory of process `pid` in KiB (`VmRSS`; 0 once it is gone).
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Live (non-zombie) processes whose command line or environment contains `needle`.
pub fn processes_with(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let me = std::process::id() as i32;
    for p in curfew::supervisor::procfs::all() {
        if p.pid == me || p.state == 'Z' {
            continue;
        }
        let pid = p.pid;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let hay = |b: &[u8]| String::from_utf8_lossy(b).contains(needle);
        if hay(&cmdline) || hay(&environ) {
            out.push(pid);
        }
    }
    out
}

/// Assert that no process started by this curfew survives it.
pub fn assert_no_survivors(c: &Curfew) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = processes_with(&c.marker);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let desc: Vec<String> = left
                .iter()
                .map(|p| {
                    format!(
                        "{p}: {}",
                        String::from_utf8_lossy(
                            &std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default()
                        )
                        .replace('\0', " ")
                    )
                })
                .collect();
            panic!("processes survived curfew: {desc:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One blocking HTTP/1.1 request on a new connection (Connection: close).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    send_request(&mut s, method, path, extra_headers, body, true)?;
    read_response(&mut BufReader::new(s))
}

pub fn get(port: u16, path: &str) -> Resp {
    http(port, "GET", path, &[], b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

pub fn send_request(
    s: &mut impl Write,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    if close {
        req.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}

/// Read one response (Content-Length, chunked, or until EOF).
pub fn read_response(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let t = line.trim_end();
        if t.is_empty() {
            break;
        }
        if let Some((k, v)) = t.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if status == 101 || status == 204 || status == 304 {
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(std::io::Error::other)?;
            if n == 0 {
                line.clear();
                r.read_line(&mut line)?;
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Result of a `curfew-load` run.
pub struct LoadResult {
    pub json: serde_json::Value,
}

impl LoadResult {
    pub fn n(&self, key: &str) -> u64 {
        self.json[key].as_u64().unwrap_or(0)
    }
    pub fn status(&self, code: &str) -> u64 {
        self.json["status"][code].as_u64().unwrap_or(0)
    }
    /// Responses with a status other than `code`.
    pub fn other_statuses(&self, code: &str) -> u64 {
        self.json["status"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| *k != code)
                    .map(|(_, v)| v.as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// A load run in the background (the real `curfew-load` binary).
pub struct Load {
    child: Child,
    pub ready_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Load {
    pub fn start(port: u16, paths: &[&str], connections: u32, duration_ms: u64) -> Load {
        Load::start_with(port, paths, connections, duration_ms, &[])
    }

    /// [`Load::start`] with more `curfew-load` flags (`--ready-after N`:
    /// [`Load::wait_flowing`] waits for N successes; `--stop-file`: see
    /// [`Load::stop`]).
    pub fn start_with(
        port: u16,
        paths: &[&str],
        connections: u32,
        duration_ms: u64,
        extra: &[&str],
    ) -> Load {
        let dir = tempfile::tempdir().expect("tempdir");
        let ready_file = dir.path().join("ready");
        let stop_file = dir.path().join("stop");
        let mut cmd = Command::new(LOAD);
        cmd.args(["--url", &format!("http://127.0.0.1:{port}")])
            .args(["--connections", &connections.to_string()])
            .args(["--duration-ms", &duration_ms.to_string()])
            .args(["--timeout-ms", "20000"])
            .arg("--ready-file")
            .arg(&ready_file)
            .arg("--stop-file")
            .arg(&stop_file)
            .args(extra);
        for p in paths {
            cmd.args(["--path", p]);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let child = cmd.spawn().expect("spawn curfew-load");
        Load {
            child,
            ready_file,
            _dir: dir,
        }
    }

    /// End the run now (before its duration): no new request starts;
    /// those in flight finish.
    pub fn stop(&self) {
        let stop = self.ready_file.with_file_name("stop");
        std::fs::write(stop, b"stop\n").expect("write the load's stop file");
    }

    /// Wait until the load has had its first success (or its
    /// `--ready-after` successes).
    pub fn wait_flowing(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ready_file.exists() {
            assert!(
                Instant::now() < deadline,
                "load never got a successful response"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn finish(self) -> LoadResult {
        let out = self.child.wait_with_output().expect("curfew-load output");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "curfew-load printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        LoadResult { json }
    }
}

/// The project's Python virtualenv (made by scripts/python-env.sh).
pub fn venv_bin(tool: &str) -> PathBuf {
    let venv = std::env::var_os("CURFEW_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let p = venv.join("bin").join(tool);
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/python-env.sh` (or `bash .ci/run`) to install the Python example apps' requirements",
        p.display()
    );
    p
}

pub fn examples_dir(app: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(app)
}

impl Curfew {
    /// Number of worker processes alive now (children of curfew).
    pub fn worker_ids_alive(&self) -> usize {
        let me = self.pid();
        let marked = processes_with(&self.marker);
        curfew::supervisor::procfs::all()
            .iter()
            .filter(|p| p.ppid == me && marked.contains(&p.pid))
            .count()
    }
}

impl Curfew {
    /// Worker pids from JSON "Worker ready." lines.
    pub fn worker_pids_json(&self) -> Vec<i64> {
        self.logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == "Worker ready.")
            .filter_map(|v| v["pid"].as_i64())
            .collect()
    }
}

impl Curfew {
    /// Run `curfew <args…> --control-socket <this instance's socket>`;
    /// returns (exit code, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(CURFEW)
            .args(args)
            .arg("--control-socket")
            .arg(&self.control_socket)
            .output()
            .expect("run curfew client");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A memory cgroup below this process's own, removed on drop.
pub struct TestCgroup {
    dir: PathBuf,
    /// Writing a pid here moves that process into the cgroup.
    pub procs_file: PathBuf,
}

impl TestCgroup {
    pub fn create(limit: u64) -> Option<TestCgroup> {
        let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let name = format!("curfew-test-{}", marker());
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let rel = path.trim_start_matches('/');
            let (dir, limit_file) = if controllers.split(',').any(|c| c == "memory") {
                (
                    Path::new("/sys/fs/cgroup/memory").join(rel).join(&name),
                    "memory.limit_in_bytes",
                )
            } else if controllers.is_empty() {
                (
                    Path::new("/sys/fs/cgroup").join(rel).join(&name),
                    "memory.max",
                )
            } else {
                continue;
            };
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            if std::fs::write(dir.join(limit_file), limit.to_string()).is_err() {
                let _ = std::fs::remove_dir(&dir);
                continue;
            }
            let procs_file = dir.join("cgroup.procs");
            return Some(TestCgroup { dir, procs_file });
        }
        None
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Empty by now (every process of the test is gone); retry briefly.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// curfew serving `command` on 127.0.0.1:`port` as PID 1 of a new PID
/// namespace (`unshare --pid --fork --kill-child`, a container's init), its
/// control socket at `control`, once it answers `/` (stdout discarded,
/// stderr piped). `None` when not root: the caller skips.
pub fn serve_as_pid1(port: u16, control: &Path, command: &[&str]) -> Option<Child> {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: a PID namespace needs root here");
        return None;
    }
    let ns = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(CURFEW)
        .args(["serve", "-w", "1", "--bind", &format!("127.0.0.1:{port}")])
        .arg("--control-socket")
        .arg(control)
        .arg("--")
        .args(command)
        .env_remove("CURFEW_CONTROL_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare");
    wait_until("served", Duration::from_secs(20), || {
        http(port, "GET", "/", &[], b"").is_ok_and(|r| r.status == 200)
    });
    Some(ns)
}
