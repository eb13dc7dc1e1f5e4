//! curfew under systemd, without systemd: a fake `NOTIFY_SOCKET` (a Unix
//! datagram socket bound by the test) records what curfew announces, and
//! socket activation is reproduced by handing curfew a listening socket as
//! fd 3 with `LISTEN_*` set (as `systemd-socket-activate` would).

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::*;

/// Records every datagram sent to a Unix socket (with its arrival time).
pub(crate) struct NotifySocket {
    pub(crate) path: std::path::PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    done: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub(crate) fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        {
            let (messages, done) = (messages.clone(), done.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                while !done.load(Ordering::Relaxed) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        messages
                            .lock()
                            .expect("messages")
                            .push((Instant::now(), text));
                    }
                }
            });
        }
        NotifySocket {
            path,
            messages,
            done,
            _dir: dir,
        }
    }

    pub(crate) fn all(&self) -> Vec<(Instant, String)> {
        self.messages.lock().expect("messages").clone()
    }

    /// Messages (without watchdog-only pings) in order.
    pub(crate) fn texts(&self) -> Vec<String> {
        self.all().into_iter().map(|(_, m)| m).collect()
    }

    pub(crate) fn count(&self, needle: &str) -> usize {
        self.texts().iter().filter(|m| has(m, needle)).count()
    }

    pub(crate) fn wait_count(&self, needle: &str, n: usize) {
        wait_until(&format!("{n} x {needle}"), Duration::from_secs(20), || {
            self.count(needle) >= n
        });
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// `line` is one of the message's lines.
pub(crate) fn has(message: &str, line: &str) -> bool {
    message
        .lines()
        .any(|l| l == line || (line.ends_with('=') && l.starts_with(line)))
}

/// The index of the first message from `from` on that has `line`.
pub(crate) fn find(texts: &[String], from: usize, line: &str) -> Option<usize> {
    texts[from..]
        .iter()
        .position(|m| has(m, line))
        .map(|i| i + from)
}

/// Start, reload (SIGHUP), a long drain, stop: READY only once serving,
/// RELOADING (with MONOTONIC_USEC) then READY around the reload, STOPPING
/// with EXTEND_TIMEOUT_USEC at SIGTERM and again while the drain goes on,
/// STATUS lines throughout, WATCHDOG=1 every half WATCHDOG_USEC; no worker
/// sees NOTIFY_SOCKET or the watchdog variables.
#[test]
fn systemd_notify_start_reload_drain_stop() {
    let notify = NotifySocket::bind();
    let mut opts = Opts::testworker(
        &["-w", "2", "--drain-delay", "0", "--graceful-timeout", "10s"],
        &["--boot-delay-ms", "300"],
    );
    opts.env = vec![
        ("NOTIFY_SOCKET".into(), notify.path.display().to_string()),
        ("WATCHDOG_USEC".into(), "400000".into()),
    ];
    let mut c = Curfew::start(opts);
    notify.wait_count("READY=1", 1);
    let texts = notify.texts();
    let ready = find(&texts, 0, "READY=1").expect("READY");
    assert!(
        texts[ready].contains("STATUS=Serving: 2/2 workers ready"),
        "READY comes with every worker ready: {texts:?}"
    );
    assert!(
        texts[..ready]
            .iter()
            .any(|m| m.contains("STATUS=Starting: ")),
        "a status line while starting: {texts:?}"
    );

    // Workers do not speak for the service.
    for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        let r = get(c.port, &format!("/env?name={name}"));
        assert_eq!(r.status, 404, "a worker sees {name}: {}", r.body);
    }

    // The watchdog: a ping every 200 ms (half of 400 ms).
    let before = notify.count("WATCHDOG=1");
    std::thread::sleep(Duration::from_millis(2000));
    let pings = notify.count("WATCHDOG=1") - before;
    assert!(
        (7..=13).contains(&pings),
        "about 10 watchdog pings in 2 s, got {pings}"
    );

    // Reload: RELOADING=1 + MONOTONIC_USEC, then READY=1 once it is over.
    c.signal(Signal::SIGHUP);
    c.wait_log(&event("reload_finished", "ok"), Duration::from_secs(20));
    notify.wait_count("READY=1", 2);
    let texts = notify.texts();
    let reloading = find(&texts, ready + 1, "RELOADING=1").expect("RELOADING");
    assert!(
        has(&texts[reloading], "MONOTONIC_USEC="),
        "RELOADING carries MONOTONIC_USEC: {}",
        texts[reloading]
    );
    let ready2 = find(&texts, reloading + 1, "READY=1").expect("READY after the reload");

    // A long drain: one request of 3 s in flight at SIGTERM.
    let port = c.port;
    let slow = std::thread::spawn(move || get(port, "/sleep?ms=3000"));
    wait_until("the slow request in flight", Duration::from_secs(5), || {
        c.ctl(&["status", "--json"])
            .1
            .contains("\"requests_in_flight\": 1")
    });
    c.signal(Signal::SIGTERM);
    assert_eq!(slow.join().expect("slow request").status, 200);
    assert_eq!(c.wait_exit(Duration::from_secs(20)), 0);
    std::thread::sleep(Duration::from_millis(100));

    let all = notify.all();
    let texts: Vec<String> = all.iter().map(|(_, m)| m.clone()).collect();
    let stopping = find(&texts, ready2 + 1, "STOPPING=1").expect("STOPPING");
    assert!(
        has(&texts[stopping], "EXTEND_TIMEOUT_USEC="),
        "STOPPING extends the stop timeout: {}",
        texts[stopping]
    );
    // The budget: drain_delay 0 + graceful_timeout 10 s + worker_stop_timeout
    // 5 s, plus the margin.
    let extend: u64 = texts[stopping]
        .lines()
        .find_map(|l| l.strip_prefix("EXTEND_TIMEOUT_USEC="))
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!(
        (15_000_000..=20_000_000).contains(&extend),
        "the whole stop budget: {extend}"
    );
    let later_extends = texts[stopping + 1..]
        .iter()
        .filter(|m| has(m, "EXTEND_TIMEOUT_USEC="))
        .count();
    assert!(
        later_extends >= 3,
        "the drain keeps extending the stop timeout: {:?}",
        &texts[stopping..]
    );
    assert!(
        texts[stopping..]
            .iter()
            .any(|m| m.contains("STATUS=Draining: 1 requests in flight")),
        "the drain's progress is shown: {:?}",
        &texts[stopping..]
    );
    assert!(
        find(&texts, stopping + 1, "READY=1").is_none(),
        "no READY after STOPPING: {texts:?}"
    );
    // Order across the run.
    assert!(ready < reloading && reloading < ready2 && ready2 < stopping);
    assert_eq!(notify.count("READY=1"), 2, "{texts:?}");
    assert_eq!(notify.count("RELOADING=1"), 1, "{texts:?}");
    assert_eq!(notify.count("STOPPING=1"), 1, "{texts:?}");
    assert!(c.faults().is_empty(), "{:?}", c.faults());
}

/// A listening socket owned by the test (as systemd's `.socket` unit owns
/// it), and a copy of it to pass.
fn activation_socket() -> (
    std::net::TcpListener,
    std::os::fd::OwnedFd,
    std::net::SocketAddr,
) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let copy = l.try_clone().expect("dup");
    (l, copy.into(), addr)
}

/// Socket activation: curfew adopts the passed socket for `bind` (it never
/// binds it itself: the test holds the port), and a restart — stop one
/// curfew, start another on the same socket, as `systemctl restart` with a
/// `.socket` unit does — under keep-alive load refuses and fails nothing:
/// connections wait in the kernel's queue while no curfew runs.
#[test]
fn socket_activation_restart_refuses_nothing() {
    let (held, passed, addr) = activation_socket();
    let opts = || Opts::testworker(&["-w", "2", "--drain-delay", "0"], &[]);
    let mut first = Curfew::spawn_activated(opts(), passed, addr, "web");
    first.wait_log(SERVING, Duration::from_secs(30));
    first.wait_log("Adopted a listening socket", Duration::from_secs(1));
    assert_eq!(get(addr.port(), "/").status, 200);
    // Workers get curfew's own socket hand-off, not the service manager's.
    let r = get(addr.port(), "/env?name=LISTEN_FDNAMES");
    assert_eq!((r.status, r.body.as_str()), (200, "curfew"));

    let load = Load::start(addr.port(), &["/", "/sleep?ms=50"], 4, 4000);
    load.wait_flowing();
    std::thread::sleep(Duration::from_millis(500));
    first.signal(Signal::SIGTERM);
    assert_eq!(first.wait_exit(Duration::from_secs(20)), 0);
    assert!(first.faults().is_empty(), "{:?}", first.faults());
    // curfew is away for a moment: connections queue in the kernel.
    std::thread::sleep(Duration::from_millis(300));
    let passed = held.try_clone().expect("dup").into();
    let mut second = Curfew::spawn_activated(opts(), passed, addr, "web");
    second.wait_log(SERVING, Duration::from_secs(30));
    let r = load.finish();
    eprintln!("load across the restart: {}", r.json);
    assert_eq!(r.n("failed"), 0, "{}", r.json);
    assert_eq!(r.n("refused"), 0, "{}", r.json);
    assert_eq!(r.other_statuses("200"), 0, "{}", r.json);
    assert!(r.n("ok") > 100, "{}", r.json);
    second.signal(Signal::SIGTERM);
    assert_eq!(second.wait_exit(Duration::from_secs(20)), 0);
    assert!(second.faults().is_empty(), "{:?}", second.faults());
}

/// A passed socket that cannot serve `bind` stops curfew at start, with an
/// error naming the fd, its name and what is wrong with it.
#[test]
fn socket_activation_mismatches_are_clear_errors() {
    let expect_error = |passed: std::os::fd::OwnedFd, bind: std::net::SocketAddr, needle: &str| {
        let mut c =
            Curfew::spawn_activated(Opts::testworker(&["-w", "1"], &[]), passed, bind, "web");
        let code = c.wait_exit(Duration::from_secs(20));
        let logs = c.log_text();
        assert_ne!(code, 0, "{logs}");
        assert!(
            logs.contains("socket activation: fd 3 (\"web\")") && logs.contains(needle),
            "expected {needle:?} in:\n{logs}"
        );
        assert_eq!(c.count_log(SERVING), 0, "{logs}");
    };
    // Listening on another address than `bind`.
    let (_held, passed, addr) = activation_socket();
    let other: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    expect_error(
        passed,
        other,
        &format!("listens on {addr}, which no `bind` entry names"),
    );
    // Bound, not listening.
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .expect("addr")
            .into(),
    )
    .expect("bind");
    let addr = s.local_addr().expect("addr").as_socket().expect("inet");
    expect_error(s.into(), addr, "it is not listening");
    // A datagram socket.
    let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let addr = u.local_addr().expect("addr");
    expect_error(u.into(), addr, "it is not a stream");
    // A Unix socket for a TCP `bind`.
    let dir = tempfile::tempdir().expect("tempdir");
    let unix = std::os::unix::net::UnixListener::bind(dir.path().join("s")).expect("unix");
    expect_error(unix.into(), other, "which no `bind` entry names");
}

/// The socket named `admin` serves `admin_bind`; without `admin_bind` it is
/// an error that says so.
#[test]
fn socket_activation_adopts_the_admin_socket_by_name() {
    let (_held, web, addr) = activation_socket();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind admin");
    let admin_addr = admin.local_addr().expect("addr");
    let opts = Opts::testworker(&["-w", "1", "--admin-bind", &admin_addr.to_string()], &[]);
    let mut c = Curfew::spawn_activated_with(opts, web, addr, "web", Some(admin.into()));
    c.wait_log(SERVING, Duration::from_secs(30));
    assert_eq!(
        c.count_log("Adopted a listening socket"),
        2,
        "{}",
        c.log_text()
    );
    assert_eq!(get(addr.port(), "/").status, 200);
    assert_eq!(get(admin_addr.port(), "/readyz").status, 200);
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(20)), 0);

    // Named admin, no admin_bind.
    let (_held, web, addr) = activation_socket();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind admin");
    let mut c = Curfew::spawn_activated_with(
        Opts::testworker(&["-w", "1"], &[]),
        web,
        addr,
        "web",
        Some(admin.into()),
    );
    assert_ne!(c.wait_exit(Duration::from_secs(20)), 0);
    assert!(
        c.log_text()
            .contains("fd 4 (\"admin\") is named \"admin\" but `admin_bind` is not set"),
        "{}",
        c.log_text()
    );
}
