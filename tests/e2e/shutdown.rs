//! Graceful shutdown: zero failed requests under load, exact drain timing,
//! forced shutdowns named and coded, immediate stop, no survivors.

use std::io::BufReader;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::*;

/// Under continuous keep-alive load with some 1.5 s requests, SIGTERM: zero
/// failed requests, every in-flight request completes, exit 0, the drain
/// takes about as long as the longest in-flight request, and a normal
/// shutdown logs no WARN/ERROR line.
#[test]
fn sigterm_under_load_fails_no_request() {
    sigterm_under_load(&[]);
}

/// The same with two proxy threads, each accepting on its own descriptor
/// of the listener: the drain is as exact.
#[test]
fn sigterm_under_load_with_two_proxy_threads_fails_no_request() {
    sigterm_under_load(&["--proxy-threads", "2"]);
}

fn sigterm_under_load(extra: &[&str]) {
    let mut args = vec!["-w", "4", "--worker-concurrency", "2"];
    args.extend_from_slice(extra);
    let mut c = Curfew::start(Opts::testworker(&args, &[]));
    let threads = proxy_threads(c.pid());
    // The default: one per four cores, at least one.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let want = if extra.is_empty() {
        (cores / 4).max(1)
    } else {
        2
    };
    assert_eq!(threads, want, "proxy threads running");
    // SIGTERM once 300 requests have been answered (however slow a loaded
    // machine makes that), with slow ones in flight.
    let load = Load::start_with(
        c.port,
        &["/:40", "/sleep?ms=5:40", "/sleep?ms=1500:2"],
        8,
        60_000,
        &["--ready-after", "300"],
    );
    load.wait_flowing();
    let t0 = Instant::now();
    c.signal(Signal::SIGTERM);
    let code = c.wait_exit(Duration::from_secs(20));
    let shutdown = t0.elapsed();
    load.stop();
    let r = load.finish();

    assert_eq!(code, 0, "clean shutdown exits 0\n{}", c.log_text());
    assert_eq!(r.n("failed"), 0, "failed requests: {}", r.json);
    assert_eq!(r.other_statuses("200"), 0, "non-200 answers: {}", r.json);
    assert!(
        r.n("ok") >= 300,
        "load too light to mean anything: {}",
        r.json
    );
    let drained = c.wait_log(&event("drain_finished", "drained"), Duration::from_secs(1));
    let drain_ms: u64 = field(&drained, "duration_ms")
        .and_then(|v| v.parse().ok())
        .expect("duration_ms");
    assert!(
        drain_ms <= 1500 + 700,
        "drain took {drain_ms} ms, longer than the longest request"
    );
    assert!(
        shutdown < Duration::from_millis(1500 + 1500),
        "shutdown took {shutdown:?}"
    );
    assert!(
        c.faults().is_empty(),
        "a normal shutdown logged faults: {:?}",
        c.faults()
    );
    let summary = c.logs().last().cloned().unwrap_or_default();
    assert!(
        summary.contains("event=\"shutdown_complete\"")
            && summary.contains("exit_code=0")
            && summary.contains("requests_aborted=0"),
        "{summary}"
    );
    assert_no_survivors(&c);
}

/// SIGINT is graceful exactly like SIGTERM (Fly.io, Nomad).
#[test]
fn sigint_is_graceful() {
    let mut c = Curfew::start(Opts::testworker(&["-w", "2"], &[]));
    let slow = std::thread::spawn({
        let port = c.port;
        move || get(port, "/sleep?ms=800")
    });
    std::thread::sleep(Duration::from_millis(200));
    c.signal(Signal::SIGINT);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    let r = slow.join().expect("join");
    assert_eq!((r.status, r.body.as_str()), (200, "slept 800\n"));
}

/// An idle curfew exits within milliseconds of SIGTERM (no polling ticks).
#[test]
fn idle_exit_is_fast() {
    let mut c = Curfew::start(Opts::testworker(&["-w", "2"], &[]));
    let t0 = Instant::now();
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(5)), 0);
    let took = t0.elapsed();
    // The bench measures the real number; this bound only catches polling loops.
    assert!(
        took < Duration::from_millis(500),
        "idle shutdown took {took:?}"
    );
}

/// A request outliving graceful_timeout is named in the log and the exit
/// code says forced; nothing survives.
#[test]
fn request_past_graceful_timeout_is_named_and_forced() {
    let mut c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "1",
            "--graceful-timeout",
            "1s",
            "--worker-stop-timeout",
            "1s",
        ],
        &[],
    ));
    let port = c.port;
    let hung = std::thread::spawn(move || http(port, "GET", "/hang", &[], b""));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    c.signal(Signal::SIGTERM);
    let code = c.wait_exit(Duration::from_secs(10));
    assert_eq!(code, 3, "forced shutdown code\n{}", c.log_text());
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t0.elapsed()
    );
    let line = c.wait_log(
        "Request still in flight at graceful_timeout",
        Duration::from_secs(1),
    );
    assert!(
        line.contains("path=/hang") && line.contains("method=GET") && line.contains("worker=0"),
        "{line}"
    );
    assert!(
        field(&line, "age_ms")
            .and_then(|a| a.parse::<u64>().ok())
            .is_some_and(|a| a >= 1000),
        "{line}"
    );
    let summary = c.wait_log(
        &event("shutdown_complete", "forced"),
        Duration::from_secs(1),
    );
    // The cut request is aborted, not also finished.
    assert!(
        summary.contains("requests_finished_during_shutdown=0")
            && summary.contains("requests_aborted=1"),
        "{summary}"
    );
    assert!(
        hung.join().expect("join").is_err(),
        "the cut-off client sees the connection close"
    );
    assert_no_survivors(&c);
}

/// A worker that ignores SIGTERM is SIGKILLed after worker_stop_timeout.
#[test]
fn worker_ignoring_sigterm_is_killed_after_stop_timeout() {
    let mut c = Curfew::start(Opts::testworker(
        &["-w", "2", "--worker-stop-timeout", "700ms"],
        &["--ignore-sigterm"],
    ));
    let t0 = Instant::now();
    c.signal(Signal::SIGTERM);
    let code = c.wait_exit(Duration::from_secs(10));
    let took = t0.elapsed();
    assert_eq!(code, 3, "{}", c.log_text());
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(2500),
        "took {took:?}"
    );
    assert_eq!(
        c.count_log("did not exit within worker_stop_timeout"),
        2,
        "{}",
        c.log_text()
    );
    assert_no_survivors(&c);
}

/// Second SIGINT stops at once (exit 4), even with a request in flight, and
/// still reaps every child.
#[test]
fn second_sigint_stops_now() {
    let mut c = Curfew::start(Opts::testworker(
        &["-w", "2", "--graceful-timeout", "30s"],
        &["--ignore-sigterm"],
    ));
    let port = c.port;
    let _hung = std::thread::spawn(move || http(port, "GET", "/hang", &[], b""));
    std::thread::sleep(Duration::from_millis(300));
    c.signal(Signal::SIGINT);
    c.wait_log("Draining", Duration::from_secs(2));
    let t0 = Instant::now();
    c.signal(Signal::SIGINT);
    assert_eq!(c.wait_exit(Duration::from_secs(5)), 4, "{}", c.log_text());
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "immediate stop took {:?}",
        t0.elapsed()
    );
    assert_no_survivors(&c);
}

/// SIGQUIT stops at once too.
#[test]
fn sigquit_stops_now() {
    let mut c = Curfew::start(Opts::testworker(&["-w", "2"], &["--ignore-sigterm"]));
    c.signal(Signal::SIGQUIT);
    assert_eq!(c.wait_exit(Duration::from_secs(5)), 4, "{}", c.log_text());
    assert_no_survivors(&c);
}

/// After SIGQUIT, a new connection is refused, not accepted and cut: the
/// listener closes at once. An `on_exit` hook that sleeps keeps curfew
/// alive after the stop (fails if the accept loop still runs then: the
/// connection is accepted and the request gets no answer).
#[test]
fn sigquit_refuses_new_connections_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("on_exit");
    let hook = format!("on_exit=sh -c 'touch {}; sleep 3'", marker.display());
    let mut c = Curfew::start(Opts::testworker(&["-w", "1", "--hook", &hook], &[]));
    assert_eq!(get(c.port, "/").status, 200);
    c.signal(Signal::SIGQUIT);
    wait_until("on_exit runs", Duration::from_secs(10), || marker.exists());
    assert!(
        c.child.try_wait().expect("try_wait").is_none(),
        "curfew still runs its on_exit hook"
    );
    match TcpStream::connect(("127.0.0.1", c.port)) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let sent = send_request(&mut s, "GET", "/", &[], b"", true);
            let answer = sent.and_then(|()| read_response(&mut BufReader::new(s)));
            panic!("a connection after SIGQUIT was accepted: {answer:?}");
        }
    }
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 4, "{}", c.log_text());
}

/// A job store that cannot close promptly (another process holds a read
/// transaction on the SQLite file, so the WAL checkpoint at close waits
/// `busy_timeout`, 5 s) does not hold curfew's exit: leftovers are killed
/// first and the close is bounded (fails without the bound: over 5 s).
#[test]
fn a_store_slow_to_close_does_not_hold_the_exit() {
    let store = crate::support::jobs::TestStore::sqlite();
    let (mut c, admin) = crate::support::jobs::start_testworker(
        &store,
        "curfew.toml",
        "workers = 1\n",
        "[jobs.queues.default]\nconcurrency = 1\n",
        &[],
    );
    // A job written, so the WAL has frames for the reader's snapshot.
    let ids = crate::support::jobs::enqueue_many(
        admin,
        vec![crate::support::jobs::job_body("work", r#"{"ms": 1}"#)],
        1,
    );
    assert_eq!(ids.len(), 1);
    let db = store.dir.path().join("jobs.db");
    let script = format!(
        "import sqlite3, sys, time\n\
         c = sqlite3.connect({db:?}, isolation_level=None)\n\
         c.execute('BEGIN')\n\
         c.execute('SELECT count(*) FROM jobs').fetchall()\n\
         print('reading', flush=True)\n\
         time.sleep(60)\n",
        db = db.display().to_string()
    );
    let mut reader = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the reader");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut BufReader::new(reader.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("reader's line");
    assert_eq!(line.trim(), "reading");
    let t0 = Instant::now();
    c.signal(Signal::SIGTERM);
    let code = c.wait_exit(Duration::from_secs(30));
    let took = t0.elapsed();
    let _ = reader.kill();
    let _ = reader.wait();
    assert_eq!(code, 0, "{}", c.log_text());
    assert!(took < Duration::from_millis(3500), "exit took {took:?}");
}

/// A repeated SIGTERM (Heroku, systemd send several) does not escalate.
#[test]
fn repeated_sigterm_keeps_draining() {
    let mut c = Curfew::start(Opts::testworker(&["-w", "1"], &[]));
    let port = c.port;
    let slow = std::thread::spawn(move || get(port, "/sleep?ms=1000"));
    std::thread::sleep(Duration::from_millis(200));
    c.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(100));
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    assert_eq!(slow.join().expect("join").status, 200);
}

/// SIGTERMs repeated during `drain_delay` (a "kill until dead" loop every
/// 200 ms) do not start the delay again: curfew exits about `drain_delay`
/// after the first one (fails if each restarts it: it would still be in
/// lame duck when the loop ends, 4 s later).
#[test]
fn repeated_sigterm_does_not_extend_drain_delay() {
    let mut c = Curfew::start(Opts::testworker(&["-w", "1", "--drain-delay", "1s"], &[]));
    let t0 = Instant::now();
    // Signalled only while not reaped (try_wait reaps on this thread), so
    // the pid cannot have been reused.
    while c.child.try_wait().expect("try_wait").is_none() && t0.elapsed() < Duration::from_secs(4) {
        c.signal(Signal::SIGTERM);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(2500),
        "stopped {took:?} after the first SIGTERM (drain_delay 1s)"
    );
}

/// Connections waiting in the kernel's accept queue when the listener closes
/// are accepted and served, never reset. curfew is stopped (SIGSTOP) so the
/// connections queue, then gets SIGTERM and SIGCONT.
#[test]
fn accept_queue_is_served_not_reset() {
    let mut c = Curfew::start(Opts::testworker(&["-w", "2"], &[]));
    c.signal(Signal::SIGSTOP);
    let mut conns = Vec::new();
    for i in 0..20 {
        let mut s =
            TcpStream::connect(("127.0.0.1", c.port)).expect("connect queues in the kernel");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        send_request(
            &mut s,
            "GET",
            &format!("/sleep?ms={}", i % 3),
            &[],
            b"",
            true,
        )
        .expect("send");
        conns.push(s);
    }
    c.signal(Signal::SIGTERM);
    c.signal(Signal::SIGCONT);
    let mut ok = 0;
    for s in conns {
        let r =
            read_response(&mut BufReader::new(s)).expect("queued connection answered, not reset");
        assert_eq!(r.status, 200);
        ok += 1;
    }
    assert_eq!(ok, 20);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.log_text());
    let line = c.wait_log("Stopped accepting connections.", Duration::from_secs(1));
    assert!(
        field(&line, "queued_connections_accepted").is_some(),
        "{line}"
    );
}

/// During the drain, a keep-alive response carries `Connection: close`.
#[test]
fn keepalive_responses_get_connection_close_during_drain() {
    let mut c = Curfew::start(Opts::testworker(&["-w", "1", "--drain-delay", "0"], &[]));
    let mut s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    send_request(&mut s, "GET", "/", &[], b"", false).expect("send");
    let first = read_response(&mut r).expect("first");
    assert_eq!(
        first.header("connection"),
        None,
        "keep-alive before the drain"
    );
    send_request(&mut s, "GET", "/sleep?ms=600", &[], b"", false).expect("send");
    std::thread::sleep(Duration::from_millis(150));
    c.signal(Signal::SIGTERM);
    let second = read_response(&mut r).expect("second");
    assert_eq!(second.status, 200);
    assert_eq!(second.header("connection"), Some("close"));
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
}

/// drain_delay: after SIGTERM new connections are still accepted and served
/// for the delay (load balancers deregister meanwhile), then refused.
#[test]
fn drain_delay_keeps_serving_then_closes() {
    let mut c = Curfew::start(Opts::testworker(
        &["-w", "1", "--drain-delay", "800ms"],
        &[],
    ));
    let t0 = Instant::now();
    c.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(c.port, "/").status, 200, "served during lame duck");
    let code = c.wait_exit(Duration::from_secs(10));
    assert_eq!(code, 0);
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "exited before drain_delay"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", c.port)).is_err(),
        "listener closed after exit"
    );
}

/// Readiness flips first: /readyz answers 503 from the moment SIGTERM
/// arrives, while traffic is still served for drain_delay.
#[test]
fn readiness_flips_before_traffic_stops() {
    let admin = free_port();
    let admin_addr = format!("127.0.0.1:{admin}");
    let mut c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "1",
            "--drain-delay",
            "1s",
            "--admin-bind",
            &admin_addr,
        ],
        &[],
    ));
    assert_eq!(get(admin, "/readyz").status, 200);
    assert_eq!(get(admin, "/healthz").status, 200);
    c.signal(Signal::SIGTERM);
    c.wait_log("Received SIGTERM", Duration::from_secs(2));
    let r = get(admin, "/readyz");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("lame-duck"), "{}", r.body);
    assert_eq!(get(admin, "/healthz").status, 200, "still alive");
    assert_eq!(
        get(c.port, "/").status,
        200,
        "still serving during drain_delay"
    );
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
}

/// How many proxy threads (`curfew-proxy-N`) process `pid` runs.
fn proxy_threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("curfew-proxy-"))
        .count()
}
