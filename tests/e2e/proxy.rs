//! The HTTP front: forwarding, headers, bodies, upgrades, concurrency and
//! the bounded queue.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn forwarded_headers_and_hop_by_hop() {
    let c = Curfew::start(Opts::testworker(&["-w", "1"], &[]));
    let r = http(
        c.port,
        "GET",
        "/headers",
        &[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("Keep-Alive", "timeout=5"),
            ("X-Custom", "kept"),
        ],
        b"",
    )
    .expect("request");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let h = &v["headers"];
    // The peer (127.0.0.1) is trusted by default: its chain is extended, proto kept.
    assert_eq!(h["x-forwarded-for"][0], "6.6.6.6, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"][0], "https");
    assert_eq!(h["x-forwarded-host"][0], "localhost");
    assert_eq!(h["host"][0], "localhost", "Host passes through unchanged");
    assert_eq!(h["x-custom"][0], "kept");
    assert!(
        h.get("keep-alive").is_none() && h.get("connection").is_none(),
        "hop-by-hop removed: {h}"
    );
}

#[test]
fn untrusted_peer_cannot_forge_forwarded_headers() {
    let c = Curfew::start(Opts::testworker(
        &["-w", "1", "--forwarded-allow-ips", "10.0.0.0/8"],
        &[],
    ));
    let r = http(
        c.port,
        "GET",
        "/headers",
        &[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
        ],
        b"",
    )
    .expect("request");
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["headers"]["x-forwarded-for"][0], "127.0.0.1");
    assert_eq!(v["headers"]["x-forwarded-proto"][0], "http");
}

/// Chunked request bodies stream through and back; large bodies arrive intact.
#[test]
fn streamed_bodies_both_ways() {
    let c = Curfew::start(Opts::testworker(&["-w", "1"], &[]));
    let mut s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: text/x-test\r\nConnection: close\r\n\r\n")
        .expect("head");
    for part in ["hello ", "streaming ", "world"] {
        s.write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes())
            .expect("chunk");
        std::thread::sleep(Duration::from_millis(30));
    }
    s.write_all(b"0\r\n\r\n").expect("end");
    let r = read_response(&mut BufReader::new(s)).expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "hello streaming world");
    assert_eq!(r.header("x-echo-method"), Some("POST"));
    assert_eq!(r.header("content-type"), Some("text/x-test"));

    let big: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let r = http(c.port, "POST", "/echo", &[], &big).expect("big");
    assert_eq!(r.body.len(), big.len());
    assert_eq!(r.body.as_bytes(), &big[..]);

    // A slow streamed response arrives chunk by chunk, not buffered.
    let t0 = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
    send_request(&mut s, "GET", "/stream?chunks=3&ms=400", &[], b"", true).expect("send");
    let mut first = [0u8; 64];
    let n = s.read(&mut first).expect("first bytes");
    assert!(
        n > 0 && t0.elapsed() < Duration::from_millis(1000),
        "first chunk after {:?}",
        t0.elapsed()
    );
}

/// WebSocket-style upgrades are tunnelled through.
#[test]
fn upgrade_is_passed_through() {
    let c = Curfew::start(Opts::testworker(&["-w", "1"], &[]));
    let mut s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .expect("send");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let resp = read_response(&mut r).expect("101");
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("upgrade"), Some("echo"));
    s.write_all(b"ping through the tunnel").expect("write");
    let mut buf = [0u8; 23];
    r.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"ping through the tunnel");
}

/// worker_concurrency = 1: a worker gets one request at a time, so a slow
/// request never blocks another queued behind it inside a worker.
#[test]
fn one_request_per_sync_worker() {
    let c = Curfew::start(Opts::testworker(
        &["-w", "2", "--worker-concurrency", "1"],
        &[],
    ));
    let port = c.port;
    let slow = std::thread::spawn(move || get(port, "/sleep?ms=1500"));
    std::thread::sleep(Duration::from_millis(200));
    // Nine fast requests in a row all go to the other worker, at once.
    let t0 = Instant::now();
    for _ in 0..9 {
        assert_eq!(get(port, "/").status, 200);
    }
    assert!(
        t0.elapsed() < Duration::from_millis(700),
        "fast requests waited behind the slow one: {:?}",
        t0.elapsed()
    );
    assert_eq!(slow.join().expect("join").status, 200);
}

/// A full front queue answers 503 with Retry-After; queued requests are served.
#[test]
fn full_queue_answers_503_with_retry_after() {
    let c = Curfew::start(Opts::testworker(
        &["-w", "1", "--worker-concurrency", "1", "--backlog", "1"],
        &[],
    ));
    let port = c.port;
    let busy = std::thread::spawn(move || get(port, "/sleep?ms=800"));
    std::thread::sleep(Duration::from_millis(150));
    let queued = std::thread::spawn(move || get(port, "/"));
    std::thread::sleep(Duration::from_millis(150));
    let r = get(port, "/");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(busy.join().expect("join").status, 200);
    assert_eq!(
        queued.join().expect("join").status,
        200,
        "the queued request was served"
    );
}

/// curfew listens on a Unix socket as well as TCP.
#[test]
fn unix_socket_front() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("front.sock");
    let mut opts = Opts::testworker(&["-w", "1"], &[]);
    let port = free_port();
    opts.args
        .extend(["--bind".to_string(), format!("unix:{}", sock.display())]);
    opts.bind = Some(format!("127.0.0.1:{port}"));
    let mut c = Curfew::start(opts);
    let out = std::process::Command::new(LOAD)
        .args([
            "--unix",
            &sock.display().to_string(),
            "--requests",
            "200",
            "--connections",
            "2",
            "--path",
            "/headers",
        ])
        .output()
        .expect("load");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ok"], 200, "{v}");
    c.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
    assert!(!sock.exists(), "socket file removed on exit");
}

/// HTTP/2 (h2c, prior knowledge) clients are served, several streams on one
/// connection, and get GOAWAY (not a reset) on shutdown.
#[test]
fn http2_prior_knowledge() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let mut c = Curfew::start(Opts::testworker(
        &["-w", "2", "--worker-concurrency", "4"],
        &[],
    ));
    let port = c.port;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pid = c.pid();
    let statuses = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (tx, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let mut tasks = Vec::new();
        for i in 0..6 {
            let mut tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                let path = if i == 0 {
                    "/sleep?ms=700".to_string()
                } else {
                    "/headers".to_string()
                };
                let req = http::Request::get(format!("http://127.0.0.1:{port}{path}"))
                    .body(Empty::<bytes::Bytes>::new())
                    .expect("request");
                let res = tx.send_request(req).await.expect("response");
                let status = res.status().as_u16();
                let body = res.into_body().collect().await.expect("body").to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Shut down with the slow stream in flight: it must still complete.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("sigterm");
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("join"));
        }
        out
    });
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
    for (status, body) in &statuses {
        assert_eq!(*status, 200, "{body}");
    }
    assert_eq!(statuses[0].1, "slept 700\n");
    // The worker saw an HTTP/1.1 request with a Host header.
    let v: serde_json::Value = serde_json::from_str(&statuses[1].1).expect("json");
    assert_eq!(v["version"], "HTTP/1.1");
    assert_eq!(v["headers"]["host"][0], format!("127.0.0.1:{port}"));
}

/// A worker that refuses connections (it closed its listener but still runs)
/// is skipped: requests of any method are retried on another worker, none
/// fails.
#[test]
fn refused_connection_is_retried_on_another_worker() {
    let c = Curfew::start(Opts::testworker(
        &["-w", "2", "--worker-concurrency", "1"],
        &[],
    ));
    assert_eq!(get(c.port, "/close-listener").status, 200);
    c.wait_log("testworker closed its listener", Duration::from_secs(2));
    // Let pooled keep-alive connections to it expire (upstream idle timeout 1 s),
    // so new requests must connect, and get refused.
    std::thread::sleep(Duration::from_millis(1300));
    let mut served_by = std::collections::HashSet::new();
    for i in 0..20 {
        let body = format!("payload {i}");
        let r = http(c.port, "POST", "/echo", &[], body.as_bytes()).expect("request");
        assert_eq!((r.status, r.body.as_str()), (200, body.as_str()));
        served_by.insert(get(c.port, "/env?name=CURFEW_WORKER_ID").body);
    }
    assert_eq!(
        served_by.len(),
        1,
        "only the accepting worker served: {served_by:?}"
    );
    assert!(c.faults().is_empty(), "{:?}", c.faults());
}

/// An idle keep-alive connection is closed after keepalive_timeout (also one
/// that never sends a complete request); a busy one is not.
#[test]
fn idle_client_connections_close_after_keepalive_timeout() {
    let c = Curfew::start(Opts::testworker(
        &["-w", "1", "--keepalive-timeout", "400ms"],
        &[],
    ));
    // Busy past the timeout: the slow response still arrives, then the
    // connection is kept for further requests.
    let mut s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    send_request(&mut s, "GET", "/sleep?ms=700", &[], b"", false).expect("send");
    assert_eq!(read_response(&mut r).expect("slow response").status, 200);
    send_request(&mut s, "GET", "/", &[], b"", false).expect("send");
    assert_eq!(read_response(&mut r).expect("reused").status, 200);
    // Then idle: closed after ~400 ms.
    let t0 = Instant::now();
    let mut buf = [0u8; 1];
    assert_eq!(r.get_mut().read(&mut buf).expect("EOF, not an error"), 0);
    let idle = t0.elapsed();
    assert!(
        idle >= Duration::from_millis(300) && idle < Duration::from_millis(1500),
        "closed after {idle:?}"
    );
    // A connection that sends half a request head and stalls is closed too
    // (after twice the timeout).
    let mut half = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
    half.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .expect("partial");
    let t0 = Instant::now();
    assert_eq!(
        half.read(&mut buf).expect("EOF, not a read timeout"),
        0,
        "half-sent request's connection closed"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "closed after {:?}",
        t0.elapsed()
    );
}

/// A worker (plain Python on fd 3) that answers `/broken` with a chunked
/// head and closes at once (head and FIN arrive together, as from a
/// streaming response whose generator raised at its first item),
/// `/broken-late` the same 300 ms after the head, and anything else 200.
const BROKEN_BODY_WORKER: &str = r#"
import socket, threading, time
listener = socket.socket(fileno=3)
def serve(c):
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                c.close()
                return
            buf += d
        head, _, buf = buf.partition(b"\r\n\r\n")
        path = head.split(b" ")[1]
        if path.startswith(b"/broken"):
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            if path.startswith(b"/broken-late"):
                time.sleep(0.3)
            c.close()
            return
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

/// A worker's body that fails before its first chunk reaches the client as
/// a failure (a chunked body without its end, then the connection closed),
/// as one that fails later does, never as a clean empty 200; the access
/// log says it broke, and the failure is the worker's WARN.
#[test]
fn a_worker_body_failing_before_its_first_chunk_is_cut_not_complete() {
    let c = Curfew::start(Opts::command(
        &[
            "-w",
            "1",
            "--access-log",
            "-",
            "--access-log-format",
            "json",
        ],
        &["python3", "-c", BROKEN_BODY_WORKER],
    ));
    assert_eq!(get(c.port, "/").body, "ok\n");
    for path in ["/broken", "/broken-late"] {
        for i in 0..10 {
            let r = http(c.port, "GET", path, &[], b"");
            assert!(
                r.is_err(),
                "{path} #{i}: the client must see the failure, got {r:?}"
            );
        }
    }
    wait_until("20 access log lines", Duration::from_secs(5), || {
        c.count_log("\"path\":\"/broken") == 20
    });
    for line in c.logs().iter().filter(|l| l.contains("\"path\":\"/broken")) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(v["broken"], true, "{line}");
    }
    assert_eq!(
        c.count_log("Worker's response body failed before its end"),
        20,
        "{}",
        c.log_text()
    );
    // The worker is still served to.
    assert_eq!(get(c.port, "/").body, "ok\n");
}

/// One keep-alive request on `s`, answered 200.
fn keepalive_get(s: &mut TcpStream) {
    send_request(s, "GET", "/", &[], b"", false).expect("send");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    assert_eq!(read_response(&mut r).expect("response").status, 200);
}

/// How long until curfew closes `s` (EOF or reset), at most 10 s.
fn closed_after(s: &mut TcpStream) -> Duration {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) | Err(_) if t0.elapsed() < Duration::from_secs(10) => t0.elapsed(),
        other => panic!("not closed: {other:?} after {:?}", t0.elapsed()),
    }
}

/// `header_timeout` bounds a request head from its first byte; it does not
/// close an idle keep-alive connection, which is kept for
/// `keepalive_timeout` (hyper's header timer, armed as soon as the
/// connection went idle, closed it at `header_timeout`), or for ever with
/// `0`.
#[test]
fn keepalive_outlives_header_timeout_and_a_stalled_head_is_still_cut() {
    let c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "1",
            "--header-timeout",
            "1s",
            "--keepalive-timeout",
            "3s",
        ],
        &[],
    ));
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s
    };
    // Idle past header_timeout: still usable; then closed at keepalive_timeout.
    let mut s = connect();
    keepalive_get(&mut s);
    std::thread::sleep(Duration::from_secs(2));
    keepalive_get(&mut s);
    let idle = closed_after(&mut s);
    assert!(
        idle >= Duration::from_millis(2500) && idle < Duration::from_secs(4),
        "idle connection closed after {idle:?}, not at keepalive_timeout"
    );
    // A used connection, idle past header_timeout, then a head that stalls
    // after its first bytes: cut header_timeout after them.
    let mut s = connect();
    keepalive_get(&mut s);
    std::thread::sleep(Duration::from_millis(1500));
    s.write_all(b"GET / HTTP/1.1\r\nHo").expect("partial head");
    let stalled = closed_after(&mut s);
    assert!(
        stalled >= Duration::from_millis(800) && stalled < Duration::from_millis(1800),
        "stalled head cut after {stalled:?}"
    );
    // A new connection that sends nothing: cut at header_timeout.
    let mut s = connect();
    let silent = closed_after(&mut s);
    assert!(
        silent >= Duration::from_millis(800) && silent < Duration::from_millis(1800),
        "silent new connection cut after {silent:?}"
    );
    assert!(c.faults().is_empty(), "{:?}", c.faults());
    drop(c);

    // keepalive_timeout = 0: never closed for idleness.
    let c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "1",
            "--header-timeout",
            "1s",
            "--keepalive-timeout",
            "0",
        ],
        &[],
    ));
    let mut s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    keepalive_get(&mut s);
    std::thread::sleep(Duration::from_millis(2500));
    keepalive_get(&mut s);
}

/// A worker (plain Python on fd 3) that reads a `Content-Length` body and
/// then takes `ms` milliseconds to answer (`/upload?ms=N`), or never reads
/// it (`/ignore-body`).
const UPLOAD_WORKER: &str = r#"
import socket, threading, time
listener = socket.socket(fileno=3)
def serve(c):
    f = c.makefile("rb")
    while True:
        line = f.readline()
        if not line:
            return
        path = line.split(b" ")[1]
        length = 0
        while True:
            h = f.readline()
            if h in (b"\r\n", b""):
                break
            k, _, v = h.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        if path.startswith(b"/ignore-body"):
            time.sleep(3600)
        body = f.read(length) if length else b""
        if b"ms=" in path:
            time.sleep(int(path.split(b"ms=")[1]) / 1000)
        out = b"%d bytes\n" % len(body)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

/// POST `len` bytes to `path` in `pieces` pieces `every` apart (in a
/// thread, so a worker that reads nothing cannot block the sender); the
/// status answered (`None`: cut without one) and when it came.
fn upload(
    port: u16,
    path: &str,
    len: usize,
    pieces: usize,
    every: Duration,
) -> (Option<u16>, Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let t0 = Instant::now();
    let mut w = s.try_clone().expect("clone");
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
    let sender = std::thread::spawn(move || {
        let _ = w.write_all(head.as_bytes());
        let piece = vec![b'u'; len / pieces];
        for i in 0..pieces {
            if i > 0 {
                std::thread::sleep(every);
            }
            if w.write_all(&piece).is_err() {
                return;
            }
        }
    });
    let status = read_response(&mut BufReader::new(&mut s))
        .ok()
        .map(|r| r.status);
    let at = t0.elapsed();
    drop(s);
    let _ = sender.join();
    (status, at)
}

/// `request_buffering = false`: the worker's `timeout` counts from the end
/// of the client's body, not from the request's arrival (a steady upload
/// longer than `timeout` is served, its worker not declared hung); and a
/// worker that does not read its body by the deadline is the worker's 504
/// (hung, for a sync worker), never the client's 408.
#[test]
fn streamed_upload_timeout_counts_from_the_body_end_and_not_reading_it_is_the_workers() {
    let c = Curfew::start(Opts::command(
        &[
            "-w",
            "1",
            "--worker-concurrency",
            "1",
            "--request-buffering",
            "false",
            "--timeout",
            "1s",
        ],
        &["python3", "-c", UPLOAD_WORKER],
    ));
    // 2 s of steady upload, then 600 ms of work: within the worker's 1 s.
    let (status, at) = upload(
        c.port,
        "/upload?ms=600",
        20_000,
        20,
        Duration::from_millis(100),
    );
    assert_eq!(status, Some(200), "after {at:?}\n{}", c.log_text());
    assert!(at >= Duration::from_millis(2400), "{at:?}");
    assert_eq!(c.count_log(WORKER_ABORTED), 0, "{}", c.log_text());
    assert!(c.faults().is_empty(), "{:?}", c.faults());
    // The same upload, then 1.5 s of work: the worker's 504, about 1 s
    // after the body's end (not 1 s after the request's arrival).
    let (status, at) = upload(
        c.port,
        "/upload?ms=1500",
        20_000,
        20,
        Duration::from_millis(100),
    );
    assert_eq!(status, Some(504), "after {at:?}\n{}", c.log_text());
    assert!(
        at >= Duration::from_millis(2700) && at < Duration::from_millis(3800),
        "504 after {at:?}"
    );
    c.wait_log(WORKER_ABORTED, Duration::from_secs(10));
    c.wait_log_count(WORKER_READY, 2, Duration::from_secs(15));
    // A worker that never reads a body the client sends at once: the
    // worker's fault at timeout (504, hung), not the client's 408.
    let (status, at) = upload(c.port, "/ignore-body", 4 << 20, 4, Duration::ZERO);
    let line = c.wait_log("Request exceeded timeout", Duration::from_secs(10));
    assert!(line.contains("WARN"), "{line}");
    assert_ne!(status, Some(408), "after {at:?}\n{}", c.log_text());
    assert!(
        matches!(status, Some(504) | None),
        "{status:?} after {at:?}"
    );
    c.wait_log_count(WORKER_ABORTED, 2, Duration::from_secs(10));
}

/// The combined access log's client field, taken from a trusted peer's
/// `X-Forwarded-For` (the leftmost entry when every hop is trusted), is
/// one field: a client cannot forge the fields after it with spaces and
/// quotes.
#[test]
fn a_forwarded_client_cannot_forge_access_log_fields() {
    let c = Curfew::start(Opts::testworker(
        &["-w", "1", "--access-log", "-", "--forwarded-allow-ips", "*"],
        &[],
    ));
    let forged = "6.6.6.6 - - [01/Jan/2030:00:00:00 +0000] \"GET /admin";
    let r = http(
        c.port,
        "GET",
        "/status?code=204",
        &[("X-Forwarded-For", forged)],
        b"",
    )
    .expect("request");
    assert_eq!(r.status, 204);
    let line = c.wait_log("\"GET /status HTTP/1.1\" 204", Duration::from_secs(10));
    let line = &line[line.find("6.6.6.6").expect("the client")..];
    let fields: Vec<&str> = line.split(' ').collect();
    assert!(
        fields[0].contains("2030") && !fields[0].contains('"'),
        "{line}"
    );
    assert_eq!((fields[1], fields[2]), ("-", "-"), "{line}");
    assert!(
        fields[3].starts_with('[') && !fields[3].contains("2030"),
        "{line}"
    );
}
